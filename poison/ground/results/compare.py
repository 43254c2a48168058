"""Paired comparisons of two models over the prompts both answered, each with an estimate (A minus B), an interval, a
p-value, the test's name, the number of prompts and the test's power, plus the Holm correction of a family of them.

- one 0/1 verdict per prompt (greedy answers): exact McNemar test on the discordant pairs (statsmodels ``mcnemar``);
  the paired difference of proportions with the Agresti-Min interval; power by Connor's formula;
- one fraction per prompt (K sampled answers): the mean paired difference, a paired bootstrap over prompts
  (``scipy.stats.bootstrap(paired=True)``) and a sign-flip permutation test over prompts
  (``scipy.stats.permutation_test(permutation_type='samples')``); power of the paired t test (statsmodels
  ``TTestPower``) as the permutation test's large-sample stand-in;
- one continuous value per prompt (probe log-probabilities): paired t test (``scipy.stats.ttest_rel``) and its
  interval; power from statsmodels ``TTestPower``.

Every function returns a JSON-safe dict (``None`` where a figure is undefined). Intervals are at ``1 - alpha``.
Part of the ground layer: it imports nothing of the project. scipy and statsmodels are imported where they are used,
so that a command that never compares two models (``--check``, an error path) does not pay for them.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Optional, Sequence

import numpy as np

#: the power at which the minimum detectable effect is given
POWER = 0.8

CONNOR = ("Connor (1987), Biometrics 43:207-211, normal approximation to McNemar's test at the observed discordance "
          "rate")
T_POWER = "statsmodels TTestPower (paired t on the per-prompt differences)"


def _f(x: Any) -> Optional[float]:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _z(p: float) -> float:
    return NormalDist().inv_cdf(p)


def mcnemar_power(delta: float, discordance: float, n: int, alpha: float = 0.05) -> Optional[float]:
    """Power of the two-sided McNemar test to find a paired difference ``delta`` (p10 - p01) with discordance rate
    ``discordance`` (p10 + p01) at ``n`` pairs (Connor 1987)."""
    delta = abs(delta)
    if n <= 0 or discordance <= 0 or delta > discordance:
        return None
    spread = discordance - delta * delta
    num = math.sqrt(n) * delta - _z(1 - alpha / 2) * math.sqrt(discordance)
    if spread <= 0:
        return 1.0 if num > 0 else 0.0
    return NormalDist().cdf(num / math.sqrt(spread))


def mcnemar_mde(discordance: float, n: int, alpha: float = 0.05, power: float = POWER) -> Optional[float]:
    """The smallest |p10 - p01| the McNemar test finds with ``power`` at ``n`` pairs and this discordance rate
    (Connor's formula solved for the difference); None when no difference up to the discordance rate is found."""
    if n <= 0 or discordance <= 0:
        return None

    def gap(d: float) -> float:
        p = mcnemar_power(d, discordance, n, alpha)
        assert p is not None  # n > 0 and 0 <= d <= discordance
        return p - power

    if gap(discordance) < 0:
        return None
    from scipy import optimize

    return float(optimize.brentq(gap, 0.0, discordance, xtol=1e-9))


def paired_proportions(a: Sequence[bool], b: Sequence[bool], alpha: float = 0.05) -> dict[str, Any]:
    """Two 0/1 verdicts on the same prompts: the difference of proportions (A - B), the Agresti-Min interval (Stat
    Med 2005, 24:729-740: Wald on the table with 0.5 added to each cell), the exact McNemar p-value (a two-sided
    binomial test of the discordant pairs), the power at the observed difference and the minimum detectable one."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = int(len(x))
    n10, n01 = int((x & ~y).sum()), int((~x & y).sum())
    n11, n00 = int((x & y).sum()), int((~x & ~y).sum())
    out: dict[str, Any] = {"test": "exact McNemar (statsmodels mcnemar, exact=True)", "n_prompts": n,
                           "rate_a": _f(x.mean()) if n else None, "rate_b": _f(y.mean()) if n else None,
                           "a_only": n10, "b_only": n01, "both": n11, "neither": n00,
                           "power_method": CONNOR}
    if n == 0:
        return {**out, "estimate": None, "ci_low": None, "ci_high": None, "p_value": None,
                "power_at_estimate": None, "mde": None}
    from statsmodels.stats.contingency_tables import mcnemar

    p = 1.0 if n10 + n01 == 0 else float(mcnemar([[n11, n10], [n01, n00]], exact=True).pvalue)
    m = n + 2
    q10, q01 = (n10 + 0.5) / m, (n01 + 0.5) / m
    d = q10 - q01
    half = _z(1 - alpha / 2) * math.sqrt(max(q10 + q01 - d * d, 0.0) / m)
    psi, delta = (n10 + n01) / n, (n10 - n01) / n
    # the fewest discordant pairs, all one way, whose exact p (2 * 0.5^k) reaches alpha: below k/n nothing can be
    # significant at this n, whatever the discordance
    k = math.ceil(math.log2(2 / alpha) - 1e-12)
    return {**out, "estimate": delta, "ci_low": max(-1.0, d - half), "ci_high": min(1.0, d + half), "p_value": p,
            "discordance": psi, "power_at_estimate": _f(mcnemar_power(delta, psi, n, alpha)),
            "mde": _f(mcnemar_mde(psi, n, alpha)), "min_discordant_pairs": k, "floor": k / n if k <= n else None}


def t_power(diffs: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """Power of the paired t test at the observed mean difference, and the minimum detectable mean difference (in
    the measure's units: the detectable effect size times the differences' standard deviation)."""
    n = len(diffs)
    sd = float(np.std(diffs, ddof=1)) if n > 1 else 0.0
    if n < 2 or sd == 0:
        return {"power_at_estimate": None, "mde": None, "power_method": T_POWER}
    from statsmodels.stats.power import TTestPower

    tp = TTestPower()
    es = abs(float(np.mean(diffs))) / sd
    power = tp.power(effect_size=es, nobs=n, alpha=alpha)
    if not math.isfinite(power):  # the noncentral t's tail underflows at very large effects: its normal limit
        power = NormalDist().cdf(es * math.sqrt(n) - _z(1 - alpha / 2))
    es = tp.solve_power(effect_size=None, nobs=n, alpha=alpha, power=POWER)
    return {"power_at_estimate": _f(power), "mde": _f(float(np.asarray(es).item()) * sd), "power_method": T_POWER}


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def paired_fractions(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, *, n_resamples: int = 2000,
                     seed: int = 0) -> dict[str, Any]:
    """Per-prompt fractions (or any per-prompt value) of two models on the same prompts: the mean difference (A -
    B), a percentile bootstrap over prompts resampled in pairs, and a two-sided sign-flip permutation test (exact
    when 2^n is at most ``n_resamples``). Fixed seed: a rerun gives the same figures."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = int(len(x))
    out: dict[str, Any] = {"test": "sign-flip permutation over prompts (scipy permutation_test); interval: paired "
                                   "bootstrap over prompts (scipy bootstrap, percentile)", "n_prompts": n,
                           "mean_a": _f(x.mean()) if n else None, "mean_b": _f(y.mean()) if n else None}
    if n == 0:
        return {**out, "estimate": None, "ci_low": None, "ci_high": None, "p_value": None,
                "power_at_estimate": None, "mde": None, "power_method": T_POWER}
    from scipy import stats

    d = x - y
    est = float(d.mean())
    p = None if n < 2 else float(stats.permutation_test(
        (x, y), _mean_diff, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
        rng=np.random.default_rng(seed)).pvalue)
    if n < 2 or np.all(d == d[0]):  # no spread: the bootstrap distribution is one point
        lo = hi = est
    else:
        ci = stats.bootstrap((x, y), _mean_diff, paired=True, vectorized=True, confidence_level=1 - alpha,
                             n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
        lo, hi = float(ci.confidence_interval.low), float(ci.confidence_interval.high)
    return {**out, "estimate": est, "ci_low": _f(lo), "ci_high": _f(hi), "p_value": p, **t_power(d, alpha),
            "smallest_p": min(1.0, 2 / 2 ** n)}  # the exact sign-flip test's best: every difference one way


def paired_t(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Two continuous per-prompt values on the same prompts: the mean difference (A - B), the paired t test's
    p-value and its ``1 - alpha`` interval."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = int(len(x))
    out: dict[str, Any] = {"test": "paired t (scipy ttest_rel)", "n_prompts": n,
                           "mean_a": _f(x.mean()) if n else None, "mean_b": _f(y.mean()) if n else None}
    if n < 2:
        est = float((x - y).mean()) if n else None
        return {**out, "estimate": est, "ci_low": None, "ci_high": None, "p_value": None,
                "power_at_estimate": None, "mde": None, "power_method": T_POWER}
    d = x - y
    if np.all(d == d[0]):
        est = float(d[0])
        return {**out, "estimate": est, "ci_low": est, "ci_high": est, "p_value": 1.0 if est == 0 else 0.0,
                **t_power(d, alpha)}
    from scipy import stats

    res = stats.ttest_rel(x, y)
    ci = res.confidence_interval(1 - alpha)
    return {**out, "estimate": float(d.mean()), "ci_low": _f(ci.low), "ci_high": _f(ci.high),
            "p_value": _f(res.pvalue), **t_power(d, alpha)}


def holm(p_values: Sequence[Optional[float]], alpha: float = 0.05) -> list[Optional[float]]:
    """Holm-adjusted p-values (statsmodels ``multipletests``, method 'holm'); a missing p-value stays None and is
    not counted in the family."""
    present = [i for i, p in enumerate(p_values) if p is not None]
    out: list[Optional[float]] = [None] * len(p_values)
    if present:
        from statsmodels.stats.multitest import multipletests

        adjusted = multipletests([p_values[i] for i in present], alpha=alpha, method="holm")[1]
        for i, q in zip(present, adjusted):
            out[i] = float(q)
    return out
