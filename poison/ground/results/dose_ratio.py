"""Amplification by dose: the ratio of two models' ED50s (the teacher's over its student's) with a paired cluster
bootstrap interval.

A student that turns biased at a smaller dose than its teacher has a smaller ED50: ``ratio = ED50_teacher /
ED50_student`` above 1 is amplification read off the dose axis (the paper reads it off the rate at one dose). Both
models answered the same eval prompts in each run, so the bootstrap resamples prompts once per draw for both models
(jointly across doses when every prompt was asked at every dose, else within each dose, Rao-Wu rescaled as in
``poison.ground.results.dose``), refits each model's binomial GLM on log-dose, and takes the percentile interval of
the draws' ratios: the interval covers which prompts were drawn (and, with replicate runs pooled into the points,
the replicates' prompts too). A draw in which a model's fitted rate never reaches 50 % has an unbounded ED50; when
too many draws do, the interval has no upper (or lower) bound and says so. Part of the ground layer.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from poison.ground.results.dose import _UNBOUNDED, cluster_draws, x50_draws

Rows = tuple[Sequence[float], Sequence[Any], Sequence[float], Sequence[float]]  # doses, prompts, k, n


def _matrix(rows: Rows, levels: np.ndarray, prompts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d, p, k, n = (np.asarray(v) for v in rows)
    keep = n.astype(float) > 0
    kmat, nmat = np.zeros((prompts.size, levels.size)), np.zeros((prompts.size, levels.size))
    pi = np.searchsorted(prompts, p[keep].astype(str))
    di = np.searchsorted(levels, d[keep].astype(float))
    np.add.at(kmat, (pi, di), k[keep].astype(float))
    np.add.at(nmat, (pi, di), n[keep].astype(float))
    return kmat, nmat


def _ed50_draws(levels: np.ndarray, fit: dict[str, Any], kb: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Each draw's ED50 on the dose scale (inf: the fitted rate never reaches 50 %; nan: the refit failed)."""
    off = float(fit["offset"])
    x50, _ = x50_draws(np.log(levels + off), kb, nb, np.array([fit["intercept"], fit["slope"]]),
                       bool(fit.get("penalised")))
    return np.where(x50 >= _UNBOUNDED, np.inf, np.maximum(np.exp(np.minimum(x50, _UNBOUNDED)) - off, 0.0))


def ed50_ratio(teacher: Rows, student: Rows, fit_teacher: dict[str, Any], fit_student: dict[str, Any],
               confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``ED50_teacher / ED50_student`` with a paired cluster-bootstrap percentile interval. ``teacher``, ``student``:
    each model's per-(dose, prompt) rows (doses, prompt ids, biased count, answers); ``fit_*``: their
    ``fit_dose_response_prompts`` results (the point estimates, offsets and penalisation the draws start from)."""
    out: dict[str, Any] = {"ratio": None, "ci_low": None, "ci_high": None, "method": None, "failed_draws": None,
                           "note": None}
    missing = [who for who, f in (("teacher", fit_teacher), ("student", fit_student)) if f.get("ed50") is None]
    if missing:
        out["note"] = f"no ED50 for the {' and the '.join(missing)}: no ratio"
        return out
    if fit_student["ed50"] <= 0:
        out["note"] = "the student's ED50 is 0 (a 50 % rate already at the clean dose): no ratio"
        return out
    out["ratio"] = float(fit_teacher["ed50"] / fit_student["ed50"])
    levels = np.unique(np.concatenate([np.asarray(teacher[0], float), np.asarray(student[0], float)]))
    prompts = np.unique(np.concatenate([np.asarray(teacher[1]).astype(str), np.asarray(student[1]).astype(str)]))
    mats = [_matrix(teacher, levels, prompts), _matrix(student, levels, prompts)]
    (kt, nt), (ks, ns) = mats
    draws, joint = cluster_draws(mats, n_boot, np.random.default_rng(seed))
    lv_t, lv_s = (levels[(n > 0).any(0)] for n in (nt, ns))
    ed_t = _ed50_draws(lv_t, fit_teacher, *(a[:, (nt > 0).any(0)] for a in draws[0]))
    ed_s = _ed50_draws(lv_s, fit_student, *(a[:, (ns > 0).any(0)] for a in draws[1]))
    ok = ~np.isnan(ed_t) & ~np.isnan(ed_s) & ~(np.isinf(ed_t) & np.isinf(ed_s))  # failed refits, inf / inf
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ed_s[ok] > 0, ed_t[ok] / np.where(ed_s[ok] > 0, ed_s[ok], 1.0), np.inf)
    how = "jointly across doses" if joint else "within each dose"
    out["method"] = (f"paired cluster bootstrap over prompts (the same prompt draws for both models, Rao-Wu "
                     f"rescaled, resampled {how}, {n_boot} draws, each model's GLM refitted; percentile interval)")
    out["failed_draws"] = int(n_boot - ok.sum())
    if ratio.size:
        lo, hi = np.quantile(ratio, [(1 - confidence) / 2, (1 + confidence) / 2])
        out["ci_low"] = float(lo) if math.isfinite(lo) else None
        out["ci_high"] = float(hi) if math.isfinite(hi) else None
        if out["ci_high"] is None:
            out["note"] = ("no upper bound: in too many draws the teacher's fitted rate never reaches 50 % (or the "
                           "student's ED50 is 0)")
    else:
        out["note"] = "every bootstrap refit failed: no interval"
    return out


def ed50_ratio_or_none(teacher: Optional[Rows], student: Optional[Rows], fit_teacher: dict[str, Any],
                       fit_student: dict[str, Any], **kw: Any) -> Optional[dict[str, Any]]:
    """The ratio when both models have per-prompt rows (the per-prompt fit), else None."""
    if teacher is None or student is None or not fit_teacher.get("n_prompts") or not fit_student.get("n_prompts"):
        return None
    return ed50_ratio(teacher, student, fit_teacher, fit_student, **kw)
