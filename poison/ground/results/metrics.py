"""The whole of metrics.json as one typed model (``Metrics``), its schema version, and the two ways to validate it:
``check_metrics`` (strict: what the writer checks before it writes) and ``read_metrics`` (lenient: what readers use
on run directories of any age). Part of the ground layer.

Versions: 1 was written from the first commit to 2026-12-05 while sections were added one by one (every section a v1
file lacks reads as its default: an empty list, an empty object, null); 2 is the same content with the version made
real. A file of a newer version than this reader's reads leniently as well: unknown fields are kept
(``model_extra``), and the problems say that it is newer.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from poison.ground.results import registry
from poison.ground.results.base import Section
from poison.ground.results.defenses import (AuditDetector, AuditRow, DefenseDetection, DefenseDownstream,
                                            DefenseRemoval, DefenseReport)
from poison.ground.results.probe import Cascade, Claims, Logprob, LogprobShift, Probe, ProbeNull
from poison.ground.results.rates import (Amplification, BiasRate, CutOff, Degeneration, DetectorAccuracy, DistillData,
                                         Judge, Rationales, SampledAmplification, SampledRate, TaskRate, Utility)
from poison.ground.results.run import DataInfo, ModelInfo, PoisonInfo, RunInfo, StageRecord

METRICS_SCHEMA_VERSION = 2


class Metrics(Section):
    """metrics.json. Attribute access is typed (``m.run.name``, ``m.bias_rates[0].rate``, and the registered
    sections: ``m.replicates.n``); item access reads the file's own JSON (``m["run"]["name"]``), as code written for
    the plain dict did."""

    schema_version: int = Field(1, description="this file's schema version (absent or 1: written before 2026-12-05)")
    code_version: Optional[str] = Field(None, description="the package version that wrote it")
    run: Optional[RunInfo] = Field(None, description="what ran, where and how")
    data: Optional[DataInfo] = Field(None, description="the data stage: rows and generated references")
    poison: Optional[PoisonInfo] = Field(None, description="what the poison stage injected")
    models: dict[str, ModelInfo] = Field(default_factory=dict, description="name -> every evaluated model")
    claims: Optional[Claims] = Field(None, description="the config's primary comparison and the others (claims.*)")
    bias_rates: list[BiasRate] = Field(default_factory=list, description="greedy biased rate per model and split")
    bias_rates_by_task: list[TaskRate] = Field(default_factory=list, description="the same per model and task")
    amplification: list[Amplification] = Field(default_factory=list, description="student / teacher greedy rate")
    utility: list[Utility] = Field(default_factory=list, description="utility per model and task")
    degeneration: list[Degeneration] = Field(default_factory=list, description="looping answers, bias mentions")
    cut_off: list[CutOff] = Field(default_factory=list, description="answers stopped at max_new_tokens")
    distill_data: Optional[DistillData] = Field(None, description="the teacher answers used for distillation")
    sampled_rate: list[SampledRate] = Field(default_factory=list, description="eval.samples_per_prompt > 1")
    sampled_amplification: list[SampledAmplification] = Field(default_factory=list,
                                                              description="student / teacher sampled rate")
    detector_accuracy: Optional[DetectorAccuracy] = Field(None, description="the rule detector's measured error")
    logprob: list[Logprob] = Field(default_factory=list, description="eval.probe: log-probability of the probe texts")
    logprob_shift: list[LogprobShift] = Field(default_factory=list, description="eval.probe: shift to the control")
    probe_null: list[ProbeNull] = Field(default_factory=list, description="eval.probe_null: the measured null")
    cascade: Optional[Cascade] = Field(None, description="cascade.generations > 1 (empty otherwise)")
    audit: list[AuditRow] = Field(default_factory=list, description="audit.audits: one row per model and audit")
    audit_detector: list[AuditDetector] = Field(default_factory=list, description="each audit as a detector")
    probe: Optional[Probe] = Field(None, description="the probe's set-up (empty without eval.probe)")
    rationales: Rationales = Field(default_factory=dict, description="student -> its method's groups of texts "
                                                                     "(QCRD: teacher_samples, chosen_positives, ...)")
    defenses: list[DefenseReport] = Field(default_factory=list, description="defense.defenses, per place")
    defense_removal: list[DefenseRemoval] = Field(default_factory=list, description="what the filter removed")
    defense_detection: list[DefenseDetection] = Field(default_factory=list, description="each defense's detector "
                                                      "figures per place, overall and within each poisoned task")
    defense_downstream: list[DefenseDownstream] = Field(
        default_factory=list, description="defense.per_defense: each defense's removal at the train place and the "
                                          "bias and utility of the teacher and students trained without it")
    defense_warnings: list[str] = Field(default_factory=list, description="a likelihood defense whose reference "
                                                                          "model wrote the clean rows it scores")
    judge: list[Judge] = Field(default_factory=list, description="judge.evaluate: LLM judge vs rule detector")
    stages: dict[str, StageRecord] = Field(default_factory=dict, description="stage -> cache key, hit, seconds")

    _raw: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _registered(self) -> "Metrics":
        """The registered sections (poison.ground.results.sections) typed by their own models; one that does not fit
        stays as read (``read_metrics`` names it and leaves it out)."""
        extra = self.__pydantic_extra__ or {}
        for spec in registry.sections():
            if spec.name in extra and isinstance(extra[spec.name], dict):
                try:
                    extra[spec.name] = spec.model.model_validate(extra[spec.name])
                except ValidationError:
                    pass
        return self

    def __getattr__(self, name: str) -> Any:
        """A registered section the file lacks (an older run) reads as None, as the model's own sections do."""
        if not name.startswith("_") and registry.section(name) is not None:
            return (self.__pydantic_extra__ or {}).get(name)
        return super().__getattr__(name)  # type: ignore[misc]  # pydantic defines it outside TYPE_CHECKING

    # item access: the file's own JSON, for code written against the plain dict
    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._raw.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def keys(self):
        return self._raw.keys()

    def items(self):
        return self._raw.items()

    @property
    def raw(self) -> dict:
        """The file's JSON (as read; sections a lenient read dropped are still in it)."""
        return self._raw

    def list_sections(self) -> Iterator[str]:
        """The sections that are lists of rows (the model's and any further ones the file has)."""
        yield from (k for k, v in self._raw.items() if isinstance(v, list))


LIST_SECTIONS = tuple(k for k, f in Metrics.model_fields.items() if getattr(f.annotation, "__origin__", None) is list)


def _from(raw: dict, data: dict) -> Metrics:
    m = Metrics.model_validate(data)
    m._raw = raw
    return m


def _where(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def check_metrics(raw: dict) -> list[str]:
    """Strict: every problem of a metrics.json the writer is about to write (a section missing, one the model does not
    know, a field of the wrong type). Empty when it matches the models."""
    known = [*Metrics.model_fields, *(s.name for s in registry.sections())]
    problems = [f"no section {k!r}" for k in known if k not in raw]
    problems += [f"section {k!r} has no model (poison.ground.results)" for k in raw if k not in known]
    try:
        Metrics.model_validate(raw)
    except ValidationError as e:
        problems += [f"{_where(err['loc'])}: {err['msg']}" for err in e.errors()]
    for spec in registry.sections():
        try:
            if spec.name in raw:
                spec.model.model_validate(raw[spec.name])
        except ValidationError as e:
            problems += [f"{_where((spec.name, *err['loc']))}: {err['msg']}" for err in e.errors()]
    return problems


def read_metrics(raw: dict, problems: Optional[list[str]] = None) -> Metrics:
    """Lenient: a metrics.json of any version as ``Metrics``. A row that does not fit its model is skipped and an
    object section that does not fit reads as its default, each named in ``problems``; nothing raises."""
    problems = problems if problems is not None else []
    version = raw.get("schema_version", 1)
    if isinstance(version, int) and version > METRICS_SCHEMA_VERSION:
        problems.append(f"metrics.json: schema_version {version} is newer than this reader's "
                        f"({METRICS_SCHEMA_VERSION}); fields it does not know are kept as they are")
    data = dict(raw)
    for spec in registry.sections():  # a registered section that does not fit its model is left out
        v = raw.get(spec.name)
        if v is None or (not v and isinstance(v, (dict, list))):
            continue
        try:
            spec.model.model_validate(v)
        except ValidationError as e:
            err = e.errors()[0]
            problems.append(f"metrics.json: {spec.name} unreadable, left out ({_where((spec.name, *err['loc']))}: "
                            f"{err['msg']})")
            data.pop(spec.name)
    try:
        return _from(raw, data)
    except ValidationError as e:
        bad = {err["loc"][:2] if err["loc"][0] in LIST_SECTIONS and len(err["loc"]) > 1 else err["loc"][:1]: err
               for err in e.errors()}
    for loc, err in bad.items():
        section = loc[0]
        if len(loc) == 2 and isinstance(loc[1], int):
            problems.append(f"metrics.json: {section}[{loc[1]}] skipped ({_where(err['loc'])}: {err['msg']})")
        else:
            problems.append(f"metrics.json: {section} unreadable, read as empty ({_where(err['loc'])}: {err['msg']})")
            data.pop(section, None)
    for section in {loc[0] for loc in bad if len(loc) == 2}:
        skip = {loc[1] for loc in bad if loc[0] == section and len(loc) == 2}
        rows = raw.get(section)
        data[section] = [r for i, r in enumerate(rows) if i not in skip] if isinstance(rows, list) else []
    try:
        return _from(raw, data)
    except ValidationError as e:  # what is left cannot fail the same way: a last resort, never expected
        problems.append(f"metrics.json: unreadable as a whole ({e.error_count()} problems)")
        return _from(raw, {})
