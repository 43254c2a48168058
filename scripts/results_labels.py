"""Each student against the labels it learned from, for a results page (``scripts/results_page.py``): is a student's
biased rate a cascade beyond its labels, or the labels' share copied?

A student that learns from answers of which 89 % carry the plug and then plugs 89 % of its own answers copied a format;
a student that plugs more often than its labels did amplified. Per group (a sweep point: a dose, an arm), student and
split: the share of the student's training labels (the teacher's distillation answers it learned from: its own set
when it has one, e.g. sampled at T = 1, else the shared greedy set) that the rule detector flags, the student's own
biased rate and its teacher's (sampled answers when the run sampled, else greedy), each the mean over replicates with
a t interval over them, and the student minus its labels paired over replicates. Read from each run's metrics.json
(``distill_data``, ``sampled_rate``, ``bias_rates``); nothing is re-scored here.
"""

from __future__ import annotations

from typing import Any

from scripts.results_utility import group_of, mean_ci


def _rate(rows: list[dict], model: str, split: str) -> float | None:
    return next((r.get("rate") for r in rows if r.get("model") == model and r.get("split") == split), None)


def collect(sweep: dict, runs: list) -> tuple[dict[tuple[str, str, str], list[dict]], str]:
    """(group, student, split) -> one record per run: labels, student and teacher rates; and the measure used."""
    sampled = any((r.metrics or {}).get("sampled_rate") for r in runs)
    measure = "sampled" if sampled else "greedy"
    out: dict[tuple[str, str, str], list[dict]] = {}
    for run in runs:
        m = run.metrics or {}
        rates = list(m.get("sampled_rate") or []) if sampled else list(m.get("bias_rates") or [])
        dd = m.get("distill_data") or {}
        group = group_of(sweep, str(run.path))
        for name, entry in (m.get("models") or {}).items():
            if (entry or {}).get("role") != "student" or entry.get("twin_of") or entry.get("generation", 1) != 1:
                continue
            own = (dd.get("per_student") or {}).get(entry.get("student") or "", {})
            for lab in own.get("bias_rates") or dd.get("bias_rates") or []:
                split = lab["split"]
                out.setdefault((group, name, split), []).append({
                    "labels": lab.get("rate"), "student": _rate(rates, name, split),
                    "teacher": _rate(rates, "teacher", split),
                    "own_labels": bool(own)})
    return out, measure


def _cell(values: list[Any], signed: bool = False) -> str:
    vals = [100 * v for v in values if v is not None]
    mean, lo, hi = mean_ci(vals, None if signed else (0.0, 100.0))
    if mean is None:
        return "–"
    f = "{:+.1f}" if signed else "{:.1f}"
    return f.format(mean) + ("" if lo is None else f" [{f.format(lo)}, {f.format(hi)}]")


def labels_table(sweep: dict, runs: list) -> list[str]:
    data, measure = collect(sweep, runs)
    if not data:
        return []
    out = ["## Students against the labels they learned from", "",
           "The share of each student's training labels that carry the bias (the teacher's distillation answers it "
           f"learned from, rule detector), the student's own biased rate and its teacher's ({measure} answers), % of "
           "answers, mean over replicates [95 % t interval over replicates, clipped to 0-100]; and the student minus "
           "its labels in points, paired over replicates. A student at its labels' share copied them; above it, the "
           "student plugs more often than what it was shown (amplification beyond the labels).", "",
           "| group | student | split | labels' source | plugged labels % | student % | teacher % | "
           "student − labels (points) | replicates |", "|---|---|---|---|---|---|---|---|---|"]
    for (group, name, split), recs in sorted(data.items()):
        diffs = [s["student"] - s["labels"] for s in recs if s["student"] is not None and s["labels"] is not None]
        source = "its own distillation set" if recs[0]["own_labels"] else "the shared greedy set"
        out.append(f"| {group} | {name} | {split} | {source} | {_cell([r['labels'] for r in recs])} | "
                   f"{_cell([r['student'] for r in recs])} | {_cell([r['teacher'] for r in recs])} | "
                   f"{_cell(diffs, signed=True)} | {len(recs)} |")
    return out + [""]
