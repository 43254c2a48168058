"""Tables of the cascade view: metrics.json's ``cascade`` section (written by poison.report_extras.cascade_section:
the chain of models, teacher first, each generation distilled from the one before; per generation, model and split the
greedy biased rate with its Wilson interval and its ratio to the original teacher, the sampled rate and its ratio, the
likelihood probe's shifts against the clean control and the clean twin, and utility) as frames. A malformed entry is
named in a problem and left out or shown as missing, never raised. Pure functions, no Streamlit."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from dashboard import fmt
from dashboard.data import checked_num
from dashboard.measures import sampled_frame
from poison.ground.results.rundir import as_text

SHIFT_KEY = re.compile(r"shift_(?P<wording>[A-Za-z0-9]+)_vs_(?P<against>twin|clean_control)")
AGAINST = {"twin": "vs its clean twin", "clean_control": "vs the clean control"}
SERIES = {"greedy": "greedy answer", "sampled": "sampled answers"}
TABLE_COLUMNS = ["generation", "model", "split", "rate", "ci_low", "ci_high", "biased", "n", "ratio", "ratio_lo",
                 "ratio_hi", "sampled", "sampled_lo", "sampled_hi", "sampled_ratio", "sampled_ratio_lo",
                 "sampled_ratio_hi", "has_sampled", "utility"]
SHIFT_COLUMNS = ["generation", "model", "split", "wording", "against", "shift", "ci_low", "ci_high"]
SERIES_COLUMNS = ["generation", "model", "split", "series", "value", "lo", "hi", "text"]


def present(metrics: dict | None) -> bool:
    """Whether metrics.json has a cascade section with something in it (a run without a cascade writes ``{}``)."""
    c = metrics.get("cascade") if isinstance(metrics, dict) else None
    return c not in (None, {}, [], "")


def _obj(v: Any, where: str, problems: list[str]) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        problems.append(f"{where} is not an object")
        return {}
    return v


def read_cascade(metrics: dict | None) -> dict[str, Any]:
    """``present``, ``via`` (the student distilled again), ``chain`` (model names, teacher first), ``table`` (one row
    per generation, model and split), ``shifts`` (one row per generation, model, split, wording and control) and
    ``problems`` (what in the section is malformed, each naming its place, e.g. 'cascade.rows[2] (teacher, target):
    greedy.rate: "abc" is not a number')."""
    out: dict[str, Any] = {"present": present(metrics), "via": None, "chain": [], "problems": [],
                           "table": pd.DataFrame(columns=TABLE_COLUMNS), "shifts": pd.DataFrame(columns=SHIFT_COLUMNS)}
    if not out["present"]:
        return out
    problems: list[str] = out["problems"]
    c = metrics["cascade"]
    if not isinstance(c, dict):
        problems.append("cascade is not an object")
        return out
    out["via"] = as_text(c.get("via"))
    chain = c.get("chain")
    if isinstance(chain, list):
        out["chain"] = [str(x) for x in chain]
    elif chain is not None:
        problems.append("cascade.chain is not a list")
    rows = c.get("rows")
    if not isinstance(rows, list):
        problems.append("cascade.rows is not a list" if rows is not None else "cascade has no rows")
        return out
    intervals = _sampled_intervals(metrics)
    table, shifts = [], []
    for i, r in enumerate(rows):
        where = f"cascade.rows[{i}]"
        if not isinstance(r, dict):
            problems.append(f"{where} is not an object (skipped)")
            continue
        raw = r.get("generation")
        gen = checked_num(raw, f"{where}: generation", problems)
        if gen is None or gen != int(gen):
            if raw is None or gen is not None:  # (text is named by checked_num already)
                problems.append(f"{where}: no whole generation number (skipped)")
            continue
        model, split = as_text(r.get("model")) or "?", as_text(r.get("split")) or "?"
        where = f"{where} ({model}, {split})"
        g = _obj(r.get("greedy"), f"{where}: greedy", problems)
        gr = _obj(r.get("greedy_vs_teacher"), f"{where}: greedy_vs_teacher", problems)
        s = _obj(r.get("sampled"), f"{where}: sampled", problems)
        sr = _obj(r.get("sampled_vs_teacher"), f"{where}: sampled_vs_teacher", problems)

        def num(d: dict, key: str, what: str, where: str = where) -> float | None:
            return checked_num(d.get(key), f"{where}: {what}.{key}", problems)
        rec = {"generation": int(gen), "model": model, "split": split,
               "rate": num(g, "rate", "greedy"), "ci_low": num(g, "ci_low", "greedy"),
               "ci_high": num(g, "ci_high", "greedy"), "biased": num(g, "biased", "greedy"), "n": num(g, "n", "greedy"),
               "ratio": num(gr, "ratio", "greedy_vs_teacher"), "ratio_lo": num(gr, "ci_low", "greedy_vs_teacher"),
               "ratio_hi": num(gr, "ci_high", "greedy_vs_teacher"),
               "sampled": num(s, "rate", "sampled"), "sampled_lo": None, "sampled_hi": None,
               "sampled_ratio": num(sr, "ratio", "sampled_vs_teacher"),
               "sampled_ratio_lo": num(sr, "ci_low", "sampled_vs_teacher"),
               "sampled_ratio_hi": num(sr, "ci_high", "sampled_vs_teacher"), "has_sampled": "sampled" in r,
               "utility": _utility(r.get("utility"), where, problems)}
        iv = intervals.get((model, split))
        if iv and rec["sampled"] is not None and abs(iv[0] - rec["sampled"]) < 1e-9:
            rec["sampled_lo"], rec["sampled_hi"] = iv[1], iv[2]  # the same rate the run's sampled_rate reports
        table.append(rec)
        for key, v in r.items():
            k = SHIFT_KEY.fullmatch(str(key))
            if not k:
                continue
            d = _obj(v, f"{where}: {key}", problems)
            if d:
                shifts.append({"generation": int(gen), "model": model, "split": split, "wording": k["wording"],
                               "against": AGAINST[k["against"]], "shift": num(d, "shift", key),
                               "ci_low": num(d, "ci_low", key), "ci_high": num(d, "ci_high", key)})
    out["table"] = pd.DataFrame(table, columns=TABLE_COLUMNS).sort_values(
        ["generation", "split"], key=lambda c: c if c.name == "generation" else c.map(_split_rank),
        kind="stable").reset_index(drop=True)
    out["shifts"] = pd.DataFrame(shifts, columns=SHIFT_COLUMNS)
    return out


def _split_rank(s: str) -> int:
    return {"target": 0, "other": 1, "unseen": 2}.get(str(s), 3)


def _sampled_intervals(metrics: dict) -> dict[tuple[str, str], tuple]:
    """(model, split) -> (rate, ci_low, ci_high) of the run's sampled_rate (the cascade rows carry the rate only)."""
    s = sampled_frame(metrics)
    return {(r["model"], r["split"]): (r["rate"], r["ci_low"], r["ci_high"]) for r in s.to_dict("records")
            if fmt.num(r["rate"]) is not None and fmt.num(r["ci_low"]) is not None
            and fmt.num(r["ci_high"]) is not None}


def _utility(v: Any, where: str, problems: list[str]) -> str:
    """'review_summary rouge_l 0.52 [0.48, 0.56]; math number_match 0.05 [0.01, 0.24]'."""
    if v is None:
        return ""
    if not isinstance(v, list):
        problems.append(f"{where}: utility is not a list")
        return ""
    bits = []
    for j, u in enumerate(v):
        if not isinstance(u, dict):
            problems.append(f"{where}: utility[{j}] is not an object (skipped)")
            continue
        val = checked_num(u.get("value"), f"{where}: utility[{j}].value", problems)
        lo = checked_num(u.get("ci_low"), f"{where}: utility[{j}].ci_low", problems)
        hi = checked_num(u.get("ci_high"), f"{where}: utility[{j}].ci_high", problems)
        ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
        bits.append(f"{as_text(u.get('task')) or '?'} {as_text(u.get('metric')) or '?'} {fmt.decimal(val)}{ci}")
    return "; ".join(bits)


def measures_of(c: dict[str, Any]) -> list[str]:
    """What the chart can draw for this cascade: the biased rate, the log-prob shift (when the probe ran)."""
    out = ["rate"] if not c["table"].empty else []
    return out + (["shift"] if not c["shifts"].dropna(subset=["shift"]).empty else [])


def series(c: dict[str, Any], measure: str, wording: str = "seen") -> pd.DataFrame:
    """The chart's rows: per generation and split the greedy and sampled biased rate (``rate``), or the log-prob
    shift of one wording against the clean control and the clean twin (``shift``), with lo/hi where recorded."""
    rows = []
    if measure == "rate":
        for r in c["table"].to_dict("records"):
            parts = [("greedy", r["rate"], r["ci_low"], r["ci_high"])]
            if r["has_sampled"]:
                parts.append(("sampled", r["sampled"], r["sampled_lo"], r["sampled_hi"]))
            for kind, v, lo, hi in parts:
                if fmt.num(v) is not None:
                    rows.append({"generation": r["generation"], "model": r["model"], "split": r["split"],
                                 "series": SERIES[kind], "value": v, "lo": lo, "hi": hi,
                                 "text": fmt.pct_ci(v, lo, hi)})
    else:
        sh = c["shifts"]
        for r in sh[sh.wording == wording].to_dict("records"):
            if fmt.num(r["shift"]) is not None:
                rows.append({"generation": r["generation"], "model": r["model"], "split": r["split"],
                             "series": r["against"], "value": r["shift"], "lo": r["ci_low"], "hi": r["ci_high"],
                             "text": fmt.shift_ci(r["shift"], r["ci_low"], r["ci_high"])})
    df = pd.DataFrame(rows, columns=SERIES_COLUMNS)
    for col in ("value", "lo", "hi"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def generation_rows(c: dict[str, Any], wording: str = "seen") -> list[dict[str, str]]:
    """The per-generation table's cells (formatted; '—' where missing): rates with intervals, the ratios to the
    original teacher, the seen wording's shift against the twin and the clean control, utility."""
    sh = c["shifts"]
    out = []
    for r in c["table"].to_dict("records"):
        def shift(against: str, r=r) -> str:
            m = sh[(sh.generation == r["generation"]) & (sh.model == r["model"]) & (sh.split == r["split"])
                   & (sh.wording == wording) & (sh.against == against)]
            return fmt.DASH if m.empty else fmt.shift_ci(m["shift"].iloc[0], m.ci_low.iloc[0], m.ci_high.iloc[0])
        kn = (f"{fmt.integer(r['biased'])} / {fmt.integer(r['n'])}" if fmt.num(r["n"]) is not None else fmt.DASH)
        out.append({"generation": str(r["generation"]), "model": r["model"], "split": r["split"],
                    "greedy": fmt.pct_ci(r["rate"], r["ci_low"], r["ci_high"]), "kn": kn,
                    "ratio": fmt.ratio_ci(r["ratio"], r["ratio_lo"], r["ratio_hi"],
                                          undefined=fmt.num(r["rate"]) is not None),
                    "sampled": fmt.pct_ci(r["sampled"], r["sampled_lo"], r["sampled_hi"]),
                    "sampled_ratio": fmt.ratio_ci(r["sampled_ratio"], r["sampled_ratio_lo"], r["sampled_ratio_hi"],
                                                  undefined=fmt.num(r["sampled"]) is not None),
                    "shift_twin": shift(AGAINST["twin"]), "shift_clean": shift(AGAINST["clean_control"]),
                    "utility": r["utility"] or fmt.DASH})
    return out
