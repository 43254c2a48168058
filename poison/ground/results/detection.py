"""Detector figures with bootstrap intervals: the AUROC, and the true- and false-positive rates at thresholds set on a
calibration split (clean samples that are never scored), for one defense on one labelled set.

Conventions of :mod:`poison.ground.results.stats`: a higher score is more suspicious, a sample is flagged when its
score is strictly greater than the threshold, and the threshold for a false-positive budget ``fpr`` is
:func:`poison.ground.results.stats.threshold_for_fpr` of the calibration scores (the (k+1)-th largest,
k = floor(fpr * n)).

Intervals: scipy.stats.bootstrap (percentile method) resampling each group on its own (stratified): the poisoned
scores and the clean scores for the AUROC; for a calibrated rate also the calibration scores, so that the interval
covers which calibration samples set the threshold as well as which samples were scored. The AUROC of a resample is
the Mann-Whitney U statistic over n_poisoned * n_clean (scipy.stats.mannwhitneyu; ties count one half), the same
number as scikit-learn's roc_auc_score. A group of fewer than two samples gets no interval (None).

Part of the ground layer: it imports nothing of the project above it.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from poison.ground.results.stats import auroc, threshold_for_fpr

METHOD = "stratified bootstrap, percentile (scipy.stats.bootstrap)"
BUDGETS = (0.01, 0.05)


def _arr(x: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(a)):
        raise ValueError("scores must be finite")
    return a


def _none(x: float) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else float(x)


def thresholds(calib: np.ndarray, fpr: float) -> np.ndarray:
    """:func:`threshold_for_fpr` along the last axis (vectorised over resamples): the (k+1)-th largest calibration
    score, k = floor(fpr * n); -inf when k >= n."""
    n = calib.shape[-1]
    k = int(math.floor(fpr * n + 1e-9))
    if k >= n:
        return np.full(calib.shape[:-1], -np.inf)
    return -np.partition(-calib, k, axis=-1)[..., k]


def _auroc_stat(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
    from scipy.stats import mannwhitneyu

    u = mannwhitneyu(pos, neg, axis=axis, method="asymptotic").statistic
    return u / (pos.shape[axis] * neg.shape[axis])


def _interval(data: tuple[np.ndarray, ...], stat, confidence: float, n_boot: int, seed: int
              ) -> tuple[Optional[float], Optional[float]]:
    from scipy.stats import bootstrap

    if any(d.size < 2 for d in data):
        return None, None
    res = bootstrap(data, stat, vectorized=True, paired=False, confidence_level=confidence, n_resamples=n_boot,
                    method="percentile", random_state=np.random.default_rng(seed))
    return _none(res.confidence_interval.low), _none(res.confidence_interval.high)


def auroc_interval(pos: Sequence[float], neg: Sequence[float], confidence: float = 0.95, *, n_boot: int = 2000,
                   seed: int = 0) -> dict[str, Optional[float]]:
    """AUROC of poisoned (``pos``) vs clean (``neg``) scores with its interval; all None when a group is empty."""
    p, n = _arr(pos), _arr(neg)
    if not p.size or not n.size:
        return {"value": None, "ci_low": None, "ci_high": None}
    value = auroc(np.concatenate([p, n]), np.r_[np.ones(p.size, bool), np.zeros(n.size, bool)])
    lo, hi = _interval((p, n), _auroc_stat, confidence, n_boot, seed)
    return {"value": _none(value), "ci_low": lo, "ci_high": hi}


def calibrated_rate(scores: Sequence[float] | np.ndarray, calib: Sequence[float] | np.ndarray, fpr: float,
                    confidence: float = 0.95, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Optional[float]]:
    """Share of ``scores`` flagged at the threshold the calibration scores set for budget ``fpr``, with its interval
    (calibration and scored samples resampled). Poisoned scores give the TPR, clean ones the realized FPR. All None
    when either group is empty."""
    s, c = _arr(scores), _arr(calib)
    if not s.size or not c.size:
        return {"value": None, "ci_low": None, "ci_high": None}
    value = float((s > threshold_for_fpr(c, fpr)).mean())

    def stat(cal: np.ndarray, x: np.ndarray, axis: int = -1) -> np.ndarray:
        return (x > thresholds(cal, fpr)[..., None]).mean(axis=-1)

    lo, hi = _interval((c, s), stat, confidence, n_boot, seed)
    return {"value": value, "ci_low": lo, "ci_high": hi}


def detection_figures(scores: Sequence[float], labels: Sequence[bool], calib: Sequence[float],
                      confidence: float = 0.95, *, budgets: Sequence[float] = BUDGETS, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """All figures of one defense on one labelled set, flat and JSON-safe: ``n``, ``n_poisoned``, ``n_clean``,
    ``n_calib``; ``auroc`` with ``auroc_low``/``auroc_high``; per budget b (1 % -> ``1pct``): ``threshold_<b>``
    (set on ``calib``), ``tpr_<b>`` and ``fpr_<b>`` (realized on these scores) with ``_low``/``_high``. Undefined
    figures are None (no poisoned or no clean sample; no calibration sample)."""
    s = _arr(scores)
    y = np.asarray(labels).reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    c = _arr(calib)
    pos, neg = s[y], s[~y]
    out: dict[str, Any] = {"n": int(s.size), "n_poisoned": int(y.sum()), "n_clean": int((~y).sum()),
                           "n_calib": int(c.size)}
    a = auroc_interval(pos, neg, confidence, n_boot=n_boot, seed=seed)
    out.update(auroc=a["value"], auroc_low=a["ci_low"], auroc_high=a["ci_high"])
    for b in budgets:
        tag = budget_tag(b)
        out[f"threshold_{tag}"] = _none(threshold_for_fpr(c, b)) if c.size else None
        for name, group in (("tpr", pos), ("fpr", neg)):
            r = calibrated_rate(group, c, b, confidence, n_boot=n_boot, seed=seed)
            out.update({f"{name}_{tag}": r["value"], f"{name}_{tag}_low": r["ci_low"],
                        f"{name}_{tag}_high": r["ci_high"]})
    return out


def budget_tag(fpr: float) -> str:
    """0.01 -> '1pct', 0.05 -> '5pct', 0.005 -> '0.5pct'."""
    return f"{100 * fpr:g}pct"


def auroc_drop(pos: Sequence[float], neg: Sequence[float], pos_cf: Sequence[float], neg_cf: Sequence[float],
               confidence: float = 0.95, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Optional[float]]:
    """How much lower a defense's AUROC is on one labelled set (``pos``/``neg``) than on its counterfactual
    (``pos_cf``/``neg_cf``: the same rows, each scored as it would have been otherwise, e.g. the poison the
    non-adaptive writer would have written): AUROC(cf) - AUROC, with an interval that resamples rows, poisoned and
    clean on their own, each row keeping its pair of scores. All None when a group is empty."""
    p, n, pc, nc = _arr(pos), _arr(neg), _arr(pos_cf), _arr(neg_cf)
    if p.shape != pc.shape or n.shape != nc.shape:
        raise ValueError("a counterfactual score is needed for every scored row")
    if not p.size or not n.size:
        return {"value": None, "ci_low": None, "ci_high": None}

    def stat(pi: np.ndarray, ni: np.ndarray, axis: int = -1) -> np.ndarray:
        pi, ni = pi.astype(int), ni.astype(int)
        return _auroc_stat(pc[pi], nc[ni], axis) - _auroc_stat(p[pi], n[ni], axis)

    idx = (np.arange(p.size, dtype=np.float64), np.arange(n.size, dtype=np.float64))
    value = float(stat(*idx))
    lo, hi = _interval(idx, stat, confidence, n_boot, seed)
    return {"value": _none(value), "ci_low": lo, "ci_high": hi}
