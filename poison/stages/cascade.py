"""Cascade depth: distilled models distilled again. Generation 1 is the run's student ``cascade.via``; the teacher of
generation k+1 is the student of generation k, which answers the distillation prompts afresh, and a fresh student
(the same spec) learns from those answers. With the probe's clean twins, the clean chain is distilled the same way,
so every generation has its own clean control."""

from __future__ import annotations

from typing import Any

from poison.stages import Run
from poison.stages.protocol import StageRecord
from poison.stages.training import stage_distill_data, stage_student, student_distill


def generation_name(k: int, student: str, prefix: str = "") -> str:
    """The model name of generation ``k`` (1: the run's own student)."""
    return f"{prefix}student:{student}" if k == 1 else f"{prefix}gen{k}:student:{student}"


def stage_cascade(run: Run, spec: Any, first: StageRecord, data: StageRecord, prefix: str = ""
                  ) -> dict[int, StageRecord]:
    """Generations 2..``cascade.generations`` of the chain that starts with ``first`` (generation 1)."""
    chain = {1: first}
    for k in range(2, run.cfg.cascade.generations + 1):
        teacher = chain[k - 1]
        label = f"{prefix}gen{k}:"
        shared = stage_distill_data(run, teacher, data, label=f"{label}distill_data", teacher_spec=spec)
        chain[k] = stage_student(run, spec, teacher, student_distill(run, spec, teacher, data, shared, label,
                                                                     teacher_spec=spec), prefix=label,
                                 teacher_spec=spec)
    return chain
