"""metrics.json ``replicates``: which replicate this run is, and the summary's ``Evidence:`` line. A lone run's figures
rest on one training seed and one data draw, and its intervals cover prompts only (docs/evidence.md). One file: the
model, the function that computes the section and its summary lines. Part of the ground layer."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from poison.ground.results.base import Section
from poison.ground.results.registry import ReportInputs, register_section


class Replicates(Section):
    """Which replicate this run is."""

    n: int = Field(description="replicates of the sweep (1: a lone run)")
    index: int = 0
    vary: list[str] = Field(default_factory=list, description="what varies between replicates: train_seed, data_draw")
    note: str = ""


def replicate_note(cfg) -> dict[str, Any]:
    """Which replicate this run is; a lone run's figures rest on one training seed and one data draw."""
    r = cfg.replicates
    out = {"n": r.n, "index": r.index, "vary": list(r.vary)}
    if r.n == 1:
        out["note"] = "one training seed and one data draw; the intervals cover prompts only"
    else:
        out["note"] = (f"replicate {r.index} of {r.n}; this run's intervals cover prompts only, the pooled figures "
                       "are in the parent directory's sweep.json")
    return out


def evidence_lines(metrics: dict[str, Any]) -> list[str]:
    """What the figures below rest on: a single run says that its intervals cover only the eval prompts."""
    return [f"Evidence: {metrics['replicates']['note']}"]


@register_section("replicates", Replicates, summary=evidence_lines, place="head", after="probe_null",
                  description="which replicate this run is")
def compute(inputs: ReportInputs) -> dict[str, Any]:
    return replicate_note(inputs.cfg)
