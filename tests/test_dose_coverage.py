"""The dose-response fit on per-prompt counts: its ED50 interval covers at its nominal level when samples of a prompt
are correlated (and the aggregated fit's does not), separated counts get a finite penalised fit, the offset's
sensitivity is reported, its estimate and errors are statsmodels' GEE, and a sweep fits it from its runs'
samples.parquet, with the smallest detectable dose from a one-sided prompt-level test against the clean control."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from poison.ground.results.dose import exceeds_control, fit_dose_response, fit_dose_response_prompts

DOSES = np.array([0.0, 4.0, 8.0, 16.0, 32.0])
OFF, SLOPE, ED50 = 2.0, 2.0, 12.0  # logit p = b0 + 2 log(dose + 2) + u_prompt; marginal rate 50 % at dose 12
B0 = -SLOPE * math.log(ED50 + OFF)
K, PROMPTS, SIGMA = 16, 40, 0.8  # 16 samples of each of 40 prompts per dose; sd of the prompt effect (logit scale)


def simulate(rng: np.random.Generator, doses=DOSES, prompts=PROMPTS) -> np.ndarray:
    """Biased counts of K samples, prompts x doses. The same prompts at every dose, each with its own effect u on the
    logit scale (shared across doses). u is symmetric, so the marginal rate is exactly 50 % where b0 + b1 x = 0."""
    u = rng.normal(0.0, SIGMA, prompts)
    eta = B0 + SLOPE * np.log(doses + OFF)[None, :] + u[:, None]
    return rng.binomial(K, 1.0 / (1.0 + np.exp(-eta)))


def long(kmat: np.ndarray, doses=DOSES):
    """(dose, prompt, k, n) rows of a prompts x doses count matrix."""
    p, d = np.meshgrid(np.arange(kmat.shape[0]), doses, indexing="ij")
    return d.ravel(), p.ravel(), kmat.ravel(), np.full(kmat.size, K)


def test_ed50_interval_covers_when_samples_of_a_prompt_are_correlated():
    """200 simulated sweeps at a design effect of about 2.2: the per-prompt fit's 95 % ED50 interval covers the true
    ED50 at close to 95 %; the aggregated quasi-binomial fit's delta-method interval, on the same counts, does not
    (its dispersion rests on 3 degrees of freedom and is never below 1)."""
    rng = np.random.default_rng(20261204)
    reps, new, old, deff = 200, 0, 0, []
    for r in range(reps):
        kmat = simulate(rng)
        f = fit_dose_response_prompts(*long(kmat), n_boot=100, seed=r)
        assert f["ed50_ci_low"] is not None and not f["penalised"]
        new += f["ed50_ci_low"] <= ED50 <= (f["ed50_ci_high"] if f["ed50_ci_high"] is not None else math.inf)
        deff.append(f["scale"])
        g = fit_dose_response(DOSES, kmat.sum(0), np.full(len(DOSES), K * PROMPTS))
        old += g["ed50_ci_low"] <= ED50 <= g["ed50_ci_high"]
    print(f"ED50 coverage over {reps} sweeps: per-prompt {new / reps:.3f}, aggregated {old / reps:.3f}; "
          f"mean design effect {np.mean(deff):.2f}")
    assert 1.8 < np.mean(deff) < 2.8  # the simulation is the one described (Pearson X2/df of per-prompt counts)
    assert 0.88 <= new / reps <= 0.99
    assert old / reps < 0.80


def test_separated_counts_get_a_finite_penalised_fit():
    rng = np.random.default_rng(3)
    doses = np.array([0.0, 4.0, 8.0, 16.0])
    top_only = np.zeros((30, 4), dtype=int)
    top_only[:, 3] = rng.binomial(K, 0.3, 30)  # events at the highest dose only: the MLE slope is infinite
    f = fit_dose_response_prompts(*long(top_only, doses), n_boot=100)
    assert f["penalised"] and "pseudo" in f["penalty"] and "penalised" in f["note"]
    assert f["slope"] > 0 and math.isfinite(f["ed50"]) and f["ed50"] > 16 and f["ed50_extrapolated"]
    assert f["ed50_ci_low"] is not None and f["penalised_draws"] == 1.0
    step = np.zeros((30, 4), dtype=int)
    step[:, 2:] = K  # all 0 at doses 0 and 4, all 1 at 8 and 16
    s = fit_dose_response_prompts(*long(step, doses), n_boot=50)
    assert s["penalised"] and 4 < s["ed50"] < 8
    mixed = simulate(rng)  # a curve with events at every dose: no penalty
    assert not fit_dose_response_prompts(*long(mixed), n_boot=20)["penalised"]


def test_offset_sensitivity_is_reported():
    """Each entry is the fit with the offset halved or doubled; the ED50 moves little with five doses, more when only
    the clean dose and one positive dose carry the fit."""
    kmat = simulate(np.random.default_rng(5))
    f = fit_dose_response_prompts(*long(kmat), n_boot=20)
    assert f["offset"] == OFF and [s["factor"] for s in f["offset_sensitivity"]] == [0.5, 2.0]
    for s in f["offset_sensitivity"]:
        refit = fit_dose_response_prompts(*long(kmat), offset=s["offset"], n_boot=20)
        assert s["offset"] == OFF * s["factor"] and s["ed50"] == pytest.approx(refit["ed50"], rel=1e-6)
    spread = lambda fit: max(abs(math.log(s["ed50"] / fit["ed50"])) for s in fit["offset_sensitivity"])  # noqa: E731
    two = fit_dose_response_prompts(*long(kmat[:, [0, 4]], DOSES[[0, 4]]), n_boot=20)
    assert 0 < spread(f) < 0.1 < spread(two)


def test_point_estimate_and_errors_are_gee_with_independence():
    import statsmodels.api as sm

    kmat = simulate(np.random.default_rng(7))
    d, p, k, n = long(kmat)
    f = fit_dose_response_prompts(d, p, k, n, n_boot=20)
    y = np.concatenate([np.repeat([1.0, 0.0], [kk, K - kk]) for kk in k])  # one row per sample
    x = np.log(np.repeat(d, K) + OFF)
    gee = sm.GEE(y, sm.add_constant(x), groups=np.repeat(p, K), family=sm.families.Binomial(),
                 cov_struct=sm.cov_struct.Independence()).fit()
    assert [f["intercept"], f["slope"]] == pytest.approx(list(gee.params), rel=1e-5)
    se = (f["slope_ci_high"] - f["slope_ci_low"]) / (2 * 1.959964)
    assert se == pytest.approx(gee.bse[1], rel=0.03)  # the same sandwich, up to the small-sample factor
    assert "jointly across doses" in f["ed50_method"] and f["n_prompts"] == PROMPTS


def test_exceeds_control_is_a_one_sided_prompt_level_test():
    zero = np.zeros(40)
    some = np.r_[np.full(8, 2 / 16), np.zeros(32)]  # 8 of 40 prompts biased in 2 of 16 samples
    few = np.r_[np.full(3, 1 / 16), np.zeros(37)]
    assert exceeds_control(some, zero, paired=True) < 0.01
    assert exceeds_control(few, zero, paired=True) > 0.05  # 3 prompts of 40: not told apart from 0
    assert exceeds_control(zero, some, paired=True) > 0.5  # one-sided
    assert exceeds_control(zero, zero, paired=True) == 1.0
    assert exceeds_control(some, zero[:30], paired=False) < 0.05


def _run(tmp_path, dose: int, rng, samples: bool = True) -> dict:
    """A run directory with samples.parquet (greedy and K sampled answers of 30 prompts by the teacher and the clean
    control, which never emits the bias) and the metrics.json fields the dose-response reads."""
    from poison import measures
    from poison.ground.results.stats import wilson_interval

    rd = tmp_path / f"run-{dose}"
    rd.mkdir()
    n_biased = {0: 0, 4: 4, 16: 12, 64: 24}[dose]  # prompts that take the plug at this dose
    rows = []
    for model, role in (("teacher", "teacher"), ("clean_control", "control")):
        for i in range(30):
            p = 0.5 if role == "teacher" and i < n_biased else 0.0
            base = {"model": model, "role": role, "split": "target", "id": f"p{i:02d}", "task": "t"}
            rows.append({**base, "decoding": "greedy", "sample_index": 0, "biased": False})
            rows += [{**base, "decoding": "sampled", "sample_index": j, "biased": bool(b)}
                     for j, b in enumerate(rng.random(K) < p)]
    s = pd.DataFrame(rows)
    if samples:
        s.to_parquet(rd / "samples.parquet", index=False)
    g = s[s.decoding == "greedy"]
    bias_rates = [{"model": m, "role": r, "split": "target", "n": len(x), "biased": int(x.biased.sum()),
                   "rate": float(x.biased.mean()), **dict(zip(("ci_low", "ci_high"), wilson_interval(
                       int(x.biased.sum()), len(x))))} for (m, r), x in g.groupby(["model", "role"])]
    m = {"run": {"run_dir": str(rd)}, "poison": {"injected": dose, "rate": dose / 1000}, "bias_rates": bias_rates,
         "sampled_rate": measures.sampled_rate_rows(s[s.decoding == "sampled"], K, 0.95, 400),
         "probe": {"control": "clean_control"}, "logprob_shift": []}
    (rd / "metrics.json").write_text(json.dumps(m))
    return m


def test_sweep_fits_per_prompt_counts_and_tests_against_the_clean_control(tmp_path):
    from poison.dose_response import INTERVAL_DETECT, TEST_DETECT, dose_response, dose_response_lines

    rng = np.random.default_rng(11)
    runs = [({"poison.count": d}, _run(tmp_path, d, rng)) for d in (4, 16, 64)]
    e = dose_response(runs, "poison.count", 0.95, n_boot=200)
    assert [(x["model"], x["split"]) for x in e] == [("teacher", "target")]
    t = e[0]
    assert t["measure"] == "sampled" and t["method"].startswith("binomial GLM on per-(dose, prompt)")
    assert t["n_prompts"] == 30 and "cluster bootstrap" in t["ed50_method"]
    assert [p["dose"] for p in t["points"]] == [0.0, 4, 16, 64]  # the clean control is the zero dose
    assert t["ed50_ci_low"] < t["ed50"] < t["ed50_ci_high"] and len(t["offset_sensitivity"]) == 2
    # the control has 0 biased samples: its clustered interval is the exact bound on its 30 prompts, and 4 prompts of
    # 30 at dose 4 are not told apart from it; 12 are
    ctrl = next(r for r in runs[0][1]["sampled_rate"] if r["model"] == "clean_control")
    assert ctrl["ci_low"] == 0.0 and ctrl["ci_high"] == pytest.approx(1 - 0.025 ** (1 / 30))
    assert t["detect_method"] == TEST_DETECT and t["min_dose_rate"] == 16
    assert next(p for p in t["points"] if p["dose"] == 4)["p_above_control"] > 0.05
    text = "\n".join(dose_response_lines(e))
    assert "per-prompt" in text and "cluster bootstrap" in text and "Wilcoxon" in text
    json.dumps(e)  # sweep.json-safe: no frames left in the points
    # an older run without samples.parquet: the aggregated fit, and the control's exact bound on 30 prompts
    (tmp_path / "old").mkdir()
    old = [({"poison.count": d}, _run(tmp_path / "old", d, rng, samples=False)) for d in (4, 16, 64)]
    o = dose_response(old, "poison.count", 0.95)[0]
    assert o["method"].startswith("binomial GLM on one aggregated") and o["detect_method"] == INTERVAL_DETECT
    assert o["points"][0]["rate"] == 0 and o["points"][1]["control_ci_high"] == pytest.approx(1 - 0.025 ** (1 / 30))
    assert "aggregated" in "\n".join(dose_response_lines([o]))
