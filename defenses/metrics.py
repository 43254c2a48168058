"""Detector metrics for defenses: pure functions of suspicion scores and ground-truth poison labels.

Conventions (the same in every function here):
- a higher score means more suspicious; ``labels`` are 1 (poisoned) / 0 (clean), bools work too;
- a sample is **flagged when its score is strictly greater than the threshold** (``score > threshold``), so a
  threshold equal to the highest clean score flags no clean sample;
- undefined values (AUROC with one class, precision with nothing flagged, recall with no poisoned sample) are
  ``nan`` in the pure functions and ``None`` in :func:`detector_report`, whose dict is JSON-safe.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

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
    one half (Mann-Whitney U / (n_pos * n_neg)). ``nan`` when either class is empty."""
    s, y = _arrays(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average ranks (1-based) over runs of tied scores
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


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
