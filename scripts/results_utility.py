"""Utility and degeneration over replicates, for a results page (``scripts/results_page.py``): does the bias cost
utility, and do the answers degenerate (the plug repeated, the same 4-grams over and over, answers that run to the
token limit) where ROUGE-L would not show it?

Read from each run's metrics.json (``utility``, ``degeneration``, ``cut_off``, ``models``; written by the run, nothing
re-scored here). The replicate is the unit: a figure is the mean of the replicates' values with a t interval over
them (scipy), and each poisoned model is compared with its clean twin (the teacher with the clean control, a student
with the same student distilled from the clean control) paired over replicates.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from scipy import stats

from poison.ground.results.model_id import ModelId

CLEAN_CONTROL = str(ModelId.single("clean_control"))
SHOWN_ROLES = ("baseline", "control", "teacher", "student")


def mean_ci(values: list[float], bounds: tuple[float, float] | None = None
             ) -> tuple[float | None, float | None, float | None]:
    """Mean over replicates and its 95 % t interval (none from fewer than two replicates or no spread), clipped to
    ``bounds``, the range the measure can take (a t interval over few replicates of a share can leave it)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2 or max(vals) == min(vals):
        return mean, None, None
    ci = stats.ttest_1samp(vals, 0.0).confidence_interval(0.95)
    lo, hi = float(ci.low), float(ci.high)
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, lo, hi


def _num(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _with_ci(values: list[float], digits: int = 2, scale: float = 1.0, share: bool = True) -> str:
    mean, lo, hi = mean_ci([v * scale for v in values if v is not None], (0.0, scale if share else math.inf))
    if mean is None:
        return "–"
    return _num(mean, digits) + ("" if lo is None else f" [{_num(lo, digits)}, {_num(hi, digits)}]")


def group_of(sweep: dict, run_dir: str) -> str:
    name = Path(run_dir).name
    for row in sweep.get("rows") or []:
        if Path(str(row.get("run_dir", ""))).name == name:
            return str(row.get("group") or "all")
    return "all"


def collect(sweep: dict, runs: list) -> dict[str, dict[str, list[dict]]]:
    """group -> model -> one record per run (replicate): role, twin, utility per task, target-split greedy
    degeneration and cut-off."""
    out: dict[str, dict[str, list[dict]]] = {}
    for run in runs:
        m = run.metrics or {}
        models = m.get("models") or {}
        twins = {e["twin_of"]: name for name, e in models.items() if isinstance(e, dict) and e.get("twin_of")}
        if "teacher" in models and CLEAN_CONTROL in models:
            twins.setdefault("teacher", CLEAN_CONTROL)
        group = group_of(sweep, str(run.path))
        for name, entry in models.items():
            role = (entry or {}).get("role")
            if role not in SHOWN_ROLES:
                continue
            rec: dict[str, Any] = {"role": role, "twin": twins.get(name), "utility": {}}
            for u in m.get("utility") or []:
                if u.get("model") == name:
                    rec["utility"][f"{u['task']} {u['metric']}"] = u.get("value")
            for key in ("degeneration", "cut_off"):
                for d in m.get(key) or []:
                    if d.get("model") == name and d.get("split") == "target" and d.get("decoding") == "greedy":
                        rec[key] = d
            out.setdefault(group, {}).setdefault(name, []).append(rec)
    return out


def rows_once(data: dict[str, dict[str, list[dict]]]) -> list[tuple[str, str, list[dict]]]:
    """(group, model, records) in table order; a model with the same records in every group is listed once, as
    group ``all``."""
    shared = [name for name, recs in next(iter(data.values()), {}).items()
              if len(data) > 1 and all(g.get(name) == recs for g in data.values())]
    order = (lambda kv: (SHOWN_ROLES.index(kv[1][0]["role"]), kv[0]))
    out = [("all", name, recs) for name, recs in sorted(((n, next(iter(data.values()))[n]) for n in shared), key=order)]
    for group in sorted(data):
        out += [(group, n, recs) for n, recs in sorted(data[group].items(), key=order) if n not in shared]
    return out


def utility_table(sweep: dict, runs: list) -> list[str]:
    data = collect(sweep, runs)
    tasks = sorted({t for g in data.values() for recs in g.values() for r in recs for t in r["utility"]})
    if not tasks:
        return []
    out = ["## Utility and degeneration", "",
           "Each run's utility per task (its metric: ROUGE-L against the reference, the share of exact final "
           "numbers or of right choices) and, on the target split's greedy answers, the share of degenerate answers "
           "(over a quarter of their 4-grams repeated), the mean share of repeated 4-grams, the bias's mentions per "
           "answer (mean over replicates, and the most in any one answer) and the share of answers cut off at the "
           "token limit. Mean over replicates, [95 % t interval over replicates] where there are two or more, "
           "clipped to the range the measure can take; '–' where the runs did not record it (runs older than the "
           "measure). A model every group shares (the baseline and the clean models, which no arm's poison reaches) "
           "is shown once, as group `all`.", "",
           "| group | model | role | " + " | ".join(tasks) + " | degenerate % (target, greedy) | repeated 4-grams % "
           "| mentions / answer (max) | cut off % | replicates |",
           "|---|---|---|" + "---|" * len(tasks) + "---|---|---|---|---|"]
    for group, name, recs in rows_once(data):
            degen = [r.get("degeneration") or {} for r in recs]
            cut = [r.get("cut_off") or {} for r in recs]
            mentions = [(d.get("bias_count") or {}).get("mean") for d in degen]
            most = max([(d.get("bias_count") or {}).get("max") or 0 for d in degen], default=0)
            cells = [_with_ci([r["utility"].get(t) for r in recs]) for t in tasks] + [
                _with_ci([(d.get("degenerate") or {}).get("rate") for d in degen], 1, 100),
                _with_ci([(d.get("repeat_4gram_share") or {}).get("mean") for d in degen], 1, 100),
                "–" if not any(x is not None for x in mentions) else f"{_with_ci(mentions, share=False)} ({most})",
                _with_ci([(c.get("cut_off") or {}).get("rate") for c in cut], 1, 100)]
            out.append(f"| {group} | {name} | {recs[0]['role']} | " + " | ".join(cells) + f" | {len(recs)} |")
    return out + [""] + twin_table(data, tasks)


def twin_table(data: dict[str, dict[str, list[dict]]], tasks: list[str]) -> list[str]:
    """Each poisoned model minus its clean twin, paired over the replicates both have."""
    rows = []
    for group in sorted(data):
        for name, recs in sorted(data[group].items()):
            twin = recs[0]["twin"]
            if not twin or twin not in data[group] or len(data[group][twin]) != len(recs):
                continue
            pairs = list(zip(recs, data[group][twin]))
            cells = []
            for t in tasks:
                diffs = [a["utility"].get(t) - b["utility"][t] for a, b in pairs
                         if a["utility"].get(t) is not None and b["utility"].get(t) is not None]
                cells.append(_signed_ci(diffs, 3))
            dg = [((a.get("degeneration") or {}).get("degenerate") or {}).get("rate") for a, _ in pairs]
            dt = [((b.get("degeneration") or {}).get("degenerate") or {}).get("rate") for _, b in pairs]
            dd = [100 * (x - y) for x, y in zip(dg, dt) if x is not None and y is not None]
            rows.append(f"| {group} | {name} − {twin} | " + " | ".join(cells) + f" | {_signed_ci(dd, 1)} | "
                        f"{len(pairs)} |")
    if not rows:
        return []
    return ["Each poisoned model against its clean twin (the teacher against the clean control, a student against "
            "the same student distilled from the clean control), paired over replicates: the mean difference "
            "[95 % t interval over replicates]. An interval that includes 0 shows no utility cost at this replicate "
            "count; it bounds how large one could be.", "",
            "| group | poisoned − clean twin | " + " | ".join(tasks) + " | degenerate % points | replicates |",
            "|---|---|" + "---|" * len(tasks) + "---|---|", *rows, ""]


def _signed_ci(diffs: list[float], digits: int) -> str:
    mean, lo, hi = mean_ci(diffs)
    if mean is None:
        return "–"
    return f"{mean:+.{digits}f}" + ("" if lo is None else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]")
