"""Replicates: runs that differ only in their replicate index (a sweep's ``seeds:`` or a config's ``replicates:``:
other training seeds, and with ``vary: [data_draw]`` other data draws), pooled per measure, model, split, contrast
and (utility) task into per-replicate values and one pooled value whose interval covers the prompts' and the
replicates' variance (``poison.ground.results.pooling``). Written to sweep.json as ``replicates`` (and ``probe_null``)
and to the sweep's summary.

The pooling reads each run's per-prompt values (samples.parquet, probe.parquet): greedy 0/1 verdicts, sampled
biased fractions, per-prompt log-probability shifts against the row's own ``control`` (the clean control, a clean
twin: contrasts are never pooled together), and each greedy answer's utility (ROUGE-L or exact match, per task: a
mean, never treated as a count of events, so no exact bound and no clipping). A run directory without those files
(older runs) falls back to the replicates' summaries (``method`` summary_quadrature: each replicate's prompt
half-width plus a t interval of the replicate values, conservative).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from poison.ground.core.artifacts import parquet_columns, read_parquet
from poison.ground.results.pooling import pooled_mean, pooled_ratio
from poison.ground.results.stats import pool_replicates

Values = dict[tuple, dict[Any, float]]  # (measure, model, split, control, task) -> {prompt id: value}
PROPORTIONS = ("greedy", "sampled")  # per-prompt values that count events: clipped to [0, 1], exact bound at 0 / 1


def row_key(r: dict[str, Any]) -> tuple:
    """A sweep table row's figure within its replicate: (measure, model, split, control, task); ``control`` only for
    shifts, ``task`` only for utility (each task has one utility metric, its source's)."""
    return (r["measure"], r["model"], r["split"], r.get("control"), r.get("task"))


def per_prompt_values(run_dir: str | Path, metrics: dict[str, Any]) -> Values:
    """One run's per-prompt values of every row of the sweep table: greedy verdicts, sampled fractions, the greedy
    answers' utility per task, and the likelihood probe's shift (seen wording) against each control a
    ``logprob_shift`` row names. Empty when the run directory has no samples.parquet."""
    rd = Path(run_dir)
    out: Values = {}
    if not (rd / "samples.parquet").exists():
        return out
    have = set(parquet_columns(rd / "samples.parquet"))
    s = read_parquet(rd / "samples.parquet", columns=[c for c in ("id", "model", "split", "biased", "decoding",
                                                                  "task", "utility_value") if c in have])
    for (decoding, model, split), g in s.groupby(["decoding", "model", "split"], sort=False):
        v = g.groupby("id").biased.mean()
        out[(decoding, model, split, None, None)] = {k: float(x) for k, x in v.items()}
    if {"utility_value", "task"} <= set(s.columns):  # the greedy answers' utility, as metrics.json's utility rows
        u = s[s.decoding == "greedy"].dropna(subset=["utility_value"])
        for (model, split, task), g in u.groupby(["model", "split", "task"], sort=False):
            v = g.groupby("id").utility_value.mean()
            out[("utility", model, split, None, task)] = {k: float(x) for k, x in v.items()}
    if (rd / "probe.parquet").exists():
        p = read_parquet(rd / "probe.parquet")
        p = p[p.wording == "seen"]
        lp = {(m, sp): g.set_index("id").logprob for (m, sp), g in p.groupby(["model", "split"])}
        for r in metrics.get("logprob_shift") or []:
            a, c = lp.get((r["model"], r["split"])), lp.get((r.get("control"), r["split"]))
            if r.get("wording") != "seen" or a is None or c is None:
                continue
            out[("logprob_shift", r["model"], r["split"], r["control"], None)] = {
                i: float(a[i] - c[i]) for i in a.index.intersection(c.index)}
    return out


def pool_rows(rows: list[dict[str, Any]], confidence: float = 0.95, values: Optional[dict[str, Values]] = None,
              crossed: bool = True) -> list[dict[str, Any]]:
    """Pool the sweep table's rows (each with ``group``: its point without the replicate, and ``seed``: the
    replicate) over replicates, per group and :func:`row_key` (measure, model, split, control, task). ``values``:
    run_dir -> that run's :func:`per_prompt_values`; ``crossed``: every replicate answered the same prompts (only
    training seeds vary). Greedy and sampled rates are proportions (:data:`PROPORTIONS`); shifts and utility are
    means (no clipping, no exact bound)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("seed") is None or r.get("rate") is None:
            continue
        groups.setdefault((r["group"], *row_key(r)), []).append(r)
    out = []
    for (group, *key), rs in groups.items():
        measure, model, split, control, task = key
        rs = sorted(rs, key=lambda r: r["seed"])
        proportion = measure in PROPORTIONS
        per = [(values or {}).get(r["run_dir"], {}).get(tuple(key)) for r in rs]
        if all(per):
            p = pooled_mean(per, confidence, proportion=proportion, design="crossed" if crossed else "nested",
                            prompt_interval=(rs[0]["ci_low"], rs[0]["ci_high"]))
            p = {**p, "n": p["n_replicates"]}
        else:
            p = pool_replicates([r["rate"] for r in rs], [r["ci_low"] for r in rs], [r["ci_high"] for r in rs],
                                confidence, bounds=(0.0, 1.0) if proportion else None)
            p["method"] = "summary_quadrature"
        out.append({"group": group, "measure": measure, "model": model, "role": rs[0]["role"], "split": split,
                    "control": control, "task": task, "metric": rs[0].get("metric"),
                    "injected": rs[0].get("injected"),
                    "per_seed": [{"seed": r["seed"], "rate": r["rate"], "ci_low": r["ci_low"],
                                  "ci_high": r["ci_high"], "run_dir": r["run_dir"]} for r in rs], **p})
    return out


def pool_amplification(runs: list[tuple[dict, dict[str, Any], str]], group_of, values: dict[str, Values],
                       confidence: float = 0.95, crossed: bool = True) -> list[dict[str, Any]]:
    """Student / teacher rate pooled over replicates (greedy and sampled), per group and split, from the runs'
    per-prompt values (``runs``: (point, metrics, run_dir)); the delta method on the log scale
    (``poison.ground.results.pooling.pooled_ratio``)."""
    pairs: dict[tuple, list[tuple[dict, dict]]] = {}
    for pt, m, rd in runs:
        vals = values.get(rd) or {}
        for name, spec in (m.get("models") or {}).items():
            if spec.get("role") != "student":
                continue
            teacher = spec.get("teacher", "teacher")
            for (measure, model, split, _, _), v in vals.items():
                t = vals.get((measure, teacher, split, None, None))
                if model == name and measure in ("greedy", "sampled") and t:
                    pairs.setdefault((group_of(pt), measure, name, teacher, split), []).append((v, t))
    out = []
    for (group, measure, student, teacher, split), vs in pairs.items():
        r = pooled_ratio([a for a, _ in vs], [b for _, b in vs], confidence, "crossed" if crossed else "nested")
        out.append({"group": group, "measure": measure, "student": student, "teacher": teacher, "split": split,
                    **r})
    return out


def replicate_lines(pooled: list[dict[str, Any]], amplification: list[dict[str, Any]] | None = None) -> list[str]:
    """The summary's block: per point, model and split (utility: per task), each replicate's value and the pooled
    value [interval]."""
    if not pooled:
        return []

    def fmt(measure: str, v: float | None) -> str:
        if v is None:
            return "-"
        if measure == "utility":
            return f"{v:.3f}"
        return f"{v:+.2f}" if measure == "logprob_shift" else f"{100 * v:.1f}%"

    methods = sorted({str(r.get("method")) for r in pooled})
    out = [f"replicates pooled (interval: prompts and replicates; method {', '.join(methods)}; sd = the spread of "
           f"the replicate values):"]
    for r in pooled:
        if r["split"] != "target" and r["measure"] not in ("greedy", "utility"):
            continue
        seeds = ", ".join(f"r{p['seed']} {fmt(r['measure'], p['rate'])}" for p in r["per_seed"])
        vs = f" vs {r['control']}" if r.get("control") else ""
        vs += f" on {r['task']} ({r.get('metric')})" if r.get("task") else ""
        sd = "" if r.get("between_sd") is None else f" sd {fmt(r['measure'], r['between_sd']).lstrip('+')}"
        out.append(f"  {r['group']:<22} {r['measure']:<13} {str(r['split']):<6} {r['model'] + vs:<26} "
                   f"{fmt(r['measure'], r['pooled'])} [{fmt(r['measure'], r['ci_low'])}, "
                   f"{fmt(r['measure'], r['ci_high'])}]{sd}  ({seeds})")
    for a in amplification or []:
        f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        per = ", ".join(f(x) for x in a["per_replicate"])
        out.append(f"  {a['group']:<22} amplification {a['measure']:<7} {a['split']:<6} {a['student']} / "
                   f"{a['teacher']}: {f(a['ratio'])} [{f(a['ci_low'])}, {f(a['ci_high'])}]  (per replicate: {per})")
    return out
