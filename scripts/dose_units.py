"""Which dose unit predicts the teacher's shift: the poisoned count, or the poisoned share of the target task?

    .venv/bin/python scripts/dose_units.py SWEEP_DIR [SWEEP_DIR ...] [--model teacher] [--split target]
        [--wording seen] [--out docs/results/dose_units.md]

Reads every run of the given sweep directories (configs/claims/dose_units_share.yaml holds the count at 8 and moves
the share of the task; configs/claims/dose_units_size.yaml holds the shares and moves the count; both hold the share
of the whole set at 8/56 = 14 %, so the set share cannot explain a shift that varies between their points). Per run:
the count injected, the share of the target task's rows and of the set (metrics.json ``poison``), the model's probe
shift against the clean control (``logprob_shift``, the chosen split and wording) and its greedy biased rate. Fits
``shift ~ log(count) + log(task share)`` by least squares (statsmodels OLS, HC3 errors; each run is a point), and
each unit alone, and prints a Markdown table: a unit whose coefficient's interval excludes 0
in the joint fit predicts the shift beyond the other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

UNITS = {"count": "poisoned rows", "task_share": "share of the target task's rows", "set_share": "share of the set"}


def read_runs(sweep_dirs: list[Path], model: str, split: str, wording: str) -> pd.DataFrame:
    rows = []
    for sd in sweep_dirs:
        sweep = json.loads((sd / "sweep.json").read_text())
        for r in sweep.get("runs") or []:
            rd = Path(r["run_dir"]) if Path(r["run_dir"]).is_dir() else sd / Path(r["run_dir"]).name
            m = json.loads((rd / "metrics.json").read_text())
            p = m.get("poison") or {}
            shift = next((s["shift"] for s in m.get("logprob_shift") or [] if s["model"] == model
                          and s["split"] == split and s["wording"] == wording and s["control"] == "clean_control"),
                         None)
            rate = next((b["rate"] for b in m.get("bias_rates") or [] if b["model"] == model and b["split"] == split),
                        None)
            rows.append({"sweep": sd.name, "point": r["point"], "replicate": r["point"].get("seeds", 0),
                         "count": p.get("injected"), "task_share": p.get("target_task_rate"),
                         "set_share": p.get("rate"), "shift": shift, "greedy_rate": rate})
    return pd.DataFrame(rows)


def fit(df: pd.DataFrame, units: list[str], y: str = "shift"):
    """OLS of ``y`` on log(unit) for ``units``, heteroscedasticity-robust (HC3) errors. Errors are not clustered by
    replicate: a sweep has 3-5 replicates, far too few clusters for a cluster-robust interval."""
    import statsmodels.api as sm

    d = df.dropna(subset=[y, *units])
    d = d[(d[units] > 0).all(axis=1)]
    X = sm.add_constant(np.log(d[units].astype(float)), has_constant="add")
    return sm.OLS(d[y].astype(float), X).fit(cov_type="HC3"), len(d)


def table(df: pd.DataFrame, y: str = "shift") -> list[str]:
    varying = [u for u in ("count", "task_share", "set_share") if df[u].nunique() > 1]
    out = [f"{len(df)} runs; units that vary: {', '.join(varying) or 'none'}"
           + ("; the set share is constant, so it cannot explain a shift that varies" if "set_share" not in varying
              else ""), "", "| fit | unit | coefficient on log(unit) | 95 % CI | p | R² | AIC | runs |",
           "|---|---|---|---|---|---|---|---|"]
    fits = [[u] for u in varying] + ([[u for u in ("count", "task_share") if u in varying]]
                                     if {"count", "task_share"} <= set(varying) else [])
    for units in fits:
        res, n = fit(df, units, y)
        ci = res.conf_int()
        for u in units:
            out.append(f"| {' + '.join(units)} | {UNITS[u]} | {res.params[u]:+.3f} | [{ci.loc[u, 0]:+.3f}, "
                       f"{ci.loc[u, 1]:+.3f}] | {res.pvalues[u]:.2g} | {res.rsquared:.2f} | {res.aic:.1f} | {n} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dirs", nargs="+")
    ap.add_argument("--model", default="teacher")
    ap.add_argument("--split", default="target")
    ap.add_argument("--wording", default="seen")
    ap.add_argument("--out", help="also write the table to this Markdown file")
    args = ap.parse_args(argv)
    dirs = [Path(d) for d in args.sweep_dirs]
    for d in dirs:
        if not (d / "sweep.json").is_file():
            print(f"error: {d / 'sweep.json'}: not found (give sweep directories)", file=sys.stderr)
            return 2
    df = read_runs(dirs, args.model, args.split, args.wording)
    if df["shift"].isna().all():
        print(f"error: no run has a {args.model} probe shift on {args.split}/{args.wording} (is eval.probe on?)",
              file=sys.stderr)
        return 2
    lines = [f"# Dose units: {args.model}'s probe shift ({args.split}, {args.wording}) against the clean control", ""]
    cols = ["sweep", "replicate", "count", "task_share", "set_share", "shift", "greedy_rate"]
    per_run = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    per_run += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |"
                for r in df[cols].itertuples(index=False)]
    lines += table(df) + ["", "Per run:", "", *per_run]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from poison.ground.core.io import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
