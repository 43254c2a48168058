"""metrics.json's likelihood probe (log-probabilities, shifts, the measured null), the cascade and the claims.
Part of the ground layer."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from poison.ground.results.base import Ratio, Section, Shift


class Logprob(Section):
    """Mean per-token log-probability of the bias type's probe texts of one wording."""

    model: str
    role: Optional[str] = None
    split: str
    wording: str = Field(description="seen | unseen | concept | gate")
    logprob: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    n_prompts: Optional[int] = None


class VsNull(Section):
    """A shift read against the measured null (clean vs clean at another seed)."""

    null: Optional[float] = None
    excess: Optional[float] = None
    ratio_to_null: Optional[float] = None
    p_value: Optional[float] = Field(None, description="null with one null draw")
    note: Optional[str] = None


class LogprobShift(Shift):
    """A model's log-probability minus its control's, paired over prompts."""

    model: str
    role: Optional[str] = None
    split: str
    wording: str
    control: Optional[str] = Field(None, description="the clean control or the student's clean twin")
    vs_null: Optional[VsNull] = None


class ProbeNull(Shift):
    """The null: the clean control against a second clean control at another training seed."""

    split: str
    wording: str
    between: list[str] = Field(default_factory=list, description="[null_control, control]")


class Probe(Section):
    """The probe's set-up (empty without eval.probe)."""

    control: Optional[str] = None
    texts: dict[str, list[str]] = Field(default_factory=dict, description="wording -> probe texts")
    unseen_in_poisoned_rows: Optional[int] = None


class CascadeRow(Section):
    """One generation of the cascade on one split (plus shift_WORDING_vs_twin|clean_control fields)."""

    generation: Optional[int] = None
    model: str
    split: str
    greedy: Optional[dict[str, Any]] = Field(None, description="its bias_rates row")
    greedy_vs_teacher: Optional[Ratio] = None
    sampled: Optional[dict[str, Any]] = None
    sampled_vs_teacher: Optional[Ratio] = None
    utility: list[dict[str, Any]] = Field(default_factory=list)


class Cascade(Section):
    """Students of students (cascade.generations > 1); empty otherwise."""

    chain: list[str] = Field(default_factory=list, description="models by generation")
    via: Optional[str] = None
    rows: list[CascadeRow] = Field(default_factory=list)


class Comparison(Section):
    """One claim: A minus B on one measure and split, paired over prompts."""

    comparison: str
    a: Optional[str] = None
    b: Optional[str] = None
    measure: Optional[str] = None
    split: Optional[str] = None
    test: Optional[str] = None
    n_prompts: Optional[int] = None
    estimate: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    p_value: Optional[float] = None
    p_holm: Optional[float] = None
    significant: Optional[bool] = None
    error: Optional[str] = Field(None, description="why the comparison could not be made")


class Claims(Section):
    """The config's primary comparison at alpha, the others Holm-corrected as one family."""

    primary: Optional[Comparison] = None
    others: list[Comparison] = Field(default_factory=list)
    alpha: Optional[float] = None
    correction: Optional[str] = None
    interval: Optional[str] = None
    power: Optional[str] = None
    replicates: Optional[int] = None
    note: Optional[str] = None
