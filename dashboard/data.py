"""Tables the dashboard's views draw: rate, amplification and utility frames of one run's metrics, sweep tables with
pooled intervals, highlighted answer spans, and the differences between two runs; ``checked_num`` reads a number of a
JSON section and names what is malformed. Pure functions, no Streamlit."""

from __future__ import annotations

import difflib
import html
import json
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from dashboard.index import RATE_COLUMNS, list_of, model_sort_key, rate_records
from poison.ground.results.rundir import SPLITS, get_in, as_number, as_text
from poison.ground.results.stats import wilson_interval


def rates_frame(metrics: dict | None, key: str = "bias_rates") -> pd.DataFrame:
    """rate_records as a table."""
    out = rate_records(metrics, key)
    return pd.DataFrame(out, columns=list(dict.fromkeys(RATE_COLUMNS + [c for r in out for c in r])))


def amplification_frame(metrics: dict | None, key: str = "amplification") -> pd.DataFrame:
    """Student/teacher ratios (``amplification``, or ``sampled_amplification``); a None upper limit stays NaN."""
    rows = list_of(metrics, key)
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(["student", "method", "split", "ratio", "ci_low", "ci_high"]
                                                       + [c for r in rows for c in r])))
    for c in ("ratio", "ci_low", "ci_high"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("student", "split"):
        df[c] = [as_text(v) or "?" for v in df[c]]
    return df


def utility_frame(metrics: dict | None) -> pd.DataFrame:
    rows = list_of(metrics, "utility")
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(["model", "task", "metric", "value", "n"]
                                                       + [c for r in rows for c in r])))
    for c in ("model", "task", "metric"):
        df[c] = [as_text(v) or "?" for v in df[c]]
    for c in ("value", "ci_low", "ci_high"):  # interval columns: runs written before they existed lack them
        df[c] = pd.to_numeric(df[c], errors="coerce") if c in df else float("nan")
    return df


def checked_num(v: Any, where: str, problems: list[str]) -> float | None:
    """A number of a JSON section, or None: a missing value (None) stays None quietly; anything else that is no finite
    number (text, a boolean, a list) is named in ``problems`` ('where: 'abc' is not a number')."""
    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    problems.append(f"{where}: {json.dumps(v)[:40]} is not a number")
    return None


def split_order(values: Iterable[str]) -> list[str]:
    vals = list(dict.fromkeys(str(v) for v in values))
    return [s for s in SPLITS if s in vals] + sorted(v for v in vals if v not in SPLITS)


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
    ci = [wilson_interval(int(k), int(n), confidence) for k, n in zip(out.biased, out.n)]
    out["ci_low"] = [c[0] for c in ci]
    out["ci_high"] = [c[1] for c in ci]
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


def defenses_frame(metrics: dict | None) -> pd.DataFrame:
    rows = list_of(metrics, "defenses")
    cols = ["defense", "place", "auroc", "tpr_at_1pct_fpr", "precision", "recall", "threshold", "n", "n_poisoned",
            "n_flagged"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(cols + [c for r in rows for c in r])))


def detection_records(metrics: dict | None) -> list[dict[str, Any]]:
    """metrics.json ``defense_detection`` as display rows: defense, place, scope (all / task, '(target)'), counts and
    each figure as 'value [low, high]' ('—' where undefined), the note of an undefined scope."""
    def ci(r: dict, key: str) -> str | None:
        v, lo, hi = r.get(key), r.get(f"{key}_low"), r.get(f"{key}_high")
        if v is None:
            return None
        return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")

    out = []
    for r in list_of(metrics, "defense_detection"):
        scope = "all rows" if r.get("scope") == "all" else f"task {r.get('task')}" + (" (target)" if r.get("target")
                                                                                     else "")
        out.append({"defense": r.get("defense"), "place": r.get("place"), "scope": scope,
                    "poisoned / clean": f"{r.get('n_poisoned')} / {r.get('n_clean')}", "AUROC": ci(r, "auroc"),
                    **{f"{k.upper()[:3]} at {b} % FPR budget": ci(r, f"{k}_{b}pct") for b in (1, 5)
                       for k in ("tpr", "fpr")},
                    "note": r.get("note")})
    return out


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
        fa, fb = flatten(get_in(ma, sec) or {}, sec), flatten(get_in(mb, sec) or {}, sec)
        for k in sorted(set(fa) | set(fb)):
            x, y = fa.get(k), fb.get(k)
            if x == y or k in ("run.run_dir", "run.finished"):
                continue
            nx = as_number(x) if not isinstance(x, bool) else None
            ny = as_number(y) if not isinstance(y, bool) else None
            rows.append({"key": k, "a": _show(x), "b": _show(y),
                         "delta": (ny - nx) if nx is not None and ny is not None else None})
    return pd.DataFrame(rows, columns=["key", "a", "b", "delta"])


def auroc_or_none(scores: Iterable[float], labels: Iterable[bool]) -> float | None:
    """AUROC of scores against labels (``poison.ground.results.stats.auroc``), None where it is undefined (one class
    only)."""
    from poison.ground.results.stats import auroc

    s = pd.to_numeric(pd.Series(list(scores), dtype=object), errors="coerce")
    y = pd.Series(list(labels), dtype=object).fillna(False).astype(bool)
    keep = s.notna()
    v = auroc(s[keep].to_numpy(float), y[keep].to_numpy(bool)) if keep.any() else float("nan")
    return None if math.isnan(v) else v
