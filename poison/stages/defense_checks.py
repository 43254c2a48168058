"""Checks that keep a defense's detector figures unconfounded, run before anything is scored.

* :func:`check_disjoint_scoring`: the samples a defense is fitted on and those that set its threshold (the trusted
  clean set's two halves) share no id and no prompt with each other or with any scored sample; a DataError says
  which otherwise (the stage stops: a figure measured on what was fitted or calibrated on is optimistic).
* :func:`writer_reference_checks`: the reference model of a likelihood defense (``reference_model``, e.g.
  perplexity's ``model``) is never a model that wrote the clean responses scored at a place (train: the data
  generator, when it wrote any of the training set's responses; distill places: the teacher's base model, whose
  fine-tune wrote the answers), since those rows then score low by construction. A ConfigError names both models,
  unless the defense's ``allow_writer_reference`` is set: then a warning names both, logged and kept in metrics.json.

Also what the defense stage and the adaptive writer (``poison.stages.adaptive``) share: the trusted clean set's
fit / calibration halves (:func:`trusted_clean`) and a defense's part of a stage key (:func:`defense_key`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Optional

from defenses.base import reference_model
from poison.ground.core.artifacts import read_parquet
from poison.ground.core.errors import ConfigError, DataError
from poison.stages import Run
from poison.stages.protocol import StageRecord

log = logging.getLogger("poison")


def check_disjoint_scoring(place: str, scored: list[dict], fit: list[dict], calib: list[dict]) -> None:
    """DataError when the fit set, the calibration set and the scored set share an id or a prompt (any two)."""
    sets = {"fitted (trusted fit half)": fit, "calibration (trusted threshold half)": calib,
            f"scored ({place} place)": scored}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for key in ("id", "prompt"):
                both = {str(s[key]) for s in sets[a]} & {str(s[key]) for s in sets[b]}
                if both:
                    raise DataError(f"defense at the {place} place: {len(both)} {key}(s) in both the {a} and the {b} "
                                    f"samples, e.g. {next(iter(sorted(both)))[:80]!r}; a defense must never be scored "
                                    f"on what it was fitted or calibrated on")


def _same_model(run: Run, a: str, b: str, b_field: str, b_revision: Optional[str]) -> bool:
    if a == b:
        return True
    try:
        pa = run.ctx.model(a, "defense reference model")
        pb = run.ctx.model(b, b_field, b_revision)
    except Exception:  # an unresolvable spec (offline, check mode) is compared by its text only
        return False
    return Path(pa).resolve() == Path(pb).resolve()


def clean_writers(run: Run, data: StageRecord, place: str) -> list[tuple[str, str, Optional[str], str]]:
    """(who, model spec, revision, config field) of each model that wrote clean responses scored at ``place``."""
    cfg = run.cfg
    if place == "train":
        rows = read_parquet(Path(data.path) / "rows.parquet")
        gen = cfg.data.generator
        if gen.endpoint or not bool(rows[rows.split == "train"].generated.any()):
            return [] if not gen.endpoint else [("the data generator (endpoint)", gen.endpoint_model or gen.model,
                                                 None, "data.generator.endpoint_model")]
        return [("the data generator", gen.model, gen.revision, "data.generator.model")]
    return [("the teacher's base model (its fine-tune wrote the answers)", cfg.teacher.model,
             getattr(cfg.teacher, "revision", None), "teacher.model")]


def writer_reference_checks(run: Run, data: StageRecord, places: list[str]) -> list[str]:
    """ConfigError when a likelihood defense's reference model wrote the clean responses of a place it scores and the
    config does not allow it; the warnings (one per defense and place) where it does."""
    warnings = []
    for i, spec in enumerate(run.cfg.defense.defenses):
        path = f"defense.defenses.{i}"
        ref = reference_model(spec.type, spec.args, f"{path}.args", run.ctx)
        if ref is None:
            continue
        for place in places:
            for who, model, revision, field in clean_writers(run, data, place):
                if not _same_model(run, ref, model, field, revision):
                    continue
                what = (f"the {spec.type} reference model {ref!r} is {who} {model!r} ({field}), which wrote the clean "
                        f"responses scored at the {place} place: clean rows score low by construction")
                if not spec.allow_writer_reference:
                    raise ConfigError(f"{path}: {what}; give the defense another reference model, or set "
                                      f"{path}.allow_writer_reference: true to score anyway (with a warning)")
                warnings.append(f"{path}: {what} (allowed by allow_writer_reference; its figures there are "
                                f"confounded)")
                log.warning("%s", warnings[-1])
    return warnings


def trusted_clean(trusted: StageRecord) -> tuple[list[dict], list[dict]]:
    """(fit half, calibration half) of the defender's clean samples (the ``trusted`` stage: held-out prompts with
    clean answers), split by a hash of the id."""
    df = read_parquet(Path(trusted.path) / "trusted.parquet")
    fit, calib = [], []
    for r in df.itertuples():
        s = {"id": str(r.id), "prompt": r.prompt, "response": str(r.reference), "task": r.task}
        (fit if int(hashlib.sha256(s["id"].encode()).hexdigest(), 16) % 2 == 0 else calib).append(s)
    return fit, calib


def defense_key(spec: Any) -> dict[str, Any]:
    """A defense's part of its stage key: its settings, and its name when it has one (the artifact's reports and
    flags carry it; an unnamed defense keeps the key it had before names existed)."""
    return spec.model_dump(mode="json", exclude={"allow_writer_reference"} | ({"name"} if spec.name is None else set()))
