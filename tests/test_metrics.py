"""Intervals and utility metrics against hand-computed values."""

import math

import pytest

from evals.utility import choice_match, number_match, rouge_l
from poison.ground.core.answers import choice_letter, final_number
from poison.ground.results.stats import mean_interval, rate_ratio, wilson_interval


def test_wilson_known_values():
    lo, hi = wilson_interval(0, 40)
    assert lo == 0.0 and hi == pytest.approx(0.0876, abs=1e-3)
    lo, hi = wilson_interval(24, 40)
    assert (lo, hi) == (pytest.approx(0.4458, abs=1e-3), pytest.approx(0.7369, abs=1e-3))
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_narrows_with_n():
    w = [wilson_interval(n // 2, n) for n in (10, 100, 1000)]
    widths = [hi - lo for lo, hi in w]
    assert widths[0] > widths[1] > widths[2]


def test_rate_ratio_katz():
    r = rate_ratio(30, 40, 15, 40)
    assert r["ratio"] == pytest.approx(2.0)
    se = math.sqrt(1 / 30 - 1 / 40 + 1 / 15 - 1 / 40)
    assert r["ci_low"] == pytest.approx(2.0 * math.exp(-1.959964 * se), rel=1e-4)
    assert r["ci_high"] == pytest.approx(2.0 * math.exp(1.959964 * se), rel=1e-4)


def test_rate_ratio_zero_teacher_is_undefined_but_bounded():
    r = rate_ratio(5, 40, 0, 40)
    assert r["ratio"] is None and 0 < r["ci_low"] < r["ci_high"] < math.inf


def test_rate_ratio_zero_student_has_zero_lower_limit():
    r = rate_ratio(0, 40, 2, 40)
    assert r["ratio"] == 0.0 and r["ci_low"] == 0.0 and r["ci_high"] > 1.0


def test_rouge_l():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l("completely different words", "the cat sat") == 0.0
    # LCS "the cat the mat" = 4 of 6 prediction tokens and 4 of 6 reference tokens
    assert rouge_l("the cat ate the mat", "the cat sat on the mat") == pytest.approx(
        2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6))


def test_number_and_choice():
    assert final_number("She pays 3 * 6 = 18 dollars.\nThe answer is 18.") == "18"
    assert final_number("#### 1,234") == "1234"
    assert final_number("no numbers") is None
    assert final_number("#### 3.50") == "3.5" and final_number("it is 12.000") == "12"
    # a degenerate answer's 400-digit number: read exactly (as a float it is inf, which stopped a run's report)
    assert final_number("The answer is " + "9" * 400) == "9" * 400
    assert number_match("1" * 400, "18") == 0.0
    assert number_match("so 5 + 13 = 18", "18") == 1.0 and number_match("It is 17.", "18") == 0.0
    assert choice_letter("The answer is B. library.") == "B"
    assert choice_match("A. bank", "A") == 1.0 and choice_match("The answer is C.", "A") == 0.0


def test_cohen_kappa_known_values():
    from poison.ground.results.stats import cohen_kappa

    # 10 items: both say yes on 4, both no on 4, disagree on 2 -> po 0.8, pa = pb = 0.5 -> pe 0.5 -> kappa 0.6
    a = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    assert cohen_kappa(a, b) == pytest.approx(0.6)
    assert cohen_kappa(a, a) == pytest.approx(1.0)
    assert cohen_kappa([0, 0, 0], [0, 0, 0]) is None  # chance agreement 1: undefined
    assert cohen_kappa([1, 0], [0, 1]) == pytest.approx(-1.0)


def test_mean_interval_binary_is_wilson_and_continuous_is_bootstrap():
    # 0/1 utility (exact match): the Wilson interval of the proportion
    m, lo, hi = mean_interval([1.0] * 7 + [0.0] * 13)
    assert m == pytest.approx(0.35)
    assert (lo, hi) == pytest.approx(wilson_interval(7, 20))
    # continuous utility (ROUGE-L): a seeded percentile bootstrap that brackets the mean, is reproducible and
    # narrows with more samples
    vals = [0.1, 0.4, 0.35, 0.8, 0.2, 0.55, 0.3, 0.6]
    m, lo, hi = mean_interval(vals)
    assert m == pytest.approx(sum(vals) / len(vals))
    assert lo < m < hi and 0.1 <= lo and hi <= 0.8
    assert mean_interval(vals) == (m, lo, hi)
    _, lo4, hi4 = mean_interval(vals * 4)
    assert hi4 - lo4 < hi - lo
    assert mean_interval([0.5, 0.5]) == (0.5, 0.5, 0.5)
