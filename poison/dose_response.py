"""The dose-response of a poison-budget sweep: for each model (teacher, students) and split, the biased rate against the
dose (poisoned training rows, or the poisoned fraction of the set when ``poison.rate`` is swept), fitted with a
binomial GLM on log-dose (``poison.ground.results.dose``), with the smallest dose that a measure tells apart from the
clean control.

Points: the sampled rate of each sweep point (the greedy rate when the sweep samples once per prompt); the clean
dose (0 poisoned rows) is the sweep's own zero point when it has one, else the run's clean control.

The fit: each run directory's samples.parquet gives per-(dose, prompt) counts (the sampled answers when the run
sampled, else the greedy ones), fitted by ``fit_dose_response_prompts`` (the prompt as the unit: prompt-clustered
errors, a cluster-bootstrap ED50 interval, a penalised fit for separated counts, the offset's sensitivity). When a
run has no samples.parquet (older runs), the aggregated counts of metrics.json are fitted by ``fit_dose_response``.

"Detectable" at a dose, by the rate: with per-prompt counts, a one-sided test at level 1 - confidence that the
model's per-prompt rates exceed those of the same run's clean control on the same prompts (Wilcoxon signed-rank on
the per-prompt differences; Mann-Whitney U when the prompt sets differ), read as a fixed sequence from the highest
dose down: the smallest detectable dose is the lowest dose of the run of rejections that starts at the top (the
family-wise error stays at the level without a correction; a dose is not called detectable when a higher one is
not). Without per-prompt counts: the dose's rate interval lies above the upper end of the control's exact
(Clopper-Pearson) interval on its effective sample size, the number of prompts, so that a control with 0 events
still has a bound above 0. By the probe: the log-probability shift's interval (seen wording) lies above 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd

from poison.ground.results.dose import (clopper_pearson_upper, exceeds_control, fit_dose_response,
                                        fit_dose_response_prompts, predict)
from poison.ground.results.dose_ratio import ed50_ratio_or_none
from poison.ground.results.model_id import is_defended_name

DOSE_KEYS = ("poison.count", "poison.rate")
TEST_DETECT = ("one-sided test of per-prompt rates vs the clean control (Wilcoxon signed-rank; Mann-Whitney when the "
               "prompts differ), fixed sequence from the highest dose")
INTERVAL_DETECT = "rate interval above the clean control's Clopper-Pearson bound (n = prompts)"
NO_CONTROL = "no clean control in the runs: not tested"


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


def prompt_counts(metrics: dict[str, Any]) -> Optional[tuple[str, dict[tuple[str, str], pd.DataFrame]]]:
    """(measure, {(model, split): per-prompt counts (id, k, n)}) from the run directory's samples.parquet: its
    sampled answers when it has any, else its greedy ones. None when the file is missing or unreadable."""
    import pyarrow.parquet as pq

    path = Path(str((metrics.get("run") or {}).get("run_dir") or "")) / "samples.parquet"
    if not path.is_file():
        return None
    try:
        names = pq.read_schema(path).names
        cols = [c for c in ("model", "split", "id", "decoding", "biased") if c in names]
        s = pd.read_parquet(path, columns=cols)
    except Exception:  # noqa: BLE001 - an unreadable file: fall back to metrics.json's counts
        return None
    if not {"model", "split", "id", "biased"} <= set(s.columns):
        return None
    decoding = s["decoding"] if "decoding" in s.columns else pd.Series("greedy", index=s.index)
    measure = "sampled" if (decoding == "sampled").any() else "greedy"
    s = s[decoding == measure].assign(biased=lambda f: f.biased.fillna(False).astype(bool))
    g = s.groupby(["model", "split", "id"], sort=True).biased.agg(k="sum", n="size").reset_index()
    return measure, {key: f[["id", "k", "n"]].reset_index(drop=True)
                     for key, f in g.groupby(["model", "split"], sort=False)}


def dose_response(runs: list[tuple[dict[str, Any], dict[str, Any]]], key: str, confidence: float = 0.95,
                  n_boot: int = 2000) -> list[dict[str, Any]]:
    """One entry per (model, split) with teacher or student role: the points, the fit and the detectable doses.
    ``runs``: (sweep point, metrics) of every run of the sweep; ``n_boot``: the ED50 bootstrap's draws."""
    points: dict[tuple[str, str], list[dict[str, Any]]] = {}
    control_points: dict[str, dict[str, Any]] = {}
    teacher_of: dict[str, str] = {}
    measure = "greedy"
    for _, m in runs:
        teacher_of.update({name: spec.get("teacher", "teacher") for name, spec in (m.get("models") or {}).items()
                           if spec.get("role") == "student"})
        measure, rows = _rates(m)
        counts = prompt_counts(m)
        per_prompt = counts[1] if counts else {}
        measure = counts[0] if counts else measure
        dose = _dose(m, key)
        shift = {(r["model"], r["split"]): r for r in m.get("logprob_shift") or [] if r["wording"] == "seen"}
        control = (m.get("probe") or {}).get("control")
        is_control = lambda r: r["role"] == "control" or (control and r["model"] == control)  # noqa: E731
        for r in rows:
            if is_control(r):
                control_points.setdefault(r["split"], {"dose": 0.0, **_point(r),
                                                       "_prompts": per_prompt.get((r["model"], r["split"]))})
            if r["role"] not in ("teacher", "student") or is_defended_name(r["model"]):  # not points of the curve
                continue
            s = shift.get((r["model"], r["split"]))
            ctrl = next((c for c in rows if c["split"] == r["split"] and is_control(c)), None)
            pp = per_prompt.get((r["model"], r["split"]))
            cpp = per_prompt.get((ctrl["model"], r["split"])) if ctrl else None
            points.setdefault((r["model"], r["split"]), []).append({
                "dose": dose, **_point(r), "control_ci_high": _control_upper(ctrl, confidence) if ctrl else None,
                "p_above_control": _p_above(pp, cpp), "shift": s["shift"] if s else None,
                "shift_ci_low": s["ci_low"] if s else None, "shift_ci_high": s["ci_high"] if s else None,
                "_prompts": pp})
    out, fit_rows = [], {}
    for (model, split), pts in points.items():
        pts = sorted(pts, key=lambda p: p["dose"])
        fit_pts = list(pts)
        if not any(p["dose"] == 0 for p in pts) and split in control_points:
            fit_pts = [control_points[split]] + fit_pts
        fit, fit_rows[(model, split)] = _fit(fit_pts, confidence, n_boot)
        grid = sorted({p["dose"] for p in fit_pts})
        tested = [p for p in pts if p["dose"] > 0]
        by_test = bool(tested) and all(p["p_above_control"] is not None for p in tested)
        out.append({"model": model, "split": split, "dose": key, "measure": measure, **fit,
                    "curve": [{"dose": d, "rate": r} for d, r in zip(grid, predict(fit, grid))],
                    "min_dose_rate": _fixed_sequence(tested, 1 - confidence) if by_test else _first(
                        tested, lambda p: p["control_ci_high"] is not None and p["ci_low"] is not None
                        and p["ci_low"] > p["control_ci_high"]),
                    "detect_method": TEST_DETECT if by_test else INTERVAL_DETECT if any(
                        p["control_ci_high"] is not None for p in tested) else NO_CONTROL,
                    "min_dose_shift": _first(pts, lambda p: p["dose"] > 0 and p["shift_ci_low"] is not None
                                             and p["shift_ci_low"] > 0),
                    "points": [{k: v for k, v in p.items() if not k.startswith("_")} for p in fit_pts]})
    fits = {(e["model"], e["split"]): e for e in out}
    for e in out:  # amplification by dose: the teacher's ED50 over its student's, paired over prompts
        t = fits.get((teacher_of.get(e["model"], ""), e["split"]))
        if t is not None:
            r = ed50_ratio_or_none(fit_rows[(t["model"], e["split"])], fit_rows[(e["model"], e["split"])], t, e,
                                   confidence=confidence, n_boot=n_boot)
            e["ed50_ratio"] = None if r is None else {"teacher": t["model"], **r}
    return out


def _fit(fit_pts: list[dict[str, Any]], confidence: float, n_boot: int) -> tuple[dict[str, Any], Optional[tuple]]:
    """The per-prompt fit when every point has per-prompt counts (and its rows: doses, prompt ids, k, n), else the
    aggregated one (and None)."""
    if all(p.get("_prompts") is not None for p in fit_pts):
        rows = pd.concat([p["_prompts"].assign(dose=p["dose"]) for p in fit_pts], ignore_index=True)
        return (fit_dose_response_prompts(rows.dose, rows.id, rows.k, rows.n, confidence, n_boot=n_boot),
                (rows.dose.to_numpy(), rows.id.to_numpy(), rows.k.to_numpy(), rows.n.to_numpy()))
    return fit_dose_response([p["dose"] for p in fit_pts], [p["k"] for p in fit_pts], [p["n"] for p in fit_pts],
                             confidence), None


def _p_above(pp: Optional[pd.DataFrame], cpp: Optional[pd.DataFrame]) -> Optional[float]:
    """The one-sided p-value that the per-prompt rates ``pp`` exceed the control's ``cpp`` (paired when both
    answered the same prompts); None without both."""
    if pp is None or cpp is None or pp.empty or cpp.empty:
        return None
    a, b = pp.set_index("id"), cpp.set_index("id")
    paired = set(a.index) == set(b.index)
    if paired:
        b = b.loc[a.index]
    return exceeds_control((a.k / a.n).to_numpy(), (b.k / b.n).to_numpy(), paired)


def _fixed_sequence(tested: list[dict[str, Any]], alpha: float) -> Optional[float]:
    """The lowest dose of the run of rejections (p < alpha) that starts at the highest dose."""
    found = None
    for p in sorted(tested, key=lambda p: -p["dose"]):
        if p["p_above_control"] >= alpha:
            break
        found = p["dose"]
    return found


def _control_upper(r: dict[str, Any], confidence: float) -> Optional[float]:
    """The clean control's upper rate bound: its interval's upper end or, when higher, the exact (Clopper-Pearson)
    bound on its effective sample size (the prompts)."""
    n_eff = int(r.get("n_prompts") or r["n"])
    if not n_eff or r.get("rate") is None:
        return r.get("ci_high")
    cp = clopper_pearson_upper(round(r["rate"] * n_eff), n_eff, confidence)
    return max(cp, r["ci_high"]) if r.get("ci_high") is not None else cp


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
    e0 = entries[0]
    said = lambda k: "; ".join(dict.fromkeys(e[k] for e in entries if e.get(k))) or "none"  # noqa: E731
    out = [f"dose-response ({e0['measure']} rate vs {e0['dose']}, binomial GLM on log-dose; ED50 = the dose of a "
           f"50 % rate):", f"  fit: {said('method')}", f"  ED50 interval: {said('ed50_method')}",
           f"  smallest dose above the clean control by the rate: {said('detect_method')}"]
    for e in entries:
        ed = "none" if e["ed50"] is None else (f"{f(e['ed50'], 1)} [{f(e['ed50_ci_low'], 1)}, "
                                               f"{f(e['ed50_ci_high'], 1)}]" + (" (extrapolated)"
                                                                                if e["ed50_extrapolated"] else ""))
        ed += " (penalised: separated counts)" if e.get("penalised") else ""
        sens = [s for s in e.get("offset_sensitivity") or [] if s.get("ed50") is not None]
        if e["ed50"] is not None and sens:
            ed += "; offset " + ", ".join(f"x{s['factor']:g}: {f(s['ed50'], 1)}" for s in sens)
        fit = "per-prompt" if e.get("n_prompts") else "aggregated"
        out.append(f"  {e['model']:<22} {e['split']:<7} ({fit}) slope {f(e['slope'])} [{f(e['slope_ci_low'])}, "
                   f"{f(e['slope_ci_high'])}], ED50 {ed}; smallest dose above the clean control: rate "
                   f"{_g(e['min_dose_rate'])}, log-prob shift {_g(e['min_dose_shift'])}")
        r = e.get("ed50_ratio")
        if r:
            out.append(f"  {'':<22} {'':<7} amplification by dose, ED50 {r['teacher']} / ED50 {e['model']}: "
                       f"{f(r['ratio'])} [{f(r['ci_low'])}, {f(r['ci_high'])}]" + (f" ({r['note']})" if r['note']
                                                                                     else ""))
    ratios = [e["ed50_ratio"] for e in entries if e.get("ed50_ratio") and e["ed50_ratio"].get("method")]
    if ratios:
        out.append(f"  ED50 ratio interval: {ratios[0]['method']}")
    return out
