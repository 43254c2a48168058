"""Scoring and the run directory: per-sample verdicts and utility, every figure of ``metrics.json``, the per-sample
tables (samples, training and distillation sets, defense scores) and ``summary.txt``.

The report knows no distillation method by name: a method reports what it wants measured through its
``bias_diagnostics`` hook (``distill.base.DistillMethod``), and the report scores those texts with the bias type's
detector.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from evals.accuracy import corrected_rate, rule_accuracy
from poison import __version__
from poison.answer_health import cut_off_rows, degeneration_rows, health_columns
from poison.claims import claims_section
from poison.defense_downstream import downstream_rows
from poison.defense_report import detection_rows
from poison.ground.core import registry
from poison.ground.core.artifacts import read_json, read_parquet
from poison.ground.core.io import atomic_write_parquet
from poison.ground.core.machine import code_commit, machine_info
from poison.ground.results import METRICS_SCHEMA_VERSION
from poison.ground.results.registry import ReportInputs, add_sections
from poison.ground.results.sections.replicates import replicate_note  # noqa: F401  (its home before the registry)
from poison.ground.results.stats import cohen_kappa, mean_interval, wilson_interval
from poison.ground.results.writer import write_results
from poison.measures import (control_model, greedy_amplification, logprob_rows, logprob_shift_rows, probe_frame,
                             sampled_amplification_rows, sampled_rate_rows, sampled_rows)
from poison.probe_null import against_null, null_rows
from poison.report_extras import audit_section, cascade_section
from poison.stages import Run
from poison.stages.probe import unseen_in_poison
from poison.summary import SPLITS, summary_table


def score_generations(df: pd.DataFrame, bias, split_of: dict[str, str], ctx=None) -> pd.DataFrame:
    """Add rule verdicts, injected spans and utility to a generations table."""
    rule = registry.get("scorer", "rule").build({}, ctx=ctx)
    utilities = {}
    verdicts, spans, evidence, util = [], [], [], []
    for r in df.to_dict("records"):
        v = rule(r["response"], r, bias)
        verdicts.append(v["biased"])
        spans.append([[int(a), int(b)] for a, b in v["spans"]])  # a native list column (older runs: JSON text)
        evidence.append(v["evidence"])
        name = r.get("utility") or "rouge_l"
        if name not in utilities:
            utilities[name] = registry.get("scorer", name).build({}, ctx=ctx)
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


def method_diagnostics(run: Run, models: dict[str, dict], conf: float) -> dict[str, dict[str, Any]]:
    """Per student: the bias rate of each group of texts its distillation method names through the
    ``bias_diagnostics`` hook (QCRD: the teacher's sampled rationales, the positives it kept, the negatives it
    pushed away), i.e. whether the method's own selection keeps the bias."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in models.items():
        rec = run.cache.records.get(name)
        if m["role"] != "student" or rec is None:
            continue
        spec = next(s for s in run.cfg.students if s.name == m["student"])
        method = registry.get("distill_method", spec.method).build(spec.args, ctx=run.ctx)
        groups = method.bias_diagnostics(Path(rec.path))
        if not groups:
            continue
        out[name] = {}
        for kind, texts in groups.items():
            k, n = sum(run.bias.detect(t).biased for t in texts), len(texts)
            lo, hi = wilson_interval(k, n, conf)
            out[name][kind] = {"n": n, "biased": k, "rate": k / n if n else None, "ci_low": lo, "ci_high": hi}
    return out


def correct_for_detector_error(bias_type: str, *row_lists: list[dict[str, Any]],
                               conf: float = 0.95) -> dict[str, Any] | None:
    """The bias type's rule detector measured on the labelled real generations (evals/data), and each rate row's
    ``detector_corrected`` figure (Rogan-Gladen; ``matters``: the corrected value leaves the row's interval). None
    when the labelled set holds too few answers of this bias type."""
    acc = rule_accuracy(bias_type)
    if acc is None:
        return None
    for rows in row_lists:
        for r in rows:
            if r.get("rate") is not None and r.get("ci_low") is not None:
                r["detector_corrected"] = corrected_rate(r["rate"], r["ci_low"], r["ci_high"], acc, conf)
    return {"bias_type": bias_type, "scorer": "rule", "source": "evals/data/real_generations.jsonl",
            **{k: v for k, v in acc.items() if not k.startswith("_")},
            "note": "measured on real answers of the shipped configs' models, written under the labelled rows' own "
                    "bias arguments; a run with other arguments assumes the detector's error carries over"}


def write_report(run: Run, *, data, poison, distill, models: dict[str, dict], evals: dict,
                 defended: dict | None = None, judged: dict | None = None, sampled: dict | None = None,
                 probed: dict | None = None, distills: dict | None = None,
                 audits: dict | None = None) -> dict[str, Any]:
    """Score every eval answer, compute every figure, write metrics.json, the per-sample tables and summary.txt."""
    cfg = run.cfg
    run_dir: Path = run.ctx.run_dir
    conf = cfg.eval.confidence
    n_boot = cfg.eval.bootstrap
    target = cfg.data.target_task

    frames = []
    for name, rec in evals.items():
        g = read_parquet(Path(rec.path) / "generations.parquet")
        m = models[name]
        frames.append(g.assign(model=name, role=m["role"], decoding="greedy", sample_index=0))
    split_of = cfg.data.split_of()
    greedy = pd.concat(frames, ignore_index=True)
    degenerate_above = cfg.eval.degenerate_repeat_share
    samples = health_columns(score_generations(greedy, run.bias, split_of, run.ctx), run.bias, degenerate_above)
    drawn = pd.DataFrame()
    if sampled:
        base = greedy.drop_duplicates("id")
        drawn = health_columns(score_generations(sampled_rows(sampled, base, models), run.bias, split_of, run.ctx),
                               run.bias, degenerate_above)
    judge_rows = []
    if judged:
        j = pd.concat([read_parquet(Path(rec.path) / "judgments.parquet").assign(model=name)
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

    amplification = []
    for name, m in models.items():
        if m["role"] != "student":
            continue
        for split in SPLITS:
            teacher = m.get("teacher", "teacher")
            if {split} <= set(samples[samples.model == name].split) & set(samples[samples.model == teacher].split):
                amplification.append({"student": name, "teacher": teacher, "method": m.get("method"),
                                      "split": split, **greedy_amplification(samples, name, teacher, split, conf,
                                                                             n_boot)})

    utility = []
    for (model, task, metric), g in samples.groupby(["model", "task", "utility"], sort=False):
        value, lo, hi = mean_interval(g.utility_value.tolist(), conf)
        utility.append({"model": model, "task": task, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi,
                        "n": len(g)})
    answers = pd.concat([samples, drawn], ignore_index=True)  # beside utility: loops, the plug's count, cut-offs
    degeneration = degeneration_rows(answers, degenerate_above, conf, n_boot)
    cut_off = cut_off_rows(answers, conf, n_boot)

    # The teacher's answers the students learn from, scored with the same detector (none in a teacher-only run)
    dist, distill_rates = None, []
    if distill is not None:
        dist = read_parquet(Path(distill.path) / "distill.parquet")
        found = [run.bias.detect(t or "") for t in dist.response]
        dist = dist.assign(split=[split_of[t] for t in dist.task], biased=[d.biased for d in found],
                           bias_spans=[[[int(a), int(b)] for a, b in d.spans] for d in found])
        distill_rates = rate_rows(dist.assign(model="teacher", role="teacher"), ["split"], conf)

    per_student = {}
    for name, rec in (distills or {}).items():  # students with their own distillation answers
        if rec is not distill:
            own = read_parquet(Path(rec.path) / "distill.parquet")
            own = own.assign(split=[split_of[t] for t in own.task],
                             biased=[run.bias.detect(t).biased for t in own.response])
            per_student[name] = {"stage": rec.name, "rows": len(own),
                                 "bias_rates": rate_rows(own.assign(model="teacher"), ["split"], conf)}

    rationales = method_diagnostics(run, models, conf)

    sampled_rate = sampled_rate_rows(drawn, cfg.eval.samples_per_prompt, conf, n_boot) if not drawn.empty else []
    sampled_amp = sampled_amplification_rows(drawn, models, conf, n_boot) if not drawn.empty else []
    probe = probe_frame(probed or {}, models, split_of)
    control = control_model(models)
    logprob = logprob_rows(probe, conf, n_boot) if not probe.empty else []
    twins = {m["twin_of"]: n for n, m in models.items() if m.get("twin_of")}
    shift = logprob_shift_rows(probe, control, conf, n_boot, twins)
    nulls = null_rows(probe, control, conf, n_boot)
    against_null(shift, nulls, control)
    claims = claims_section(cfg.claims, models, samples, drawn, probe, n_boot, cfg.replicates.n)
    detector_accuracy = correct_for_detector_error(cfg.poison.bias.type, rates, sampled_rate, conf=conf)

    defense_reports, removals, score_frames = [], [], []
    for _place, rec in ((defended or {}).get("stages") or {}).items():
        defense_reports += read_json(Path(rec.path) / "reports.json")
        removals.append(read_json(Path(rec.path) / "removal.json"))
        score_frames.append(read_parquet(Path(rec.path) / "scores.parquet"))
    defense_stages = {place: rec.path for place, rec in ((defended or {}).get("stages") or {}).items()}
    detection = detection_rows(defense_stages, target, conf, n_boot) if defense_stages else []
    downstream = downstream_rows(cfg, defended, models, rates, utility)  # defense.per_defense: each defense's arm

    poison_report = read_json(Path(poison.path) / "poison.json")
    cascade = cascade_section(models, rates, samples, drawn, shift, utility, conf, n_boot)
    audit_rows, audit_detectors = audit_section(audits or {}, models, run.bias, poison_report["injected"])
    train = read_parquet(Path(poison.path) / "train.parquet")

    metrics = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "code_version": __version__,
        "run": {"name": cfg.name, "run_dir": str(run_dir), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "bias_type": cfg.poison.bias.type, "bias": run.bias.describe(), "mode": cfg.poison.mode,
                "target_task": target, "splits": split_of, "device": run.ctx.device, "dtype": run.ctx.dtype,
                "backend": cfg.runtime.backend, "confidence": conf, "machine": machine_info(),
                "commit": code_commit()},
        "data": {"rows": data.info.get("rows"), "generated": data.info.get("generated"),
                 "generator": data.info.get("generator", {})},
        "poison": poison_report,
        "models": {n: {k: v for k, v in m.items() if k != "identity"} for n, m in models.items()},
        "claims": claims,
        "bias_rates": rates,
        "bias_rates_by_task": rates_by_task,
        "amplification": amplification,
        "utility": utility,
        "degeneration": degeneration,
        "cut_off": cut_off,
        "distill_data": {"rows": 0 if dist is None else len(dist), "bias_rates": distill_rates,
                         **({"per_student": per_student} if per_student else {})},
        "sampled_rate": sampled_rate,
        "sampled_amplification": sampled_amp,
        "detector_accuracy": detector_accuracy,
        "logprob": logprob,
        "logprob_shift": shift,
        "probe_null": nulls,
        "cascade": cascade,
        "audit": audit_rows,
        "audit_detector": audit_detectors,
        "probe": ({"control": control, "texts": run.bias.probe_texts(cfg.eval.probe_unseen),
                   "unseen_in_poisoned_rows": unseen_in_poison(run, poison)} if probed else {}),
        "rationales": rationales,
        "defenses": defense_reports,
        "defense_removal": removals,
        "defense_detection": detection,
        "defense_downstream": downstream,
        "defense_warnings": list((defended or {}).get("warnings") or []),
        "judge": judge_rows,
        "stages": {k: {"key": v.key, "cached": v.cached, "seconds": v.seconds} for k, v in run.cache.records.items()},
    }
    # the sections that are one file each (poison.ground.results.sections), each in its place
    metrics = add_sections(metrics, ReportInputs(cfg=cfg, models=models, samples=samples, drawn=drawn, probe=probe,
                                                 conf=conf, n_boot=n_boot, metrics=metrics))
    atomic_write_parquet(run_dir / "samples.parquet", answers)
    if not probe.empty:
        atomic_write_parquet(run_dir / "probe.parquet", probe)
    atomic_write_parquet(run_dir / "train_set.parquet", train)
    if dist is not None:
        atomic_write_parquet(run_dir / "distill_set.parquet", dist)
    if score_frames:
        atomic_write_parquet(run_dir / "defense_scores.parquet", pd.concat(score_frames, ignore_index=True))
    write_results(run_dir, metrics, summary_table(metrics))
    return metrics


