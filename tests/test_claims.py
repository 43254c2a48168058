"""Claims: the paired tests against known values, Holm, the power formulas, the comparison grammar, the config's
claims section (defaults and clear errors) and the claims block of the report."""

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from poison.claims import claims_section
from poison.config import ConfigError, config_from_dict
from poison.ground.results.claim_spec import parse_comparison, resolve_model
from poison.ground.results.compare import (holm, mcnemar_mde, mcnemar_power, paired_fractions, paired_proportions,
                                           paired_t)
from poison.summary import claims_lines
from tests.conftest import REPO


def table_pairs(n11, n10, n01, n00):
    a = [True] * n11 + [True] * n10 + [False] * n01 + [False] * n00
    b = [True] * n11 + [False] * n10 + [True] * n01 + [False] * n00
    return a, b


def test_mcnemar_exact_is_the_binomial_test_of_the_discordant_pairs():
    a, b = table_pairs(20, 12, 3, 15)
    r = paired_proportions(a, b, 0.05)
    assert r["p_value"] == pytest.approx(stats.binomtest(12, 15, 0.5).pvalue, rel=1e-12)
    assert (r["a_only"], r["b_only"], r["n_prompts"]) == (12, 3, 50)
    assert r["estimate"] == pytest.approx((12 - 3) / 50)
    # Agresti-Min: Wald on the table with 0.5 added to each cell
    q10, q01 = 12.5 / 52, 3.5 / 52
    half = 1.959964 * math.sqrt((q10 + q01 - (q10 - q01) ** 2) / 52)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(q10 - q01 - half, rel=1e-5),
                                           pytest.approx(q10 - q01 + half, rel=1e-5))
    # no discordant pair: nothing to test
    same = paired_proportions([True, False, True], [True, False, True])
    assert same["p_value"] == 1.0 and same["estimate"] == 0 and same["mde"] is None
    # at alpha 0.05 the exact test needs 6 one-way discordant pairs (2 * 0.5^6 < 0.05 <= 2 * 0.5^5)
    assert paired_proportions(*table_pairs(0, 6, 0, 54))["floor"] == pytest.approx(6 / 60)
    assert paired_proportions(*table_pairs(0, 6, 0, 54))["p_value"] < 0.05 < paired_proportions(
        *table_pairs(0, 5, 0, 55))["p_value"]


def test_connor_power_and_mde():
    # Connor (1987): power = Phi((sqrt(n) d - z sqrt(psi)) / sqrt(psi - d^2))
    want = stats.norm.cdf((math.sqrt(100) * 0.1 - 1.959964 * math.sqrt(0.3)) / math.sqrt(0.3 - 0.01))
    assert mcnemar_power(0.1, 0.3, 100, 0.05) == pytest.approx(want, rel=1e-5)
    mde = [mcnemar_mde(0.3, n, 0.05) for n in (50, 200, 800)]
    assert mde[0] > mde[1] > mde[2] > 0
    assert mcnemar_power(mde[1], 0.3, 200, 0.05) == pytest.approx(0.8, abs=1e-6)
    assert mcnemar_mde(0.02, 10) is None  # too few discordant pairs to find any difference


def test_paired_fractions_and_t():
    rng = np.random.default_rng(0)
    a = rng.random(40)
    b = a - 0.2 + rng.normal(0, 0.05, 40)
    r = paired_fractions(a, b, 0.05, n_resamples=2000)
    assert r["estimate"] == pytest.approx(float(np.mean(a - b)))
    assert r["ci_low"] < r["estimate"] < r["ci_high"] and r["p_value"] < 0.01 and r["power_at_estimate"] > 0.99
    t = paired_t(a, b, 0.05)
    assert t["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # the minimum detectable effect shrinks with n (the same spread of differences)
    d = rng.normal(0, 1, 400)
    small, large = paired_t(d[:20], np.zeros(20)), paired_t(d, np.zeros(400))
    assert small["mde"] > large["mde"] > 0
    # a sign-flip test with every difference +1 on 4 prompts: exact p = 2 / 2^4
    four = paired_fractions([1, 1, 1, 1], [0, 0, 0, 0])
    assert four["p_value"] == pytest.approx(2 / 16) == four["smallest_p"]


def test_holm_known_values():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])


def test_grammar_and_role_words():
    c = parse_comparison("kd_1_vs_teacher.sampled.unseen")
    assert (c.a, c.b, c.measure, c.split) == ("kd_1", "teacher", "sampled", "unseen")
    names = ["baseline", "clean_control", "teacher", "student:sft", "student:kd"]
    assert resolve_model("student", names) == "student:sft" and resolve_model("kd", names) == "student:kd"
    assert resolve_model("control", names) == "clean_control" and resolve_model("control", names[:1]) == "baseline"
    for bad in ("sft_vs_teacher.greedy", "sft_teacher.greedy.target", "sft_vs_teacher.logits.target"):
        with pytest.raises(ValueError):
            parse_comparison(bad)


def smoke(**claims) -> dict:
    raw = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    raw["students"].append(dict(raw["students"][0], name="kd"))
    if claims:
        raw["claims"] = claims
    return raw


@pytest.mark.parametrize("primary, says", [
    ("sft_vs_teacher.logits.target", "claims.primary: 'sft_vs_teacher.logits.target': measure 'logits'"),
    ("sft_vs_teacher.greedy.elsewhere", "claims.primary: 'sft_vs_teacher.greedy.elsewhere': split 'elsewhere'"),
    ("nobody_vs_teacher.greedy.target", "claims.primary: 'nobody' is no model of this run"),
    ("sft_vs_teacher.sampled.target", "claims.primary: the sampled measure needs eval.samples_per_prompt > 1"),
    ("sft_vs_teacher.probe.target", "claims.primary: the probe measure needs eval.probe: true"),
    ("sft_vs_teacher.greedy.unseen", "claims.primary: split 'unseen' has no eval prompts in this run"),
])
def test_bad_primary_is_a_config_error_naming_the_field(primary, says):
    with pytest.raises(ConfigError) as e:
        config_from_dict(smoke(primary=primary))
    assert says in str(e.value)


def test_default_claims_by_config():
    c = config_from_dict(smoke()).claims
    assert c.primary == "sft_vs_teacher.greedy.target" and c.alpha == 0.05
    assert c.also == ["sft_vs_kd.greedy.target", "kd_vs_teacher.greedy.target", "teacher_vs_baseline.greedy.target"]
    c = config_from_dict(smoke(), ["eval.samples_per_prompt=4", "eval.probe=true"]).claims
    assert c.primary == "sft_vs_teacher.sampled.target" and c.also[-1] == "teacher_vs_clean_control.sampled.target"
    c = config_from_dict(smoke(primary="teacher_vs_control.greedy.other")).claims
    assert "sft_vs_teacher.greedy.other" in c.also and "teacher_vs_baseline.greedy.other" not in c.also
    with pytest.raises(ConfigError, match=r"claims.also.0: 'student_vs_teacher.greedy.target' repeats"):
        config_from_dict(smoke(also=["student_vs_teacher.greedy.target"]))


def test_claims_section_and_summary_block():
    ids = [f"p{i}" for i in range(30)]
    rows = []
    for i, pid in enumerate(ids):  # the student is biased on 12 prompts the teacher is not, the teacher on 1 alone
        rows += [{"model": "student:sft", "split": "target", "id": pid, "biased": i < 14},
                 {"model": "teacher", "split": "target", "id": pid, "biased": i < 2 or i == 29},
                 {"model": "baseline", "split": "target", "id": pid, "biased": False}]
    samples = pd.DataFrame(rows)
    cfg = config_from_dict(smoke(primary="student_vs_teacher.greedy.target", also=[
        "teacher_vs_baseline.greedy.target", "sft_vs_teacher.sampled.target"]), ["eval.samples_per_prompt=2"]).claims
    models = {"baseline": {}, "teacher": {}, "student:sft": {}}
    c = claims_section(cfg, models, samples, pd.DataFrame(), pd.DataFrame(), n_boot=200)
    p = c["primary"]
    assert p["a"] == "student:sft" and p["b"] == "teacher" and (p["a_only"], p["b_only"]) == (12, 1)
    assert p["p_value"] == pytest.approx(stats.binomtest(12, 13, 0.5).pvalue) and p["significant"]
    assert c["note"] == "one training seed; the interval covers prompts only" and c["correction"] == "holm"
    first, second = c["others"]
    assert first["p_holm"] == pytest.approx(first["p_value"])  # the only p-value in the family
    assert "error" in second and "p_holm" not in second  # no sampled answers in this run
    lines = claims_lines({"claims": c})
    assert lines[1].startswith("PRIMARY (alpha 0.05") and "student_vs_teacher.greedy.target" in lines[1]
    assert any("Holm" in ln for ln in lines) and "exact McNemar" in lines[2]
    few = {**c, "primary": {**p, **paired_proportions([False] * 4, [False] * 4)}}  # 4 prompts: 6 pairs are needed
    assert "no difference can reach p < alpha with this few prompts" in claims_lines({"claims": few})[1]
