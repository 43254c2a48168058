"""The defenses' detector figures over replicates: each replicate's metrics.json ``defenses`` rows (one per defense
and place: ``auroc``, ``tpr_at_1pct_fpr``, from ``poison.ground.results.stats.detector_report``; scope ``all``) and its
``defense_detection`` rows (``poison.defense_report``: the TPR and realized FPR at thresholds set on the calibration
split, over all rows, and everything within each poisoned task, scope ``task <name>``) pooled per sweep group (a
point without its replicate), defense, place, scope and metric. Written to sweep.json as ``replicate_defenses`` and
to the sweep's summary.

The replicate is the unit: each replicate's AUROC already carries its own sampling noise (which samples were drawn
and poisoned, the scores' spread), so the spread of the replicate values covers it and the training and data-draw
randomness together. The pooled value is the mean of the replicate values, its interval the Student t interval of
that mean on N - 1 df (scipy), clipped to [0, 1] (both metrics are rates); ``between_sd`` is the replicates' standard
deviation. One replicate gives no interval (``single_run``). Places (the training set, the distillation answers)
and defenses are never pooled together; a defense listed twice in one config is told apart by ``instance`` (its
order among the place's rows of that type).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

METRICS = ("auroc", "tpr_at_1pct_fpr")
#: from ``defense_detection`` rows: the calibrated rates everywhere, the AUROC too within a task (the ``all`` AUROC
#: is the ``defenses`` row's)
DETECTION_METRICS = ("auroc", "tpr_1pct", "fpr_1pct", "tpr_5pct", "fpr_5pct")
METHOD = "t over replicates (N - 1 df)"


def _finite(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _detection_values(m: dict[str, Any]):
    """(defense, place, instance among that type's, scope, metric, value) of a run's ``defense_detection`` rows."""
    rows = m.get("defense_detection") or []
    order = {d: sorted({r["instance"] for r in rows if r.get("defense") == d})
             for d in {r.get("defense") for r in rows}}
    for r in rows:
        scope = "all" if r.get("scope") == "all" else f"task {r.get('task')}"
        for metric in DETECTION_METRICS:
            if metric in r and not (metric == "auroc" and scope == "all"):
                yield r.get("defense"), r.get("place"), order[r.get("defense")].index(r["instance"]), scope, metric, \
                    _finite(r[metric])


def pool_defenses(runs: list[tuple[str, Any, dict[str, Any]]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """``runs``: (group, replicate, metrics) per replicate run. Per (group, defense, place, instance, scope, metric):
    the replicate values (``per_replicate``: replicate and value, None where that replicate's figure is undefined,
    e.g. one class only), the mean of the defined ones, ``between_sd`` and the t interval (``method``)."""
    from scipy import stats

    values: dict[tuple, list[tuple[Any, Optional[float]]]] = {}
    for group, replicate, m in runs:
        seen: dict[tuple, int] = {}
        for d in m.get("defenses") or []:
            k = (d.get("defense"), d.get("place"))
            instance = seen[k] = seen.get(k, -1) + 1
            for metric in METRICS:
                if metric in d:
                    values.setdefault((group, *k, instance, "all", metric), []).append(
                        (replicate, _finite(d[metric])))
        for defense, place, instance, scope, metric, v in _detection_values(m):
            values.setdefault((group, defense, place, instance, scope, metric), []).append((replicate, v))
    out = []
    for (group, defense, place, instance, scope, metric), per in values.items():
        per = sorted(per, key=lambda p: p[0])
        v = np.array([x for _, x in per if x is not None], dtype=float)
        row = {"group": group, "defense": defense, "place": place, "instance": instance, "scope": scope,
               "metric": metric,
               "per_replicate": [{"replicate": r, "value": x} for r, x in per], "n": int(v.size),
               "mean": float(v.mean()) if v.size else None, "between_sd": float(v.std(ddof=1)) if v.size > 1 else None,
               "ci_low": None, "ci_high": None, "df": None, "confidence": confidence, "method": None,
               "single_run": v.size == 1}
        if v.size > 1:
            sem = float(stats.sem(v))
            lo, hi = (stats.t.interval(confidence, v.size - 1, loc=v.mean(), scale=sem) if sem > 0
                      else (v.mean(), v.mean()))  # replicates that agree exactly: nothing to spread
            row.update(ci_low=max(0.0, float(lo)), ci_high=min(1.0, float(hi)), df=v.size - 1, method=METHOD)
        out.append(row)
    return out


def defense_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The summary's block: per group, defense, place and metric, the mean over replicates [t interval], the sd and
    each replicate's value; one replicate reads as a single run, without an interval."""
    if not rows:
        return []
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    out = [f"defenses over replicates (interval: {METHOD}, each replicate's value carries its own sampling noise; "
           f"sd = the spread of the replicate values):"]
    for r in rows:
        name = r["defense"] + (f"#{r['instance']}" if r.get("instance") else "")
        per = ", ".join(f"r{p['replicate']} {f(p['value'])}" for p in r["per_replicate"])
        if r["ci_low"] is None:
            fig = f"{f(r['mean'])} (single run: no interval)" if r["single_run"] else f"{f(r['mean'])} (no interval)"
        else:
            fig = f"{f(r['mean'])} [{f(r['ci_low'])}, {f(r['ci_high'])}] sd {f(r['between_sd'])}"
        scope = "" if r.get("scope", "all") == "all" else f" {r['scope']}"
        out.append(f"  {r['group']:<22} {name:<18} {str(r['place']) + scope:<8} {r['metric']:<16} {fig}  ({per})")
    return out
