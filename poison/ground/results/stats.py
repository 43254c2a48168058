"""Statistics, one copy of each: binomial intervals, the rate ratio, mean intervals, Cohen's kappa, and the detector
figures of defenses (AUROC, ROC points, thresholds set by a false-positive budget, precision/recall).

The report, the defenses and the dashboard all call these. Detector conventions (the same in every function here):
- a higher score means more suspicious; ``labels`` are 1 (poisoned) / 0 (clean), bools work too;
- a sample is **flagged when its score is strictly greater than the threshold** (``score > threshold``), so a
  threshold equal to the highest clean score flags no clean sample;
- undefined values (AUROC with one class, precision with nothing flagged, recall with no poisoned sample) are
  ``nan`` in the pure functions and ``None`` in :func:`detector_report`, whose dict is JSON-safe.

Part of the ground layer: it imports nothing of the project.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Optional, Sequence

import numpy as np


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (well-behaved at 0 and n)."""
    if n <= 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def rate_ratio(k1: int, n1: int, k0: int, n0: int, confidence: float = 0.95) -> dict[str, Optional[float]]:
    """Ratio of two independent proportions (k1/n1) / (k0/n0) with a Katz log interval.

    The point estimate is None when the denominator rate is 0 (undefined). The interval uses the 0.5 continuity
    correction when a count is 0 or equals n, so it stays finite and honest about small counts; with no event in the
    numerator the lower limit is 0 (the ratio cannot be excluded from 0).
    """
    if n1 <= 0 or n0 <= 0:
        return {"ratio": None, "ci_low": None, "ci_high": None}
    ratio = None if k0 == 0 else (k1 / n1) / (k0 / n0)
    a, b = float(k1), float(k0)
    m1, m0 = float(n1), float(n0)
    if k1 == 0 or k0 == 0 or k1 == n1 or k0 == n0:
        a, b, m1, m0 = a + 0.5, b + 0.5, m1 + 1, m0 + 1
    log_rr = math.log((a / m1) / (b / m0))
    se = math.sqrt(1 / a - 1 / m1 + 1 / b - 1 / m0)
    z = _z(confidence)
    low = 0.0 if k1 == 0 else math.exp(log_rr - z * se)
    return {"ratio": ratio, "ci_low": low, "ci_high": math.exp(log_rr + z * se)}


def cohen_kappa(a: list[bool], b: list[bool]) -> Optional[float]:
    """Cohen's kappa of two binary raters on the same items (None when undefined: no items, or both raters constant
    and equal so that chance agreement is 1)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    po = sum(1 for x, y in zip(a, b) if bool(x) == bool(y)) / n
    pa, pb = sum(map(bool, a)) / n, sum(map(bool, b)) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    if pe >= 1.0:
        return None
    return (po - pe) / (1 - pe)


def mean_interval(values: list[float], confidence: float = 0.95, *, n_boot: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of a per-sample utility. 0/1 values (exact match) get the Wilson interval of the proportion;
    other values (ROUGE-L) a percentile bootstrap over samples (``n_boot`` resamples, fixed seed, so a rerun of the
    report gives the same interval)."""
    v = np.asarray([float(x) for x in values], dtype=float)
    if v.size == 0:
        return (float("nan"), 0.0, 1.0)
    mean = float(v.mean())
    if np.all((v == 0) | (v == 1)):
        lo, hi = wilson_interval(int(v.sum()), int(v.size), confidence)
        return (mean, lo, hi)
    if v.size == 1 or np.all(v == v[0]):
        return (mean, mean, mean)
    boots = np.random.default_rng(seed).choice(v, size=(n_boot, v.size), replace=True).mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [a, 1 - a])
    return (mean, float(lo), float(hi))


# ------------------------------------------------------------------------------------------- detector statistics
ArrayLike = Sequence[float] | np.ndarray


def _arrays(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s, y


def flags(scores: ArrayLike, threshold: float) -> np.ndarray:
    """Which samples a threshold flags: ``score > threshold``."""
    return np.asarray(scores, dtype=np.float64).reshape(-1) > threshold


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve = P(score of a random poisoned sample > score of a random clean one), ties counted
    one half (scikit-learn's roc_auc_score). ``nan`` when either class is empty."""
    from sklearn.metrics import roc_auc_score

    s, y = _arrays(scores, labels)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


def threshold_for_fpr(clean_scores: ArrayLike, fpr: float) -> float:
    """The smallest threshold at which at most ``floor(fpr * n)`` of the ``n`` clean scores exceed it (flag =
    ``score > threshold``). It is always one of the clean scores (the (k+1)-th largest, k = floor(fpr * n)); ``-inf``
    when ``fpr * n >= n`` (everything may be flagged). Raises on an empty list."""
    c = np.sort(np.asarray(clean_scores, dtype=np.float64).reshape(-1))[::-1]
    if c.size == 0:
        raise ValueError("threshold_for_fpr needs at least one clean score")
    if not np.all(np.isfinite(c)):
        raise ValueError("scores must be finite")
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    k = int(math.floor(fpr * c.size + 1e-9))  # tolerance: 0.29 * 100 is 28.999999999999996 in floating point
    if k >= c.size:
        return float("-inf")
    return float(c[k])


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float = 0.01) -> float:
    """True-positive rate at the threshold that keeps the false-positive rate on the clean samples at most ``fpr``
    (:func:`threshold_for_fpr` of the clean scores). With fewer than 1/fpr clean samples that threshold is the highest
    clean score, i.e. TPR at FPR 0. ``nan`` when either class is empty."""
    s, y = _arrays(scores, labels)
    if y.sum() == 0 or (~y).sum() == 0:
        return float("nan")
    t = threshold_for_fpr(s[~y], fpr)
    return float((s[y] > t).mean())


def precision_recall(scores: ArrayLike, labels: ArrayLike, threshold: float) -> tuple[float, float]:
    """(precision, recall) of flagging ``score > threshold``. Precision is ``nan`` when nothing is flagged, recall
    when there is no poisoned sample."""
    s, y = _arrays(scores, labels)
    f = s > threshold
    tp = int((f & y).sum())
    precision = tp / int(f.sum()) if f.any() else float("nan")
    recall = tp / int(y.sum()) if y.any() else float("nan")
    return float(precision), float(recall)


def _json(x: float) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(x)


def detector_report(scores: ArrayLike, labels: ArrayLike, threshold: float) -> dict[str, Any]:
    """All detector figures for one defense on one labelled set, JSON-safe (undefined -> None).

    Keys: auroc, tpr_at_1pct_fpr (threshold set on these clean scores, independent of ``threshold``), precision and
    recall at ``threshold`` (flag = score > threshold), threshold, n, n_poisoned, n_flagged."""
    s, y = _arrays(scores, labels)
    p, r = precision_recall(s, y, threshold)
    return {
        "auroc": _json(auroc(s, y)),
        "tpr_at_1pct_fpr": _json(tpr_at_fpr(s, y, 0.01)),
        "precision": _json(p),
        "recall": _json(r),
        "threshold": _json(float(threshold)),
        "n": int(s.size),
        "n_poisoned": int(y.sum()),
        "n_flagged": int((s > threshold).sum()),
    }


def roc_curve(scores, labels):
    """ROC points as a DataFrame (threshold, tpr, fpr) for 'flag when score > threshold', from the strictest threshold
    (the highest score: nothing flagged) down to -inf (everything flagged); scikit-learn's roc_curve, whose
    thresholds mean 'score >= t', shifted by one point to this convention. Non-numeric scores are dropped."""
    import pandas as pd
    from sklearn.metrics import roc_curve as sk_roc_curve

    d = pd.DataFrame({"s": pd.to_numeric(pd.Series(list(scores), dtype=object), errors="coerce"),
                      "y": pd.Series(list(labels), dtype=object).fillna(False).astype(bool)}).dropna()
    if d.empty or d.y.all() or not d.y.any():  # one class: no curve, only its two ends
        top = float(d.s.max()) if not d.empty else math.inf
        return pd.DataFrame({"threshold": [top, -math.inf], "tpr": [0.0, float(d.y.any())],
                             "fpr": [0.0, float((~d.y).any())]})
    fpr, tpr, thr = sk_roc_curve(d.y.to_numpy(), d.s.to_numpy(), drop_intermediate=False)
    return pd.DataFrame({"threshold": [float(t) for t in thr[1:]] + [-math.inf], "tpr": tpr, "fpr": fpr})


def threshold_stats(scores, labels, threshold: float) -> dict[str, Any]:
    """Counts and rates when every sample with score > threshold is flagged (and dropped); non-numeric scores are
    never flagged. Undefined rates are None."""
    import pandas as pd

    s = pd.to_numeric(pd.Series(list(scores), dtype=object), errors="coerce")
    y = pd.Series(list(labels), dtype=object).fillna(False).astype(bool)
    flagged = s > threshold
    tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
    fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())
    return {"threshold": float(threshold), "n": len(s), "n_poisoned": tp + fn, "flagged": tp + fp,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "tpr": tp / (tp + fn) if tp + fn else None, "fpr": fp / (fp + tn) if fp + tn else None,
            "precision": tp / (tp + fp) if tp + fp else None, "slipped": fn}


# ------------------------------------------------------------------------------------- prompt-clustered intervals
def clustered_rate(per_prompt_biased: Sequence[Sequence[bool]], confidence: float = 0.95, *, n_boot: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    """Sampled biased rate over prompts, the prompt as the unit.

    ``per_prompt_biased[i]`` are the verdicts of prompt i's samples. The rate is the mean over prompts of each
    prompt's biased fraction; its interval is a percentile bootstrap over prompts (scipy.stats.bootstrap), since the
    samples of one prompt are correlated. When every prompt has the same fraction the bootstrap has nothing to
    resample: at 0 (or 1) the interval is the exact Clopper-Pearson bound on the number of prompts (0 of 640
    samples on 40 prompts: 0 [0, 0.088], the effective n when a prompt's samples all agree); strictly between, the
    prompts show no spread, so the Wilson interval over all samples. Also: biased samples ``k``, samples ``n``,
    prompts, and the prompts with at least one biased sample (count and share)."""
    fr = np.asarray([np.mean(v) if len(v) else np.nan for v in per_prompt_biased], dtype=float)
    fr = fr[np.isfinite(fr)]
    k = int(sum(int(np.sum(v)) for v in per_prompt_biased))
    n = int(sum(len(v) for v in per_prompt_biased))
    anyb = int(sum(bool(np.any(v)) for v in per_prompt_biased if len(v)))
    out = {"rate": float(fr.mean()) if fr.size else None, "ci_low": None, "ci_high": None, "k": k, "n": n,
           "n_prompts": int(fr.size), "prompts_with_any": anyb,
           "prompts_with_any_rate": anyb / fr.size if fr.size else None}
    if fr.size and np.all(fr == fr[0]) and 0 < fr[0] < 1:  # no spread between prompts: design effect 1
        out["ci_low"], out["ci_high"] = wilson_interval(k, n, confidence)
    elif fr.size:  # all 0 (or all 1): the exact bound on the prompts, the effective n at full within-prompt agreement
        out["ci_low"], out["ci_high"] = bootstrap_mean_interval(fr, confidence, n_boot=n_boot, seed=seed,
                                                                    proportion=True)
    return out


def exact_proportion_interval(k: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact, beta) interval of a proportion k/n (statsmodels ``proportion_confint``); ``k`` may be
    fractional (a mean of per-prompt fractions times the number of prompts). With no event the upper limit is
    about 3.7/n at 95 % (the rule of three, two-sided)."""
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return (0.0, 1.0)
    lo, hi = proportion_confint(min(max(k, 0.0), n), n, alpha=1 - confidence, method="beta")
    return (float(lo), float(hi))


def bootstrap_mean_interval(values: Sequence[float], confidence: float = 0.95, *, n_boot: int = 2000,
                            seed: int = 0, proportion: bool = False) -> tuple[float, float]:
    """Percentile bootstrap interval of a mean (scipy.stats.bootstrap, fixed seed).

    A constant sample has no spread to resample. For proportions (``proportion=True``: each value a unit's rate in
    [0, 1], e.g. a prompt's biased fraction) it gets the exact Clopper-Pearson interval of its mean on the number of
    units as n, the effective sample size when every unit's samples are fully correlated (design effect = samples per
    unit), so 0 biased answers out of 640 on 40 prompts reads 0 [0, 0.088], never 0 [0, 0]. Any other constant sample
    gives its value as both limits (no information about its spread)."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return (float("nan"), float("nan"))
    if v.size == 1 or np.all(v == v[0]):
        if proportion:
            return exact_proportion_interval(float(v.sum()), float(v.size), confidence)
        return (float(v[0]), float(v[0]))
    res = bootstrap((v,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                    rng=np.random.default_rng(seed), vectorized=True)
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def paired_mean_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, *, n_boot: int = 2000,
                           seed: int = 0) -> dict[str, Any]:
    """Mean of ``a[i] - b[i]`` (the same prompt under two models) with a paired percentile bootstrap over prompts."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"shift": None, "ci_low": None, "ci_high": None, "n_prompts": 0}
    lo, hi = bootstrap_mean_interval(d, confidence, n_boot=n_boot, seed=seed)
    return {"shift": float(d.mean()), "ci_low": lo, "ci_high": hi, "n_prompts": int(d.size)}


def paired_ratio(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, *, n_boot: int = 2000,
                 seed: int = 0) -> dict[str, Any]:
    """mean(a) / mean(b) over the same prompts (a student's and its teacher's per-prompt rates: biased fractions of
    sampled answers, or 0/1 greedy verdicts) with a paired percentile bootstrap over prompts (``method``
    paired_bootstrap). The ratio and its interval are None when every b is 0; resamples whose mean(b) is 0 count as
    an unbounded ratio (the upper limit is then None when they reach the upper tail).

    When a or b is constant (0 biased answers from the student, say) the bootstrap has nothing to resample on that
    side and would give a zero-width interval; then (``method`` exact_bounds) the limits are the ratio of the exact
    Clopper-Pearson limits of the two means (prompts as the units, :func:`bootstrap_mean_interval` with
    ``proportion``), each at level 1 - alpha/2 so that the pair holds at 1 - alpha (Bonferroni): low = low(a) /
    high(b), high = high(a) / low(b), None when low(b) is 0."""
    from scipy.stats import bootstrap

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size == 0 or not np.any(y > 0):
        return {"ratio": None, "ci_low": None, "ci_high": None, "n_prompts": int(x.size), "method": None}
    ratio = float(x.mean() / y.mean())
    if x.size == 1 or np.all(x == x[0]) or np.all(y == y[0]):
        each = 1 - (1 - confidence) / 2
        lx, hx = bootstrap_mean_interval(x, each, n_boot=n_boot, seed=seed, proportion=True)
        ly, hy = bootstrap_mean_interval(y, each, n_boot=n_boot, seed=seed, proportion=True)
        return {"ratio": ratio, "ci_low": lx / hy if hy > 0 else 0.0, "ci_high": hx / ly if ly > 0 else None,
                "n_prompts": int(x.size), "method": "exact_bounds"}
    unbounded = 1e12

    def stat(xs, ys, axis=-1):
        num, den = np.mean(xs, axis=axis), np.mean(ys, axis=axis)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, unbounded, 0.0))

    res = bootstrap((x, y), stat, paired=True, n_resamples=n_boot, confidence_level=confidence,
                    method="percentile", rng=np.random.default_rng(seed), vectorized=True)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"ratio": ratio, "ci_low": lo, "ci_high": hi if hi < unbounded / 10 else None, "n_prompts": int(x.size),
            "method": "paired_bootstrap"}


def mcnemar_test(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """Exact McNemar test of two binary verdicts on the same prompts (statsmodels): the prompts only ``a`` flags,
    only ``b`` flags, and the two-sided p-value of the null that both kinds of disagreement are equally likely
    (1.0 when they never disagree)."""
    from statsmodels.stats.contingency_tables import mcnemar

    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    a_only, b_only = int((x & ~y).sum()), int((~x & y).sum())
    table = [[int((x & y).sum()), a_only], [b_only, int((~x & ~y).sum())]]
    p = 1.0 if a_only + b_only == 0 else float(mcnemar(table, exact=True).pvalue)
    return {"test": "mcnemar_exact", "a_only": a_only, "b_only": b_only, "p_value": p, "n_prompts": int(x.size)}


def pool_replicates(estimates: Sequence[float], ci_low: Sequence[float], ci_high: Sequence[float],
                    confidence: float = 0.95, bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict[str, Any]:
    """One estimate from replicate runs: the same experiment under other training seeds, measured on the *same* eval
    prompts. The pooled value is the mean over seeds. Its interval adds two parts in quadrature:

    - the prompts' sampling error: the mean distance from each seed's estimate to its own lower (and upper) limit,
      so an asymmetric interval (a Wilson interval at 0) stays asymmetric. The prompts are shared by every seed, so
      this error does not shrink with more seeds; a meta-analytic pool (statsmodels ``combine_effects``) would
      treat the seeds as independent studies and divide it by n;
    - the training randomness: the seeds' standard error ``sd / sqrt(n)`` times a Student t quantile (n - 1 df).

    Seeds that agree give one seed's interval; seeds that disagree widen it. ``bounds`` clip it."""
    from scipy.stats import t as student_t

    est = np.asarray(estimates, dtype=float)
    if est.size == 0:
        return {"pooled": None, "ci_low": None, "ci_high": None, "between_sd": None, "n": 0}
    below = float(np.mean(est - np.asarray(ci_low, dtype=float)))
    above = float(np.mean(np.asarray(ci_high, dtype=float) - est))
    mean = float(est.mean())
    sd = float(est.std(ddof=1)) if est.size > 1 else 0.0
    t = float(student_t.ppf(0.5 + confidence / 2, est.size - 1)) if est.size > 1 else 0.0
    between = t * sd / math.sqrt(est.size)
    lo, hi = mean - math.hypot(below, between), mean + math.hypot(above, between)
    if bounds is not None:
        lo, hi = max(bounds[0], lo), min(bounds[1], hi)
    return {"pooled": mean, "ci_low": lo, "ci_high": hi, "between_sd": sd, "n": int(est.size)}
