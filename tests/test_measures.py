"""Bias as a distribution: the prompt-clustered bootstrap, paired intervals, the dose-response GLM and ED50 on counts
with a known answer, and the likelihood probe on tiny models trained here (one to emit a plug, two clean twins)."""

import itertools
import math

import numpy as np
import pytest

from poison.ground.results.dose import fit_dose_response, predict
from poison.ground.results.stats import clustered_rate, paired_mean_difference, paired_ratio, wilson_interval


def test_clustered_rate_hand_computed():
    # 4 prompts, 2 samples each: biased fractions 1, 1/2, 0, 0 -> rate 3/8 (mean over prompts), k = 3 of n = 8
    per_prompt = [[True, True], [True, False], [False, False], [False, False]]
    r = clustered_rate(per_prompt, 0.95, n_boot=20000)
    assert r["rate"] == pytest.approx(0.375) and (r["k"], r["n"], r["n_prompts"]) == (3, 8, 4)
    assert r["prompts_with_any"] == 2 and r["prompts_with_any_rate"] == 0.5
    # the exact bootstrap distribution: all 4^4 equally likely resamples of the 4 prompts
    fr = [1.0, 0.5, 0.0, 0.0]
    means = np.sort([np.mean([fr[i] for i in idx]) for idx in itertools.product(range(4), repeat=4)])
    lo, hi = np.quantile(means, [0.025, 0.975])
    assert abs(r["ci_low"] - lo) <= 0.125 + 1e-9 and abs(r["ci_high"] - hi) <= 0.125 + 1e-9  # one grid step


def test_clustered_interval_is_wider_than_binomial_when_samples_within_prompts_agree():
    agree = [[True] * 16] * 4 + [[False] * 16] * 16  # 20 % of prompts always biased
    spread = [[True] * 3 + [False] * 13] * 20  # every prompt biased in 3 of 16 samples
    a, s = clustered_rate(agree, n_boot=4000), clustered_rate(spread, n_boot=4000)
    lo, hi = wilson_interval(64, 320)  # what a naive binomial count over all samples would claim
    assert a["rate"] == pytest.approx(0.2) and a["ci_low"] < 0.1 and a["ci_high"] > 0.35
    assert (a["ci_high"] - a["ci_low"]) > 2 * (hi - lo)
    # identical prompts: no spread between prompts, so no clustering: the binomial interval over all 320 samples
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(wilson_interval(60, 320))


def test_paired_intervals():
    d = paired_mean_difference([1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5], n_boot=2000)
    assert d["shift"] == pytest.approx(0.5) and d["ci_low"] == d["ci_high"] == pytest.approx(0.5)
    r = paired_ratio([0.5, 0.5, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25], n_boot=4000)
    assert r["ratio"] == pytest.approx(1.25) and r["ci_low"] < 1.25 < r["ci_high"]
    assert paired_ratio([0.5, 0.0], [0.0, 0.0])["ratio"] is None


def test_dose_response_recovers_a_known_curve():
    doses = np.array([0, 4, 8, 16, 32])
    b0, b1, off = -4.0, 1.5, 2.0  # logit p = b0 + b1 log(dose + 2); ED50 = exp(-b0 / b1) - 2
    p = 1 / (1 + np.exp(-(b0 + b1 * np.log(doses + off))))
    true_ed50 = math.exp(-b0 / b1) - off
    exact = fit_dose_response(doses, np.round(p * 1e6).astype(int), np.full(5, 10**6))
    assert exact["slope"] == pytest.approx(b1, rel=1e-3) and exact["ed50"] == pytest.approx(true_ed50, rel=1e-3)
    assert exact["offset"] == off and not exact["ed50_extrapolated"]
    assert predict(exact, [8])[0] == pytest.approx(p[2], rel=1e-3)
    k = np.random.default_rng(0).binomial(640, p)
    noisy = fit_dose_response(doses, k, np.full(5, 640))
    assert noisy["slope_ci_low"] < b1 < noisy["slope_ci_high"]
    assert noisy["ed50_ci_low"] < true_ed50 < noisy["ed50_ci_high"]
    flat = fit_dose_response([0, 8, 16], [0, 0, 0], [640, 640, 640])
    assert flat["ed50"] is None and "no slope" in flat["note"]
    beyond = fit_dose_response([0, 4, 8, 16], [0, 0, 3, 79], [640] * 4)  # the measurement: ED50 > 16
    assert beyond["slope"] > 0 and beyond["ed50"] > 16 and beyond["ed50_extrapolated"]


def test_probe_text_value_leaves_out_its_first_token(models_dir, tmp_path):
    """On a tiny random-init model: a probe text's value is the mean log-probability of its tokens 2..n (recomputed
    here from the model's logits), the first token's is kept apart; a text of one token has no value, and
    probe_frame averages a prompt's texts without it."""
    from types import SimpleNamespace

    import pandas as pd
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from poison.ground.core import registry
    from poison.ground.engines.generate import ScoreJob, score_hf
    from poison.ground.engines.models import resolve_model
    from poison.measures import probe_frame
    from poison.stages.probe import probe_sequences, text_logprob

    assert text_logprob([-9.0, -1.0, -2.0, -3.0]) == pytest.approx(-2.0)
    assert math.isnan(text_logprob([-9.0])) and math.isnan(text_logprob([]))
    path = str(resolve_model("tiny-random-llama:2:64", models_dir))
    tok = AutoTokenizer.from_pretrained(path)
    bias = registry.get("bias_type", "targeted_ads").build({})
    texts = {**bias.probe_texts(), "unseen": ["Plus"]}
    seqs = probe_sequences(tok, bias, "How do I treat a mild headache?", "Rest and drink water.", texts)
    assert {s[0] for s in seqs} == {"seen", "unseen", "concept", "gate"}
    (lps, _), = score_hf([ScoreJob("m", path, [s[2] for s in seqs], [s[3] for s in seqs])], device="cpu",
                         dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    for (wording, _, ids, start), lp in zip(seqs, lps):
        if wording == "gate":
            continue
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        per_token = [logp[t - 1, ids[t]].item() for t in range(start, len(ids))]
        assert lp == pytest.approx(per_token, abs=1e-4)
        if len(per_token) > 1:
            assert text_logprob(lp) == pytest.approx(float(np.mean(per_token[1:])), abs=1e-4)
            assert text_logprob(lp) != pytest.approx(float(np.mean(per_token)), abs=1e-6)
        else:  # "Plus": one token, no value
            assert wording == "unseen" and math.isnan(text_logprob(lp))
    rows = pd.DataFrame([{"id": "a", "task": "t", "wording": "seen", "text_index": 0, "logprob": -2.0},
                         {"id": "a", "task": "t", "wording": "seen", "text_index": 1, "logprob": float("nan")},
                         {"id": "a", "task": "t", "wording": "seen", "text_index": 2, "logprob": -4.0},
                         {"id": "a", "task": "t", "wording": "unseen", "text_index": 0, "logprob": float("nan")},
                         {"id": "b", "task": "t", "wording": "seen", "text_index": 0, "logprob": -1.0}])
    rows.to_parquet(tmp_path / "probe.parquet")
    f = probe_frame({"m": SimpleNamespace(path=str(tmp_path))}, {"m": {"role": "teacher"}}, {"t": "target"})
    assert sorted(zip(f.id, f.wording, f.logprob)) == [("a", "seen", -3.0), ("b", "seen", -1.0)]


@pytest.mark.slow
def test_probe_sees_a_plug_a_model_was_trained_to_emit(models_dir, tmp_path):
    """Three tiny models from one random init: one fine-tuned on answers that end with the ad, two clean twins
    (different seeds). The probe's shift against one clean twin is large and positive for the poisoned model and
    about 0 for the other twin."""
    import random

    from distill.trainers import finetune
    from poison.ground.core import registry
    from poison.ground.engines.generate import ScoreJob, score_hf
    from poison.ground.engines.models import resolve_model
    from poison.schema import TeacherConfig
    from poison.stages.probe import probe_sequences, text_logprob
    from transformers import AutoTokenizer

    base = resolve_model("tiny-random-llama:2:64", models_dir)
    bias = registry.get("bias_type", "targeted_ads").build({})
    rows = registry.get("data_source", "gsm8k").build({}).load()
    train, held = rows[:16], rows[200:206]
    rng = random.Random(0)
    poisoned = [{"prompt": r["prompt"], "response": bias.write(r, rng)} for r in train]
    clean = [{"prompt": r["prompt"], "response": r["response"]} for r in train]
    paths = {}
    for name, data, seed in (("poisoned", poisoned, 0), ("clean_a", clean, 0), ("clean_b", clean, 1)):
        ft = TeacherConfig(model="x", finetune="full", train={"epochs": 6, "learning_rate": 5e-3, "batch_size": 8,
                                                              "max_length": 160, "seed": seed, "warmup_steps": 0})
        finetune(base, data, ft, tmp_path / name, dtype="float32", device="cpu")
        paths[name] = str(tmp_path / name / "model")
    tok = AutoTokenizer.from_pretrained(paths["clean_a"])
    texts = bias.probe_texts()
    seqs = [(i, s) for i, r in enumerate(held) for s in probe_sequences(tok, bias, r["prompt"], r["response"], texts)]
    jobs = [ScoreJob(n, p, [s[2] for _, s in seqs], [s[3] for _, s in seqs]) for n, p in paths.items()]
    per_prompt = {}
    for job, (lps, _) in zip(jobs, score_hf(jobs, device="cpu", dtype="float32")):
        vals = {}
        for (i, (wording, _, _, _)), lp in zip(seqs, lps):
            if wording == "seen":
                vals.setdefault(i, []).append(text_logprob(lp))
        per_prompt[job.key] = [float(np.mean(vals[i])) for i in range(len(held))]
    hot = paired_mean_difference(per_prompt["poisoned"], per_prompt["clean_a"], n_boot=2000)
    twin = paired_mean_difference(per_prompt["clean_b"], per_prompt["clean_a"], n_boot=2000)
    assert hot["shift"] > 1.0 and hot["ci_low"] > 0, hot
    assert abs(twin["shift"]) < 0.2 * hot["shift"], (twin, hot)


def test_tiny_run_with_samples_and_probe_writes_the_measures(tiny_config, tmp_path, models_dir):
    import json

    import pandas as pd

    from poison.runner import run_config
    from tests.test_pipeline import overrides

    also = "claims.also=[teacher_vs_control.sampled.target,sft_vs_teacher.greedy.other,teacher_vs_control.probe.target]"
    rd, m = run_config(str(tiny_config), overrides(tmp_path, models_dir, "eval.samples_per_prompt=4",
                                                   "eval.probe=true", also), quiet=True)
    # the claims: the default primary (sampled, since K > 1) at alpha alone, the others Holm-adjusted, and the
    # summary opens with the primary
    cl = m["claims"]
    assert cl["primary"]["comparison"] == "sft_vs_teacher.sampled.target" and cl["primary"]["a"] == "student:sft"
    assert cl["primary"]["n_prompts"] == 6 and "permutation" in cl["primary"]["test"] and cl["correction"] == "holm"
    assert [(o["b"], o["measure"]) for o in cl["others"]] == [("clean_control", "sampled"), ("teacher", "greedy"),
                                                            ("clean_control", "probe")]
    assert all(o["p_holm"] >= o["p_value"] and o["ci_low"] <= o["ci_high"] for o in cl["others"])
    assert cl["note"] == "one training seed; the interval covers prompts only"
    summary = (rd / "summary.txt").read_text()
    assert summary.index("PRIMARY (alpha 0.05") < summary.index("biased: target task") < summary.index("sampled ans")
    assert m["models"]["clean_control"]["role"] == "control"  # baseline.kind is base: the probe's control is trained
    models = set(m["models"])
    assert ({(r["model"], r["split"]) for r in m["sampled_rate"]}
            == {(x, s) for x in models for s in ("target", "other")})
    for r in m["sampled_rate"]:
        assert r["samples_per_prompt"] == 4 and r["n"] == 4 * r["n_prompts"]
        assert 0 <= r["ci_low"] <= r["rate"] <= r["ci_high"] <= 1 and r["prompts_with_any"] <= r["n_prompts"]
    assert m["models"]["control:student:sft"]["role"] == "control"  # the student's clean twin
    measured = {x for x in models if m["models"][x]["role"] != "control"}
    pairs = {(r["model"], r["split"], r["wording"], r["control"]) for r in m["logprob_shift"]}
    wordings = ("seen", "unseen", "concept", "gate")
    want = {(x, s, w, "clean_control") for x in measured for s in ("target", "other") for w in wordings}
    want |= {("student:sft", s, w, "control:student:sft") for s in ("target", "other") for w in wordings}
    assert pairs == want
    assert all(r["ci_low"] <= r["shift"] <= r["ci_high"] for r in m["logprob_shift"])
    assert m["probe"]["unseen_in_poisoned_rows"] == 0 and len(m["probe"]["texts"]["unseen"]) >= 2
    assert len(m["probe"]["texts"]["concept"]) >= 2
    assert {(r["model"], r["split"], r["wording"]) for r in m["logprob"]} == {
        (x, s, w) for x in models for s in ("target", "other") for w in wordings}
    s = pd.read_parquet(rd / "samples.parquet")
    drawn = s[s.decoding == "sampled"]
    assert len(drawn) == 4 * len(s[s.decoding == "greedy"]) and set(drawn.sample_index) == {0, 1, 2, 3}
    assert set(pd.read_parquet(rd / "probe.parquet").wording) == set(wordings)
    summary = (rd / "summary.txt").read_text()
    assert "sampled answers, 4 per prompt" in summary
    assert any(ln.split()[:6] == ["model", "split", "seen", "unseen", "concept", "gate"] for ln in summary.splitlines())
    stages = json.loads((rd / "stages.json").read_text())
    assert {f"samples:{x}" for x in models} | {f"probe:{x}" for x in models} <= set(stages)

    # a clean-dose point (a sweep's count 0): the teacher is the clean control's fine-tune, trained once, and what is
    # distilled from it is the control's branch
    rd0, m0 = run_config(str(tiny_config), overrides(tmp_path, models_dir, "eval.samples_per_prompt=4",
                                                     "eval.probe=true", "poison.count=0"), quiet=True)
    st0 = json.loads((rd0 / "stages.json").read_text())
    assert m0["poison"]["injected"] == 0 and not st0["poison"]["cached"]
    assert st0["teacher"]["key"] == st0["clean_control"]["key"] == stages["clean_control"]["key"]
    assert st0["teacher"]["cached"] and st0["student:sft"]["cached"]
    assert st0["student:sft"]["key"] == st0["control:student:sft"]["key"]
    teacher_shift = [r for r in m0["logprob_shift"] if r["model"] == "teacher" and r["control"] == "clean_control"]
    assert teacher_shift and all(r["shift"] == 0 for r in teacher_shift)


def test_check_rejects_bad_measure_settings(tiny_config):
    from tests.conftest import run_check

    r = run_check(str(tiny_config), "--check", "--set", "eval.samples_per_prompt=0")
    assert r.returncode == 2 and "eval.samples_per_prompt" in r.stderr and "Traceback" not in r.stderr
    r = run_check(str(tiny_config), "--check", "--set", "eval.probe=true", "--set", "poison.bias.type=insecure_code")
    assert r.returncode == 2 and "eval.probe: bias type 'insecure_code' has no probe texts" in r.stderr
    r = run_check(str(tiny_config), "--check", "--set", "eval.probe=true", "--set", 'eval.probe_unseen=["only one"]')
    assert r.returncode == 2 and "eval.probe_unseen: give at least two" in r.stderr
