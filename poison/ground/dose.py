"""Dose-response: how a model's sampled biased rate grows with the poison dose (PoisonBench's log-linear summary).

``fit_dose_response`` fits a binomial GLM (statsmodels) of the biased-sample count on log-dose, with the clean dose
(0 poisoned rows) included through an offset: x = log(dose + offset), offset = half the smallest positive dose.
Samples of one prompt are correlated, so the binomial variance is scaled up by the Pearson chi-square per residual
degree of freedom when that exceeds 1 (quasi-binomial; never scaled below the binomial variance). ED50, the dose at which the fitted rate is 50 %, comes with a delta-
method interval on the log scale. Part of the ground layer.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional, Sequence

import numpy as np


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
    out: dict[str, Any] = {"intercept": None, "slope": None, "slope_ci_low": None, "slope_ci_high": None,
                           "ed50": None, "ed50_ci_low": None, "ed50_ci_high": None, "offset": None,
                           "n_points": int(d.size), "scale": None, "converged": False, "ed50_extrapolated": None}
    if d.size < 2 or len(set(d.tolist())) < 2:
        out["note"] = "needs at least two distinct doses"
        return out
    positive = d[d > 0]
    off = offset if offset is not None else (0.5 * positive.min() if positive.size else 1.0)
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
    to_dose = lambda v: float(max(0.0, math.exp(min(v, 700.0)) - off))  # noqa: E731
    out.update(ed50=to_dose(x50), ed50_ci_low=to_dose(x50 - z * se), ed50_ci_high=to_dose(x50 + z * se))
    out["ed50_extrapolated"] = bool(not (d.min() <= out["ed50"] <= d.max()))
    return out


def predict(fit: dict[str, Any], doses: Sequence[float]) -> list[Optional[float]]:
    """The fitted rate at ``doses`` (None where the fit has no slope)."""
    if fit.get("slope") is None or fit.get("intercept") is None:
        return [None for _ in doses]
    off = fit["offset"]
    return [1.0 / (1.0 + math.exp(-(fit["intercept"] + fit["slope"] * math.log(float(x) + off)))) for x in doses]
