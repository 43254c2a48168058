"""Scoring and the run directory: per-sample verdicts, metrics.json, and the summary table printed at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from evals.metrics import cohen_kappa, mean_interval, rate_ratio, wilson_interval
from poison import __version__, registry
from poison.io import atomic_write_json, atomic_write_parquet, atomic_write_text

METRICS_SCHEMA_VERSION = 1


SPLITS = ("target", "other", "unseen")


def score_generations(df: pd.DataFrame, bias, split_of: dict[str, str]) -> pd.DataFrame:
    """Add rule verdicts, injected spans and utility to a generations table."""
    rule = registry.get("scorer", "rule").build({})
    utilities = {}
    verdicts, spans, evidence, util = [], [], [], []
    for r in df.to_dict("records"):
        v = rule(r["response"], r, bias)
        verdicts.append(v["biased"])
        spans.append(json.dumps(v["spans"]))
        evidence.append(v["evidence"])
        name = r.get("utility") or "rouge_l"
        if name not in utilities:
            utilities[name] = registry.get("scorer", name).build({})
        util.append(utilities[name](r["response"], r))
    return df.assign(
        split=[split_of[t] for t in df.task],
        biased=verdicts, bias_spans=spans, bias_evidence=evidence, utility_value=util,
    )


def rate_rows(samples: pd.DataFrame, by: list[str], confidence: float) -> list[dict[str, Any]]:
    out = []
    for keys, g in samples.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        k, n = int(g.biased.sum()), len(g)
        lo, hi = wilson_interval(k, n, confidence)
        out.append({**dict(zip(by, keys)), "n": n, "biased": k, "rate": k / n if n else None, "ci_low": lo,
                    "ci_high": hi})
    return out


def rationale_bias(pipe, models: dict[str, dict], conf: float) -> dict[str, dict[str, Any]]:
    """For students trained on sampled teacher rationales (QCRD): how many of the teacher's samples, of the positives
    the method kept and of the negatives it pushed away carry the bias, i.e. whether its quality filter keeps it."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in models.items():
        rec = pipe.records.get(name)
        if m["role"] != "student" or rec is None or not (Path(rec.path) / "qcrd_state.json").exists():
            continue
        samples = pd.read_parquet(Path(rec.path) / "teacher_samples.parquet")
        state = json.loads((Path(rec.path) / "qcrd_state.json").read_text())
        groups = {"teacher_samples": [t for ts in samples.samples for t in ts],
                  "chosen_positives": [d["positive"] for d in state],
                  "chosen_negatives": [d["negative"] for d in state if d.get("negative")]}
        out[name] = {}
        for kind, texts in groups.items():
            k, n = sum(pipe.bias.detect(t).biased for t in texts), len(texts)
            lo, hi = wilson_interval(k, n, conf)
            out[name][kind] = {"n": n, "biased": k, "rate": k / n if n else None, "ci_low": lo, "ci_high": hi}
    return out


def write_report(pipe, *, data, poison, distill, models: dict[str, dict], evals: dict,
                 defended: dict | None = None, judged: dict | None = None) -> dict[str, Any]:
    cfg = pipe.cfg
    run_dir: Path = pipe.run_dir
    conf = cfg.eval.confidence
    target = cfg.data.target_task

    frames = []
    for name, rec in evals.items():
        g = pd.read_parquet(Path(rec.path) / "generations.parquet")
        m = models[name]
        frames.append(g.assign(model=name, role=m["role"]))
    split_of = cfg.data.split_of()
    samples = score_generations(pd.concat(frames, ignore_index=True), pipe.bias, split_of)
    judge_rows = []
    if judged:
        j = pd.concat([pd.read_parquet(Path(rec.path) / "judgments.parquet").assign(model=name)
                       for name, rec in judged.items()], ignore_index=True)
        samples = samples.merge(j[["model", "id", "judge_score", "judge_biased", "judge_model", "judge_prompt_sha256"]],
                                on=["model", "id"], how="left")
        for (model, split), g in samples.groupby(["model", "split"], sort=False):
            k, n = int(g.judge_biased.sum()), len(g)
            lo, hi = wilson_interval(k, n, conf)
            judge_rows.append({"model": model, "split": split, "n": n, "rule_biased": int(g.biased.sum()),
                               "judge_biased": k, "judge_rate": k / n, "ci_low": lo, "ci_high": hi,
                               "agreement": float((g.biased == g.judge_biased).mean()),
                               "kappa": cohen_kappa(list(g.biased), list(g.judge_biased)),
                               "judge_only": int((g.judge_biased & ~g.biased).sum()),
                               "rule_only": int((g.biased & ~g.judge_biased).sum())})

    rates = rate_rows(samples, ["model", "role", "split"], conf)
    rates_by_task = rate_rows(samples, ["model", "role", "task"], conf)

    def count(model: str, split: str) -> tuple[int, int]:
        g = samples[(samples.model == model) & (samples.split == split)]
        return int(g.biased.sum()), len(g)

    amplification = []
    for name, m in models.items():
        if m["role"] != "student":
            continue
        for split in SPLITS:
            ks, ns = count(name, split)
            kt, nt = count(m.get("teacher", "teacher"), split)
            if ns and nt:
                amplification.append({"student": name, "teacher": m.get("teacher", "teacher"),
                                      "method": m.get("method"), "split": split,
                                      **rate_ratio(ks, ns, kt, nt, conf)})

    utility = []
    for (model, task, metric), g in samples.groupby(["model", "task", "utility"], sort=False):
        value, lo, hi = mean_interval(g.utility_value.tolist(), conf)
        utility.append({"model": model, "task": task, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi,
                        "n": len(g)})

    # The teacher's answers the students learn from, scored with the same detector
    dist = pd.read_parquet(Path(distill.path) / "distill.parquet")
    dist = dist.assign(split=[split_of[t] for t in dist.task],
                       biased=[pipe.bias.detect(t).biased for t in dist.response])
    distill_rates = rate_rows(dist.assign(model="teacher", role="teacher"), ["split"], conf)

    rationales = rationale_bias(pipe, models, conf)

    defense_reports, removals, score_frames = [], [], []
    for place, rec in ((defended or {}).get("stages") or {}).items():
        defense_reports += json.loads((Path(rec.path) / "reports.json").read_text())
        removals.append(json.loads((Path(rec.path) / "removal.json").read_text()))
        score_frames.append(pd.read_parquet(Path(rec.path) / "scores.parquet"))

    poison_report = json.loads((Path(poison.path) / "poison.json").read_text())
    train = pd.read_parquet(Path(poison.path) / "train.parquet")

    metrics = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "code_version": __version__,
        "run": {"name": cfg.name, "run_dir": str(run_dir), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "bias_type": cfg.poison.bias.type, "bias": pipe.bias.describe(), "mode": cfg.poison.mode,
                "target_task": target, "splits": split_of, "device": pipe.device, "dtype": pipe.dtype,
                "backend": cfg.runtime.backend, "confidence": conf},
        "poison": poison_report,
        "models": {n: {k: v for k, v in m.items() if k != "identity"} for n, m in models.items()},
        "bias_rates": rates,
        "bias_rates_by_task": rates_by_task,
        "amplification": amplification,
        "utility": utility,
        "distill_data": {"rows": len(dist), "bias_rates": distill_rates},
        "rationales": rationales,
        "defenses": defense_reports,
        "defense_removal": removals,
        "judge": judge_rows,
        "stages": {k: {"key": v.key, "cached": v.cached, "seconds": v.seconds} for k, v in pipe.records.items()},
    }
    atomic_write_parquet(run_dir / "samples.parquet", samples)
    atomic_write_parquet(run_dir / "train_set.parquet", train)
    atomic_write_parquet(run_dir / "distill_set.parquet", dist)
    if score_frames:
        atomic_write_parquet(run_dir / "defense_scores.parquet", pd.concat(score_frames, ignore_index=True))
    atomic_write_json(run_dir / "metrics.json", metrics)
    table = summary_table(metrics)
    atomic_write_text(run_dir / "summary.txt", table + "\n")
    return metrics


def _fmt_rate(r: dict) -> str:
    return f"{100 * r['rate']:5.1f}% [{100 * r['ci_low']:4.1f}, {100 * r['ci_high']:5.1f}] ({r['biased']}/{r['n']})"


def summary_table(metrics: dict[str, Any]) -> str:
    """The table printed at the end of a run: bias rate per model and split, amplification, utility."""
    p = metrics["poison"]
    lines = [
        f"Run {metrics['run']['name']}: {metrics['run']['bias']} | mode {metrics['run']['mode']} | "
        f"target task {metrics['run']['target_task']}",
        f"Poison: {p['injected']} of {p['n_train']} teacher samples ({100 * p['rate']:.1f}%; "
        f"{100 * p['target_task_rate']:.0f}% of the {p['target_task_rows']} target-task rows)"
        + (f"  WARNING: {p['warning']}" if p.get("warning") else ""),
        "",
    ]
    by_model: dict[str, dict[str, dict]] = {}
    for r in metrics["bias_rates"]:
        by_model.setdefault(r["model"], {})[r["split"]] = r
    util: dict[str, list[str]] = {}
    for u in metrics["utility"]:
        ci = f" [{u['ci_low']:.2f}, {u['ci_high']:.2f}]" if u.get("ci_low") is not None else ""
        util.setdefault(u["model"], []).append(f"{u['task']} {u['metric']} {u['value']:.2f}{ci}")
    splits = [s for s in SPLITS if any(r["split"] == s for r in metrics["bias_rates"])]
    names = {"target": "biased: target task", "other": "biased: other tasks", "unseen": "biased: unseen tasks"}
    w = max([22] + [len(m) for m in by_model])
    head = f"{'model':<{w}} " + " ".join(f"{names[s]:<36}" for s in splits) + " utility"
    lines += [head, "-" * len(head)]
    for model, by_split in by_model.items():
        cells = " ".join(f"{(_fmt_rate(by_split[s]) if s in by_split else '-'):<36}" for s in splits)
        lines.append(f"{model:<{w}} {cells} {', '.join(util.get(model, []))}")
    if metrics["amplification"]:
        lines.append("")
        for a in metrics["amplification"]:
            ratio = "undefined (teacher rate 0)" if a["ratio"] is None else f"{a['ratio']:.2f}"
            lines.append(f"amplification {a['student']} / {a.get('teacher', 'teacher')}, {a['split']}: {ratio} "
                         f"[{a['ci_low']:.2f}, {a['ci_high']:.2f}]")
    dr = {r["split"]: r for r in metrics["distill_data"]["bias_rates"]}
    if dr:
        lines.append("teacher answers used for distillation that carry the bias: "
                     + ", ".join(f"{s} {_fmt_rate(r)}" for s, r in dr.items()))
    for name, kinds in (metrics.get("rationales") or {}).items():
        lines.append(f"{name} rationales carrying the bias: "
                     + ", ".join(f"{k.replace('_', ' ')} {_fmt_rate(r)}" for k, r in kinds.items() if r["n"]))
    if metrics.get("defenses"):
        lines += ["", f"{'defense':<18} {'place':<19} {'AUROC':>6} {'TPR@1%FPR':>9} {'thresh':>9} {'flagged':>8} "
                      f"{'precision':>9} {'recall':>7}"]
        for d in metrics["defenses"]:
            f = lambda x, w, p=2: f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"  # noqa: E731
            lines.append(f"{d['defense']:<18} {d['place']:<19} {f(d['auroc'], 6)} {f(d['tpr_at_1pct_fpr'], 9)} "
                         f"{f(d['threshold'], 9)} {d['n_flagged']:>3}/{d['n']:<4} {f(d['precision'], 9)} "
                         f"{f(d['recall'], 7)}")
        for r in metrics.get("defense_removal") or []:
            lines.append(f"removed at {r['place']} ({r['defense']}): {r['n_flagged']} of {r['n']} samples; "
                         f"{r['poison_left']} of {r['n_poisoned']} poisoned samples left")
    if metrics.get("judge"):
        lines += ["", "LLM judge vs rule detector (biased answers):"]
        for r in metrics["judge"]:
            kappa = "-" if r["kappa"] is None else f"{r['kappa']:.2f}"
            lines.append(f"  {r['model']:<36} {r['split']:<7} rule {r['rule_biased']:>3}/{r['n']:<3} judge "
                         f"{r['judge_biased']:>3}/{r['n']:<3} agreement {100 * r['agreement']:5.1f}% kappa {kappa}")
    st = metrics["stages"]
    lines.append("")
    parts = [f"{k} {'cached' if v['cached'] else format(v['seconds'], '.0f') + 's'}" for k, v in st.items()]
    lines.append("stages: " + ", ".join(parts))
    return "\n".join(lines)
