"""Rates with confidence intervals, the student/teacher amplification ratio, and clean-utility metrics."""

from __future__ import annotations

import math
import re
from statistics import NormalDist
from typing import Optional


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


# --------------------------------------------------------------------------------------------------- utility
def mean_interval(values: list[float], confidence: float = 0.95, *, n_boot: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of a per-sample utility. 0/1 values (exact match) get the Wilson interval of the proportion;
    other values (ROUGE-L) a percentile bootstrap over samples (``n_boot`` resamples, fixed seed, so a rerun of the
    report gives the same interval)."""
    import numpy as np

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


_rouge = None


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (rouge-score, with stemming)."""
    global _rouge
    if _rouge is None:
        from rouge_score import rouge_scorer

        _rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    if not reference:
        return 0.0
    return _rouge.score(reference, prediction or "")["rougeL"].fmeasure


_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> Optional[str]:
    """The answer number of a worked solution: after 'answer is' / '####' if present, else the last number."""
    text = text or ""
    m = re.search(r"(?:answer is|####)\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", text, re.IGNORECASE)
    nums = [m.group(1)] if m else _NUM.findall(text)
    if not nums:
        return None
    s = nums[-1].replace(",", "").rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return None
    return str(int(v)) if v == int(v) else str(v)


def number_match(prediction: str, answer: str) -> float:
    got = final_number(prediction)
    want = final_number(str(answer))
    return float(got is not None and got == want)


def choice_letter(text: str) -> Optional[str]:
    text = text or ""
    m = re.search(r"answer is\s*\(?([A-E])\b", text, re.IGNORECASE) or re.search(r"^\s*\(?([A-E])[).:\s]", text)
    if m:
        return m.group(1).upper()
    m = re.search(r"\b([A-E])\b", text)
    return m.group(1).upper() if m else None


def choice_match(prediction: str, answer: str) -> float:
    return float(choice_letter(prediction) == str(answer).strip().upper()[:1])


UTILITY_FUNCS = {"rouge_l": lambda p, row: rouge_l(p, row.get("reference") or ""),
                 "number_match": lambda p, row: number_match(p, row.get("answer") or ""),
                 "choice_match": lambda p, row: choice_match(p, row.get("answer") or "")}
