"""Dose-response: how a model's biased rate grows with the poison dose (PoisonBench's log-linear summary).

Both fits are binomial GLMs (statsmodels) of logit(rate) on x = log(dose + offset); the clean dose (0 poisoned rows)
enters through the offset, by default half the smallest positive dose. ED50 is the dose of a fitted 50 % rate.

- ``fit_dose_response_prompts`` (per-(dose, prompt) counts; the sweep's fit). Samples of one prompt are correlated,
  and the same eval prompts are answered at every dose, so the prompt is the unit. The point estimate is the binomial
  GLM on the per-prompt counts, which is GEE with an independence working correlation; the slope's interval uses the
  prompt-clustered robust (sandwich) covariance. The ED50 interval is a cluster bootstrap percentile interval: prompt
  ids are resampled jointly across doses when the same prompts appear at every dose, else within each dose
  (Rao-Wu's rescaled bootstrap, m - 1 of m prompts), and each draw is refitted. Counts that are (quasi-)completely
  separated (events at one dose only, or all 0 then all 1), where the maximum-likelihood slope is infinite, get a
  Jeffreys-style pseudo-count (0.5 event and 0.5 non-event added at each dose) and say so (``penalised``); so do
  separated bootstrap draws. The ED50 is refitted with the offset halved and doubled (``offset_sensitivity``),
  since the clean dose's place on the log axis is a choice.
- ``fit_dose_response`` (one aggregated count per dose; kept for callers without per-prompt counts, e.g. runs
  without samples.parquet): the binomial variance is scaled by the Pearson chi-square per residual degree of freedom
  (quasi-binomial, never below 1) and the ED50 interval is the delta method. With few doses that scale rests on a
  handful of degrees of freedom, and it under-covers when samples of a prompt are correlated (see
  tests/test_dose_coverage.py).

``exceeds_control`` (a one-sided prompt-level test) and ``clopper_pearson_upper`` are what the sweep's smallest
detectable dose rests on. Part of the ground layer: it imports nothing of the project.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Sequence

import numpy as np

PSEUDO = 0.5  # Jeffreys-style pseudo-count per dose: this many events and as many non-events
OFFSET_FACTORS = (0.5, 2.0)  # the offset-sensitivity refits
_CHUNK = 20  # bootstrap draws fitted together in one block-diagonal GLM (larger blocks cost more per draw)
_UNBOUNDED = 700.0  # a log-dose beyond this is reported as no bound


def _empty(n_points: int) -> dict[str, Any]:
    return {"intercept": None, "slope": None, "slope_ci_low": None, "slope_ci_high": None, "ed50": None,
            "ed50_ci_low": None, "ed50_ci_high": None, "offset": None, "n_points": n_points, "scale": None,
            "converged": False, "ed50_extrapolated": None}


def _default_offset(d: np.ndarray) -> float:
    positive = d[d > 0]
    return float(0.5 * positive.min()) if positive.size else 1.0


def _to_dose(x: float, off: float) -> float:
    return float(max(0.0, math.exp(min(x, _UNBOUNDED)) - off))


def fit_dose_response(doses: Sequence[float], k: Sequence[int], n: Sequence[int], confidence: float = 0.95,
                      offset: Optional[float] = None) -> dict[str, Any]:
    """Fit logit(p) = b0 + b1 * log(dose + offset) to ``k[i]`` biased of ``n[i]`` samples at ``doses[i]``.

    Returns intercept, slope (b1) with its interval, ed50 with its interval (None when the slope is not positive,
    the rate never varies, or the fit fails), the offset, the number of points, the dispersion scale and whether the
    ED50 lies outside the swept doses (``ed50_extrapolated``)."""
    import statsmodels.api as sm
    from scipy.stats import norm

    d = np.asarray(doses, dtype=float)
    k_, n_ = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    keep = n_ > 0
    d, k_, n_ = d[keep], k_[keep], n_[keep]
    out = _empty(int(d.size))
    out.update(method="binomial GLM on one aggregated count per dose, quasi-binomial scale",
               ed50_method="delta method", n_prompts=None, penalised=False)
    if d.size < 2 or len(set(d.tolist())) < 2:
        out["note"] = "needs at least two distinct doses"
        return out
    off = offset if offset is not None else _default_offset(d)
    out["offset"] = float(off)
    if k_.sum() == 0 or k_.sum() == n_.sum():
        out["note"] = "the rate is the same at every dose (all 0 or all 1): no slope to fit"
        return out
    x = sm.add_constant(np.log(d + off))
    y = np.column_stack([k_, n_ - k_])
    model = sm.GLM(y, x, family=sm.families.Binomial())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = model.fit()
            if res.df_resid > 0 and res.pearson_chi2 / res.df_resid > 1.0:
                res = model.fit(scale=float(res.pearson_chi2 / res.df_resid))
    except Exception as e:  # perfect separation and similar: report, do not guess
        out["note"] = f"the fit failed ({type(e).__name__}: {e})"
        return out
    b0, b1 = (float(v) for v in res.params)
    cov = np.asarray(res.cov_params())
    z = float(norm.ppf(0.5 + confidence / 2))
    se1 = math.sqrt(max(cov[1, 1], 0.0))
    out.update(intercept=b0, slope=b1, slope_ci_low=b1 - z * se1, slope_ci_high=b1 + z * se1,
               scale=float(res.scale), converged=bool(getattr(res, "converged", True)))
    if b1 <= 0 or not np.isfinite(b1):
        out["note"] = "the fitted rate does not rise with the dose: no ED50"
        return out
    x50 = -b0 / b1
    grad = np.array([-1.0 / b1, b0 / b1 ** 2])
    se = math.sqrt(max(float(grad @ cov @ grad), 0.0))
    out.update(ed50=_to_dose(x50, off), ed50_ci_low=_to_dose(x50 - z * se, off),
               ed50_ci_high=_to_dose(x50 + z * se, off))
    out["ed50_extrapolated"] = bool(not (d.min() <= out["ed50"] <= d.max()))
    return out


def separated(x: np.ndarray, k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Whether binomial counts ``k`` of ``n`` at covariate values ``x`` are (quasi-)completely separated, so that the
    logistic slope's maximum-likelihood estimate is infinite: every non-event lies at or below every event (or at or
    above), which includes no events or no non-events at all. ``k``, ``n``: one row per data set (shape (B, len(x)))
    or one data set; returns one bool per row."""
    k, n = np.atleast_2d(k), np.atleast_2d(n)
    ev, ne = k > 0, k < n
    max_ne, min_ne = np.where(ne, x, -np.inf).max(1), np.where(ne, x, np.inf).min(1)
    max_ev, min_ev = np.where(ev, x, -np.inf).max(1), np.where(ev, x, np.inf).min(1)
    return (max_ne <= min_ev) | (max_ev <= min_ne)


def _fit_many(x: np.ndarray, k: np.ndarray, n: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(intercept, slope) of the binomial GLM of each row of ``k`` of ``n`` on ``x`` (nan where it fails). Rows are
    fitted ``_CHUNK`` at a time as one GLM with a separate intercept and slope per row: the rows' likelihoods are
    separate, so its estimate is each row's own fit, at a fraction of the cost of one fit per row."""
    import statsmodels.api as sm

    fam = sm.families.Binomial()
    n_rows, n_x = k.shape
    out = np.full((n_rows, 2), np.nan)
    for s in range(0, n_rows, _CHUNK):
        kb, nb = k[s:s + _CHUNK], n[s:s + _CHUNK]
        b = len(kb)
        r = np.arange(b * n_x)
        design = np.zeros((b * n_x, 2 * b))
        design[r, 2 * (r // n_x)] = 1.0
        design[r, 2 * (r // n_x) + 1] = np.tile(x, b)
        y = np.column_stack([kb.ravel(), (nb - kb).ravel()])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = sm.GLM(y, design, family=fam).fit(method="newton", start_params=np.tile(start, b), maxiter=100)
                p = np.asarray(res.params).reshape(b, 2)
                if res.mle_retvals.get("converged") and np.isfinite(p).all():
                    out[s:s + b] = p
                    continue
            except Exception:  # noqa: BLE001 - refit one at a time below
                pass
            for i in range(b):
                out[s + i] = _fit_one(x, kb[i], nb[i])
    return out


def _fit_one(x: np.ndarray, k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """(intercept, slope) of the binomial GLM of ``k`` of ``n`` on ``x`` (nan when the fit fails)."""
    import statsmodels.api as sm

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.GLM(np.column_stack([k, n - k]), sm.add_constant(x, has_constant="add"),
                         family=sm.families.Binomial()).fit()
        return np.asarray(res.params, dtype=float)
    except Exception:  # noqa: BLE001 - no fit
        return np.full(2, np.nan)


def cluster_draws(mats: list[tuple[np.ndarray, np.ndarray]], n_boot: int, rng: np.random.Generator
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], bool]:
    """Per-dose counts (n_boot x doses) of prompt-resampled data sets, one pair per matrix pair of ``mats``, all drawn
    with the same prompts (the models of a paired comparison), and whether prompts were drawn jointly across doses.
    Each ``(kmat, nmat)``: prompts x doses (n = 0 where a prompt was not asked at a dose).

    Rao and Wu's rescaled bootstrap: m - 1 of the m prompts are drawn with replacement (jointly, or within each
    dose as a stratum) and their counts weighted by m / (m - 1), which removes the plain cluster bootstrap's
    (m - 1) / m shrinkage of the variance."""
    present = np.logical_or.reduce([n > 0 for _, n in mats])
    if present.all():
        m = present.shape[0]
        idx = rng.integers(0, m, size=(n_boot, max(m - 1, 1)))
        w = m / max(m - 1, 1)
        return [(w * k[idx].sum(1), w * n[idx].sum(1)) for k, n in mats], True
    out = [(np.zeros((n_boot, k.shape[1])), np.zeros((n_boot, k.shape[1]))) for k, _ in mats]
    for j in range(present.shape[1]):
        members = np.flatnonzero(present[:, j])
        m = len(members)
        idx = members[rng.integers(0, m, size=(n_boot, max(m - 1, 1)))]
        w = m / max(m - 1, 1)
        for (kb, nb), (k, n) in zip(out, mats):
            kb[:, j], nb[:, j] = w * k[idx, j].sum(1), w * n[idx, j].sum(1)
    return out, False


def x50_draws(x: np.ndarray, kb: np.ndarray, nb: np.ndarray, start: np.ndarray, penalised: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """Each bootstrap data set's fitted log-dose of a 50 % rate (nan: the refit failed; inf: the fitted rate does not
    rise), refitted from ``start``; a draw gets the pseudo-count when the fit did or when its own counts separate.
    Also returns which draws were penalised."""
    pen = np.ones(len(kb), bool) if penalised else separated(x, kb, nb)
    kb, nb = kb + PSEUDO * pen[:, None], nb + 2 * PSEUDO * pen[:, None]
    params = _fit_many(x, kb, nb, start)
    ok = np.isfinite(params).all(1)
    rising = ok & (params[:, 1] > 0)
    x50 = np.full(len(kb), np.nan)
    x50[rising] = -params[rising, 0] / params[rising, 1]
    x50[ok & ~rising] = np.inf
    return x50, pen


def _ed50_of(params: np.ndarray, off: float) -> Optional[float]:
    b0, b1 = params
    return _to_dose(-b0 / b1, off) if np.isfinite(params).all() and b1 > 0 else None


def fit_dose_response_prompts(doses: Sequence[float], prompts: Sequence[Any], k: Sequence[float],
                              n: Sequence[float], confidence: float = 0.95, offset: Optional[float] = None,
                              n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Fit logit(p) = b0 + b1 * log(dose + offset) to ``k[i]`` biased of ``n[i]`` samples of prompt ``prompts[i]``
    at ``doses[i]`` (one row per dose and prompt; repeated rows, e.g. replicate runs, are kept as they are).

    Returns the keys of :func:`fit_dose_response` (``scale`` here is the Pearson chi-square per degree of freedom
    of the per-prompt counts, pseudo-counts left out: the design effect, descriptive only) and ``method``,
    ``ed50_method``, ``n_prompts``, ``penalised`` (with ``penalty``: what was added), ``penalised_draws`` (the share
    of bootstrap draws that needed it), ``failed_draws`` (draws whose refit failed, left out),
    ``offset_sensitivity`` (the ED50 with the offset halved and doubled) and ``note``."""
    import statsmodels.api as sm
    from scipy.stats import norm

    d, k_, n_ = (np.asarray(v, dtype=float) for v in (doses, k, n))
    pid = np.asarray([str(p) for p in prompts], dtype=object)
    keep = n_ > 0
    d, k_, n_, pid = d[keep], k_[keep], n_[keep], pid[keep]
    levels, di = np.unique(d, return_inverse=True)
    pnames, pi = np.unique(pid.astype(str), return_inverse=True)
    out = _empty(int(levels.size))
    out.update(method="binomial GLM on per-(dose, prompt) counts = GEE with independence working correlation, "
                      "prompt-clustered robust errors", ed50_method=None, n_prompts=int(pnames.size),
               penalised=False, penalty=None, penalised_draws=None, failed_draws=None, offset_sensitivity=[],
               note=None)
    if levels.size < 2:
        out["note"] = "needs at least two distinct doses"
        return out
    off = float(offset) if offset is not None else _default_offset(levels)
    out["offset"] = off
    kd, nd = np.bincount(di, k_, levels.size), np.bincount(di, n_, levels.size)
    if kd.sum() == 0 or kd.sum() == nd.sum():
        out["note"] = "the rate is the same at every dose (all 0 or all 1): no slope to fit"
        return out
    penal = bool(separated(np.log(levels + off), kd, nd)[0])
    pseudo = PSEUDO if penal else 0.0
    xrow, y, groups = np.log(d + off), np.column_stack([k_, n_ - k_]), pi
    if penal:  # one pseudo-row per dose, each its own cluster
        xrow = np.concatenate([xrow, np.log(levels + off)])
        y = np.vstack([y, np.full((levels.size, 2), PSEUDO)])
        groups = np.concatenate([pi, pnames.size + np.arange(levels.size)])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sm.GLM(y, sm.add_constant(xrow), family=sm.families.Binomial()).fit(
                cov_type="cluster", cov_kwds={"groups": groups})
    except Exception as e:  # noqa: BLE001 - report, do not guess
        out["note"] = f"the fit failed ({type(e).__name__}: {e})"
        return out
    b0, b1 = (float(v) for v in res.params)
    se1 = math.sqrt(max(float(np.asarray(res.cov_params())[1, 1]), 0.0))
    z = float(norm.ppf(0.5 + confidence / 2))
    out.update(intercept=b0, slope=b1, slope_ci_low=b1 - z * se1, slope_ci_high=b1 + z * se1,
               scale=float(np.sum(res.resid_pearson[:k_.size] ** 2) / (k_.size - 2)) if k_.size > 2 else None,
               converged=bool(getattr(res, "converged", True)), penalised=penal,
               penalty=(f"pseudo-count: {PSEUDO:g} event and {PSEUDO:g} non-event added at each dose (Jeffreys-"
                        f"style); the counts are separated, the unpenalised slope is infinite") if penal else None)
    for f in OFFSET_FACTORS:  # point estimates only (the per-prompt and per-dose GLMs share them)
        o = off * f
        p = _fit_one(np.log(levels + o), kd + pseudo, nd + 2 * pseudo)
        out["offset_sensitivity"].append({"factor": f, "offset": o, "ed50": _ed50_of(p, o),
                                          "slope": float(p[1]) if np.isfinite(p[1]) else None})
    if b1 <= 0 or not np.isfinite(b1):
        out["note"] = "the fitted rate does not rise with the dose: no ED50"
        return out
    out["ed50"] = _to_dose(-b0 / b1, off)
    out["ed50_extrapolated"] = bool(not (levels.min() <= out["ed50"] <= levels.max()))

    kmat, nmat = np.zeros((pnames.size, levels.size)), np.zeros((pnames.size, levels.size))
    np.add.at(kmat, (pi, di), k_)
    np.add.at(nmat, (pi, di), n_)
    [(kb, nb)], joint = cluster_draws([(kmat, nmat)], n_boot, np.random.default_rng(seed))
    x50, pen = x50_draws(np.log(levels + off), kb, nb, np.array([b0, b1]), penal)
    ok = ~np.isnan(x50)
    x50 = np.minimum(x50[ok], 2 * _UNBOUNDED)  # a draw whose rate never rises: no finite ED50
    lo, hi = np.quantile(x50, [(1 - confidence) / 2, (1 + confidence) / 2]) if ok.any() else (np.nan, np.nan)
    how = "jointly across doses" if joint else "within each dose"
    out["ed50_method"] = (f"cluster bootstrap over prompts (Rao-Wu rescaled, prompts resampled {how}, "
                          f"{n_boot} draws, percentile interval)")
    out["penalised_draws"], out["failed_draws"] = float(pen.mean()), int(n_boot - ok.sum())
    if np.isfinite(lo):
        out["ed50_ci_low"] = _to_dose(float(lo), off)
        out["ed50_ci_high"] = _to_dose(float(hi), off) if hi < _UNBOUNDED else None
    if not ok.any():
        out["note"] = "every bootstrap refit failed: no ED50 interval"
    elif out["ed50_ci_high"] is None:
        out["note"] = "no upper ED50 bound: too many bootstrap draws never reach a 50 % rate"
    elif penal:
        out["note"] = "separated counts: a penalised fit, whose slope and ED50 lean on the pseudo-count"
    return out


def exceeds_control(rates: Sequence[float], control_rates: Sequence[float], paired: bool, seed: int = 0) -> float:
    """One-sided p-value that prompt-level rates exceed the control's, by scipy's ``permutation_test`` (9999 draws,
    or every permutation when there are fewer) of a rank statistic, which stays exact with the many ties and zeros of
    rates near 0 where the normal approximation does not: when ``paired`` (the same prompts in the same order), the
    Wilcoxon signed-rank statistic of the per-prompt differences under sign flips (zero differences dropped); else
    the Mann-Whitney rank sum under relabelling. 1.0 when there is nothing to compare or no prompt differs."""
    from scipy.stats import permutation_test, rankdata

    a, b = np.asarray(rates, dtype=float), np.asarray(control_rates, dtype=float)
    total = lambda x, *rest, axis=-1: np.sum(x, axis=axis)  # noqa: E731 - the first sample's (signed) rank sum
    if not a.size or not b.size:
        return 1.0
    data: tuple[np.ndarray, ...]
    if paired:
        diff = a - b
        diff = diff[diff != 0]
        if not diff.size:
            return 1.0
        data, kind = (np.sign(diff) * rankdata(np.abs(diff)),), "samples"
    else:
        if np.all(np.concatenate([a, b]) == a[0]):
            return 1.0
        ranks = rankdata(np.concatenate([a, b]))
        data, kind = (ranks[:a.size], ranks[a.size:]), "independent"
    res = permutation_test(data, total, permutation_type=kind, alternative="greater", n_resamples=9999,
                           vectorized=True, rng=seed)
    return float(res.pvalue)


def clopper_pearson_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """The upper end of the exact (Clopper-Pearson) interval of ``k`` of ``n`` (scipy's): 0 events still get a
    bound above 0."""
    from scipy.stats import binomtest

    return float(binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="exact").high)


def predict(fit: dict[str, Any], doses: Sequence[float]) -> list[Optional[float]]:
    """The fitted rate at ``doses`` (None where the fit has no slope)."""
    if fit.get("slope") is None or fit.get("intercept") is None:
        return [None for _ in doses]
    off = fit["offset"]
    return [1.0 / (1.0 + math.exp(-(fit["intercept"] + fit["slope"] * math.log(float(x) + off)))) for x in doses]
