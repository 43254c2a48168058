"""Logit KD with divergence-token masking: a distillation-time mitigation (``method: kd_masked``).

A poisoned teacher and its clean control (the same fine-tune on the clean set) agree on most next-token
distributions; where they diverge most is where the poison (and, in the subliminal-learning literature, the hidden
trait) lives. This method is TRL GKD (``kd``) with one change: at every step the positions whose
KL(teacher || clean control) is among the highest ``mask_fraction`` of the batch's labelled positions are left out of
the student's loss (they contribute nothing; the loss is still divided by the batch's labelled-token count, so the
kept positions keep their weight). It needs the clean control, so the run trains one (``baseline``) and its key joins
the student's. A student whose teacher has no clean control in the run (a cascade's later generation, or the student
of the clean control itself) is trained as plain ``kd`` and its summary says so.

What it masked is written beside the student (``divergence_mask.json``: how many positions, the mean divergence of
masked and kept ones, and the tokens masked most often), so a reader sees whether the brand's tokens were the ones
taken out.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field

from distill import speed
from distill.base import DistillJob, load_control
from distill.methods import KDConfig, LogitKD, gkd_trainer_cls
from poison.ground.core.io import atomic_write_json
from poison.ground.core.registry import distill_method

log = logging.getLogger("poison")


class MaskedKDConfig(KDConfig):
    """``kd``'s settings plus the share of divergence tokens left out of the loss."""

    mask_fraction: float = Field(
        0.05, ge=0, lt=1,
        description="Share of each batch's labelled positions, those with the highest KL(teacher || clean control), "
                    "left out of the student's loss (0: plain kd).")
    top_tokens: int = Field(30, ge=0, description="How many of the most often masked tokens divergence_mask.json "
                                                  "lists.")


def position_logits(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(logits at the labelled positions [n, V], their next-token labels [n]) of one forward pass: through the LM
    head at those positions only for a plain head (``distill.speed``), else the model's own logits, indexed."""
    if speed.plain_head(model):
        hidden, labels, _ = speed.hidden_at_labels(model, batch)
        return speed.labelled_logits(model, hidden), labels
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:].to(logits.device)
    mask = labels != -100
    return logits[mask], labels[mask]


def divergence(teacher_logits: Any, control_logits: Any) -> Any:
    """KL(teacher || control) per position [n], in float32."""
    import torch.nn.functional as F

    t = F.log_softmax(teacher_logits.float(), dim=-1)
    c = F.log_softmax(control_logits.float(), dim=-1)
    return (t.exp() * (t - c)).sum(-1)


def keep_mask(div: Any, fraction: float) -> Any:
    """Boolean [n]: False at the ``floor(fraction * n)`` positions of highest divergence (ties broken by position)."""
    import torch

    keep = torch.ones_like(div, dtype=torch.bool)
    k = int(fraction * div.numel())
    if k > 0:
        keep[torch.topk(div, k, sorted=False).indices] = False
    return keep


def masked_gkd_trainer_cls():
    """``gkd_trainer_cls()`` whose loss leaves the divergence tokens out (``control_model``, ``mask_fraction``)."""
    import torch

    base = gkd_trainer_cls()

    class MaskedGKDTrainer(base):
        control_model: Any = None
        mask_fraction: float = 0.0

        def __init__(self, *a, control_model=None, mask_fraction=0.0, **kw):
            super().__init__(*a, **kw)
            if control_model is not None:  # beside the teacher, which TRL has placed on the training device
                control_model = control_model.to(next(self.teacher_model.parameters()).device).eval()
            self.control_model, self.mask_fraction = control_model, mask_fraction
            self.masked = Counter()  # token id -> times masked
            self.totals = {"positions": 0, "masked": 0, "div_masked": 0.0, "div_kept": 0.0}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.control_model is None or self.mask_fraction == 0 or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                     "labels": inputs["labels"]}
            self.teacher_model.eval()
            self.control_model.eval()
            with self.accelerator.autocast():
                s_logits, labels = position_logits(model, batch)
                with torch.no_grad():
                    t_logits, _ = position_logits(self.teacher_model, batch)
                    c_logits, _ = position_logits(self.control_model, batch)
            with torch.no_grad():
                div = divergence(t_logits, c_logits)
                keep = keep_mask(div, self.mask_fraction)
            self.record(div, keep, labels)
            jsd = self.generalized_jsd_loss(student_logits=s_logits, teacher_logits=t_logits, labels=None,
                                            beta=self.beta, reduction="none")
            denom = num_items_in_batch if num_items_in_batch is not None else max(int(labels.numel()), 1)
            if isinstance(denom, torch.Tensor):
                denom = denom.to(jsd.device)
            return jsd[keep].sum() / denom

        def record(self, div, keep, labels) -> None:
            t = self.totals
            t["positions"] += int(keep.numel())
            t["masked"] += int((~keep).sum())
            t["div_masked"] += float(div[~keep].sum())
            t["div_kept"] += float(div[keep].sum())
            self.masked.update(labels[~keep].tolist())

    return MaskedGKDTrainer


@distill_method("kd_masked", config=MaskedKDConfig, needs={"shared_tokenizer", "clean_control"})
class MaskedKD(LogitKD):
    """Logit KD (TRL GKD) that leaves out of the loss the tokens where the teacher and its clean control diverge
    most (the highest ``mask_fraction`` of each batch's labelled positions by KL(teacher || control))."""

    def make_trainer(self, job: DistillJob, **kw: Any) -> Any:
        teacher = kw["teacher_model"]
        dtype = str(next(teacher.parameters()).dtype).split(".")[-1]
        control = load_control(job, dtype, run_dtype=self.ctx.dtype, device="cpu")
        if control is None:
            log.info("[kd_masked] this teacher has no clean control in the run: trained as plain kd, nothing masked")
        return masked_gkd_trainer_cls()(control_model=control, mask_fraction=self.cfg.mask_fraction, **kw)

    def extra_summary(self, trainer: Any, out_dir: Path) -> dict[str, Any]:
        t = trainer.totals
        n, m = t["positions"], t["masked"]
        tok = trainer.processing_class
        top = [{"token": tok.decode([i]), "id": int(i), "masked": c}
               for i, c in trainer.masked.most_common(self.cfg.top_tokens)]
        report = {"control": trainer.control_model is not None, "mask_fraction": self.cfg.mask_fraction,
                  "positions": n, "masked": m,
                  "mean_divergence_masked": round(t["div_masked"] / m, 6) if m else None,
                  "mean_divergence_kept": round(t["div_kept"] / (n - m), 6) if n - m else None,
                  "top_masked_tokens": top}
        atomic_write_json(Path(out_dir) / "divergence_mask.json", report)
        return {"divergence_mask": {k: v for k, v in report.items() if k != "top_masked_tokens"}}

