"""Resuming a sweep or a replicated run in its own directory: ``python -m poison.run CONFIG --resume SWEEP_DIR``.

A replicated experiment is many runs; a session (or a machine, or a stage cache) may end before all of them have.
Each point of a sweep writes its own run directory (``NN-label``) inside the sweep directory, so the points that
completed are kept results, even where the stage cache that made them is gone. Resuming keeps every point whose run
directory says ``complete``, holds its ``metrics.json`` and was made from the same resolved config as the point would
be now (compared field by field, so a point made on a machine with another dtype, another commit's defaults or
other ``--set`` values is not silently pooled with new ones: that is an error naming the point and the field), and
runs the others into their own folders. The pooled tables are then written over every point, old and new.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import yaml

from poison.config import load_config, resolved_dict
from poison.ground.core.errors import ConfigError
from poison.launchers import PointJob


#: where a run keeps its files, not what it computes: a sweep archived or moved to another folder resumes
WHERE = {"runtime.runs_dir", "runtime.cache_dir", "runtime.models_dir"}


def _diff(a: Any, b: Any, path: str = "") -> Iterator[str]:
    """Dotted paths where two resolved configs differ. A field the old config does not have at all was added to the
    schema since (new fields default to the old behaviour: a result that would change bumps a stage version, which
    the stage keys carry), so it is not a difference."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k in a and sub not in WHERE:
                yield from _diff(a[k], b.get(k), sub)
    elif a != b:
        yield f"{path} ({a!r} there, {b!r} now)"


def completed_points(config: str, jobs: list[PointJob]) -> dict[int, dict[str, Any]]:
    """``{job index: metrics}`` of the points whose run directory completed with the config the point has now.
    Raises ConfigError when a point's directory holds a run of another config."""
    done: dict[int, dict[str, Any]] = {}
    for job in jobs:
        rd = Path(job.run_dir)
        status, metrics, saved = rd / "status.json", rd / "metrics.json", rd / "config.yaml"
        if not (status.is_file() and metrics.is_file() and saved.is_file()):
            continue
        try:
            state = json.loads(status.read_text()).get("status")
            old = yaml.safe_load(saved.read_text())
            m = json.loads(metrics.read_text())
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise ConfigError(f"--resume: {rd}: cannot read its run files ({e}); move the folder away to rerun "
                              "that point") from None
        if state != "complete":
            continue
        now = resolved_dict(load_config(config, job.sets))
        diffs = list(_diff(old, now))
        if diffs:
            raise ConfigError(f"--resume: point {job.index + 1} ({job.label}) in {rd} was made from another config: "
                              f"{'; '.join(diffs[:3])}{' …' if len(diffs) > 3 else ''}. Resume with the same config "
                              "and --set values on a machine of the same dtype, or start a new sweep")
        done[job.index] = m
    return done


def resume_dir(path: str | Path) -> Path:
    """The sweep directory to resume into (it must exist and be a sweep's)."""
    d = Path(path)
    if not d.is_dir():
        raise ConfigError(f"--resume: {d} is not a directory")
    if not (d / "sweep.json").is_file() and not any(d.glob("[0-9][0-9]-*")):
        raise ConfigError(f"--resume: {d} holds no sweep (no sweep.json and no point folders NN-label)")
    return d.resolve()
