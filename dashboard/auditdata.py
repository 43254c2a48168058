"""Tables of the model-audit view: the ``audit`` rows (poison.report_extras.audit_section: one per audited model and
audit type, with its suspicion score, whether it descends from a poisoned teacher, whether the injected content is
among its top strings) of a run's metrics.json or of a sweep's sweep.json (the pool of the sweep's models, each with its
point), and the ``audit_detector`` rows (the audit scored as a detector: AUROC, hits). What the pipeline does not
record (TPR and FPR at a threshold) is computed from the scores with poison.ground.results.stats. A malformed entry is
named in a problem and left out or shown as missing, never raised. Pure functions, no Streamlit."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dashboard import fmt
from dashboard.data import auroc_or_none, checked_num
from poison.ground.results.rundir import as_text
from poison.ground.results.stats import threshold_stats

ROW_COLUMNS = ["audit", "model", "role", "generation", "point", "who", "poisoned", "label", "score", "hit", "top",
               "strings"]
DETECTOR_COLUMNS = ["audit", "n", "n_poisoned", "auroc", "auroc_lo", "auroc_hi", "hits", "hit_rate", "threshold",
                    "tpr", "fpr"]
# interval and operating-point keys a detector row may carry (the pipeline's audit_detector writes auroc and hits)
_OPTIONAL = {"auroc_lo": ("auroc_ci_low", "ci_low"), "auroc_hi": ("auroc_ci_high", "ci_high"),
             "threshold": ("threshold",), "tpr": ("tpr",), "fpr": ("fpr",)}


def present(section: Any) -> bool:
    return section not in (None, [], {}, "")


def _flag(v: Any, where: str, problems: list[str]) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    problems.append(f"{where}: {str(v)[:40]!r} is not true, false or null")
    return None


def read_audit(section: Any, detector: Any = None, where: str = "audit") -> dict[str, Any]:
    """``present``, ``rows`` (one per audited model and audit type), ``detector`` (one per audit type) and
    ``problems`` (each naming its place, e.g. 'audit[3] (student:sft): score: "high" is not a number')."""
    problems: list[str] = []
    out = {"present": present(section), "rows": pd.DataFrame(columns=ROW_COLUMNS),
           "detector": pd.DataFrame(columns=DETECTOR_COLUMNS), "problems": problems}
    if not out["present"]:
        return out
    if not isinstance(section, list):
        problems.append(f"{where} is not a list")
        return out
    rows = []
    for i, r in enumerate(section):
        at = f"{where}[{i}]"
        if not isinstance(r, dict):
            problems.append(f"{at} is not an object (skipped)")
            continue
        model = as_text(r.get("model")) or "?"
        at = f"{at} ({model})"
        point = as_text(r.get("point")) or ""
        top = r.get("top") if isinstance(r.get("top"), list) else []
        if r.get("top") is not None and not isinstance(r.get("top"), list):
            problems.append(f"{at}: top is not a list")
        strings = []
        for t in top:
            if isinstance(t, dict) and as_text(t.get("string")):
                s = checked_num(t.get("score"), f"{at}: top string score", problems)
                strings.append((str(t["string"]), s))
        poisoned = _flag(r.get("poisoned"), f"{at}: poisoned", problems)
        rows.append({"audit": as_text(r.get("audit")) or "?", "model": model, "role": as_text(r.get("role")) or "",
                     "generation": checked_num(r.get("generation"), f"{at}: generation", problems), "point": point,
                     "who": f"{point} · {model}" if point else model, "poisoned": poisoned,
                     "label": {True: "poisoned", False: "clean", None: "unlabelled"}[poisoned],
                     "score": checked_num(r.get("score"), f"{at}: score", problems),
                     "hit": _flag(r.get("hit"), f"{at}: hit", problems),
                     "top": ", ".join(f"'{s}' {fmt.decimal(v)}" for s, v in strings[:5]),
                     "strings": [s for s, _ in strings]})
    df = pd.DataFrame(rows, columns=ROW_COLUMNS)
    df["score"] = pd.to_numeric(df.score, errors="coerce")
    df["poisoned"] = df.poisoned.astype(object).where(df.poisoned.notna(), None)
    df["hit"] = df.hit.astype(object).where(df.hit.notna(), None)
    out["rows"] = df
    out["detector"] = read_detector(detector, f"{where}_detector", problems)
    return out


def read_detector(section: Any, where: str, problems: list[str]) -> pd.DataFrame:
    rows = []
    if section is not None and not isinstance(section, list):
        problems.append(f"{where} is not a list")
        section = []
    for i, d in enumerate(section or []):
        at = f"{where}[{i}]"
        if not isinstance(d, dict):
            problems.append(f"{at} is not an object (skipped)")
            continue
        rec = {"audit": as_text(d.get("audit")) or "?"}
        for k in ("n", "n_poisoned", "auroc", "hits", "hit_rate"):
            rec[k] = checked_num(d.get(k), f"{at}: {k}", problems)
        for k, names in _OPTIONAL.items():
            key = next((n for n in names if n in d), None)
            rec[k] = checked_num(d.get(key), f"{at}: {key}", problems) if key else None
        rows.append(rec)
    return pd.DataFrame(rows, columns=DETECTOR_COLUMNS)


def labelled(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows a detector figure counts: a known label (poisoned or clean) and a numeric score."""
    return rows[rows.poisoned.notna() & rows.score.notna()]


def default_threshold(rows: pd.DataFrame) -> float | None:
    """The highest clean model's score: flagging score > it flags no clean model (FPR 0). None without clean ones."""
    clean = labelled(rows)
    clean = clean[~clean.poisoned.astype(bool)]
    return float(clean.score.max()) if not clean.empty else None


def at_threshold(rows: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """poison.ground.results.stats.threshold_stats of the labelled models (flag = score > threshold)."""
    lab = labelled(rows)
    return threshold_stats(lab.score, lab.poisoned.astype(bool), threshold)


def auroc(rows: pd.DataFrame) -> float | None:
    """AUROC of the scores shown (poisoned vs clean models), None with one class only."""
    lab = labelled(rows)
    return auroc_or_none(lab.score, lab.poisoned.astype(bool)) if not lab.empty else None


def hits_text(rows: pd.DataFrame) -> str:
    """'5 / 6 poisoned models' with the injected content among their top 10 strings ('—' without a verdict)."""
    pos = rows[rows.poisoned.astype(object).eq(True) & rows.hit.notna()]
    if pos.empty:
        return fmt.DASH
    return f"{int(pos.hit.astype(bool).sum())} / {len(pos)}"


def model_rows(rows: pd.DataFrame, threshold: float | None) -> list[dict[str, str]]:
    """The per-model table's cells, highest score first: flagged at the threshold, the top strings."""
    out = []
    for r in rows.sort_values("score", ascending=False, na_position="last", kind="stable").to_dict("records"):
        flagged = (fmt.DASH if threshold is None or fmt.num(r["score"]) is None
                   else fmt.text(bool(r["score"] > threshold)))
        out.append({"point": r["point"] or fmt.DASH, "model": r["model"], "role": r["role"] or fmt.DASH,
                    "generation": fmt.integer(r["generation"]), "label": r["label"],
                    "score": fmt.decimal(r["score"]), "flagged": flagged,
                    "hit": fmt.DASH if r["hit"] is None else fmt.text(r["hit"]), "top": r["top"] or fmt.DASH})
    return out


def detector_rows(det: pd.DataFrame, rows: pd.DataFrame) -> list[dict[str, str]]:
    """The recorded detector figures per audit type, with the AUROC recomputed from the scores beside them."""
    out = []
    for d in det.to_dict("records"):
        mine = rows[rows.audit == d["audit"]]
        ci = (f" [{d['auroc_lo']:.2f}, {d['auroc_hi']:.2f}]" if fmt.num(d["auroc_lo"]) is not None
              and fmt.num(d["auroc_hi"]) is not None else "")
        out.append({"audit": d["audit"], "n": fmt.integer(d["n"]), "n_poisoned": fmt.integer(d["n_poisoned"]),
                    "auroc": fmt.decimal(d["auroc"], 3) + (ci if fmt.num(d["auroc"]) is not None else ""),
                    "recomputed": fmt.decimal(auroc(mine), 3),
                    "hits": (f"{fmt.integer(d['hits'])} ({fmt.pct(d['hit_rate'])})" if fmt.num(d["hit_rate"])
                             is not None else fmt.integer(d["hits"])),
                    "threshold": fmt.decimal(d["threshold"]), "tpr": fmt.pct(d["tpr"]), "fpr": fmt.pct(d["fpr"])})
    return out
