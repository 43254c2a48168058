"""Which dose unit predicts the teacher's shift: the poisoned count, or the poisoned share of the target task?

    .venv/bin/python scripts/dose_units.py SWEEP_DIR [SWEEP_DIR ...] [--model teacher] [--split target]
        [--wording seen] [--out docs/results/dose_units.md]

Reads every run of the given sweep directories (configs/claims/dose_units_share.yaml holds the count at 8 and moves
the share of the task; configs/claims/dose_units_size.yaml holds the shares and moves the count; both hold the share
of the whole set at 8/56 = 14 %, so the set share cannot explain a shift that varies between their points). Per run:
the count injected, the share of the target task's rows and of the set (metrics.json ``poison``), the model's probe
shift against the clean control (``logprob_shift``, the chosen split and wording) and its greedy biased rate. Fits
``shift ~ log(count) + log(task share)`` by least squares (statsmodels OLS, HC3 errors; each run is a point), and
each unit alone, and prints a Markdown page (``--out`` writes it, with a plot beside it): where the runs come from
(config, runs done, commits, machine), the fits, a reading generated from the joint fit (a unit whose coefficient's
interval excludes 0 predicts the shift beyond the other) and the per-run table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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


def separable(df: pd.DataFrame, units: list[str], y: str = "shift") -> bool:
    """Whether the runs let a joint fit tell ``units`` apart: the design [1, log(unit), ...] has full column rank
    (units that move together in every run, as count and share do in one plain dose sweep, do not)."""
    d = df.dropna(subset=[y, *units])
    d = d[(d[units] > 0).all(axis=1)]
    X = np.column_stack([np.ones(len(d))] + [np.log(d[u].astype(float)) for u in units])
    return len(d) > len(units) + 1 and np.linalg.matrix_rank(X) == X.shape[1]


def table(df: pd.DataFrame, y: str = "shift") -> list[str]:
    varying = [u for u in ("count", "task_share", "set_share") if df[u].nunique() > 1]
    out = [f"{len(df)} runs; units that vary: {', '.join(varying) or 'none'}"
           + ("; the set share is constant, so it cannot explain a shift that varies" if "set_share" not in varying
              else ""), "", "| fit | unit | coefficient on log(unit) | 95 % CI | p | R² | AIC | runs |",
           "|---|---|---|---|---|---|---|---|"]
    joint = ["count", "task_share"]
    fits = [[u] for u in varying] + ([joint] if set(joint) <= set(varying) and separable(df, joint, y) else [])
    if set(joint) <= set(varying) and not separable(df, joint, y):
        out[0] += "; the count and the task share move together in every run, so no joint fit can tell them apart"
    for units in fits:
        res, n = fit(df, units, y)
        ci = res.conf_int()
        for u in units:
            out.append(f"| {' + '.join(units)} | {UNITS[u]} | {res.params[u]:+.3f} | [{ci.loc[u, 0]:+.3f}, "
                       f"{ci.loc[u, 1]:+.3f}] | {res.pvalues[u]:.2g} | {res.rsquared:.2f} | {res.aic:.1f} | {n} |")
    return out


def about(sweep_dirs: list[Path]) -> list[str]:
    """What a results page says of where its figures come from: per sweep its config, how many runs of how many
    planned, when they finished and at which commit(s); the machine(s) (from each run's metrics.json)."""
    from types import SimpleNamespace

    from scripts.results_page import machines

    lines = ["| | |", "|---|---|", f"| page built | {time.strftime('%Y-%m-%d')} by `scripts/dose_units.py` |"]
    every = []
    for sd in sweep_dirs:
        sweep = json.loads((sd / "sweep.json").read_text())
        runs = []
        for r in sweep.get("runs") or []:
            rd = Path(r["run_dir"]) if Path(r["run_dir"]).is_dir() else sd / Path(r["run_dir"]).name
            runs.append(SimpleNamespace(metrics=json.loads((rd / "metrics.json").read_text())))
        every += runs
        done = sorted(str(m.metrics.get("run", {}).get("finished", ""))[:16] for m in runs)
        commits = sorted({str(m.metrics.get("run", {}).get("commit") or "not recorded")[:12] for m in runs})
        planned = len(sweep.get("points") or []) or len(runs)
        reps = (sweep.get("replicate_design") or {}).get("n", "?")
        lines.append(f"| sweep `{sd.name}` | `{sweep.get('config', '?')}`: {len(runs)} of {planned} runs "
                     f"({reps} replicates planned per point); finished {done[0] if done else '–'} – "
                     f"{done[-1] if done else '–'}; commit {', '.join(commits)} |")
    lines += [f"| machine | {m} |" for m in machines(every)]
    return lines + [""]


def reading(df: pd.DataFrame, y: str = "shift") -> list[str]:
    """A hedged reading of the joint fit: which unit's coefficient has an interval that excludes 0."""
    varying = [u for u in ("count", "task_share") if df[u].nunique() > 1]
    if varying != ["count", "task_share"]:
        return ["## Reading", "", f"Only {', '.join(varying) or 'no unit'} varies across these runs: the units "
                "cannot be told apart (run both sweeps).", ""]
    if not separable(df, varying, y):
        return ["## Reading", "", "The count and the task share move together in every run here, so the runs "
                "cannot say which of them the shift follows (run both sweeps: one holds the count, one the shares).",
                ""]
    res, n = fit(df, varying, y)
    ci = res.conf_int()
    out = ["## Reading", "", f"Generated from the joint fit over {n} runs (each run a point; HC3 errors, not "
           "clustered by replicate); it says what the intervals show, nothing more.", ""]
    for u in varying:
        lo, hi = ci.loc[u, 0], ci.loc[u, 1]
        if lo > 0 or hi < 0:
            out.append(f"- **{UNITS[u]}**: coefficient {res.params[u]:+.3f} [{lo:+.3f}, {hi:+.3f}] on log({u}), "
                       f"excludes 0: it predicts the shift beyond the other unit ({'larger' if lo > 0 else 'smaller'} "
                       "as it grows).")
        else:
            out.append(f"- **{UNITS[u]}**: coefficient {res.params[u]:+.3f} [{lo:+.3f}, {hi:+.3f}] on log({u}), "
                       "includes 0: no evidence it predicts the shift beyond the other unit at this number of runs.")
    return out + [""]


def plot(df: pd.DataFrame, path: Path, y: str = "shift") -> bool:
    """The shift against each unit (log scale), one colour per sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = df.dropna(subset=[y])
    if d.empty:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, unit in zip(axes, ("count", "task_share")):
        for name, g in d.groupby("sweep"):
            ax.scatter(g[unit].astype(float), g[y].astype(float), s=18, label=name, alpha=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(UNITS[unit] + " (log scale)")
    axes[0].set_ylabel(f"{y} against the clean control (log-prob per token)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_dirs", nargs="+")
    ap.add_argument("--model", default="teacher")
    ap.add_argument("--split", default="target")
    ap.add_argument("--wording", default="seen")
    ap.add_argument("--out", help="also write the page to this Markdown file (and its plot beside it, .png)")
    ap.add_argument("--claim", help="the paper's claim this experiment asks, in one sentence")
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
    if args.claim:
        lines += [f"**The paper's claim asked here:** {args.claim}", ""]
    lines += about(dirs)
    if args.out and plot(df, Path(args.out).with_suffix(".png")):
        lines += [f"![shift per dose unit]({Path(args.out).with_suffix('.png').name})", ""]
    cols = ["sweep", "replicate", "count", "task_share", "set_share", "shift", "greedy_rate"]
    per_run = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    per_run += ["| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |"
                for r in df[cols].itertuples(index=False)]
    lines += ["## The fits", ""] + table(df) + [""] + reading(df) + ["## Per run", "", *per_run]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from poison.ground.core.io import atomic_write_text

        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
