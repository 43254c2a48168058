"""Pooling replicate runs: one figure from the same measurement made in several replicates (other training seeds,
other data draws), with an interval that covers both what varies between prompts and what varies between
replicates.

Input: per replicate, one value per eval prompt (a 0/1 greedy verdict, a prompt's biased fraction of its sampled
answers, a per-prompt log-probability shift), as a mapping prompt id -> value. Two designs:

- **crossed** (every replicate answered the same prompts: only the training seed varies): the values form a
  prompts x replicates table, y = mu + a_prompt + b_replicate + e. The pooled mean's variance is
  s2_a / P + s2_b / R + s2_e / (P R), estimated from the two-way ANOVA mean squares (prompts MS_P, replicates MS_R,
  residual MS_E) as (MS_P + MS_R - MS_E) / (P R), the variance components clipped at 0, with Satterthwaite's degrees
  of freedom and a Student t quantile (``method`` variance_components);
- **nested** (each replicate drew its own prompts: the data draw varies): the replicate means are independent and
  each already carries its prompts' error, so the interval is the t interval of the R replicate means
  (``method`` replicate_t, R - 1 df). The variance of the pooled mean is never taken below the prompts' own share,
  sum_i s2_i / n_i / R^2 (``+prompt_floor`` where it binds: replicates that land on the same rate by chance);
- one replicate: the prompts' own interval only (``method`` prompts_only), marked as a single run.

Prompts that only some replicates of a crossed design answered are dropped (the table must be complete). Ratios
(student / teacher rates) use the same variance on the delta method's linearised values, on the log scale.
A proportion whose values are all 0 (or all 1) gets the exact Clopper-Pearson bound on the number of distinct
prompts. Part of the ground layer: it imports nothing of the project.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

Replicate = Mapping[Any, float]  # prompt id -> value


def design(replicates: Sequence[Replicate]) -> str:
    """crossed (the same prompts in every replicate), nested (each its own), or single."""
    if len(replicates) <= 1:
        return "single"
    keys = [set(r) for r in replicates]
    common = set.intersection(*keys)
    return "crossed" if len(common) >= 0.5 * max(len(k) for k in keys) and len(common) >= 2 else "nested"


def _design(reps: Sequence[Mapping[Any, Any]], given: Optional[str]) -> str:
    if len(reps) <= 1:
        return "single"
    if given == "crossed" and len(set.intersection(*(set(r) for r in reps))) < 2:
        return "nested"  # said crossed, but the replicates share fewer than two prompts
    return given or design(reps)


def _table(replicates: Sequence[Replicate]) -> np.ndarray:
    common = sorted(set.intersection(*(set(r) for r in replicates)), key=str)
    return np.array([[float(r[k]) for r in replicates] for k in common], dtype=float)


def crossed_variance(y: np.ndarray) -> tuple[float, float, dict[str, float]]:
    """(variance of the grand mean, Satterthwaite df, the variance components) of a complete prompts x replicates
    table under the two-way random-effects model without interaction."""
    p, r = y.shape
    m = y.mean()
    pm, rm = y.mean(axis=1), y.mean(axis=0)
    ms_p = r * float(((pm - m) ** 2).sum()) / (p - 1)
    ms_r = p * float(((rm - m) ** 2).sum()) / (r - 1)
    resid = y - pm[:, None] - rm[None, :] + m
    df_e = (p - 1) * (r - 1)
    ms_e = float((resid ** 2).sum()) / df_e
    s2_e = ms_e
    s2_a = max(0.0, (ms_p - ms_e) / r)
    s2_b = max(0.0, (ms_r - ms_e) / p)
    var = s2_a / p + s2_b / r + s2_e / (p * r)
    # Satterthwaite on the mean squares the estimate is made of (a clipped component drops out of it)
    terms = [(ms_p / (p * r) if s2_a > 0 else 0.0, p - 1), (ms_r / (p * r) if s2_b > 0 else 0.0, r - 1),
             (-ms_e / (p * r) * (int(s2_a > 0) + int(s2_b > 0) - 1), df_e)]
    denom = sum(c * c / d for c, d in terms if d > 0)
    df = var * var / denom if denom > 0 else float(df_e)
    return var, max(df, 1.0), {"prompt": s2_a, "replicate": s2_b, "residual": s2_e}


def _t(confidence: float, df: float) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.5 + confidence / 2, df))


def pooled_mean(replicates: Sequence[Replicate], confidence: float = 0.95, *, proportion: bool = False,
                prompt_interval: Optional[tuple[float, float]] = None, design: Optional[str] = None
                ) -> dict[str, Any]:
    """The pooled mean of per-prompt values over replicates with its interval (see the module docstring).

    Returns pooled, ci_low, ci_high, method, design, n_replicates, n_prompts, per_replicate (each replicate's mean),
    between_sd (the standard deviation of the replicate means), df and, for a crossed design, the variance
    components. ``prompt_interval``: the interval to use for a single replicate (its own, as the run reported it);
    by default a t interval over its prompts. ``proportion`` clips to [0, 1] and bounds all-0 / all-1 values.
    ``design``: crossed or nested when the caller knows it (a data draw that varies makes it nested even where two
    draws share prompts); by default guessed from the prompt ids (:func:`design`)."""
    reps = [{k: float(v) for k, v in r.items() if v is not None and math.isfinite(float(v))} for r in replicates]
    reps = [r for r in reps if r]
    out: dict[str, Any] = {"pooled": None, "ci_low": None, "ci_high": None, "method": None,
                           "design": _design(reps, design), "n_replicates": len(reps), "n_prompts": 0,
                           "per_replicate": [], "between_sd": None, "df": None}
    if not reps:
        return out
    means = [float(np.mean(list(r.values()))) for r in reps]
    out["per_replicate"] = means
    out["between_sd"] = float(np.std(means, ddof=1)) if len(means) > 1 else None
    d = out["design"]
    if d == "crossed":
        y = _table(reps)
        mean = float(y.mean())
        var, df, comps = crossed_variance(y)
        out.update(n_prompts=int(y.shape[0]), method="variance_components", components=comps)
        values = y.ravel()
    elif d == "nested":
        mean = float(np.mean(means))
        var, df = float(np.var(means, ddof=1)) / len(means), float(len(means) - 1)
        out.update(n_prompts=int(sum(len(r) for r in reps)), method="replicate_t")
        # each replicate mean carries at least its own prompts' error: a between-replicate spread below it (two
        # replicates that happen to land on the same rate) would give a zero-width interval
        floor = sum(float(np.var(list(r.values()), ddof=1)) / len(r) for r in reps if len(r) > 1) / len(reps) ** 2
        if floor > var:
            var = floor
            out["method"] += "+prompt_floor"
        values = np.concatenate([list(r.values()) for r in reps])
    else:
        v = np.asarray(list(reps[0].values()), dtype=float)
        mean = float(v.mean())
        var, df = (float(v.var(ddof=1)) / v.size if v.size > 1 else 0.0), float(max(v.size - 1, 1))
        out.update(n_prompts=int(v.size), method="prompts_only")
        values = v
    out.update(pooled=mean, df=float(df), se=math.sqrt(max(var, 0.0)))
    if d == "single" and prompt_interval is not None and prompt_interval[0] is not None:
        lo, hi = prompt_interval
    elif proportion and (np.all(values == 0) or np.all(values == 1)):
        from poison.ground.results.stats import exact_proportion_interval

        lo, hi = exact_proportion_interval(float(values.mean()) * out["n_prompts"], out["n_prompts"], confidence)
        out["method"] += "+exact_bound"
    else:
        half = _t(confidence, df) * math.sqrt(max(var, 0.0))
        lo, hi = mean - half, mean + half
    if proportion:
        lo, hi = max(0.0, lo), min(1.0, hi)
    out.update(ci_low=float(lo), ci_high=float(hi))
    return out


def pooled_ratio(numerator: Sequence[Replicate], denominator: Sequence[Replicate],
                 confidence: float = 0.95, design: Optional[str] = None) -> dict[str, Any]:
    """mean(numerator) / mean(denominator) pooled over replicates (a student's rate over its teacher's, the two
    answering the same prompts in each replicate), with the delta method on the log scale: each (prompt,
    replicate) cell contributes z = x / mean(x) - y / mean(y), and z's pooled variance (:func:`pooled_mean`'s design)
    is the variance of log(ratio). None when the denominator's mean is 0 or the numerator's is (no log scale)."""
    pairs = [{k: (float(n[k]), float(d[k])) for k in set(n) & set(d)} for n, d in zip(numerator, denominator)]
    pairs = [p for p in pairs if p]
    out: dict[str, Any] = {"ratio": None, "ci_low": None, "ci_high": None, "design": _design(pairs, design),
                           "n_replicates": len(pairs), "per_replicate": []}
    if not pairs:
        return out
    xs = np.array([v[0] for p in pairs for v in p.values()])
    ys = np.array([v[1] for p in pairs for v in p.values()])
    out["per_replicate"] = [(float(np.mean([v[0] for v in p.values()])) / m if (m := float(np.mean(
        [v[1] for v in p.values()]))) > 0 else None) for p in pairs]
    mx, my = float(xs.mean()), float(ys.mean())
    if my <= 0:
        return out
    out["ratio"] = mx / my
    if mx <= 0:
        out["ci_low"], out["method"] = 0.0, "log_delta: undefined (numerator 0)"
        return out
    z = [{k: v[0] / mx - v[1] / my for k, v in p.items()} for p in pairs]
    pz = pooled_mean(z, confidence, design=design)
    if pz["pooled"] is None:
        return out
    half = _t(confidence, pz["df"]) * pz["se"]
    out.update(ci_low=float(math.exp(math.log(out["ratio"]) - half)),
               ci_high=float(math.exp(math.log(out["ratio"]) + half)), method=f"log_delta+{pz['method']}",
               df=pz["df"])
    return out


def replicate_t(values: Sequence[float], confidence: float = 0.95) -> Optional[tuple[float, float, float]]:
    """The replicate as the unit: the t interval of the mean of per-replicate values (N - 1 df) and the one-sample t
    test's p-value against 0, as (ci_low, ci_high, p_value); None with one replicate or no spread between them."""
    from scipy.stats import ttest_1samp

    d = np.asarray(values, dtype=float)
    if d.size < 2 or np.std(d) == 0:
        return None
    half = _t(confidence, d.size - 1) * float(d.std(ddof=1)) / np.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half), float(ttest_1samp(d, 0.0).pvalue)
