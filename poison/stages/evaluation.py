"""The evaluation stages: ``eval`` (every model answers the eval prompts, each answer with its ``finish_reason``; the
models that are not cached share one vLLM worker) and ``judge`` (the LLM judge's verdict on every eval answer, beside
the rule detector's)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from poison.ground.core.artifacts import read_parquet
from poison.ground.core.io import atomic_write_parquet
from poison.ground.engines.generate import GenJob
from poison.ground.results.model_id import model_of, stage_label
from poison.stages import Run
from poison.stages.engine import engine_target, ready
from poison.stages.plugins import build_judge, judge_identity
from poison.stages.protocol import StageRecord, stage

EVAL = stage("eval", 1, ("model", "data", "generation"),
             doc="one model's greedy answers to the eval prompts, scored for the bias and for utility")
JUDGE = stage("judge", 1, ("eval", "judge", "args", "rubric"),
              doc="the LLM judge's verdict on each of one model's eval answers")


def stage_eval(run: Run, models: dict[str, dict[str, Any]], data: StageRecord) -> dict[str, StageRecord]:
    """Answers to the eval prompts for every model (``{name: {"path", "identity", ...}}``), keyed by model name."""
    g = run.cfg.eval.generation
    df = read_parquet(Path(data.path) / "rows.parquet")
    ev = df[df.split == "eval"].reset_index(drop=True)
    targets = {name: engine_target(run, m) for name, m in models.items()}
    entries = {stage_label("eval", name): {"model": m["identity"], "data": data.key, "generation": g.model_dump(),
                                **run.ctx.backend_identity(), **targets[name][2]} for name, m in models.items()}

    def compute(tmps: dict[str, Path]) -> dict[str, tuple[dict[str, Any], float]]:
        labels = list(tmps)
        jobs = [GenJob(label, ready(run, models[model_of(label)], targets[model_of(label)][0]),
                       [[{"role": "user", "content": x}] for x in ev.prompt], g.max_new_tokens, g.temperature,
                       g.top_p, 1, g.seed, adapter=targets[model_of(label)][1]) for label in labels]
        out = {}
        for label, res in zip(labels, run.ctx.generate(jobs)):
            gen_df = ev[["id", "task", "prompt", "reference", "answer", "utility"]].assign(
                response=[t[0].strip() for t in res.texts],
                finish_reason=[f[0] for f in res.finish_reasons()])  # artifacts written before it lack the column
            atomic_write_parquet(tmps[label] / "generations.parquet", gen_df)
            info = {"new_tokens": res.new_tokens, "gen_seconds": round(res.seconds, 1),
                    "startup_seconds": round(res.startup_seconds, 1), "backend": res.backend}
            out[label] = (info, round(res.seconds + res.startup_seconds, 1))
        return out

    recs = run.cache.run_many(EVAL, entries, compute)
    return {model_of(label): rec for label, rec in recs.items()}


def stage_judge(run: Run, evals: dict[str, StageRecord]) -> dict[str, StageRecord]:
    """The run's judge (``judge.type``) on every eval answer, with the bias type's rubric (one judge for every
    model)."""
    j = run.cfg.judge
    rubric = getattr(run.bias, "rubric", None)
    ident = judge_identity(run)
    entries = {stage_label("judge", name): {"eval": ev.key, "judge": ident, "args": j.args, "rubric": rubric}
               for name, ev in evals.items()}

    def compute(tmps: dict[str, Path]) -> dict[str, tuple[dict[str, Any], float]]:
        judge = build_judge(j.type, j.args, run.ctx)
        out = {}
        for label, tmp in tmps.items():
            t0 = time.time()
            g = read_parquet(Path(evals[model_of(label)].path) / "generations.parquet")
            verdicts = judge.judge_texts([t or "" for t in g.response], rubric, list(g.prompt))
            atomic_write_parquet(tmp / "judgments.parquet", pd.DataFrame({
                "id": g.id, "judge_score": [v["score"] for v in verdicts],
                "judge_biased": [bool(v["biased"]) for v in verdicts],
                "judge_parsed": [bool(v.get("parsed", True)) for v in verdicts],
                "judge_model": [v.get("judge_model") for v in verdicts],
                "judge_prompt_sha256": [v.get("prompt_sha256") for v in verdicts]}))
            out[label] = (judge.info(), time.time() - t0)
        return out

    recs = run.cache.run_many(JUDGE, entries, compute)
    return {model_of(label): rec for label, rec in recs.items()}
