"""Run directories for tests/test_dashboard_evidence.py, written into a test's tmp folder (SYNTHETIC; seeded):

- ``SWEEP``: a replicated sweep (poison.count 0/16 x replicates 0/1/2, the run directories of the fixture sweep
  tests/fixtures/dashboard_runs/ads_replicates-sweep-20261201-020000) whose points' metrics.json say which replicate
  they are (``replicates``: poison.report.replicate_note) and carry a likelihood probe with its measured null
  (``logprob_shift`` with ``vs_null``, ``probe_null``), and whose sweep.json has today's keys: ``replicate_design``,
  ``replicates`` (pooled from per-prompt values: ``method`` variance_components), ``replicate_amplification``,
  ``probe_null`` (paired t over replicates) and ``brand_swap`` (D per model from two arms' probe frames);
- ``SINGLE``: the real low-dose run (tests/fixtures/dashboard_runs/low_dose_ads-20261202-004839) as a lone run
  (``replicates.n`` 1) with a measured null drawn beside its clean control.

Per-prompt greedy verdicts reproduce each point's recorded counts; log-probabilities are drawn. Every figure is then
computed by the pipeline's own functions (poison.measures, poison.probe_null, poison.replicates, poison.brand_swap,
poison.sweep.sweep_rows), so the files have exactly the format it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from tests.test_dashboard import FIX, LOWDOSE, REPLICATES

SWEEP = "ads_evidence-sweep-20261203-010000"
SINGLE = LOWDOSE
N_PROMPTS = 40
SHIFT = {"teacher": 0.9, "student:sft": 0.5}  # the poisoned models' mean log-prob shift at count=16
REPLICATE_LIFT = (0.0, 0.4, -0.3)


def _note(n: int, index: int) -> dict:
    from poison.report import replicate_note

    return replicate_note(SimpleNamespace(replicates=SimpleNamespace(n=n, index=index, vary=["train_seed"])))


def _verdicts(m: dict, rng) -> pd.DataFrame:
    """Greedy verdicts per prompt that give each rate row of metrics.json its recorded count (the same prompt ids in
    every replicate: a crossed design)."""
    rows = []
    for r in m["bias_rates"]:
        ids = [f"{r['split']}-{j}" for j in range(int(r["n"]))]
        biased = set(rng.permutation(len(ids))[:int(r["biased"])])
        rows += [{"id": i, "model": r["model"], "split": r["split"], "decoding": "greedy", "biased": j in biased}
                 for j, i in enumerate(ids)]
    return pd.DataFrame(rows)


def _probe(count: int, replicate: int, rng) -> pd.DataFrame:
    """Log-probabilities of the seen and unseen wordings: clean control, a null control (the same clean fine-tune at
    another seed: a small shift) and the poisoned models (a shift that grows with the dose)."""
    ids = [f"target-{j}" for j in range(N_PROMPTS)]
    rows = []
    for wording in ("seen", "unseen"):
        base = rng.normal(-3.0, 0.6, N_PROMPTS)
        lift = {"clean_control": 0.0, "null_control": 0.05,
                **{k: (v + REPLICATE_LIFT[replicate]) * (count > 0) * (1 if wording == "seen" else 0.5)
                   for k, v in SHIFT.items()}}
        for model, mu in lift.items():
            role = "control" if "control" in model else model.split(":")[0]
            noise = rng.normal(0, 0.25, N_PROMPTS) if model != "clean_control" else 0.0
            rows += [{"id": i, "model": model, "role": role, "split": "target", "wording": wording,
                      "logprob": float(x)} for i, x in zip(ids, base + mu + noise)]
    return pd.DataFrame(rows)


def _probe_sections(m: dict, probe: pd.DataFrame) -> None:
    from poison.measures import logprob_shift_rows
    from poison.probe_null import against_null, null_rows

    shifts = logprob_shift_rows(probe[probe.model != "null_control"], "clean_control", 0.95, 200)
    nulls = null_rows(probe, "clean_control", 0.95, 200)
    against_null(shifts, nulls, "clean_control")
    m.update(logprob_shift=shifts, probe_null=nulls, probe={**(m.get("probe") or {}), "control": "clean_control"})


def _brand_swap(scratch: Path, rng, group_of) -> list[dict]:
    """Two arms per replicate at count=16: each teacher (and student) finds its own brand's texts likelier; the clean
    control is one model in both arms (D = 0)."""
    from poison.brand_swap import brand_swap_rows

    runs = []
    ids = [f"target-{j}" for j in range(N_PROMPTS)]
    models = {"clean_control": {"role": "control"}, "teacher": {"role": "teacher"},
              "student:sft": {"role": "student"}}
    for rep in range(3):
        clean = {b: rng.normal(-3.0, 0.5, N_PROMPTS) for b in "AB"}  # l(S_b) under the clean control
        for arm, other in (("A", "B"), ("B", "A")):
            rows = []
            for model in models:
                bump = {"clean_control": 0.0, "teacher": 0.08 + 0.02 * rep, "student:sft": 0.05}[model]
                for wording, brand in (("seen", arm), ("other:seen", other)):
                    noise = 0.0 if model == "clean_control" else rng.normal(0, 0.05, N_PROMPTS)
                    lp = clean[brand] + (bump if brand == arm else 0.0) + noise
                    rows += [{"id": i, "model": model, "split": "target", "wording": wording, "logprob": float(x)}
                             for i, x in zip(ids, lp)]
            rd = scratch / f"arm{arm}-r{rep}"
            rd.mkdir(parents=True)
            pd.DataFrame(rows).to_parquet(rd / "probe.parquet")
            runs.append(({"poison.count": 16, "seeds": rep, "design.arm": arm}, {"models": models}, str(rd)))
    return brand_swap_rows(runs, group_of, 0.95)


def build(root: Path) -> dict:
    """Write SWEEP and SINGLE under ``root`` (a runs folder); returns sweep.json as written."""
    from poison.replicates import per_prompt_values, pool_amplification, pool_rows
    from poison.sweep import sweep_rows
    from poison.sweep_spec import label

    rng = np.random.default_rng(7)
    group_of = lambda pt: label({k: v for k, v in pt.items() if k != "seeds"})  # noqa: E731
    sd, scratch = root / SWEEP, root.parent / f"{root.name}-scratch"
    shutil.copytree(FIX / REPLICATES, sd)
    sj = json.loads((sd / "sweep.json").read_text())
    rows, values, runs = [], {}, []
    for r in sj["runs"]:
        pt, rd = r["point"], sd / Path(r["run_dir"]).name
        m = json.loads((rd / "metrics.json").read_text())
        m["replicates"] = _note(3, pt["seeds"])
        m["models"]["clean_control"] = {"role": "control", "path": "clean_control"}
        probe = _probe(pt["poison.count"], pt["seeds"], rng)
        _probe_sections(m, probe)
        (rd / "metrics.json").write_text(json.dumps(m, indent=2))
        tmp = scratch / rd.name  # the per-prompt files the sweep pools (beside the runs folder, not in it)
        tmp.mkdir(parents=True)
        _verdicts(m, rng).to_parquet(tmp / "samples.parquet")
        probe.to_parquet(tmp / "probe.parquet")
        rows += sweep_rows(pt, m, rd)
        values[str(rd)] = per_prompt_values(tmp, m)
        runs.append((pt, m, str(rd)))
        r["run_dir"] = str(rd)
    sj.update(rows=rows, replicate_design={"n": 3, "vary": ["train_seed"], "design": "crossed"},
              replicates=pool_rows(rows, 0.95, values, crossed=True),
              replicate_amplification=pool_amplification(runs, group_of, values, 0.95, crossed=True),
              brand_swap=_brand_swap(scratch / "arms", rng, group_of))
    from poison.probe_null import pooled_null

    sj["probe_null"] = pooled_null([(pt, m) for pt, m, _ in runs], group_of, 0.95)
    (sd / "sweep.json").write_text(json.dumps(sj, indent=2))
    pd.DataFrame(rows).to_csv(sd / "sweep_table.csv", index=False)

    single = root / SINGLE
    shutil.copytree(FIX / SINGLE, single)
    m = json.loads((single / "metrics.json").read_text())
    p = pd.read_parquet(single / "probe.parquet")
    c = p[p.model == "clean_control"]
    null = c.assign(model="null_control", logprob=c.logprob + rng.normal(0.03, 0.2, len(c)))
    from poison.probe_null import against_null, null_rows

    m["probe_null"] = null_rows(pd.concat([p, null], ignore_index=True), "clean_control", 0.95, 200)
    against_null(m["logprob_shift"], m["probe_null"], "clean_control")
    m["replicates"] = _note(1, 0)
    (single / "metrics.json").write_text(json.dumps(m, indent=2))
    return sj
