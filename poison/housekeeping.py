"""Before a run starts: the folders it writes are usable, ``--force`` names real stages, and what a killed run left
behind is cleaned up (only the project's own leftovers: ``.tmp-*`` artifacts and run-directory files of dead
processes, ``vllm-jobs-<pid>-*`` worker folders, local judge servers whose run is gone, and ``status.json`` files
that still say ``running`` for a process that no longer exists, which become ``interrupted``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Optional

from poison.ground.core.errors import ConfigError
from poison.ground.core.io import atomic_write_json, sweep_stale_tmp
from poison.ground.core.procs import alive, reap_orphans
from poison.ground.engines.generate import sweep_worker_tmp
from poison.ground.results.model_id import stage_of
from poison.stages import all_stages

log = logging.getLogger("poison")


def usable_dir(path: Path, field: str) -> Path:
    """``path`` as a folder that exists or can be created (ConfigError naming ``field`` otherwise)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{field}: {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{field}: cannot create {path} ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{field}: {path} is not writable")
    return path


def check_dirs(cfg, run_dir: Optional[str]) -> None:
    usable_dir(Path(cfg.runtime.cache_dir), "runtime.cache_dir")
    if cfg.runtime.models_dir:
        usable_dir(Path(cfg.runtime.models_dir), "runtime.models_dir")
    if run_dir:
        usable_dir(Path(run_dir), "--run-dir")
    else:
        usable_dir(Path(cfg.runtime.runs_dir), "runtime.runs_dir")


def check_force(force: Iterable[str]) -> None:
    """Each ``--force`` value is a stage name or ``stage:label``."""
    for f in force:
        if stage_of(f) not in all_stages():
            raise ConfigError(f"--force {f}: unknown stage {stage_of(f)!r}; stages: "
                              f"{', '.join(all_stages())} (or STAGE:LABEL, e.g. eval:teacher)")


def mark_interrupted(runs_dir: Path) -> int:
    """``status.json`` files of run directories (and sweep points) that say running for a process that is gone."""
    n = 0
    for status in list(runs_dir.glob("*/status.json")) + list(runs_dir.glob("*/*/status.json")):
        try:
            st = json.loads(status.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(st, dict) and st.get("status") == "running" and not alive(st.get("pid"),
                                                                                st.get("pid_start")):
            atomic_write_json(status, {**st, "status": "interrupted",
                                       "error": "the run's process is gone (killed?) before it finished"})
            n += 1
    return n


def clean_leftovers(cfg) -> None:
    """Remove what killed runs of this cache and runs folder left (logged)."""
    cache, runs = Path(cfg.runtime.cache_dir).expanduser(), Path(cfg.runtime.runs_dir).expanduser()
    n = sweep_stale_tmp(cache)
    if n:
        log.info("removed %d unfinished artifact(s) left by a killed run", n)
    reaped = reap_orphans(cache / "procs")
    if reaped:
        log.info("stopped %s left running by a killed run", ", ".join(reaped))
    w = sweep_worker_tmp()
    if w:
        log.info("removed %d vLLM worker folder(s) of killed runs", w)
    if runs.is_dir():
        t = sum(sweep_stale_tmp(d) for d in runs.iterdir() if d.is_dir())
        i = mark_interrupted(runs)
        if t or i:
            log.info("runs folder: removed %d unfinished file(s), marked %d run(s) interrupted", t, i)
