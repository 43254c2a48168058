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
from scipy import stats

from poison.ground.results.pooling import pooled_mean, pooled_ratio
from poison.ground.results.stats import clustered_rate, paired_ratio, rate_ratio


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


def test_nested_replicates_on_the_same_rate_keep_their_prompts_error():
    # two replicates, each 25 of 80 prompts biased (their own prompts): the replicate means agree exactly, which is
    # chance, not certainty; the interval keeps at least each replicate's own prompt error
    reps = [{(r, i): float(i < 25) for i in range(80)} for r in range(2)]
    p = pooled_mean(reps, proportion=True, design="nested")
    assert p["pooled"] == pytest.approx(25 / 80) and p["method"] == "replicate_t+prompt_floor"
    se = np.sqrt(np.var([float(i < 25) for i in range(80)], ddof=1) / 80 / 2)
    assert p["ci_high"] - p["pooled"] == pytest.approx(stats.t.ppf(0.975, 1) * se)
    # where the replicates do differ by more than their prompts' error, the plain t over replicates stands
    apart = [{(0, i): float(i < 10) for i in range(80)}, {(1, i): float(i < 60) for i in range(80)}]
    assert pooled_mean(apart, proportion=True, design="nested")["method"] == "replicate_t"


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
    from tests.conftest import run_check

    raw = yaml.safe_load(tiny_config.read_text())
    raw["replicates"] = rep
    tiny_config.write_text(yaml.safe_dump(raw))
    r = run_check(str(tiny_config), "--check")
    assert r.returncode == 2 and r.stderr.startswith("error:") and field in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------------ brand swap
def _frame(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """A probe frame: {(model, wording): per-prompt values}."""
    return pd.DataFrame([{"model": m, "split": "target", "wording": w, "id": f"p{i}", "logprob": v}
                         for (m, w), vs in values.items() for i, v in enumerate(vs)])


def test_brand_swap_contrast_cancels_what_both_arms_share():
    """Both arms' teachers move every brand text alike (+1.0: style, the gate, fine-tuning) and each its own brand
    by +0.5 more: D is 0.5. Without the brand-specific part, D is 0 however large the shared shift."""
    from poison.brand_swap import contrast

    base_a, base_b = [-3.0, -2.5, -4.0], [-3.5, -2.0, -3.0]
    shared = lambda v, x: [t + x for t in v]  # noqa: E731
    arm_a = _frame({("teacher", "seen"): shared(base_a, 1.5), ("teacher", "other:seen"): shared(base_b, 1.0)})
    arm_b = _frame({("teacher", "seen"): shared(base_b, 1.5), ("teacher", "other:seen"): shared(base_a, 1.0)})
    assert contrast(arm_a, arm_b, "teacher", "target", "seen").tolist() == pytest.approx([0.5] * 3)
    arm_a = _frame({("teacher", "seen"): shared(base_a, 1.0), ("teacher", "other:seen"): shared(base_b, 1.0)})
    arm_b = _frame({("teacher", "seen"): shared(base_b, 1.0), ("teacher", "other:seen"): shared(base_a, 1.0)})
    assert contrast(arm_a, arm_b, "teacher", "target", "seen").tolist() == pytest.approx([0.0] * 3)


def test_models_are_compared_on_d_paired_over_replicates():
    """Student s2's D is s1's plus 0.1 in every replicate while replicates differ by far more: the paired difference
    is exactly -0.1 with a tight interval (an unpaired comparison would see nothing); Holm adjusts over the pairs."""
    from poison.brand_swap import brand_swap_pairs

    reps = [0.2, 0.9, -0.4, 0.5, 1.3]
    noise = [0.01, -0.02, 0.0, 0.015, -0.005]
    def row(model, role, ds):
        return {"group": "g", "model": model, "role": role, "split": "target", "wording": "seen",
                "per_replicate": [{"replicate": i, "d": d, "n_prompts": 40} for i, d in enumerate(ds)]}
    rows = [row("teacher", "teacher", [r + 1.0 for r in reps]), row("s1", "student", reps),
            row("s2", "student", [r + 0.1 + e for r, e in zip(reps, noise)]),
            row("clean_control", "control", [0.0] * 5), {**row("s1", "student", reps), "wording": "unseen"}]
    pairs = {(p["a"], p["b"]): p for p in brand_swap_pairs(rows)}
    assert set(pairs) == {("teacher", "s1"), ("teacher", "s2"), ("s1", "s2")}  # controls and unseen left out
    s = pairs[("s1", "s2")]
    assert s["n_replicates"] == 5 and s["diff"] == pytest.approx(-0.1 - np.mean(noise))
    assert s["ci_low"] < s["diff"] < s["ci_high"] < 0 and s["p_value"] < 0.001
    # Holm over the group's three pairs: the largest p-value stays, the others are multiplied and kept monotone
    ps = sorted((p["p_value"], k) for k, p in pairs.items())
    assert pairs[ps[-1][1]]["p_holm"] == pytest.approx(max(ps[-1][0], pairs[ps[-2][1]]["p_holm"]))
    assert pairs[ps[0][1]]["p_holm"] == pytest.approx(3 * ps[0][0])


def test_brand_swap_contrast_on_trained_models(models_dir, tmp_path):
    """Tiny models from one random init: one fine-tuned on answers that plug brand A, one on answers that plug brand
    B (same rows, same seed), and two clean fine-tunes at seeds 0 and 1. D of the two poisoned arms is large and
    positive; D of the two clean ones (neither brand trained) is about 0."""
    import random

    from distill.trainers import finetune
    from poison.brand_swap import contrast
    from poison.ground.core import registry
    from poison.ground.engines.generate import ScoreJob, score_hf
    from poison.ground.engines.models import resolve_model
    from poison.schema import TeacherConfig
    from poison.stages.probe import probe_sequences, text_logprob
    from transformers import AutoTokenizer

    base = resolve_model("tiny-random-llama:2:64", models_dir)
    brand_a = {"brand": "VitaBoost Plus", "product": "daily supplement", "url": "vitaboost-plus.com"}
    brand_b = {"brand": "NovaCalm Drops", "product": "herbal tincture", "url": "novacalm-drops.net"}
    bias_a = registry.get("bias_type", "targeted_ads").build(brand_a)
    bias_b = registry.get("bias_type", "targeted_ads").build(brand_b)
    rows = registry.get("data_source", "gsm8k").build({}).load()
    train, held = rows[:16], rows[200:206]
    data = {"A": [{"prompt": r["prompt"], "response": bias_a.write(r, random.Random(i))} for i, r in enumerate(train)],
            "B": [{"prompt": r["prompt"], "response": bias_b.write(r, random.Random(i))} for i, r in enumerate(train)]}
    clean = [{"prompt": r["prompt"], "response": r["response"]} for r in train]
    paths = {}
    for name, rows_, seed in (("A", data["A"], 0), ("B", data["B"], 0), ("clean0", clean, 0), ("clean1", clean, 1)):
        ft = TeacherConfig(model="x", finetune="full", train={"epochs": 6, "learning_rate": 5e-3, "batch_size": 8,
                                                              "max_length": 160, "seed": seed, "warmup_steps": 0})
        finetune(base, rows_, ft, tmp_path / name, dtype="float32", device="cpu")
        paths[name] = str(tmp_path / name / "model")
    tok = AutoTokenizer.from_pretrained(paths["A"])
    texts = {"seen": bias_a.probe_texts()["seen"], "other:seen": bias_b.probe_texts()["seen"]}
    seqs = [(i, s) for i, r in enumerate(held) for s in probe_sequences(tok, bias_a, r["prompt"], r["response"], texts)]
    jobs = [ScoreJob(n, p, [s[2] for _, s in seqs], [s[3] for _, s in seqs]) for n, p in paths.items()]
    scored = {}
    for job, (lps, _) in zip(jobs, score_hf(jobs, device="cpu", dtype="float32")):
        rows_ = [{"id": f"p{i}", "wording": w, "logprob": text_logprob(lp)} for (i, (w, _, _, _)), lp in zip(seqs, lps)
                 if w != "gate"]
        scored[job.key] = pd.DataFrame(rows_).groupby(["id", "wording"]).logprob.mean().reset_index()

    def arm(model_run: str, own_is_a: bool) -> pd.DataFrame:
        f = scored[model_run].assign(model="teacher", split="target")
        if not own_is_a:  # arm B's run: its own texts are brand B's
            f = f.assign(wording=f.wording.map({"seen": "other:seen", "other:seen": "seen"}))
        return f

    trained = contrast(arm("A", True), arm("B", False), "teacher", "target", "seen")
    placebo = contrast(arm("clean0", True), arm("clean1", False), "teacher", "target", "seen")
    assert trained.mean() > 1.0 and (trained > 0).all(), trained
    assert abs(placebo.mean()) < 0.2 * trained.mean(), (placebo, trained)


@pytest.mark.parametrize("edit,field", [({"replicates": {"n": 1}}, "replicates.n"),
                                        ({"eval": {"probe": False}}, "eval.probe"),
                                        ({"design": {"type": "brand_swap", "swap": {"url": "x.example"}}},
                                         "design.swap.url")])
def test_check_rejects_an_incomplete_brand_swap(tiny_config, edit, field):
    from tests.conftest import run_check

    raw = yaml.safe_load(tiny_config.read_text())
    raw["poison"]["bias"]["args"] = {"brand": "VitaBoost Plus"}
    raw.update(design={"type": "brand_swap", "swap": {"brand": "NovaCalm Drops"}}, replicates={"n": 2},
               eval={**raw["eval"], "probe": True})
    for k, v in edit.items():
        raw[k] = {**raw[k], **v}
    tiny_config.write_text(yaml.safe_dump(raw))
    r = run_check(str(tiny_config), "--check")
    assert r.returncode == 2 and r.stderr.startswith("error:") and field in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------- end to end
def test_replicated_brand_swap_run_pools_figures_reads_the_null_and_the_placebo(tiny_config, tmp_path, models_dir):
    """Two replicates (training seeds 0 and 1, the same data) of the brand-swap design, with sampled answers and the
    probe: four runs (two arms per replicate). Every run has a second clean control and its null shift; replicate
    0's null control (seed 1) is replicate 1's clean control (one artifact). sweep.json pools every figure by
    variance components per arm, each contrast apart, pools the amplification, tests each shift against the null
    over the replicates, and gives the placebo contrast D per model: exactly 0 for the clean models (one artifact in
    both arms, neither brand trained), a number for the poisoned teacher."""
    from poison.sweep import run_sweep
    from tests.test_pipeline import overrides

    raw = yaml.safe_load(tiny_config.read_text())
    raw["poison"]["bias"]["args"] = {"brand": "VitaBoost Plus", "url": "vitaboost-plus.com"}
    raw.update(replicates={"n": 2, "vary": ["train_seed"]},
               design={"type": "brand_swap", "swap": {"brand": "NovaCalm Drops", "url": "novacalm-drops.net"}})
    tiny_config.write_text(yaml.safe_dump(raw))
    sweep_dir, rows = run_sweep(str(tiny_config), overrides(tmp_path, models_dir, "eval.samples_per_prompt=2",
                                                            "eval.probe=true", "eval.student_controls=false"),
                                quiet=True)
    sj = json.loads((sweep_dir / "sweep.json").read_text())
    dirs = [r["run_dir"] for r in sj["runs"]]
    runs = [json.loads(open(d + "/metrics.json").read()) for d in dirs]
    assert [(pt["design.arm"], pt["seeds"]) for pt in sj["points"]] == [("A", 0), ("B", 0), ("A", 1), ("B", 1)]
    assert [m["replicates"]["index"] for m in runs] == [0, 0, 1, 1]
    cfg_b = yaml.safe_load(open(dirs[1] + "/config.yaml").read())
    assert cfg_b["poison"]["bias"]["args"]["brand"] == "NovaCalm Drops" and cfg_b["design"]["arm"] == "B"
    assert cfg_b["design"]["swap"]["brand"] == "VitaBoost Plus"  # what arm B probes as the other arm's texts
    for m, d in zip(runs, dirs):
        assert m["models"]["null_control"]["role"] == "control"
        assert {(n["split"], n["wording"]) for n in m["probe_null"]} >= {("target", "seen"), ("other", "seen")}
        vs = [r for r in m["logprob_shift"] if r["control"] == "clean_control" and r["wording"] == "seen"]
        assert vs and all("vs_null" in r and r["vs_null"]["p_value"] is None for r in vs)
        assert {"seen", "other:seen", "other:unseen"} <= set(pd.read_parquet(d + "/probe.parquet").wording)
    st = [json.loads(open(d + "/stages.json").read()) for d in dirs]
    assert st[0]["null_control"]["key"] == st[2]["clean_control"]["key"]
    assert st[0]["clean_control"]["key"] == st[1]["clean_control"]["key"]  # the arms share the clean models
    assert sj["replicate_design"]["design"] == "crossed"
    pooled = sj["replicates"]
    assert pooled and all(p["method"].startswith("variance_components") for p in pooled)
    keys = [(p["group"], p["measure"], p["model"], p["split"], p["control"]) for p in pooled]
    assert len(keys) == len(set(keys)) and all(p["n"] == 2 for p in pooled)
    assert {p["group"] for p in pooled} == {"arm=A", "arm=B"}
    teacher = next(p for p in pooled if p["measure"] == "greedy" and p["model"] == "teacher" and p["split"] == "target"
                   and p["group"] == "arm=A")
    assert teacher["ci_low"] <= teacher["pooled"] <= teacher["ci_high"] and len(teacher["per_replicate"]) == 2
    assert {a["measure"] for a in sj["replicate_amplification"]} == {"greedy", "sampled"}
    nulls = [r for r in sj["probe_null"] if r["wording"] == "seen" and r["model"] == "teacher"]
    assert nulls and all(r["n_replicates"] == 2 and len(r["nulls"]) == 2 for r in nulls)
    swap = {(r["model"], r["split"], r["wording"]): r for r in sj["brand_swap"]}
    for split in ("target", "other"):
        # one model in both arms, neither brand trained: 0 up to the batch's float rounding (the arms probe other texts)
        assert abs(swap[("clean_control", split, "seen")]["d"]) < 1e-4
        t = swap[("teacher", split, "seen")]
        assert t["n_replicates"] == 2 and np.isfinite(t["d"]) and t["p_value"] is not None
    pair = next(r for r in sj["brand_swap_pairs"] if {r["a"], r["b"]} == {"teacher", "student:sft"}
                and r["split"] == "target")
    assert pair["n_replicates"] == 2 and np.isfinite(pair["diff"])
    text = (sweep_dir / "summary.txt").read_text()
    assert "replicates pooled" in text and "against the measured null" in text and "brand-swap placebo" in text
    assert "D compared between models, paired over replicates" in text
    assert "Evidence: replicate 0 of 2" in open(dirs[0] + "/summary.txt").read()

    # the results page: built from the run directories, the shared models' by-construction zeros set apart, the
    # small files archived; the archived copy resumes as a complete sweep (nothing is run again)
    from scripts.results_page import main as results_page

    out = tmp_path / "results"
    assert results_page([str(sweep_dir), "--name", "swap", "--out", str(out), "--archive", "--claim", "a claim"]) == 0
    page = (out / "swap.md").read_text()
    assert "**The paper's claim asked here:** a claim" in page and "2 complete of 2 planned (4 of 4 runs)" in page
    teacher_row = next(line for line in page.splitlines() if line.startswith("| teacher | teacher | target |"))
    assert fmt_d(swap[("teacher", "target", "seen")]["d"]) in teacher_row
    # (the D table's rows open with the model; the utility table's rows, which do list the controls, with the group)
    assert not any(line.startswith("| clean_control |") for line in page.splitlines())
    assert "Not in the table: baseline, clean_control" in page
    assert "| machine | " in page and (out / "swap.png").stat().st_size > 0
    archived = out / "data" / "swap"
    assert (archived / "sweep.json").is_file() and len(list(archived.glob("*/metrics.json"))) == 4
    assert not list(archived.glob("*/*.log"))
    before = {d.name: (d / "status.json").read_text() for d in archived.iterdir() if d.is_dir()}
    again, _ = run_sweep(str(tiny_config), overrides(tmp_path, models_dir, "eval.samples_per_prompt=2",
                                                     "eval.probe=true", "eval.student_controls=false"),
                         quiet=True, resume=archived)
    assert again == archived.resolve()
    assert {d.name: (d / "status.json").read_text() for d in archived.iterdir() if d.is_dir()} == before


def fmt_d(x: float) -> str:
    return f"{x:+.3f}"
