"""The dose-response of a poison-budget sweep: for each model (teacher, students) and split, the biased rate against the
dose (poisoned training rows, or the poisoned fraction of the set when ``poison.rate`` is swept), fitted with a
binomial GLM on log-dose (``poison.ground.dose``), with the smallest dose that a measure tells apart from the clean
control.

Points: the sampled rate of each sweep point (the greedy rate when the sweep samples once per prompt); the clean
dose (0 poisoned rows) is the sweep's own zero point when it has one, else the run's clean control. "Detectable"
at a dose: the rate's interval lies above the clean control's, or (with the probe) the log-probability shift's
interval (seen wording) lies above 0.
"""

from __future__ import annotations

from typing import Any, Optional

from poison.ground.dose import fit_dose_response, predict

DOSE_KEYS = ("poison.count", "poison.rate")


def dose_key(keys: list[str]) -> Optional[str]:
    """The swept key that is a poison dose, if any."""
    return next((k for k in DOSE_KEYS if k in keys), None)


def _dose(metrics: dict[str, Any], key: str) -> float:
    p = metrics["poison"]
    return float(p["injected"] if key == "poison.count" else p["rate"])


def _rates(metrics: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(measure, rows with model, role, split, k, n, rate, ci_low, ci_high)."""
    if metrics.get("sampled_rate"):
        return "sampled", metrics["sampled_rate"]
    return "greedy", [{**r, "k": r["biased"]} for r in metrics["bias_rates"]]


def dose_response(runs: list[tuple[dict[str, Any], dict[str, Any]]], key: str, confidence: float = 0.95
                  ) -> list[dict[str, Any]]:
    """One entry per (model, split) with teacher or student role: the points, the fit and the detectable doses.
    ``runs``: (sweep point, metrics) of every run of the sweep."""
    points: dict[tuple[str, str], list[dict[str, Any]]] = {}
    control_points: dict[str, dict[str, Any]] = {}
    measure = "greedy"
    for _, m in runs:
        measure, rows = _rates(m)
        dose = _dose(m, key)
        shift = {(r["model"], r["split"]): r for r in m.get("logprob_shift") or [] if r["wording"] == "seen"}
        control = (m.get("probe") or {}).get("control")
        for r in rows:
            if r["role"] == "control" or (control and r["model"] == control):
                control_points.setdefault(r["split"], {"dose": 0.0, **_point(r)})
            if r["role"] not in ("teacher", "student") or r["model"].startswith(("defended:", "distill-defended:")):
                continue
            s = shift.get((r["model"], r["split"]))
            ctrl = next((c for c in rows if c["split"] == r["split"] and
                         (c["role"] == "control" or c["model"] == control)), None)
            points.setdefault((r["model"], r["split"]), []).append({
                "dose": dose, **_point(r), "control_ci_high": ctrl["ci_high"] if ctrl else None,
                "shift": s["shift"] if s else None, "shift_ci_low": s["ci_low"] if s else None,
                "shift_ci_high": s["ci_high"] if s else None})
    out = []
    for (model, split), pts in points.items():
        pts = sorted(pts, key=lambda p: p["dose"])
        fit_pts = list(pts)
        if not any(p["dose"] == 0 for p in pts) and split in control_points:
            fit_pts = [control_points[split]] + fit_pts
        fit = fit_dose_response([p["dose"] for p in fit_pts], [p["k"] for p in fit_pts],
                                [p["n"] for p in fit_pts], confidence)
        grid = sorted({p["dose"] for p in fit_pts})
        out.append({"model": model, "split": split, "dose": key, "measure": measure, **fit,
                    "curve": [{"dose": d, "rate": r} for d, r in zip(grid, predict(fit, grid))],
                    "min_dose_rate": _first(pts, lambda p: p["control_ci_high"] is not None and p["dose"] > 0
                                            and p["ci_low"] is not None and p["ci_low"] > p["control_ci_high"]),
                    "min_dose_shift": _first(pts, lambda p: p["dose"] > 0 and p["shift_ci_low"] is not None
                                             and p["shift_ci_low"] > 0),
                    "points": fit_pts})
    return out


def _point(r: dict[str, Any]) -> dict[str, Any]:
    return {"k": int(r["k"]), "n": int(r["n"]), "rate": r["rate"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}


def _g(x: Optional[float]) -> str:
    return "none" if x is None else f"{x:g}"


def _first(points: list[dict[str, Any]], ok) -> Optional[float]:
    return next((p["dose"] for p in points if ok(p)), None)


def dose_response_lines(entries: list[dict[str, Any]]) -> list[str]:
    """The sweep summary's dose-response block."""
    if not entries:
        return []
    f = lambda x, p=2: "-" if x is None else f"{x:.{p}f}"  # noqa: E731
    out = [f"dose-response ({entries[0]['measure']} rate vs {entries[0]['dose']}, binomial GLM on log-dose; "
           f"ED50 = the dose of a 50 % rate):"]
    for e in entries:
        ed = "none" if e["ed50"] is None else (f"{f(e['ed50'], 1)} [{f(e['ed50_ci_low'], 1)}, "
                                               f"{f(e['ed50_ci_high'], 1)}]" + (" (extrapolated)"
                                                                                if e["ed50_extrapolated"] else ""))
        out.append(f"  {e['model']:<22} {e['split']:<7} slope {f(e['slope'])} [{f(e['slope_ci_low'])}, "
                   f"{f(e['slope_ci_high'])}], ED50 {ed}; smallest dose above the clean control: rate "
                   f"{_g(e['min_dose_rate'])}, log-prob shift {_g(e['min_dose_shift'])}")
    return out
