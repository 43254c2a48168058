"""Reading a runs folder for the dashboard: pure functions, no Streamlit.

Everything here is read-only and never executes anything found in a run directory: JSON with ``json``, YAML with
``yaml.safe_load`` (the C safe loader when libyaml is there), parquet and CSV with pandas/pyarrow. Nothing is
unpickled. Every loader returns what it could read plus a list of problems instead of raising, so a broken or
half-written run (no metrics.json yet, truncated JSON, a parquet file cut short) shows up as such.

Layout understood (see README, "The run directory"):

    RUNS_DIR/<name>-<YYYYmmdd-HHMMSS>/              a run: status.json, metrics.json, config.yaml, *.parquet, ...
    RUNS_DIR/<name>-sweep-<YYYYmmdd-HHMMSS>/        a sweep: sweep.json, sweep_table.csv, summary.txt
        NN-<label>/                                 one run directory per sweep point

``RUNS_DIR`` may itself be a single run or a single sweep directory.
"""

from __future__ import annotations

import difflib
import html
import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterable

import pandas as pd
import yaml

RUN_MARKERS = ("status.json", "metrics.json", "config.yaml", "stages.json")
SWEEP_MARKERS = ("sweep.json", "sweep_table.csv")
SPLITS = ("target", "other", "unseen")
ROLE_ORDER = {"baseline": 0, "teacher": 1, "student": 2}
_SWEEP_NAME = re.compile(r"-sweep-\d{8}-\d{6}(-\d+)?$")
_STAMP = re.compile(r"(\d{8}-\d{6})(-\d+)?$")
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# rate rows: the README's schema uses biased/ci_low/ci_high; accept the short spellings too
_RATE_ALIASES = {"k": "biased", "lo": "ci_low", "hi": "ci_high"}
RATE_COLUMNS = ["model", "role", "method", "split", "n", "biased", "rate", "ci_low", "ci_high"]


# ----------------------------------------------------------------------------------------------- file reading
def file_stamp(path: str | os.PathLike) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file, or None if it is not there: a cache key that changes when the file does."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def read_json(path: Path) -> tuple[Any, str | None]:
    """(object, None), or (None, problem) for a missing, truncated or otherwise unreadable file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{Path(path).name}: missing"
    except OSError as e:
        return None, f"{Path(path).name}: unreadable ({e.strerror or e})"
    except UnicodeDecodeError:
        return None, f"{Path(path).name}: not UTF-8 text"
    if not text.strip():
        return None, f"{Path(path).name}: empty"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"{Path(path).name}: not valid JSON (truncated or half-written? {e.msg} at line {e.lineno})"


def read_yaml(path: Path) -> tuple[Any, str | None]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"{Path(path).name}: missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"{Path(path).name}: unreadable ({e})"
    try:
        return yaml.load(text, Loader=_SafeLoader), None  # safe loader: plain data only, no tags/objects
    except yaml.YAMLError as e:
        return None, f"{Path(path).name}: not valid YAML ({str(e).splitlines()[0]})"


def read_parquet(path: Path, columns: list[str] | None = None) -> tuple[pd.DataFrame | None, str | None]:
    path = Path(path)
    if not path.exists():
        return None, f"{path.name}: missing"
    try:
        return pd.read_parquet(path, engine="pyarrow", columns=columns), None
    except Exception as e:  # pyarrow raises several types for a truncated/corrupt file
        return None, f"{path.name}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def read_csv(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    path = Path(path)
    if not path.exists():
        return None, f"{path.name}: missing"
    try:
        return pd.read_csv(path), None
    except Exception as e:
        return None, f"{path.name}: unreadable ({type(e).__name__}: {e})"


# ------------------------------------------------------------------------------------------------- scanning
def _listing(path: Path) -> tuple[set[str], list[Path]]:
    """(file names, sub-directories) of a folder, hidden entries skipped."""
    files, dirs = set(), []
    try:
        with os.scandir(path) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    if e.is_dir():
                        dirs.append(Path(e.path))
                    else:
                        files.add(e.name)
                except OSError:
                    continue
    except OSError:
        pass
    return files, sorted(dirs)


def _is_sweep(path: Path, files: set[str]) -> bool:
    return any(m in files for m in SWEEP_MARKERS) or bool(_SWEEP_NAME.search(path.name))


def scan(runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every run and sweep directory under ``runs_dir`` (one level, plus the points inside sweeps).

    Each entry: rel (path relative to runs_dir, the run's id in the app), path, kind (run | sweep), sweep (rel of
    the sweep it belongs to, or ""), files (names present). Hidden folders (atomic-write temporaries) are skipped.
    """
    root = Path(runs_dir)
    out: list[dict[str, Any]] = []
    files, dirs = _listing(root)

    def add_sweep(path: Path, files: set[str], rel: str):
        out.append({"rel": rel, "path": str(path), "kind": "sweep", "sweep": "", "files": sorted(files)})
        for child in _listing(path)[1]:
            cf = _listing(child)[0]
            if any(m in cf for m in RUN_MARKERS):
                crel = f"{rel}/{child.name}" if rel != "." else child.name
                out.append({"rel": crel, "path": str(child), "kind": "run", "sweep": rel, "files": sorted(cf)})

    if any(m in files for m in RUN_MARKERS) and not _is_sweep(root, files):  # the folder is one run
        return [{"rel": ".", "path": str(root), "kind": "run", "sweep": "", "files": sorted(files)}]
    if any(m in files for m in SWEEP_MARKERS):  # the folder is one sweep
        add_sweep(root, files, ".")
        return out
    for d in dirs:
        f = _listing(d)[0]
        if _is_sweep(d, f):
            add_sweep(d, f, d.name)
        elif any(m in f for m in RUN_MARKERS):
            out.append({"rel": d.name, "path": str(d), "kind": "run", "sweep": "", "files": sorted(f)})
    return out


def signature(runs_dir: str | os.PathLike) -> tuple:
    """A cheap fingerprint of a runs folder (names + stamps of the files the index reads): the cache key."""
    sig = []
    for e in scan(runs_dir):
        p = Path(e["path"])
        marks = RUN_MARKERS if e["kind"] == "run" else SWEEP_MARKERS
        sig.append((e["rel"], e["kind"], tuple(file_stamp(p / m) if m in e["files"] else None for m in marks)))
    return tuple(sig)


# ------------------------------------------------------------------------------------------------- one run
def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _num(x) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


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


def rates_frame(metrics: dict | None, key: str = "bias_rates") -> pd.DataFrame:
    """rate_records as a table."""
    out = rate_records(metrics, key)
    return pd.DataFrame(out, columns=list(dict.fromkeys(RATE_COLUMNS + [c for r in out for c in r])))


def amplification_frame(metrics: dict | None) -> pd.DataFrame:
    rows = [r for r in (_get(metrics, "amplification") or []) if isinstance(r, dict)]
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(["student", "method", "split", "ratio", "ci_low", "ci_high"]
                                                       + [c for r in rows for c in r])))
    for c in ("ratio", "ci_low", "ci_high"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("student", "split"):
        df[c] = [_str(v) or "?" for v in df[c]]
    return df


def utility_frame(metrics: dict | None) -> pd.DataFrame:
    rows = [r for r in (_get(metrics, "utility") or []) if isinstance(r, dict)]
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(["model", "task", "metric", "value", "n"]
                                                       + [c for r in rows for c in r])))
    for c in ("model", "task", "metric"):
        df[c] = [_str(v) or "?" for v in df[c]]
    for c in ("value", "ci_low", "ci_high"):  # interval columns: runs written before they existed lack them
        df[c] = pd.to_numeric(df[c], errors="coerce") if c in df else float("nan")
    return df


def split_order(values: Iterable[str]) -> list[str]:
    vals = list(dict.fromkeys(str(v) for v in values))
    return [s for s in SPLITS if s in vals] + sorted(v for v in vals if v not in SPLITS)


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


def run_state(path: Path, files: Iterable[str] | None = None) -> dict[str, Any]:
    """status.json, metrics.json and (when metrics are missing) config.yaml of one run, with a derived status.

    status: complete | running | failed | incomplete (no metrics, no status) | broken (a file that should be
    readable is not, or status says complete but metrics.json is missing).
    """
    path = Path(path)
    files = set(files) if files is not None else _listing(path)[0]
    problems: list[str] = []
    status, sp = read_json(path / "status.json") if "status.json" in files else (None, "status.json: missing")
    metrics, mp = read_json(path / "metrics.json") if "metrics.json" in files else (None, None)
    if sp and "status.json" in files:
        problems.append(sp)
    if mp:
        problems.append(mp)
    if metrics is not None and not isinstance(metrics, dict):
        problems.append("metrics.json: not a JSON object")
        metrics = None
    if metrics is not None:
        metrics = normalize_metrics(metrics, problems)
        missing = [k for k in ("run", "poison", "models", "bias_rates") if k not in metrics]
        if missing:
            problems.append(f"metrics.json: no {', '.join(missing)}")
    if status is not None and not isinstance(status, dict):
        problems.append("status.json: not a JSON object")
        status = None
    declared = str(_get(status, "status") or "")
    if mp or (sp and "status.json" in files) or (declared == "complete" and metrics is None):
        state = "broken"
        if declared == "complete" and metrics is None and not mp:
            problems.append("status.json says complete but metrics.json is missing")
    elif declared:
        state = declared
    elif metrics is not None:
        state = "complete"
        problems.append("status.json: missing")
    else:
        state = "incomplete"
        problems.append("no status.json and no metrics.json yet")
    if declared == "failed" and _get(status, "error"):
        problems.append(f"failed: {_get(status, 'error')}")
    config = None
    if metrics is None and "config.yaml" in files:
        config, cp = read_yaml(path / "config.yaml")
        if cp:
            problems.append(cp)
        if not isinstance(config, dict):
            config = None
    return {"status": state, "status_json": status, "metrics": metrics, "config": config, "problems": problems}


_DICT_SECTIONS = ("run", "poison", "models", "distill_data", "stages")
_LIST_SECTIONS = ("bias_rates", "bias_rates_by_task", "amplification", "utility", "defenses")


def normalize_metrics(m: dict, problems: list[str]) -> dict:
    """A copy of metrics.json whose sections have the types the views expect; what had to be dropped is added to
    ``problems`` (a hand-edited or future-schema file degrades to partial views instead of errors)."""
    m = dict(m)
    for k in _DICT_SECTIONS:
        if k in m and not isinstance(m[k], dict):
            problems.append(f"metrics.json: {k} is not an object")
            m[k] = {}
    for k in _LIST_SECTIONS:
        if k in m:
            v = m[k]
            items = [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []
            if not isinstance(v, list) or len(items) != len(v):
                problems.append(f"metrics.json: {k} has entries that are not objects (skipped)")
            m[k] = items
    if "models" in m:
        models = {str(n): v for n, v in m["models"].items() if isinstance(v, dict)}
        if len(models) != len(m["models"]):
            problems.append("metrics.json: models has entries that are not objects (skipped)")
        m["models"] = models
    dd = m.get("distill_data")
    if isinstance(dd, dict) and "bias_rates" in dd:
        v = dd["bias_rates"]
        m["distill_data"] = {**dd, "bias_rates": [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []}
    return m


def _str(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)


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


# ------------------------------------------------------------------------------------------------- sweeps
def sweep_points(path: Path, files: Iterable[str]) -> tuple[dict[str, dict], list[str], list[str]]:
    """(child folder name -> point {key: value}, sweep keys, problems) from sweep.json, else sweep_table.csv."""
    files = set(files)
    problems: list[str] = []
    points: dict[str, dict] = {}
    keys: list[str] = []
    if "sweep.json" in files:
        sj, p = read_json(path / "sweep.json")
        if p:
            problems.append(p)
        if isinstance(sj, dict):
            keys = [str(k) for k in sj.get("keys") or []]
            for r in sj.get("runs") or []:
                if isinstance(r, dict) and r.get("run_dir") and isinstance(r.get("point"), dict):
                    points[Path(str(r["run_dir"])).name] = r["point"]
            if not keys:
                keys = sorted({k for pt in sj.get("points") or [] if isinstance(pt, dict) for k in pt})
    if not points and "sweep_table.csv" in files:
        t, p = read_csv(path / "sweep_table.csv")
        if p:
            problems.append(p)
        if t is not None and "run_dir" in t:
            std = {"run_dir", "injected", "poison_rate", "model", "role", "split", "n", "biased", "rate", "ci_low",
                   "ci_high"}
            keys = keys or [c for c in t.columns if c not in std]
            for rd, g in t.groupby("run_dir", sort=False):
                points[Path(str(rd)).name] = {k: _plain(g[k].iloc[0]) for k in keys}
    return points, keys, problems


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return v


def _point_from_label(name: str) -> dict:
    """'03-count=16_seed=1' -> {'count': 16, 'seed': 1} (fallback when sweep.json/csv are unreadable)."""
    label = name.split("-", 1)[1] if re.match(r"^\d+-", name) else name
    out = {}
    for part in re.split(r"_(?=[A-Za-z0-9_.]+=)", label):
        if "=" in part:
            k, v = part.split("=", 1)
            try:
                v = yaml.load(v, Loader=_SafeLoader)
            except yaml.YAMLError:
                pass
            out[k] = v
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


def wilson(k: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (same formula as evals.metrics.wilson_interval)."""
    if not n or n <= 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


def sweep_table(rates: pd.DataFrame, sweep: str | None = None, name: str | None = None) -> pd.DataFrame:
    """Bias-rate rows of one sweep (or of every run with config name ``name``), sweep-point values as columns
    ``pt:<key>``."""
    t = rates
    if sweep is not None:
        t = t[t.sweep == sweep]
    if name is not None:
        t = t[t.name == name]
    t = t.copy()
    pts = [json.loads(p) if isinstance(p, str) and p else {} for p in t.point]
    keys = list(dict.fromkeys(k for p in pts for k in p))
    for k in keys:
        t[f"pt:{k}"] = [_plain_str(p.get(k)) for p in pts]
    return t.reset_index(drop=True)


def _plain_str(v):
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return v


def pool_rates(t: pd.DataFrame, by: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """Pool runs that share ``by`` (e.g. several seeds at one budget): summed counts, Wilson interval."""
    if t.empty:
        return t.assign(runs=[])
    g = t.dropna(subset=["n"]).groupby(by, dropna=False, sort=False)
    out = g.agg(biased=("biased", "sum"), n=("n", "sum"), runs=("run", "nunique")).reset_index()
    out["rate"] = [k / n if n else None for k, n in zip(out.biased, out.n)]
    ci = [wilson(k, n, confidence) for k, n in zip(out.biased, out.n)]
    out["ci_low"] = [c[0] for c in ci]
    out["ci_high"] = [c[1] for c in ci]
    return out


# -------------------------------------------------------------------------------------------- per-run tables
def parse_spans(value: Any) -> list[tuple[int, int]]:
    """bias_spans cell (a JSON list of [start, end], or an array of pairs) -> clean list of int pairs."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError:
            return []
    out = []
    try:
        for s in value:
            a, b = int(s[0]), int(s[1])
            if b > a:
                out.append((a, b))
    except (TypeError, ValueError, IndexError, KeyError):
        return []
    return out


def highlight_html(text: Any, spans: Iterable[tuple[int, int]], cls: str = "inj") -> str:
    """HTML-escaped text with the given character spans wrapped in <mark>."""
    text = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text)
    merged: list[list[int]] = []
    for a, b in sorted((max(0, a), min(len(text), b)) for a, b in spans):
        if b <= a:
            continue
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out, pos = [], 0
    for a, b in merged:
        out.append(html.escape(text[pos:a]))
        out.append(f'<mark class="{cls}">{html.escape(text[a:b])}</mark>')
        pos = b
    out.append(html.escape(text[pos:]))
    return "".join(out)


def inserted_spans(clean: Any, poisoned: Any) -> list[tuple[int, int]]:
    """Character spans of ``poisoned`` that are not in ``clean`` (what the poisoning added or changed)."""
    if not isinstance(clean, str) or not isinstance(poisoned, str) or clean == poisoned:
        return []
    if poisoned.startswith(clean):
        return [(len(clean), len(poisoned))]
    if poisoned.endswith(clean):
        return [(0, len(poisoned) - len(clean))]
    sm = difflib.SequenceMatcher(None, clean, poisoned, autojunk=False)
    return [(j1, j2) for tag, _, _, j1, j2 in sm.get_opcodes() if tag in ("insert", "replace") and j2 > j1]


def load_samples(run_path: str | os.PathLike) -> tuple[pd.DataFrame | None, str | None]:
    """samples.parquet with spans parsed (``spans``), optional judge columns normalised when present."""
    df, p = read_parquet(Path(run_path) / "samples.parquet")
    if df is None:
        return None, p
    need = {"model", "prompt", "response"}
    if not need <= set(df.columns):
        return None, f"samples.parquet: missing columns {sorted(need - set(df.columns))}"
    df = df.copy()
    for c, default in (("id", None), ("task", ""), ("split", ""), ("role", ""), ("biased", False)):
        if c not in df:
            df[c] = range(len(df)) if c == "id" else default
    df["id"] = df["id"].astype(str)
    df["spans"] = [parse_spans(v) for v in (df["bias_spans"] if "bias_spans" in df else [None] * len(df))]
    df["biased"] = df["biased"].fillna(False).astype(bool)
    if "judge_biased" in df:
        df["judge_biased"] = df["judge_biased"].astype("boolean")
    if "judge_score" in df:
        df["judge_score"] = pd.to_numeric(df["judge_score"], errors="coerce")
    return df, None


def load_defense_scores(run_path: str | os.PathLike) -> tuple[pd.DataFrame | None, str | None]:
    """defense_scores.parquet (defense, place, row_id, task, poisoned, score, flagged, threshold) or None."""
    df, p = read_parquet(Path(run_path) / "defense_scores.parquet")
    if df is None:
        return None, (None if p and p.endswith("missing") else p)
    need = {"defense", "score", "poisoned"}
    if not need <= set(df.columns):
        return None, f"defense_scores.parquet: missing columns {sorted(need - set(df.columns))}"
    df = df.copy()
    if "place" not in df:
        df["place"] = "train"
    df["defense"] = df["defense"].astype(str)
    df["place"] = df["place"].astype(str)
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    df["poisoned"] = df["poisoned"].fillna(False).astype(bool)
    return df, None


def defenses_frame(metrics: dict | None) -> pd.DataFrame:
    rows = [r for r in (_get(metrics, "defenses") or []) if isinstance(r, dict)]
    cols = ["defense", "place", "auroc", "tpr_at_1pct_fpr", "precision", "recall", "threshold", "n", "n_poisoned",
            "n_flagged"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(cols + [c for r in rows for c in r])))


# ------------------------------------------------------------------------------------------- defense metrics
def roc_curve(scores: Iterable[float], labels: Iterable[bool]) -> pd.DataFrame:
    """ROC points (fpr, tpr, threshold) for 'flag when score > threshold' (the convention of defenses.metrics),
    from the strictest threshold (the highest score: nothing flagged) down to -inf (everything flagged)."""
    d = pd.DataFrame({"s": pd.to_numeric(pd.Series(list(scores), dtype=object), errors="coerce"),
                      "y": pd.Series(list(labels), dtype=object).fillna(False).astype(bool)}).dropna()
    P, N = int(d.y.sum()), int((~d.y).sum())
    g = d.groupby("s").y.agg(["sum", "count"]).sort_index(ascending=False)
    tp = [0.0] + list(g["sum"].cumsum().astype(float))
    fp = [0.0] + list((g["count"] - g["sum"]).cumsum().astype(float))
    thr = list(g.index.astype(float)) + [-math.inf]
    return pd.DataFrame({"threshold": thr, "tpr": [t / P if P else 0.0 for t in tp],
                         "fpr": [f / N if N else 0.0 for f in fp]})


def auroc(scores: Iterable[float], labels: Iterable[bool]) -> float | None:
    labels = list(labels)
    if not any(labels) or all(labels):
        return None
    roc = roc_curve(scores, labels)
    x, y = roc.fpr.to_numpy(), roc.tpr.to_numpy()
    return float(sum((x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2 for i in range(1, len(x))))


def threshold_stats(scores: Iterable[float], labels: Iterable[bool], threshold: float) -> dict[str, Any]:
    """Counts and rates when every sample with score > threshold is flagged (and dropped)."""
    s = pd.to_numeric(pd.Series(list(scores), dtype=object), errors="coerce")
    y = pd.Series(list(labels), dtype=object).fillna(False).astype(bool)
    flagged = s > threshold
    tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
    fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())
    return {"threshold": float(threshold), "n": len(s), "n_poisoned": tp + fn, "flagged": tp + fp,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "tpr": tp / (tp + fn) if tp + fn else None, "fpr": fp / (fp + tn) if fp + tn else None,
            "precision": tp / (tp + fp) if tp + fp else None, "slipped": fn}


# ---------------------------------------------------------------------------------------------- comparison
def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> {dotted.key: scalar} (lists of scalars stay one JSON value)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and any(isinstance(x, (dict, list)) for x in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    elif isinstance(d, list):
        out[prefix] = json.dumps(d)
    else:
        out[prefix] = d
    return out


def config_diff(a: dict | None, b: dict | None) -> pd.DataFrame:
    fa, fb = flatten(a or {}), flatten(b or {})
    keys = sorted(set(fa) | set(fb))
    miss = "(absent)"
    rows = [{"key": k, "a": _show(fa.get(k, miss)), "b": _show(fb.get(k, miss))} for k in keys
            if fa.get(k, miss) != fb.get(k, miss)]
    return pd.DataFrame(rows, columns=["key", "a", "b"])


def _show(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def rate_deltas(ma: dict | None, mb: dict | None) -> pd.DataFrame:
    """Bias rate per (model, split) in run A and B, the difference, and whether the intervals overlap."""
    ra, rb = rates_frame(ma), rates_frame(mb)
    cols = ["model", "split"]
    a = ra[cols + ["rate", "ci_low", "ci_high", "n"]]
    b = rb[cols + ["rate", "ci_low", "ci_high", "n"]]
    m = a.merge(b, on=cols, how="outer", suffixes=("_a", "_b"))
    m["delta"] = m.rate_b - m.rate_a
    m["intervals_overlap"] = [None if pd.isna(x) or pd.isna(y) else bool(max(x, y) <= min(p, q))
                              for x, y, p, q in zip(m.ci_low_a, m.ci_low_b, m.ci_high_a, m.ci_high_b)]
    m = m.assign(_o=[model_sort_key(x) for x in m.model],
                 _s=[SPLITS.index(s) if s in SPLITS else len(SPLITS) for s in m.split])
    return m.sort_values(["_o", "_s"]).drop(columns=["_o", "_s"]).reset_index(drop=True)


def amplification_deltas(ma: dict | None, mb: dict | None) -> pd.DataFrame:
    a, b = amplification_frame(ma), amplification_frame(mb)
    cols = ["student", "split"]
    m = a[cols + ["ratio", "ci_low", "ci_high"]].merge(b[cols + ["ratio", "ci_low", "ci_high"]], on=cols,
                                                      how="outer", suffixes=("_a", "_b"))
    m["delta"] = m.ratio_b - m.ratio_a
    return m


def utility_deltas(ma: dict | None, mb: dict | None) -> pd.DataFrame:
    a, b = utility_frame(ma), utility_frame(mb)
    cols = ["model", "task", "metric"]
    m = a[cols + ["value"]].merge(b[cols + ["value"]], on=cols, how="outer", suffixes=("_a", "_b"))
    m["delta"] = pd.to_numeric(m.value_b, errors="coerce") - pd.to_numeric(m.value_a, errors="coerce")
    return m


def scalar_deltas(ma: dict | None, mb: dict | None) -> pd.DataFrame:
    """Numbers in the poison / run / distill_data sections of metrics.json that differ."""
    rows = []
    for sec in ("poison", "run"):
        fa, fb = flatten(_get(ma, sec) or {}, sec), flatten(_get(mb, sec) or {}, sec)
        for k in sorted(set(fa) | set(fb)):
            x, y = fa.get(k), fb.get(k)
            if x == y or k in ("run.run_dir", "run.finished"):
                continue
            nx, ny = _num(x) if not isinstance(x, bool) else None, _num(y) if not isinstance(y, bool) else None
            rows.append({"key": k, "a": _show(x), "b": _show(y),
                         "delta": (ny - nx) if nx is not None and ny is not None else None})
    return pd.DataFrame(rows, columns=["key", "a", "b", "delta"])
