"""The data stages: ``data`` (the clean rows of every split, with the references a source lacks written by the
generator model) and ``trusted`` (the defender's clean samples: the distillation prompts with clean answers).

No prompt appears in two splits (``check_disjoint``): eval prompts are never training or distillation prompts.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import pandas as pd

from poison.ground import registry
from poison.ground.errors import DataError, StageError
from poison.ground.generate import GenJob, generate_openai
from poison.ground.io import atomic_write_parquet
from poison.ground.models import model_fingerprint
from poison.stages import Run
from poison.stages.protocol import StageRecord

log = logging.getLogger("poison")


def generator_identity(run: Run, gen) -> dict[str, Any]:
    """What defines a generator config's output for caching: its endpoint, or its model's identity and backend."""
    if gen.endpoint:
        return {"endpoint": gen.endpoint, "model": gen.endpoint_model, "generation": gen.generation.model_dump()}
    path = run.ctx.model(gen.model, "data.generator.model")
    return {"model": model_fingerprint(path), "generation": gen.generation.model_dump(), **run.ctx.backend_identity()}


def generate_with(run: Run, gen, messages: list[list[dict[str, str]]], key: str) -> list[str]:
    """One answer per chat from a generator config (local model through the run's backend, or an endpoint)."""
    g = gen.generation
    job = GenJob(key, "", messages, g.max_new_tokens, g.temperature, g.top_p, 1, g.seed)
    if gen.endpoint:
        res = generate_openai([job], base_url=gen.endpoint, model=gen.endpoint_model or gen.model,
                              api_key=os.environ.get(gen.api_key_env))[0]
    else:
        job.model_path = str(run.ctx.model(gen.model, "data.generator.model"))
        res = run.ctx.generate([job])[0]
    return [t[0] for t in res.texts]


def generate_missing(run: Run, items: list[tuple[Any, dict]]) -> None:
    """Write the response of each (source, row) that lacks one with the data generator, post-processed by its
    source (``row['response']`` is None where the source rejects the text)."""
    log.info("generator writes %d missing responses", len(items))
    texts = generate_with(run, run.cfg.data.generator, [src.generator_messages(r) for src, r in items], "generator")
    for (src, r), text in zip(items, texts):
        r["response"] = src.clean_generated(text)
        r["_generated"] = True


def build_sources(run: Run) -> list[Any]:
    """The configured data source plugins, one per ``data.sources`` entry."""
    return [registry.get("data_source", spec.type).build(spec.args, f"data.sources.{i}.args", run.ctx)
            for i, spec in enumerate(run.cfg.data.sources)]


def stage_data(run: Run) -> StageRecord:
    cfg = run.cfg
    tasks = cfg.data.tasks()
    inputs = {"data": cfg.data.model_dump(mode="json"), "seed": cfg.seed,
              "generator": generator_identity(run, cfg.data.generator)}

    def build(out: Path) -> dict[str, Any]:
        frames, plan = [], []
        to_generate: list[tuple[Any, dict]] = []
        for i, (spec, task, src) in enumerate(zip(cfg.data.sources, tasks, build_sources(run))):
            rows = src.load()
            seen, pool = set(), []
            for r in rows:  # dedupe by prompt text so no prompt can land in two splits
                if r["prompt"] not in seen:
                    seen.add(r["prompt"])
                    pool.append(r)
            random.Random(f"{cfg.seed}:{spec.type}:{i}").shuffle(pool)
            need = spec.n_train + spec.n_distill + spec.n_eval
            if len(pool) < need:
                raise DataError(f"data.sources.{i} ({spec.type}): {len(pool)} usable rows, but n_train + "
                                f"n_distill + n_eval = {need}")
            distill = pool[: spec.n_distill]
            rest = pool[spec.n_distill :]
            n_labeled = spec.n_train + spec.n_eval
            if any(r.get("response") is None for r in rest):
                # generate with a margin: rejected generations are replaced by the next candidates
                rest = rest[: min(len(rest), int(n_labeled * 1.15) + 4)]
                to_generate += [(src, r) for r in rest if r.get("response") is None]
            plan.append((i, spec, task, src, distill, rest))
        if to_generate:
            generate_missing(run, to_generate)
        for i, spec, task, src, distill, rest in plan:
            labeled = [r for r in rest if r.get("response")]
            if len(labeled) < spec.n_train + spec.n_eval:
                raise DataError(
                    f"data.sources.{i} ({spec.type}): only {len(labeled)} rows have a usable response after "
                    f"generation; need n_train + n_eval = {spec.n_train + spec.n_eval}")
            parts = [("train", labeled[: spec.n_train]), ("distill", distill),
                     ("eval", labeled[spec.n_train : spec.n_train + spec.n_eval])]
            for split, rs in parts:
                for r in rs:
                    frames.append({
                        "id": r["id"], "task": task, "source": spec.type, "split": split, "prompt": r["prompt"],
                        "response": r.get("response") if split != "distill" else None,
                        "reference": r.get("reference") or r.get("response"),
                        "answer": r.get("answer"), "utility": src.utility,
                        "generated": bool(r.get("_generated")), "meta": json.dumps(r.get("meta") or {}),
                    })
        df = pd.DataFrame(frames)
        check_disjoint(df)
        atomic_write_parquet(out / "rows.parquet", df)
        summary = df.groupby(["task", "split"]).size().unstack(fill_value=0).to_dict("index")
        return {"rows": len(df), "per_task": summary, "generated": int(df["generated"].sum())}

    return run.cache.run("data", inputs, build)


def stage_trusted(run: Run, data: StageRecord) -> StageRecord:
    """The defender's trusted clean samples: the distillation prompts, each with a clean answer (the source's
    reference where it has one, else the data generator's answer, written and post-processed the way the training
    set's clean responses were). Defenses fit on one half and set ``fpr`` thresholds on the other
    (``poison.stages.defense.trusted_clean``); the teacher never trains on these prompts and they are never
    evaluated."""
    cfg = run.cfg
    inputs = {"data": data.key, "generator": generator_identity(run, cfg.data.generator)}

    def build(out: Path) -> dict[str, Any]:
        df = pd.read_parquet(Path(data.path) / "rows.parquet")
        d = df[df.split == "distill"].reset_index(drop=True)
        srcs = {(spec.type, task): src for spec, task, src in zip(cfg.data.sources, cfg.data.tasks(),
                                                                    build_sources(run))}
        refs = [None if pd.isna(r) or not str(r).strip() else str(r) for r in d.reference]
        missing = [k for k, r in enumerate(refs) if r is None]
        if missing:  # written like the data stage's missing responses (the source's prompt and post-processing)
            items = [(srcs[(d.source[k], d.task[k])],
                      {"prompt": d.prompt[k], "meta": json.loads(d.meta[k] or "{}")}) for k in missing]
            generate_missing(run, items)
            for k, (_, r) in zip(missing, items):
                refs[k] = r["response"]
        generated = set(missing)
        d = d.assign(reference=refs, reference_generated=[k in generated for k in range(len(d))])
        d = d[d.reference.notna()][["id", "task", "prompt", "reference", "reference_generated"]]
        atomic_write_parquet(out / "trusted.parquet", d)
        return {"rows": len(d), "generated": int(d.reference_generated.sum()),
                "per_task": {str(k): int(v) for k, v in d.task.value_counts().items()}}

    return run.cache.run("trusted", inputs, build)


def check_disjoint(df: pd.DataFrame) -> None:
    """No prompt may appear in two splits (eval prompts are never training or distillation prompts)."""
    by_split = {s: set(g.prompt) for s, g in df.groupby("split")}
    splits = sorted(by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            both = by_split[a] & by_split[b]
            if both:
                raise StageError(f"{len(both)} prompt(s) occur in both the {a} and {b} splits, e.g. "
                                 f"{next(iter(both))[:80]!r}")
