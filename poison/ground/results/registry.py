"""The section registry: a section of metrics.json registered with its model, the function that computes it and its
summary lines, so that a new metric is one file (``poison/ground/results/sections/``; docs/results-schema.md, "Adding
a section"). The report computes every registered section after its own (``add_sections``), the summary prints
their lines (``section_lines``), ``Metrics`` reads them typed, the writer checks them and the reference page lists
them. Part of the ground layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from pydantic import BaseModel

PLACES = ("head", "tail")


@dataclass(frozen=True)
class ReportInputs:
    """What the report hands to a section's compute function: the resolved config, the models (name -> entry), the
    scored greedy answers, the sampled answers and the probe table (pandas frames, empty when the run has none),
    the confidence level, the bootstrap resamples and the sections computed so far."""

    cfg: Any
    models: dict[str, dict]
    samples: Any
    drawn: Any
    probe: Any
    conf: float
    n_boot: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class SectionSpec:
    name: str
    model: type[BaseModel]
    compute: Callable[[ReportInputs], Any]
    summary: Optional[Callable[[dict[str, Any]], list[str]]]
    place: str
    after: Optional[str]
    description: str


_SECTIONS: dict[str, SectionSpec] = {}


def register_section(name: str, model: type[BaseModel], *, summary: Optional[Callable] = None, place: str = "tail",
                     after: Optional[str] = None, description: str = ""):
    """Decorate a section's compute function: ``@register_section("replicates", Replicates, summary=lines)``.
    ``after``: the section of metrics.json it follows (default: the end, before ``stages``); ``place``: its summary
    lines go at the head of the summary (under the poison line) or at its tail (after the other figures)."""
    if place not in PLACES:
        raise ValueError(f"place must be one of {PLACES}, not {place!r}")

    def deco(fn: Callable[[ReportInputs], Any]) -> Callable[[ReportInputs], Any]:
        if name in _SECTIONS and _SECTIONS[name].compute is not fn:
            raise ValueError(f"metrics.json section {name!r} is registered twice")
        _SECTIONS[name] = SectionSpec(name, model, fn, summary, place, after, description or (model.__doc__ or ""))
        return fn

    return deco


def sections() -> list[SectionSpec]:
    return list(_SECTIONS.values())


def section(name: str) -> Optional[SectionSpec]:
    return _SECTIONS.get(name)


def add_sections(metrics: dict[str, Any], inputs: ReportInputs) -> dict[str, Any]:
    """``metrics`` with every registered section computed and placed (after its ``after`` section, else before
    ``stages``, else at the end)."""
    out = dict(metrics)
    for spec in _SECTIONS.values():
        value = spec.compute(inputs)
        keys = [k for k in out if k != spec.name]
        at = (keys.index(spec.after) + 1 if spec.after in keys else
              keys.index("stages") if "stages" in keys else len(keys))
        out = {**{k: out[k] for k in keys[:at]}, spec.name: value, **{k: out[k] for k in keys[at:]}}
    return out


def section_lines(metrics: dict[str, Any], place: str) -> list[str]:
    """The summary lines of the registered sections printed at ``place`` (a section the file lacks prints none)."""
    out: list[str] = []
    for spec in _SECTIONS.values():
        if spec.place == place and spec.summary is not None and metrics.get(spec.name):
            out += spec.summary(metrics)
    return out
