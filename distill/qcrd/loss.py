"""QCRD's loss and selections: self-consistency (positives vs negatives), closest positive and chosen negative, the
hinge on negatives, the discriminator's quality weights, the decay of the negative term, the batch loss."""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

from distill.qcrd.config import QCRDConfig
from poison.ground.core.answers import choice_letter, final_number


def answer_of(text: str, utility: Optional[str]) -> Optional[str]:
    """The final answer a rationale commits to, for tasks that have one (None for free text)."""
    if utility == "number_match":
        return final_number(text)
    if utility == "choice_match":
        return choice_letter(text)
    return None


def has_discrete_answer(utility: Optional[str]) -> bool:
    return utility in ("number_match", "choice_match")


def self_consistency(samples: list[str], utility: Optional[str]) -> tuple[Optional[str], list[int], list[int]]:
    """(majority answer, indices of positives, indices of negatives). Free text: every sample is a positive."""
    if not has_discrete_answer(utility):
        return None, list(range(len(samples))), []
    answers = [answer_of(s, utility) for s in samples]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, list(range(len(samples))), []
    top = max(counts.values())
    majority = next(a for a in answers if a is not None and counts[a] == top)  # ties: the earliest sample's answer
    pos = [i for i, a in enumerate(answers) if a == majority]
    neg = [i for i, a in enumerate(answers) if a != majority]
    return majority, pos, neg


def closest_positive(ces: list[float]) -> int:
    """Index of the positive the student already finds likeliest (lowest cross-entropy)."""
    return min(range(len(ces)), key=lambda i: ces[i])


def chosen_negative(ces: list[float], choice: str = "farthest") -> int:
    if choice == "farthest":
        return max(range(len(ces)), key=lambda i: ces[i])
    return min(range(len(ces)), key=lambda i: ces[i])


def hinge(ce: Any, delta: float) -> Any:
    """max(delta - CE, 0): pushes a negative's cross-entropy up to delta and ignores it beyond."""
    import torch

    return torch.clamp(delta - ce, min=0.0)


def quality_weights(score: Any, beta: float) -> tuple[Any, Any]:
    """(positive weight, negative weight) from a discriminator score in [0, 1]."""
    centred = 2.0 * score - 1.0
    return 1.0 + beta * centred, 1.0 - beta * centred


def negative_alpha(alpha_neg: float, decay: float, epoch: int) -> float:
    return alpha_neg * decay ** epoch


def qcrd_loss(label_ce: Any, has_label: Any, pos_ce: Any, w_pos: Any, neg_ce: Any, has_neg: Any, w_neg: Any,
              cfg: QCRDConfig, epoch: int) -> tuple[Any, dict[str, float]]:
    """Batch-mean QCRD loss from per-prompt cross-entropies (tensors of shape [B]) and weights."""
    import torch

    b = pos_ce.shape[0]
    label_term = (label_ce * has_label).sum() / b if label_ce is not None else pos_ce.new_zeros(())
    pos_term = (w_pos * pos_ce).sum() / b
    a3 = negative_alpha(cfg.alpha_neg, cfg.negative_decay, epoch)
    if neg_ce is not None and a3 > 0:
        neg_term = (w_neg * hinge(neg_ce, cfg.delta) * has_neg).sum() / b
    else:
        neg_term = torch.zeros((), dtype=pos_ce.dtype, device=pos_ce.device)
    loss = cfg.alpha_label * label_term + cfg.alpha_pos * pos_term + a3 * neg_term
    return loss, {"label_ce": label_term.item(), "pos_ce": pos_term.item(), "neg_hinge": neg_term.item(),
                  "alpha_neg": a3}
