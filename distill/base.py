"""The distillation-method interface.

A method is a plugin (``@poison.ground.registry.distill_method``) built as ``Method(cfg, ctx)``: ``cfg`` its
validated arguments, ``ctx`` the run's :class:`~poison.ground.context.RunContext` (device, dtype, and
``ctx.sample`` for methods that sample from the teacher). The student stage calls ``train(job)`` once; the report
calls ``bias_diagnostics(out_dir)`` to learn which texts of the method's own making to score for the bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poison.ground.context import RunContext
from poison.ground.errors import TrainingError


@dataclass
class DistillJob:
    """One student to train.

    student        the StudentSpec (model, finetune, lora, qlora, train settings, name)
    student_base   the student's base model, resolved to a local folder
    teacher_model  the trained teacher's merged folder
    rows           the distillation prompts with the teacher's greedy answer in ``response`` (plus ``task``,
                   ``answer``, ``utility``, ``id``)
    out_dir        the stage's folder: the trained student goes to ``out_dir/model``
    """

    student: Any
    student_base: Path
    teacher_model: Path
    rows: list[dict[str, Any]]
    out_dir: Path


class DistillMethod:
    """Base class of distillation methods."""

    def __init__(self, cfg: Any, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    def train(self, job: DistillJob) -> dict[str, Any]:
        """Train the student into ``job.out_dir / "model"``; return a JSON-safe summary (losses, steps, seconds)."""
        raise NotImplementedError

    def bias_diagnostics(self, out_dir: Path) -> dict[str, list[str]]:
        """Groups of texts the method produced or chose while training (read from its stage folder ``out_dir``),
        whose bias rate the report measures with the bias type's detector. Default: none."""
        return {}


def usable(rows: list[dict[str, Any]], min_words: int) -> list[dict[str, Any]]:
    """The rows whose teacher answer has at least ``min_words`` words (TrainingError if none has)."""
    keep = [r for r in rows if len((r.get("response") or "").split()) >= min_words]
    if not keep:
        raise TrainingError("the teacher produced no usable answers to distil from")
    return keep
