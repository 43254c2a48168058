"""The stages of a run, each a pure function of its config slice and upstream artifacts, all through one protocol.

    protocol    StageCache (keys, markers, --force, stages.json) and StageRecord
    data        data (clean rows with references) and trusted (the defender's clean samples)
    training    poison, teacher, baseline (clean control), distill_data (teacher answers), student
    evaluation  eval (every model answers the eval prompts) and judge (the LLM judge's second verdict)
    defense     defense stages (score, flag, remove) and the defended branch of a run
    branch      one arm's chain (teacher -> distillation data -> students -> later generations), run the same way for
                the main, control and defended arms and the cascade
    inject      the adversary's act: turn N clean training rows into poisoned ones

Each stage module declares its stages beside their code (``TEACHER = stage("teacher", 1, inputs=(...), ...)``:
name, version, the inputs its key must hold, what it makes, why its version was bumped); ``all_stages()`` lists
them all (the CLI's ``--force`` choices, the stage reference in docs/concepts.md).

Every stage function takes a :class:`Run` first: the run's config, context, stage cache and bias type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from poison.ground.engines.context import RunContext
from poison.schema import RunConfig
from poison.stages.protocol import STAGES, StageCache, StageSpec


@dataclass
class Run:
    """What every stage works with: the resolved config, the run context, the stage cache, the bias type."""

    cfg: RunConfig
    ctx: RunContext
    cache: StageCache
    bias: Any
    #: the clean control's stage (the teacher's fine-tune on the clean set) when a student's method needs it
    clean_control: Any = None


def all_stages() -> dict[str, StageSpec]:
    """Every declared stage by name, in the order a run meets them (imports every stage module first)."""
    from poison.stages import audit, data, defense, evaluation, probe, training  # noqa: F401  (they declare)

    order = ["data", "trusted", "poison", "defense", "teacher", "baseline", "distill_data", "student", "eval",
             "judge", "samples", "probe", "audit"]
    return {n: STAGES[n] for n in sorted(STAGES, key=lambda n: order.index(n) if n in order else len(order))}
