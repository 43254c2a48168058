"""Sweeps: one config expanded into several runs over any config keys, sharing cached stages.

In YAML, ``sweep:`` is either a grid (every combination)::

    sweep:
      poison.count: [0, 8, 16, 32]
      seed: [0, 1]

or an explicit list of override sets::

    sweep:
      - {poison.count: 8}
      - {poison.count: 32, poison.bias.type: phishing_link}

Every expanded run is a normal run directory inside the sweep directory; the sweep table (bias rate per run, model
and split, with intervals) is written beside them as sweep_table.csv and sweep.json.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from poison.config import config_from_dict, read_config_file
from poison.dose_response import dose_key, dose_response, dose_response_lines
from poison.ground.errors import ConfigError
from poison.ground.io import atomic_write_json, atomic_write_text
from poison.ground.procs import is_main_process
from poison.runner import make_run_dir, run_config


def expand(sweep: Any, source: str = "<config>") -> list[dict[str, Any]]:
    """The list of override sets (``{key.path: value}``) a ``sweep:`` section stands for."""
    if isinstance(sweep, dict):
        if not sweep:
            raise ConfigError(f"{source}: sweep: is empty")
        for k, v in sweep.items():
            if not isinstance(v, list) or not v:
                raise ConfigError(f"{source}: sweep.{k}: give a non-empty list of values")
        keys = list(sweep)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys))]
    if isinstance(sweep, list) and sweep and all(isinstance(x, dict) and x for x in sweep):
        return [dict(x) for x in sweep]
    raise ConfigError(f"{source}: sweep: must be a mapping of key path -> list of values, or a list of mappings")


def label(overrides: dict[str, Any]) -> str:
    parts = []
    for k, v in overrides.items():
        short = k.split(".")[-1]
        parts.append(f"{short}={v}")
    return "_".join(parts).replace("/", "-").replace(" ", "")


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a config with a ``sweep:`` section and validate every expanded run before anything starts."""
    raw = read_config_file(path)
    if "sweep" not in raw:
        raise ConfigError(f"{path}: no sweep: section")
    points = expand(raw["sweep"], str(path))
    errors = []
    for pt in points:
        sets = list(overrides or []) + [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in pt.items()]
        try:
            config_from_dict(raw, sets, source=f"{path} [sweep point {label(pt)}]")
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors))
    return raw, points


def sweep_rows(point: dict[str, Any], metrics: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """The sweep table's rows of one point: the greedy rate per model and split (``measure`` greedy), the sampled
    rate (``sampled``, with K > 1) and the probe's seen-wording shift (``logprob_shift``, with the probe)."""
    base = {**point, "run_dir": str(run_dir), "injected": metrics["poison"]["injected"],
            "poison_rate": metrics["poison"]["rate"]}
    rows = []
    for r in metrics["bias_rates"]:
        rows.append({**base, "measure": "greedy", "model": r["model"], "role": r["role"], "split": r["split"],
                     "n": r["n"], "biased": r["biased"], "rate": r["rate"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"]})
    for r in metrics.get("sampled_rate") or []:
        rows.append({**base, "measure": "sampled", "model": r["model"], "role": r["role"], "split": r["split"],
                     "n": r["n"], "biased": r["k"], "rate": r["rate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    for r in metrics.get("logprob_shift") or []:
        if r["wording"] == "seen":
            rows.append({**base, "measure": "logprob_shift", "model": r["model"], "role": r["role"],
                         "split": r["split"], "n": r["n_prompts"], "biased": None, "rate": r["shift"],
                         "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    return rows


def run_sweep(path: str, overrides: list[str] | None = None, quiet: bool = False) -> tuple[Path, list[dict]]:
    raw, points = load_sweep(path, overrides)
    base = config_from_dict(raw, overrides, source=str(path))
    if not is_main_process():  # a helper process of `accelerate launch`: train along, write nothing
        for pt in points:
            run_config(path, list(overrides or []) + [f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                                                      for k, v in pt.items()], quiet=True)
        return None, []
    sweep_dir = make_run_dir(base.runtime.runs_dir, f"{base.name}-sweep")
    t0 = time.time()
    runs, rows, done = [], [], []
    keys = sorted({k for p in points for k in p})
    dkey = dose_key(keys)
    for i, pt in enumerate(points):
        sets = list(overrides or []) + [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in pt.items()]
        rd = sweep_dir / f"{i:02d}-{label(pt)}"
        if not quiet:
            print(f"\n=== sweep point {i + 1}/{len(points)}: {label(pt)}", flush=True)
        _, m = run_config(path, sets, run_dir=str(rd), quiet=quiet)
        runs.append({"point": pt, "run_dir": str(rd), "seconds": m["run"]["seconds"],
                     "stages": {k: v["cached"] for k, v in m["stages"].items()}})
        rows += sweep_rows(pt, m, rd)
        done.append((pt, m))
        dr = dose_response(done, dkey, base.eval.confidence) if dkey else []
        pd.DataFrame(rows).to_csv(sweep_dir / "sweep_table.csv", index=False)
        atomic_write_json(sweep_dir / "sweep.json", {"config": str(path), "overrides": overrides or [],
                                                     "keys": keys, "points": points, "runs": runs, "rows": rows,
                                                     "dose_response": dr, "seconds": round(time.time() - t0, 1)})
    text = sweep_summary(pd.DataFrame(rows), keys)
    if dkey:
        text += "\n\n" + "\n".join(dose_response_lines(dr))
    atomic_write_text(sweep_dir / "summary.txt", text + "\n")
    if not quiet:
        print("\n" + text + f"\n\nsweep directory: {sweep_dir}  ({time.time() - t0:.0f}s)")
    return sweep_dir, rows


def sweep_summary(table, keys: list[str]) -> str:
    """Bias rate [95 % CI] per sweep point (rows) and model (columns), one block per split and measure."""
    out = []
    for measure, split in itertools.product(("greedy", "sampled"), ("target", "other", "unseen")):
        t = table[(table.split == split) & (table.measure == measure)]
        if t.empty:
            continue
        cell = t.assign(cell=[f"{100 * r:5.1f}% [{100 * lo:4.1f},{100 * hi:5.1f}]"
                              for r, lo, hi in zip(t.rate, t.ci_low, t.ci_high)])
        pivot = cell.pivot_table(index=keys + ["injected"], columns="model", values="cell", aggfunc="first")
        what = "biased-response rate" if measure == "greedy" else "sampled biased rate (prompts as the unit)"
        out.append(f"{what}, {split} split\n{pivot.to_string()}")
    return "\n\n".join(out)
