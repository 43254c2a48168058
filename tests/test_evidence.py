"""Evidence a reviewer accepts: zero events keep an upper bound, amplification is paired (interval and McNemar),
replicate pooling never mixes contrasts and its interval covers prompt and replicate variance at its nominal level
(simulation), ``replicates:`` makes the replicate a run's unit, and the probe's shift is read against a measured
null (a tiny replicated run end to end)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from poison.ground.pooling import pooled_mean, pooled_ratio
from poison.ground.stats import clustered_rate, paired_ratio, rate_ratio


# ----------------------------------------------------------------------------------------------- zero events
def test_zero_biased_samples_keep_an_upper_bound():
    """0 of 640 sampled answers on 40 prompts is not 0 [0, 0]: the exact bound on the 40 prompts (the effective n
    when a prompt's samples all agree) is 0.088."""
    r = clustered_rate([[False] * 16] * 40)
    assert r["rate"] == 0 and r["ci_low"] == 0
    assert r["ci_high"] == pytest.approx(0.0881, abs=1e-3)
    one = clustered_rate([[True] * 16] * 40)
    assert one["ci_high"] == 1 and one["ci_low"] == pytest.approx(1 - 0.0881, abs=1e-3)


def test_a_student_with_no_biased_answer_gets_a_bounded_ratio_not_zero_width():
    r = paired_ratio([0.0] * 40, [0.5, 0.25] * 20)
    assert r["ratio"] == 0 and r["ci_low"] == 0 and r["method"] == "exact_bounds"
    assert 0.1 < r["ci_high"] < 1.0  # 0.099 (exact, 40 prompts) over the teacher's lower limit


# ------------------------------------------------------------------------------------------- paired amplification
def _greedy(student: list[bool], teacher: list[bool]) -> pd.DataFrame:
    ids = [f"p{i}" for i in range(len(student))]
    return pd.DataFrame({"id": ids * 2, "model": ["student:sft"] * len(ids) + ["teacher"] * len(ids),
                         "split": "target", "biased": student + teacher})


def test_greedy_amplification_is_paired_over_prompts():
    """Teacher and student answer the same 40 prompts: 28 biased in both, 4 more only in the student. The paired
    interval is narrower than the independent (Katz) one, and McNemar's exact test sees 4 vs 0 discordant prompts
    (p = 2 * 0.5^4 = 0.125)."""
    from poison.measures import greedy_amplification

    teacher = [True] * 28 + [False] * 12
    student = [True] * 32 + [False] * 8
    a = greedy_amplification(_greedy(student, teacher), "student:sft", "teacher", "target", 0.95, 4000)
    katz = rate_ratio(32, 40, 28, 40)
    assert a["ratio"] == pytest.approx(32 / 28) and a["method"] == "paired_bootstrap"
    assert (a["ci_high"] - a["ci_low"]) < 0.6 * (katz["ci_high"] - katz["ci_low"])
    assert a["ci_low"] >= 1.0  # the student is never below the teacher on any prompt
    assert a["mcnemar"] == {"student_only": 4, "teacher_only": 0, "p_value": pytest.approx(0.125)}


# ------------------------------------------------------------------------------------------------ pooling
def test_pooling_keeps_contrasts_apart():
    """A student's shift against the clean control (0.80) and against its clean twin (0.30) over 3 replicates are
    two pooled figures, never one of 0.55 over n = 6."""
    from poison.replicates import pool_rows

    rows = [{"group": "count=8", "seed": s, "measure": "logprob_shift", "model": "student:sft", "role": "student",
             "split": "target", "control": c, "rate": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "run_dir": f"d{s}"}
            for s in (0, 1, 2) for c, v in (("clean_control", 0.80), ("control:student:sft", 0.30))]
    pooled = pool_rows(rows)
    assert sorted((p["control"], round(p["pooled"], 6), p["n"]) for p in pooled) == [
        ("clean_control", 0.8, 3), ("control:student:sft", 0.3, 3)]


def _coverage(rng, prompts, reps, sd_prompt, sd_rep, sd_noise, n_sim, crossed=True):
    hits = 0
    for _ in range(n_sim):
        if crossed:
            y = 1.0 + rng.normal(0, sd_prompt, (prompts, 1)) + rng.normal(0, sd_rep, (1, reps)) \
                + rng.normal(0, sd_noise, (prompts, reps))
            data = [{i: y[i, j] for i in range(prompts)} for j in range(reps)]
        else:
            data = [{f"{j}:{i}": 1.0 + b + rng.normal(0, sd_prompt) + rng.normal(0, sd_noise) for i in range(prompts)}
                    for j, b in enumerate(rng.normal(0, sd_rep, reps))]
        r = pooled_mean(data, design="crossed" if crossed else "nested")
        hits += r["ci_low"] <= 1.0 <= r["ci_high"]
    return hits / n_sim


@pytest.mark.parametrize("reps,sd_prompt,sd_rep,crossed", [(3, 0.5, 0.5, True), (5, 0.3, 0.6, True),
                                                           (4, 0.8, 0.2, True), (3, 0.5, 0.5, False),
                                                           (5, 0.5, 0.3, False)])
def test_pooled_interval_covers_prompt_and_replicate_variance(reps, sd_prompt, sd_rep, crossed):
    """Synthetic per-prompt values with known prompt, replicate and residual variance (40 prompts): the pooled 95 %
    interval covers the true mean in 92-98 % of 1,000 simulated experiments (the old pool, prompt half-widths plus
    a t interval of the seeds in quadrature, covered 0.98-1.00)."""
    cov = _coverage(np.random.default_rng(reps * 7 + int(crossed)), 40, reps, sd_prompt, sd_rep, 1.0, 1000, crossed)
    assert 0.92 <= cov <= 0.98, cov


def test_pooled_ratio_and_single_replicate():
    rng = np.random.default_rng(0)
    teacher = [{i: float(rng.random() < 0.4) for i in range(40)} for _ in range(3)]
    student = [{i: float(rng.random() < 0.6) for i in range(40)} for _ in range(3)]
    r = pooled_ratio(student, teacher, design="crossed")
    assert r["ci_low"] < r["ratio"] < r["ci_high"] and len(r["per_replicate"]) == 3
    one = pooled_mean(teacher[:1], proportion=True, prompt_interval=(0.25, 0.55))
    assert one["method"] == "prompts_only" and (one["ci_low"], one["ci_high"]) == (0.25, 0.55)
    zero = pooled_mean([{i: 0.0 for i in range(40)}] * 3, proportion=True, design="crossed")
    assert zero["ci_low"] == 0 and zero["ci_high"] == pytest.approx(0.0881, abs=1e-3)


# ------------------------------------------------------------------------------------------- replicates config
def test_replicates_expand_to_points_that_redraw_seeds_and_data(tmp_path):
    from poison.sweep import load_sweep
    from tests.conftest import TINY_CONFIG

    raw = yaml.safe_load(TINY_CONFIG)
    raw["replicates"] = {"n": 3, "vary": ["train_seed", "data_draw"]}
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(raw))
    plan = load_sweep(p)
    assert len(plan["points"]) == 3
    assert plan["point_sets"][2] == ["teacher.train.seed=2", "eval.sample_seed=2", "students.0.train.seed=2",
                                     "seed=2", "replicates.index=2"]
    assert plan["settings"]["replicates"] == {"n": 3, "vary": ["train_seed", "data_draw"], "given": True}


@pytest.mark.parametrize("rep,field", [({"n": 0}, "replicates.n"), ({"n": 2, "vary": ["weights"]}, "replicates.vary"),
                                       ({"n": 2, "extra": 1}, "replicates.extra")])
def test_check_names_a_bad_replicates_field(tiny_config, rep, field):
    from tests.conftest import run_cli

    raw = yaml.safe_load(tiny_config.read_text())
    raw["replicates"] = rep
    tiny_config.write_text(yaml.safe_dump(raw))
    r = run_cli(str(tiny_config), "--check")
    assert r.returncode == 2 and r.stderr.startswith("error:") and field in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------- end to end
def test_replicated_run_pools_figures_and_reads_the_probe_against_a_measured_null(tiny_config, tmp_path, models_dir):
    """Two replicates (training seeds 0 and 1, the same data) with sampled answers and the probe: every run has a
    second clean control and its null shift; replicate 0's null control (seed 1) is replicate 1's clean control
    (one artifact); sweep.json pools every figure by variance components, each contrast apart, pools the
    amplification, and tests each shift against the null over the replicates."""
    from poison.sweep import run_sweep
    from tests.test_pipeline import overrides

    raw = yaml.safe_load(tiny_config.read_text())
    raw["replicates"] = {"n": 2, "vary": ["train_seed"]}
    tiny_config.write_text(yaml.safe_dump(raw))
    sweep_dir, rows = run_sweep(str(tiny_config), overrides(tmp_path, models_dir, "eval.samples_per_prompt=2",
                                                            "eval.probe=true"), quiet=True)
    sj = json.loads((sweep_dir / "sweep.json").read_text())
    runs = [json.loads((sweep_dir / r["run_dir"] / "metrics.json").read_text()) if not r["run_dir"].startswith("/")
            else json.loads(open(r["run_dir"] + "/metrics.json").read()) for r in sj["runs"]]
    assert [m["replicates"]["index"] for m in runs] == [0, 1] and all(m["replicates"]["n"] == 2 for m in runs)
    for m in runs:
        assert m["models"]["null_control"]["role"] == "control"
        assert {(n["split"], n["wording"]) for n in m["probe_null"]} >= {("target", "seen"), ("other", "seen")}
        vs = [r for r in m["logprob_shift"] if r["control"] == "clean_control" and r["wording"] == "seen"]
        assert vs and all("vs_null" in r and r["vs_null"]["p_value"] is None for r in vs)
    st = [json.loads(open(r["run_dir"] + "/stages.json").read()) for r in sj["runs"]]
    assert st[0]["null_control"]["key"] == st[1]["clean_control"]["key"]
    assert sj["replicate_design"]["design"] == "crossed"
    pooled = sj["replicates"]
    assert pooled and all(p["method"].startswith(("variance_components", "prompts_only")) for p in pooled
                          if p["measure"] != "logprob_shift" or p["control"])
    keys = [(p["group"], p["measure"], p["model"], p["split"], p["control"]) for p in pooled]
    assert len(keys) == len(set(keys)) and all(p["n"] == 2 for p in pooled)
    teacher = next(p for p in pooled if p["measure"] == "greedy" and p["model"] == "teacher" and p["split"] == "target")
    assert teacher["ci_low"] <= teacher["pooled"] <= teacher["ci_high"] and len(teacher["per_replicate"]) == 2
    assert {a["measure"] for a in sj["replicate_amplification"]} == {"greedy", "sampled"}
    nulls = [r for r in sj["probe_null"] if r["wording"] == "seen" and r["model"] == "teacher"]
    assert nulls and all(r["n_replicates"] == 2 and len(r["nulls"]) == 2 for r in nulls)
    text = (sweep_dir / "summary.txt").read_text()
    assert "replicates pooled" in text and "against the measured null" in text
    assert "Evidence: replicate 0 of 2" in open(sj["runs"][0]["run_dir"] + "/summary.txt").read()
