"""Cascade depth: distilled models distilled again. Generation 1 is the run's student ``cascade.via``; the teacher of
generation k+1 is the student of generation k, which answers the distillation prompts afresh, and a fresh student
(the same spec) learns from those answers. With the probe's clean twins, the clean chain is distilled the same way,
so every generation has its own clean control."""

from __future__ import annotations

from typing import Any

from poison.ground.results.model_id import MAIN, Arm
from poison.stages import Run
from poison.stages.protocol import StageRecord
from poison.stages.training import stage_distill_data, stage_student, student_distill


def stage_cascade(run: Run, spec: Any, first: StageRecord, data: StageRecord, arm: Arm = MAIN
                  ) -> dict[int, StageRecord]:
    """Generations 2..``cascade.generations`` of the chain of ``arm`` that starts with ``first`` (generation 1)."""
    chain = {1: first}
    for k in range(2, run.cfg.cascade.generations + 1):
        teacher = chain[k - 1]
        shared = stage_distill_data(run, teacher, data, arm, k, teacher_spec=spec)
        chain[k] = stage_student(run, spec, teacher, student_distill(run, spec, teacher, data, shared, arm, k,
                                                                     teacher_spec=spec), arm=arm, generation=k,
                                 teacher_spec=spec)
    return chain
