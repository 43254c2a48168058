"""The stages of a run, each a pure function of its config slice and upstream artifacts, all through one protocol.

    protocol    StageCache (keys, markers, --force, stages.json) and StageRecord
    data        data (clean rows with references) and trusted (the defender's clean samples)
    training    poison, teacher, baseline (clean control), distill_data (teacher answers), student
    evaluation  eval (every model answers the eval prompts) and judge (the LLM judge's second verdict)
    defense     defense stages (score, flag, remove) and the defended branch of a run
    branch      one arm's chain (teacher -> distillation data -> students -> later generations), run the same way for
                the main, control and defended arms and the cascade
    inject      the adversary's act: turn N clean training rows into poisoned ones

Every stage function takes a :class:`Run` first: the run's config, context, stage cache and bias type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from poison.ground.engines.context import RunContext
from poison.schema import RunConfig
from poison.stages.protocol import StageCache


@dataclass
class Run:
    """What every stage works with: the resolved config, the run context, the stage cache, the bias type."""

    cfg: RunConfig
    ctx: RunContext
    cache: StageCache
    bias: Any
    #: the clean control's stage (the teacher's fine-tune on the clean set) when a student's method needs it
    clean_control: Any = None
