"""The runs index of the dashboard: one overview row per run and the bias-rate rows of every run, read once per
change of the runs folder (through ``poison.ground.rundir``)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from poison.ground.rundir import (_STAMP, _SWEEP_NAME, _get, _num, _point_from_label, _str, run_state, scan,
                                  sweep_points)

ROLE_ORDER = {"baseline": 0, "teacher": 1, "student": 2}
# rate rows: the README's schema uses biased/ci_low/ci_high; accept the short spellings too
_RATE_ALIASES = {"k": "biased", "lo": "ci_low", "hi": "ci_high"}
RATE_COLUMNS = ["model", "role", "method", "split", "n", "biased", "rate", "ci_low", "ci_high"]


def model_sort_key(name: str, role: str | None = None) -> tuple:
    role = role or ("student" if str(name).startswith("student") else str(name))
    return (ROLE_ORDER.get(role, 3), str(name))


def student_methods(metrics: dict) -> dict[str, str]:
    """model name -> distillation method, for students."""
    out = {}
    for name, m in (_get(metrics, "models") or {}).items():
        if isinstance(m, dict) and (m.get("role") == "student" or str(name).startswith("student")):
            out[name] = str(m.get("method") or str(name).split(":", 1)[-1])
    return out


def rate_records(metrics: dict | None, key: str = "bias_rates") -> list[dict[str, Any]]:
    """bias_rates (or bias_rates_by_task / distill_data) as clean dicts, models in baseline/teacher/student
    order. Plain Python: the index calls it for every run."""
    rows = _get(metrics, "distill_data", "bias_rates") if key == "distill_data" else _get(metrics, key)
    methods = student_methods(metrics or {})
    out = []
    for r in rows if isinstance(rows, list) else []:
        if not isinstance(r, dict):
            continue
        r = {_RATE_ALIASES.get(k, k): v for k, v in r.items()}
        model = _str(r.get("model")) or "teacher"
        n, k = _num(r.get("n")), _num(r.get("biased"))
        rate = _num(r.get("rate"))
        if rate is None and n:
            rate = (k or 0) / n
        role = _str(r.get("role")) or ("student" if model.startswith("student") else model)
        rec = {**r, "model": model, "role": role, "method": methods.get(model), "n": n, "biased": k, "rate": rate,
               "ci_low": _num(r.get("ci_low")), "ci_high": _num(r.get("ci_high"))}
        if key != "bias_rates_by_task" or "split" in r:
            rec["split"] = _str(r.get("split")) or "?"
        if "task" in r:
            rec["task"] = _str(r.get("task")) or "?"
        out.append(rec)
    out.sort(key=lambda x: model_sort_key(x["model"], x["role"]))
    return out


def run_date(rel: str, metrics: dict | None, status: dict | None, path: Path) -> str:
    for d in (_get(metrics, "run", "finished"), _get(status, "finished"), _get(status, "started")):
        if isinstance(d, str) and d:
            return d[:19]
    m = _STAMP.search(Path(rel).name if rel != "." else path.name)
    if m:
        try:
            return datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").isoformat()
        except ValueError:
            pass
    try:
        return datetime.fromtimestamp(path.stat().st_mtime).isoformat(timespec="seconds")
    except OSError:
        return ""


def summarize_run(entry: dict[str, Any], point: dict | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One overview row and the run's bias-rate rows (for the sweeps view)."""
    path = Path(entry["path"])
    st = run_state(path, entry.get("files"))
    m, cfg, status = st["metrics"], st["config"], st["status_json"]
    models = _get(m, "models") or {}
    if not isinstance(models, dict):
        models = {}
    methods = sorted(set(student_methods(m or {}).values()))
    if not m and cfg:
        methods = sorted({str(s.get("method", "sft")) for s in (cfg.get("students") or []) if isinstance(s, dict)})
    requested = _get(m, "poison", "requested")
    if requested is None and cfg:
        requested = _get(cfg, "poison", "count")
    rates = rate_records(m) if m else []

    def rate_of(role: str, split: str = "target"):
        vals = [r["rate"] for r in rates if r["role"] == role and r.get("split") == split and r["rate"] is not None]
        return max(vals) if vals else None

    amp_t = [_num(a.get("ratio")) for a in (_get(m, "amplification") or []) if isinstance(a, dict)
             and a.get("split") == "target" and _num(a.get("ratio")) is not None]
    row = {
        "run": entry["rel"],
        "sweep": entry.get("sweep", ""),
        "name": _str(_get(m, "run", "name") or _get(cfg, "name")) or _STAMP.sub("", path.name).rstrip("-")
        or path.name,
        "bias_type": _str(_get(m, "run", "bias_type") or _get(cfg, "poison", "bias", "type")),
        "mode": _str(_get(m, "run", "mode") or _get(cfg, "poison", "mode")),
        "target_task": _str(_get(m, "run", "target_task") or _get(cfg, "data", "target_task")),
        "poison_requested": _num(requested),
        "poison_injected": _num(_get(m, "poison", "injected")),
        "poison_rate": _num(_get(m, "poison", "rate")),
        "models": ", ".join(sorted(models, key=lambda n: model_sort_key(n, _get(models, n, "role")))),
        "methods": ", ".join(methods),
        "status": st["status"],
        "date": run_date(entry["rel"], m, status, path),
        "seconds": _num(_get(m, "run", "seconds") or _get(status, "seconds")),
        "baseline_target": rate_of("baseline"),
        "teacher_target": rate_of("teacher"),
        "student_target": rate_of("student"),
        "amplification_target": max(amp_t) if amp_t else None,
        "point": json.dumps(point, sort_keys=True) if point else "",
        "problems": "; ".join(st["problems"]),
        "path": str(path),
    }
    base = {k: row[k] for k in ("run", "sweep", "name", "point", "poison_requested", "poison_injected",
                                "poison_rate", "status", "date")}
    rate_rows = [{**base, **{c: r.get(c) for c in RATE_COLUMNS}} for r in rates]
    return row, rate_rows


# ------------------------------------------------------------------------------------------------- the index
def load_index(runs_dir: str | os.PathLike) -> dict[str, Any]:
    """Everything the overview and sweeps views need, read once per change of the folder.

    runs: one row per run (overview columns + problems); rates: bias-rate rows of every run with its poison
    budget and sweep point; sweeps: one row per sweep directory (keys, points, problems).
    """
    entries = scan(runs_dir)
    runs, rates, sweeps = [], [], []
    points_of: dict[str, dict[str, dict]] = {}
    for e in entries:
        if e["kind"] == "sweep":
            pts, keys, problems = sweep_points(Path(e["path"]), e["files"])
            points_of[e["rel"]] = pts
            sj_name = Path(e["path"]).name if e["rel"] == "." else e["rel"]
            sweeps.append({"sweep": e["rel"], "name": _SWEEP_NAME.sub("", sj_name), "keys": json.dumps(keys),
                           "points": 0, "complete": 0, "problems": "; ".join(problems), "path": e["path"]})
    sweep_row = {s["sweep"]: s for s in sweeps}
    for e in entries:
        if e["kind"] != "run":
            continue
        point = None
        if e["sweep"]:
            child = Path(e["path"]).name
            point = points_of.get(e["sweep"], {}).get(child) or _point_from_label(child)
        row, rr = summarize_run(e, point)
        runs.append(row)
        rates += rr
        if e["sweep"] in sweep_row:
            sweep_row[e["sweep"]]["points"] += 1
            sweep_row[e["sweep"]]["complete"] += row["status"] == "complete"
    runs_df = pd.DataFrame(runs, columns=RUN_COLUMNS)
    if not runs_df.empty:
        runs_df = runs_df.sort_values(["date", "run"], ascending=[False, True], kind="stable").reset_index(drop=True)
    return {"runs_dir": str(runs_dir), "runs": runs_df,
            "rates": pd.DataFrame(rates, columns=RATE_INDEX_COLUMNS),
            "sweeps": pd.DataFrame(sweeps, columns=["sweep", "name", "keys", "points", "complete", "problems",
                                                     "path"])}


RUN_COLUMNS = ["run", "sweep", "name", "bias_type", "mode", "target_task", "poison_requested", "poison_injected",
               "poison_rate", "models", "methods", "status", "date", "seconds", "baseline_target", "teacher_target",
               "student_target", "amplification_target", "point", "problems", "path"]
RATE_INDEX_COLUMNS = ["run", "sweep", "name", "point", "poison_requested", "poison_injected", "poison_rate",
                      "status", "date"] + RATE_COLUMNS


