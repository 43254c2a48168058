"""Analysing runs with code: ``poison.load_run(run_dir)`` reads a run directory back (metrics.json typed by
``poison.ground.results``, config, status, every metrics section and per-sample table as pandas frames) with the same
safe readers the dashboard uses (``poison.ground.results.rundir``). A path that is not a run directory, and a section
name that is no section of metrics.json, raise ``DataError`` naming the path or the valid names; a run still in progress
reads as such (status running, no metrics yet, every list section an empty frame). Part of the ground layer."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pandas as pd

from poison.ground.core.errors import DataError
from poison.ground.results import LIST_SECTIONS as RESULT_LIST_SECTIONS
from poison.ground.results import Metrics, read_metrics
from poison.ground.results.rundir import (RUN_MARKERS, SWEEP_MARKERS, _listing, load_defense_scores, load_samples,
                                          read_parquet, read_yaml, run_state, scan)

TABLES = {"samples": "samples.parquet", "train_set": "train_set.parquet", "distill_set": "distill_set.parquet",
          "defense_scores": "defense_scores.parquet", "probe": "probe.parquet"}
# metrics.json's sections that are lists of rows (docs/results-schema.md): frame() of one a run lacks (an older run,
# one still running) is an empty frame; a run's own further list sections are frames as well
LIST_SECTIONS = RESULT_LIST_SECTIONS


def check_run_dir(path: Path) -> None:
    """Raise ``DataError`` unless ``path`` is one run directory (holds status.json, metrics.json, config.yaml or
    stages.json, which a run writes as it starts): a missing path, a file, a sweep or a folder of runs says so."""
    if not path.exists():
        raise DataError(f"{path}: no such run directory")
    if not path.is_dir():
        raise DataError(f"{path}: not a directory; give a run directory (runs/<name>-<YYYYmmdd-HHMMSS>)")
    files = _listing(path)[0]
    if any(m in files for m in RUN_MARKERS):
        return
    runs = [e["rel"] for e in scan(path) if e["kind"] == "run"]
    some = ", ".join(runs[:5]) + (f" (and {len(runs) - 5} more)" if len(runs) > 5 else "")
    if any(m in files for m in SWEEP_MARKERS):
        raise DataError(f"{path}: a sweep directory, not one run; load one of its points"
                        + (f": {some}" if runs else " (none written yet)"))
    if runs:
        raise DataError(f"{path}: a folder of runs, not one run; load one of them: {some}")
    raise DataError(f"{path}: not a run directory (none of {', '.join(RUN_MARKERS)})")


class LoadedRun:
    """A run directory read back for analysis with code: ``metrics`` (metrics.json as the typed ``Metrics``:
    ``run.metrics.bias_rates[0].rate``, and item access to the file's JSON, ``run.metrics["run"]["name"]``), ``config``,
    ``status``, ``problems``, every list section of metrics.json as a frame (``frame("bias_rates")``,
    ``frame("sampled_rate")``, ``frame("logprob_shift")``, ...), and the per-sample tables as pandas frames
    (``samples``, ``train_set``, ``distill_set``, ``defense_scores``, ``probe``: None when the run has none),
    read on first use with the same safe readers the dashboard uses."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        check_run_dir(self.path)
        st = run_state(self.path)
        self.status: str = st["status"]
        self.problems: list[str] = st["problems"]
        self.metrics: Metrics | None = None if st["metrics"] is None else read_metrics(st["metrics"], self.problems)
        self.config = st["config"]
        if self.config is None:
            self.config, _ = read_yaml(self.path / "config.yaml")
        self._tables: dict[str, pd.DataFrame | None] = {}

    def frame(self, section: str) -> pd.DataFrame:
        """One list section of metrics.json as a frame (empty when the run has none of it yet). A name that is no
        list section raises ``DataError`` naming the valid ones."""
        metrics = self.metrics.raw if self.metrics is not None else {}
        rows = metrics.get(section)
        if isinstance(rows, list):
            return pd.DataFrame(rows)
        if section in LIST_SECTIONS:
            return pd.DataFrame([])
        if section in metrics:
            raise DataError(f"{self.path}/metrics.json: {section!r} is a {type(rows).__name__}, not a list of rows; "
                            f"read run.metrics[{section!r}]")
        names = sorted(set(LIST_SECTIONS) | {k for k, v in metrics.items() if isinstance(v, list)})
        close = difflib.get_close_matches(section, names, n=1)
        raise DataError(f"{section!r} is not a section of metrics.json"
                        + (f" (did you mean {close[0]!r}?)" if close else "") + "; its list sections: "
                        + ", ".join(names))

    def table(self, name: str) -> pd.DataFrame | None:
        if name not in self._tables:
            if name == "samples":
                df, _ = load_samples(self.path)
            elif name == "defense_scores":
                df, _ = load_defense_scores(self.path)
            else:
                df, _ = read_parquet(self.path / TABLES[name])
            self._tables[name] = df
        return self._tables[name]

    def __getattr__(self, name: str):
        if name in TABLES:
            return self.table(name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.path)!r}, status={self.status!r})"


def load_run(path: str | os.PathLike) -> LoadedRun:
    """Read a run directory: ``load_run("runs/targeted_ads-20261201-120000").frame("bias_rates")``."""
    return LoadedRun(path)
