"""metrics.json's defenses (data filters) and model audits. Part of the ground layer."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from poison.ground.results.base import Section


class DefenseReport(Section):
    """One defense at one place: detection figures against the ground truth."""

    defense: str
    place: str = Field(description="train | distill | distill_after_train")
    auroc: Optional[float] = None
    tpr_at_1pct_fpr: Optional[float] = None
    precision: Optional[float] = None
    recall: Optional[float] = None
    threshold: Optional[float] = None
    threshold_source: Optional[str] = None
    clean_fpr: Optional[float] = None
    n: int
    n_poisoned: Optional[int] = None
    n_flagged: int
    seconds: Optional[float] = None
    info: dict[str, Any] = Field(default_factory=dict)
    record: dict[str, Any] = Field(default_factory=dict, description="the plugin record")


class DefenseRemoval(Section):
    """What the filter (union of the defenses) removed at one place."""

    defense: str
    place: str
    n: int
    n_poisoned: Optional[int] = None
    n_flagged: int
    precision: Optional[float] = None
    recall: Optional[float] = None
    poison_left: Optional[int] = None


class DefenseDetection(Section):
    """One defense at one place and scope (all scored rows, or poisoned vs clean rows of one task): the AUROC and, at
    each FPR budget, the threshold set on the never-scored calibration split with the TPR and the realized FPR it
    gives on the scored rows (bootstrap intervals; per budget b, fields ``threshold_b``, ``tpr_b``, ``fpr_b`` and
    their ``_low``/``_high``, b in 1pct, 5pct)."""

    defense: str
    place: str
    instance: int = Field(0, description="the defense's index in defense.defenses")
    scope: str = Field(description="all | task")
    task: Optional[str] = None
    target: bool = Field(False, description="the scope is the target task")
    n: int = 0
    n_poisoned: int = 0
    n_clean: int = 0
    n_calib: int = 0
    auroc: Optional[float] = None
    auroc_low: Optional[float] = None
    auroc_high: Optional[float] = None
    note: Optional[str] = Field(None, description="why a figure is undefined in this scope")
    confidence: Optional[float] = None
    method: Optional[str] = None
    auroc_nonadaptive: Optional[float] = Field(None, description="poison.writer adaptive, train place: the AUROC "
                                               "against the poison the non-adaptive writer would have written "
                                               "(also tpr_<b>_nonadaptive)")
    auroc_nonadaptive_low: Optional[float] = None
    auroc_nonadaptive_high: Optional[float] = None
    auroc_drop: Optional[float] = Field(None, description="auroc_nonadaptive - auroc: what adapting to the defenses "
                                        "took off the AUROC (paired bootstrap interval over rows)")
    auroc_drop_low: Optional[float] = None
    auroc_drop_high: Optional[float] = None


class AuditRow(Section):
    """One audit of one model."""

    audit: str
    model: str
    role: Optional[str] = None
    generation: Optional[int] = None
    identity: Optional[str] = None
    score: Optional[float] = None
    poisoned: Optional[bool] = None
    hit: Optional[bool] = Field(None, description="the injected content among the top-10 strings")
    top: list[dict[str, Any]] = Field(default_factory=list, description="[{string, score, count}]")
    info: dict[str, Any] = Field(default_factory=dict)


class AuditDetector(Section):
    """One audit type as a detector of poisoned models."""

    audit: str
    n: int
    n_poisoned: int
    auroc: Optional[float] = None
    hits: Optional[int] = None
    hit_rate: Optional[float] = None


class ArmModel(Section):
    """One model of a defense's arm: its greedy biased rate on the target split, with its interval, and its utility
    (mean over tasks, weighted by prompts)."""

    model: str
    split: str
    rate: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    k: Optional[int] = None
    n: Optional[int] = None
    utility: Optional[float] = None


class DefenseDownstream(Section):
    """What one defense buys downstream (``defense.per_defense``): the rows it removed at the train place and the
    bias and utility of the teacher and students trained without them (``none``: the undefended arm; ``defended``:
    the filter's arm)."""

    defense: str = Field(description="a defense's label, 'none' or 'defended'")
    kind: str = Field(description="defense | undefended | filter <defense.filter>")
    n: int = Field(description="rows scored at the train place")
    n_poisoned: int
    n_clean: int
    poison_removed: int
    clean_removed: int
    poison_recall: Optional[float] = Field(None, description="poison_removed / n_poisoned")
    clean_lost: Optional[float] = Field(None, description="clean_removed / n_clean")
    teacher: Optional[ArmModel] = None
    students: dict[str, ArmModel] = Field(default_factory=dict, description="student name -> its figures")

