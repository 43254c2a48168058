"""Reading run directories back: pure functions, no Streamlit. The dashboard and ``poison.load_run`` use them.

Everything here is read-only and never executes anything found in a run directory: JSON with ``json``, YAML with
``yaml.safe_load`` (the C safe loader when libyaml is there), parquet and CSV with pandas/pyarrow. Nothing is
unpickled. Every loader returns what it could read plus a list of problems instead of raising, so a broken or
half-written run (no metrics.json yet, truncated JSON, a parquet file cut short) shows up as such.

Layout understood (see docs/results-schema.md and README, "The run directory"):

    RUNS_DIR/<name>-<YYYYmmdd-HHMMSS>/              a run: status.json, metrics.json, config.yaml, *.parquet, ...
    RUNS_DIR/<name>-sweep-<YYYYmmdd-HHMMSS>/        a sweep: sweep.json, sweep_table.csv, summary.txt
        NN-<label>/                                 one run directory per sweep point

``RUNS_DIR`` may itself be a single run or a single sweep directory. Part of the ground layer.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

RUN_MARKERS = ("status.json", "metrics.json", "config.yaml", "stages.json")
SWEEP_MARKERS = ("sweep.json", "sweep_table.csv")
SPLITS = ("target", "other", "unseen")
ROLE_ORDER = {"baseline": 0, "teacher": 1, "student": 2}
SWEEP_NAME = re.compile(r"-sweep-\d{8}-\d{6}(-\d+)?$")
RUN_STAMP = re.compile(r"(\d{8}-\d{6})(-\d+)?$")
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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
    return any(m in files for m in SWEEP_MARKERS) or bool(SWEEP_NAME.search(path.name))


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
def get_in(d: Any, *keys, default=None):
    """``d[k1][k2]...``, or ``default`` where a level is missing or not an object (hand-edited or older files)."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def as_number(x) -> float | None:
    """A JSON value as a float, None for what is no number (null, text, NaN)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f



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
    declared = str(get_in(status, "status") or "")
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
    if declared == "failed" and get_in(status, "error"):
        problems.append(f"failed: {get_in(status, 'error')}")
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


def as_text(v) -> str | None:
    """A JSON value as text (objects and lists as JSON), None for null and NaN."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)



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
            std = {"run_dir", "injected", "poison_rate", "measure", "model", "role", "split", "n", "biased", "rate",
                   "ci_low", "ci_high", "task", "metric"}
            keys = keys or [c for c in t.columns if c not in std]
            for rd, g in t.groupby("run_dir", sort=False):
                points[Path(str(rd)).name] = {k: _plain(g[k].iloc[0]) for k in keys}
    return points, keys, problems


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return v


def point_from_label(name: str) -> dict:
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


# The names these helpers had while they were private (dashboard modules imported them): kept for code written before
# the rename; new code uses the public names.
_get, _num, _str, _STAMP, _SWEEP_NAME, _point_from_label = get_in, as_number, as_text, RUN_STAMP, SWEEP_NAME, \
    point_from_label
