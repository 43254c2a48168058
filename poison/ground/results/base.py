"""The building blocks of metrics.json's sections: a lenient base model (fields a file has beyond the model are kept,
so an older reader reads a newer file) and the figures many sections share (a count with its rate, a mean, a ratio).
Part of the ground layer."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A part of metrics.json. Fields the model does not name are kept (``model_extra``), so a reader reads files
    written by a newer writer, and a field an older file lacks reads as its default."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class Rate(Section):
    """A biased count of n answers with its Wilson interval."""

    n: int = Field(description="answers")
    biased: int = Field(description="answers the rule detector finds biased")
    rate: Optional[float] = Field(None, description="biased / n (null when n is 0)")
    ci_low: Optional[float] = Field(None, description="lower end of the interval (eval.confidence, Wilson)")
    ci_high: Optional[float] = Field(None, description="upper end of the interval")


class Corrected(Section):
    """A rate corrected for the rule detector's measured error (Rogan-Gladen)."""

    rate: Optional[float] = Field(None, description="the corrected rate")
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    sensitivity: Optional[float] = Field(None, description="the detector's recall on the labelled set")
    specificity: Optional[float] = None
    n_labelled: Optional[int] = None
    matters: Optional[bool] = Field(None, description="the corrected value leaves the row's own interval")
    method: Optional[str] = None


class Share(Section):
    """k of n answers with a rate and an interval (bootstrap over prompts where answers are clustered)."""

    k: int
    n: int
    rate: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None


class Mean(Section):
    """A mean with its interval."""

    mean: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None


class Ratio(Section):
    """A ratio of two rates over the prompts both models answered, with a paired interval (null: unbounded)."""

    ratio: Optional[float] = Field(None, description="a / b (null when b is 0)")
    ci_low: Optional[float] = None
    ci_high: Optional[float] = Field(None, description="null: unbounded")
    n_prompts: Optional[int] = None
    method: Optional[str] = Field(None, description="paired_bootstrap | exact_bounds")


class Shift(Section):
    """A mean paired difference of log-probabilities with its bootstrap interval."""

    shift: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    n_prompts: Optional[int] = None


def extra_of(model: BaseModel) -> dict[str, Any]:
    """The fields a section had that its model does not name."""
    return dict(model.model_extra or {})
