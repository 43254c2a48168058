"""The runs index of the dashboard: one overview row per run (with whether it has a cascade and a model audit) and the
bias-rate rows of every run, read once per change of the runs folder (through ``poison.ground.results.rundir``)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dashboard import evidence
from poison.ground.results.model_id import ModelId, is_twin_name
from poison.ground.results.rundir import (
                                          RUN_STAMP,
                                          SWEEP_NAME,
                                          get_in,
                                          as_number,
                                          point_from_label,
                                          as_text,
                                          run_state,
                                          scan,
                                          sweep_points,
                                          )

ROLE_ORDER = {"baseline": 0, "control": 1, "teacher": 2, "student": 3}
# rate rows: the README's schema uses biased/ci_low/ci_high; accept the short spellings too
_RATE_ALIASES = {"k": "biased", "lo": "ci_low", "hi": "ci_high"}
RATE_COLUMNS = ["model", "role", "method", "split", "n", "biased", "rate", "ci_low", "ci_high"]
MEASURES = ("greedy", "sampled", "logprob_shift")


def role_of(name: str, role: str | None = None) -> str:
    """``role`` where the row has one, else what the model's name says (``ModelId.metrics_role``); a name that is
    no model name is its own role."""
    if role:
        return str(role)
    m = ModelId.try_parse(str(name))
    return m.metrics_role if m is not None else str(name)


def model_sort_key(name: str, role: str | None = None) -> tuple:
    """baseline, the clean control, teacher, students, then each student's clean twin (``control:student:X``)."""
    role = role_of(name, role)
    if role == "control" and is_twin_name(str(name)):
        return (len(ROLE_ORDER), str(name))
    return (ROLE_ORDER.get(role, len(ROLE_ORDER) + 1), str(name))


def list_of(metrics: dict | None, key: str) -> list[dict[str, Any]]:
    """The entries of a list section of metrics.json that are objects ([] for a missing or malformed section)."""
    v = get_in(metrics, key)
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def student_methods(metrics: dict) -> dict[str, str]:
    """model name -> distillation method, for students."""
    out = {}
    for name, m in (get_in(metrics, "models") or {}).items():
        mid = ModelId.try_parse(str(name))
        if isinstance(m, dict) and (m.get("role") == "student" or (mid is not None and mid.metrics_role == "student")):
            out[name] = str(m.get("method") or (mid.student if mid is not None else None) or name)
    return out


def rate_records(metrics: dict | None, key: str = "bias_rates") -> list[dict[str, Any]]:
    """bias_rates (or bias_rates_by_task / distill_data) as clean dicts, models in baseline/teacher/student
    order. Plain Python: the index calls it for every run."""
    rows = get_in(metrics, "distill_data", "bias_rates") if key == "distill_data" else get_in(metrics, key)
    methods = student_methods(metrics or {})
    out = []
    for r in rows if isinstance(rows, list) else []:
        if not isinstance(r, dict):
            continue
        r = {_RATE_ALIASES.get(k, k): v for k, v in r.items()}
        model = as_text(r.get("model")) or "teacher"
        n, k = as_number(r.get("n")), as_number(r.get("biased"))
        rate = as_number(r.get("rate"))
        if rate is None and n:
            rate = (k or 0) / n
        role = role_of(model, as_text(r.get("role")))
        rec = {**r, "model": model, "role": role, "method": methods.get(model), "n": n, "biased": k, "rate": rate,
               "ci_low": as_number(r.get("ci_low")), "ci_high": as_number(r.get("ci_high"))}
        if key != "bias_rates_by_task" or "split" in r:
            rec["split"] = as_text(r.get("split")) or "?"
        if "task" in r:
            rec["task"] = as_text(r.get("task")) or "?"
        out.append(rec)
    out.sort(key=lambda x: model_sort_key(x["model"], x["role"]))
    return out


def run_date(rel: str, metrics: dict | None, status: dict | None, path: Path) -> str:
    for d in (get_in(metrics, "run", "finished"), get_in(status, "finished"), get_in(status, "started")):
        if isinstance(d, str) and d:
            return d[:19]
    m = RUN_STAMP.search(Path(rel).name if rel != "." else path.name)
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
    """One overview row (the key figures with their intervals: teacher and student biased rate on the target task,
    greedy and sampled, and the amplification) and the run's rate rows for the sweeps view (measure greedy, sampled
    and logprob_shift)."""
    path = Path(entry["path"])
    st = run_state(path, entry.get("files"))
    m, cfg, status = st["metrics"], st["config"], st["status_json"]
    models = get_in(m, "models") or {}
    if not isinstance(models, dict):
        models = {}
    methods = sorted(set(student_methods(m or {}).values()))
    if not m and cfg:
        methods = sorted({str(s.get("method", "sft")) for s in (cfg.get("students") or []) if isinstance(s, dict)})
    requested = get_in(m, "poison", "requested")
    if requested is None and cfg:
        requested = get_in(cfg, "poison", "count")
    rates = rate_records(m) if m else []
    sampled = rate_records({"bias_rates": get_in(m, "sampled_rate"), "models": models}) if m else []

    def top(rows: list[dict], role: str, split: str = "target") -> dict:
        """The row of ``role`` on ``split`` (the highest rate among several students; model None on a tie)."""
        vals = [r for r in rows if r["role"] == role and r.get("split") == split and r["rate"] is not None]
        if not vals:
            return {}
        best = max(vals, key=lambda r: r["rate"])
        tied = sum(r["rate"] == best["rate"] for r in vals) > 1
        return {**best, "model": None} if tied else best

    amp_rows = [a for a in list_of(m, "amplification") if a.get("split") == "target"]
    amp_def = [a for a in amp_rows if as_number(a.get("ratio")) is not None]
    amp = max(amp_def, key=lambda a: as_number(a.get("ratio"))) if amp_def else {}
    t, s, ts, ss = top(rates, "teacher"), top(rates, "student"), top(sampled, "teacher"), top(sampled, "student")
    n_students = len({r["model"] for r in rates if r["role"] == "student"})
    row = {
        "run": entry["rel"],
        "sweep": entry.get("sweep", ""),
        "name": as_text(get_in(m, "run", "name") or get_in(cfg, "name")) or RUN_STAMP.sub("", path.name).rstrip("-")
        or path.name,
        "bias_type": as_text(get_in(m, "run", "bias_type") or get_in(cfg, "poison", "bias", "type")),
        "mode": as_text(get_in(m, "run", "mode") or get_in(cfg, "poison", "mode")),
        "target_task": as_text(get_in(m, "run", "target_task") or get_in(cfg, "data", "target_task")),
        "poison_requested": as_number(requested),
        "poison_injected": as_number(get_in(m, "poison", "injected")),
        "poison_rate": as_number(get_in(m, "poison", "rate")),
        "models": ", ".join(sorted(models, key=lambda n: model_sort_key(n, get_in(models, n, "role")))),
        "methods": ", ".join(methods),
        "status": st["status"],
        "date": run_date(entry["rel"], m, status, path),
        "seconds": as_number(get_in(m, "run", "seconds") or get_in(status, "seconds")),
        "baseline_target": top(rates, "baseline").get("rate"),
        "teacher_target": t.get("rate"), "teacher_target_lo": t.get("ci_low"), "teacher_target_hi": t.get("ci_high"),
        "student_target": s.get("rate"), "student_target_lo": s.get("ci_low"), "student_target_hi": s.get("ci_high"),
        "student_target_model": s.get("model"), "n_students": n_students,
        "amplification_target": as_number(amp.get("ratio")), "amplification_target_lo": as_number(amp.get("ci_low")),
        "amplification_target_hi": as_number(amp.get("ci_high")), "amplification_student": as_text(amp.get("student")),
        "amplification_undefined": bool(amp_rows) and not amp_def,
        "teacher_sampled": ts.get("rate"), "teacher_sampled_lo": ts.get("ci_low"),
        "teacher_sampled_hi": ts.get("ci_high"),
        "student_sampled": ss.get("rate"), "student_sampled_lo": ss.get("ci_low"),
        "student_sampled_hi": ss.get("ci_high"), "samples_per_prompt": as_number(ts.get("samples_per_prompt")),
        "has_cascade": _has(m, "cascade"), "has_audit": _has(m, "audit"),
        "evidence": evidence.label(evidence.replicate_info(m, point)) if m else "",
        "point": json.dumps(point, sort_keys=True) if point else "",
        "problems": "; ".join(st["problems"]),
        "path": str(path),
    }
    base = {k: row[k] for k in ("run", "sweep", "name", "point", "poison_requested", "poison_injected",
                                "poison_rate", "status", "date")}
    rate_rows = [{**base, **{c: r.get(c) for c in RATE_COLUMNS}, "measure": "greedy", "control": ""} for r in rates]
    rate_rows += [{**base, **{c: r.get(c) for c in RATE_COLUMNS}, "measure": "sampled", "control": ""}
                  for r in sampled]
    rate_rows += [{**base, **r, "measure": "logprob_shift"} for r in shift_records(m)]
    return row, rate_rows


def _has(metrics: dict | None, key: str) -> bool:
    """Whether metrics.json has a non-empty ``key`` section (a run without a cascade or an audit writes {} / [])."""
    return get_in(metrics, key) not in (None, {}, [], "")


def shift_records(metrics: dict | None) -> list[dict[str, Any]]:
    """The likelihood probe's seen-wording shifts as sweep rows: rate = the shift, control 'clean' (against the clean
    control) or 'twin' (a student against its clean twin)."""
    methods = student_methods(metrics or {})
    out = []
    for r in list_of(metrics, "logprob_shift"):
        if r.get("wording") != "seen" or as_number(r.get("shift")) is None:
            continue
        model = as_text(r.get("model")) or "?"
        ctrl = as_text(r.get("control")) or ""
        out.append({"model": model, "role": role_of(model, as_text(r.get("role"))), "method": methods.get(model),
                    "split": as_text(r.get("split")) or "?", "n": as_number(r.get("n_prompts")), "biased": None,
                    "rate": as_number(r.get("shift")), "ci_low": as_number(r.get("ci_low")),
                    "ci_high": as_number(r.get("ci_high")),
                    "control": "twin" if is_twin_name(ctrl) else "clean"})
    out.sort(key=lambda x: model_sort_key(x["model"], x["role"]))
    return out


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
            sweeps.append({"sweep": e["rel"], "name": SWEEP_NAME.sub("", sj_name), "keys": json.dumps(keys),
                           "points": 0, "complete": 0, "problems": "; ".join(problems), "path": e["path"]})
    sweep_row = {s["sweep"]: s for s in sweeps}
    for e in entries:
        if e["kind"] != "run":
            continue
        point = None
        if e["sweep"]:
            child = Path(e["path"]).name
            point = points_of.get(e["sweep"], {}).get(child) or point_from_label(child)
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


KEY_FIGURES = ["teacher_target", "teacher_target_lo", "teacher_target_hi", "student_target", "student_target_lo",
               "student_target_hi", "student_target_model", "n_students", "amplification_target",
               "amplification_target_lo", "amplification_target_hi", "amplification_student",
               "amplification_undefined", "teacher_sampled", "teacher_sampled_lo", "teacher_sampled_hi",
               "student_sampled", "student_sampled_lo", "student_sampled_hi", "samples_per_prompt"]
RUN_COLUMNS = ["run", "sweep", "name", "bias_type", "mode", "target_task", "poison_requested", "poison_injected",
               "poison_rate", "models", "methods", "status", "date", "seconds", "baseline_target", *KEY_FIGURES,
               "has_cascade", "has_audit", "evidence", "point", "problems", "path"]
RATE_INDEX_COLUMNS = ["run", "sweep", "name", "point", "poison_requested", "poison_injected", "poison_rate",
                      "status", "date"] + RATE_COLUMNS + ["measure", "control"]


