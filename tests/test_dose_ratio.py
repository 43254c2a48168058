"""Amplification by dose (poison.ground.results.dose_ratio): the teacher's ED50 over its student's, with a paired
cluster-bootstrap interval. On simulated per-prompt counts with known ED50s (a prompt effect shared by both models,
as when both answer the same eval prompts): the interval covers the true ratio at about its level, reads above 1
when the student turns biased at half the teacher's dose and below 1 the other way round, and a model that never
reaches 50 % gives no ratio; through the sweep's dose-response, a student's entry carries its ratio and the summary
line says it."""

import json

import numpy as np
import pandas as pd

from poison.ground.results.dose import fit_dose_response_prompts
from poison.ground.results.dose_ratio import ed50_ratio

DOSES = [0, 4, 8, 16, 24, 32]
OFF = 2.0  # the fit's default offset: half the smallest positive dose


def rows(rng, ed50, u, k_samples=8, slope=2.5):
    d, p, k, n = [], [], [], []
    for dose in DOSES:
        for i, ui in enumerate(u):
            lp = slope * (np.log(dose + OFF) - np.log(ed50 + OFF)) + ui
            d.append(dose), p.append(f"p{i}"), k.append(rng.binomial(k_samples, 1 / (1 + np.exp(-lp))))
            n.append(k_samples)
    return d, p, k, n


def ratio_of(t, s, **kw):
    return ed50_ratio(t, s, fit_dose_response_prompts(*t, n_boot=10), fit_dose_response_prompts(*s, n_boot=10), **kw)


def test_the_interval_covers_the_true_ratio():
    """30 simulated sweeps (40 prompts, a prompt effect of SD 0.8 on the logit shared by teacher and student),
    true ratio 16 / 8 = 2: the 95 % interval covers it in at least 25 (offline, 60 sweeps at 400 draws: 57)."""
    hits = 0
    for sim in range(30):
        rng = np.random.default_rng(100 + sim)
        u = rng.normal(0, 0.8, 40)
        r = ratio_of(rows(rng, 16, u), rows(rng, 8, u), n_boot=200, seed=sim)
        hits += r["ci_low"] is not None and r["ci_high"] is not None and r["ci_low"] <= 2.0 <= r["ci_high"]
    assert hits >= 25, hits


def test_the_reading_follows_the_side_of_one():
    rng = np.random.default_rng(1)
    u = rng.normal(0, 0.5, 60)
    t, s = rows(rng, 16, u), rows(rng, 8, u)
    amp = ratio_of(t, s)
    assert 1 < amp["ci_low"] < 2 < amp["ci_high"] and "paired cluster bootstrap" in amp["method"]
    assert "jointly across doses" in amp["method"] and amp["failed_draws"] == 0
    att = ratio_of(s, t)  # the student needs twice the teacher's dose
    assert att["ci_high"] < 1 and abs(att["ratio"] * amp["ratio"] - 1) < 1e-9


def test_a_model_that_never_reaches_half_gives_no_ratio():
    rng = np.random.default_rng(2)
    u = rng.normal(0, 0.5, 30)
    never = [list(x) for x in rows(rng, 16, u)]
    never[2] = [0] * len(never[2])  # the student never biased
    r = ratio_of(rows(rng, 16, u), tuple(never))
    assert r["ratio"] is None and "no ED50 for the student" in r["note"]


def _run(tmp_path, dose, rng, u):
    """A run directory with samples.parquet (teacher, its SFT student and the clean control; the student's ED50 is
    half the teacher's) and the metrics.json fields the dose-response reads."""
    from poison import measures

    rd = tmp_path / f"run-{dose}"
    rd.mkdir()
    out = []
    for model, role, ed50 in (("teacher", "teacher", 16), ("student:sft", "student", 8), ("clean_control", "control",
                                                                                          None)):
        for i, ui in enumerate(u):
            p = 0.0 if ed50 is None else 1 / (1 + np.exp(-(2.5 * (np.log(dose + OFF) - np.log(ed50 + OFF)) + ui)))
            base = {"model": model, "role": role, "split": "target", "id": f"p{i:02d}", "task": "t"}
            out.append({**base, "decoding": "greedy", "sample_index": 0, "biased": False})
            out += [{**base, "decoding": "sampled", "sample_index": j, "biased": bool(b)}
                    for j, b in enumerate(rng.random(8) < p)]
    s = pd.DataFrame(out)
    s.to_parquet(rd / "samples.parquet", index=False)
    g = s[s.decoding == "greedy"]
    bias_rates = [{"model": m, "role": r, "split": "target", "n": len(x), "biased": 0, "rate": 0.0, "ci_low": 0.0,
                   "ci_high": 0.1} for (m, r), x in g.groupby(["model", "role"])]
    m = {"run": {"run_dir": str(rd)}, "poison": {"injected": dose}, "bias_rates": bias_rates,
         "sampled_rate": measures.sampled_rate_rows(s[s.decoding == "sampled"], 8, 0.95, 200),
         "models": {"teacher": {"role": "teacher"}, "student:sft": {"role": "student", "teacher": "teacher"},
                    "clean_control": {"role": "control"}},
         "probe": {"control": "clean_control"}, "logprob_shift": []}
    (rd / "metrics.json").write_text(json.dumps(m))
    return m


def test_the_sweep_gives_each_student_its_ratio(tmp_path):
    from poison.dose_response import dose_response, dose_response_lines

    rng = np.random.default_rng(5)
    u = rng.normal(0, 0.5, 40)
    runs = [({"poison.count": d}, _run(tmp_path, d, rng, u)) for d in DOSES[1:]]
    e = {x["model"]: x for x in dose_response(runs, "poison.count", 0.95, n_boot=300)}
    r = e["student:sft"]["ed50_ratio"]
    assert r["teacher"] == "teacher" and r["ci_low"] > 1 and r["ci_low"] < 2 < r["ci_high"]
    assert "ed50_ratio" not in e["teacher"]
    text = "\n".join(dose_response_lines(list(e.values())))
    assert "amplification by dose, ED50 teacher / ED50 student:sft" in text and "paired cluster bootstrap" in text
    json.dumps(list(e.values()))
    from scripts.results_claims import dose_table

    table = "\n".join(dose_table({"dose_response": list(e.values())}))
    line = next(x for x in table.splitlines() if x.startswith("| student:sft | target |"))
    assert f"{r['ratio']:.2f} | [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" in line
