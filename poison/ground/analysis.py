"""Analysing runs with code: ``poison.load_run(run_dir)`` reads a run directory back (metrics, config, status, every
metrics section and per-sample table as pandas frames) with the same safe readers the dashboard uses
(``poison.ground.rundir``). Part of the ground layer."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from poison.ground.rundir import _get, load_defense_scores, load_samples, read_parquet, read_yaml, run_state

TABLES = {"samples": "samples.parquet", "train_set": "train_set.parquet", "distill_set": "distill_set.parquet",
          "defense_scores": "defense_scores.parquet", "probe": "probe.parquet"}


class LoadedRun:
    """A run directory read back for analysis with code: ``metrics`` (the dict of metrics.json), ``config``,
    ``status``, ``problems``, every list section of metrics.json as a frame (``frame("bias_rates")``,
    ``frame("sampled_rate")``, ``frame("logprob_shift")``, ...), and the per-sample tables as pandas frames
    (``samples``, ``train_set``, ``distill_set``, ``defense_scores``, ``probe``: None when the run has none),
    read on first use with the same safe readers the dashboard uses."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        st = run_state(self.path)
        self.status: str = st["status"]
        self.metrics: dict | None = st["metrics"]
        self.problems: list[str] = st["problems"]
        self.config = st["config"]
        if self.config is None:
            self.config, _ = read_yaml(self.path / "config.yaml")
        self._tables: dict[str, pd.DataFrame | None] = {}

    def frame(self, section: str) -> pd.DataFrame:
        rows = _get(self.metrics, section)
        return pd.DataFrame(rows if isinstance(rows, list) else [])

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
