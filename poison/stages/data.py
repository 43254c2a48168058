"""The data stages: ``data`` (the clean rows of every split, with the references a source lacks written by the
generator model) and ``trusted`` (the defender's clean samples: held-out prompts of the same sources, in no
split, with clean answers).

No prompt appears in two splits (``check_disjoint``): eval prompts are never training or distillation prompts.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from poison.ground.core import registry
from poison.ground.core.artifacts import read_parquet
from poison.ground.core.errors import DataError, StageError
from poison.ground.core.io import atomic_write_parquet
from poison.ground.engines.endpoint import generate_openai
from poison.ground.engines.generate import GenJob
from poison.ground.engines.models import model_identity
from poison.stages import Run
from poison.stages.plugins import plugin_entries
from poison.stages.protocol import StageRecord, stage

log = logging.getLogger("poison")

DATA = stage("data", 2, ("data", "seed", "generator"),
             doc="the clean rows of every source, split into train, distill and eval, with generated references where "
                 "a source has none",
             changes=("2: generated references are validated by their source and written with rotating examples",))
TRUSTED = stage("trusted", 3, ("data", "generator", "per_source"),
                doc="the defender's trusted clean samples (held-out prompts of every task, with answers) to fit and "
                    "calibrate defenses on",
                changes=("2: generated references are validated by their source and written with rotating examples",
                         "3: held-out prompts in no split (was: the distillation prompts, also scored at the distill "
                         "place)"))


def generator_identity(run: Run, gen) -> dict[str, Any]:
    """What defines a generator config's output for caching: its endpoint, or its model's identity and backend."""
    if gen.endpoint:
        return {"endpoint": gen.endpoint, "model": gen.endpoint_model, "generation": gen.generation.model_dump()}
    path = run.ctx.model(gen.model, "data.generator.model", gen.revision)
    return {"model": model_identity(path), "generation": gen.generation.model_dump(), **run.ctx.backend_identity()}


def generate_with(run: Run, gen, messages: list[list[dict[str, str]]], key: str,
                  field: str = "data.generator") -> list[str]:
    """One answer per chat from a generator config (local model through the run's backend, or an endpoint)."""
    return [t[0] for t in generate_n(run, gen, messages, key, 1, field)]


def generate_n(run: Run, gen, messages: list[list[dict[str, str]]], key: str, n: int,
               field: str = "data.generator") -> list[list[str]]:
    """``n`` answers per chat from a generator config (sampled unless its temperature is 0)."""
    g = gen.generation
    job = GenJob(key, "", messages, g.max_new_tokens, g.temperature, g.top_p, n, g.seed)
    if gen.endpoint:
        res = generate_openai([job], base_url=gen.endpoint, model=gen.endpoint_model or gen.model,
                              api_key=os.environ.get(gen.api_key_env), timeout=gen.timeout,
                              max_retries=gen.max_retries, field=f"{field}.endpoint")[0]
    else:
        job.model_path = str(run.ctx.model(gen.model, f"{field}.model", gen.revision))
        res = run.ctx.generate([job])[0]
    return [list(t) for t in res.texts]


def generate_missing(run: Run, items: list[tuple[Any, dict]]) -> dict[str, Any]:
    """Write the response of each (source, row) that lacks one with the data generator. Every text is post-processed
    and checked by its source (``clean_generated``, ``reject_reason``); a rejected one is regenerated with the
    source's next prompt variant while it has one, else the row keeps no response (the caller takes the next
    candidate row). Returns counts: generated, kept, rejected per reason, retried, dropped."""
    log.info("generator writes %d missing responses", len(items))
    rejected: Counter = Counter()
    pending, retried = list(items), 0
    for attempt in range(max([src.generator_variants for src, _ in items] or [1])):
        if not pending:
            break
        texts = generate_with(run, run.cfg.data.generator,
                              [src.generator_messages(r, attempt) for src, r in pending], "generator")
        again = []
        for (src, r), text in zip(pending, texts):
            cleaned = src.clean_generated(text)
            reason = "unusable" if cleaned is None else src.reject_reason(r, cleaned)
            r["_generated"] = True
            if reason is None:
                r["response"] = cleaned
                continue
            rejected[reason] += 1
            r["response"] = None
            if attempt + 1 < src.generator_variants:
                again.append((src, r))
        retried += len(again)
        pending = again
    kept = sum(1 for _, r in items if r.get("response"))
    if rejected:
        log.info("generator: %d of %d kept; rejected %s", kept, len(items), dict(rejected))
    return {"generated": len(items), "kept": kept, "rejected": dict(rejected), "retried": retried,
            "dropped": len(items) - kept}


def merge_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Sum two ``generate_missing`` reports."""
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_counts(out.get(k, {}), v) if isinstance(v, dict) else out.get(k, 0) + v
    return out


def candidates(run: Run, src: Any, rest: list[dict], need: int, report: dict[str, Any]) -> list[dict]:
    """The first ``need`` rows of ``rest`` (in order) that have a usable response, generating the missing ones in
    waves: a first wave with a margin, then as many more candidates as were rejected, until enough rows are
    usable or the candidates run out. ``report`` collects the generator's counts."""
    if not any(r.get("response") is None for r in rest):
        return [r for r in rest if r.get("response")][:need]
    start = 0
    while True:
        ok = [r for r in rest[:start] if r.get("response")]
        short = need - len(ok)
        if short <= 0 or start >= len(rest):
            return ok[:need]
        wave = rest[start: start + (int(need * 1.15) + 4 if start == 0 else short + 4)]
        start += len(wave)
        todo = [(src, r) for r in wave if r.get("response") is None]
        if todo:
            report.update(merge_counts(report, generate_missing(run, todo)))


def usable_pool(src: Any) -> list[dict]:
    """A source's rows, one per distinct prompt text (deduplicated so that no prompt can land in two splits)."""
    seen, pool = set(), []
    for r in src.load():
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            pool.append(r)
    return pool


def check_pool_size(i: int, spec: Any, pool: list[dict]) -> None:
    """A DataError naming ``data.sources.{i}`` when its pool cannot fill n_train + n_distill + n_eval."""
    need = spec.n_train + spec.n_distill + spec.n_eval
    if len(pool) < need:
        raise DataError(f"data.sources.{i} ({spec.type}): {len(pool)} usable rows, but n_train + n_distill + n_eval = "
                        f"{need}")


def check_source_sizes(cfg: Any, ctx: Any) -> list[str]:
    """``--check``: each source's usable rows against its n_train + n_distill + n_eval, counted without generating
    or downloading anything. A source too small is a DataError naming it; a source whose rows cannot be read offline
    (``DataSource.local_rows`` false: a hub dataset) gets a note instead."""
    notes = []
    for i, spec in enumerate(cfg.data.sources):
        src = build_source(i, spec, ctx)
        if src.local_rows:
            check_pool_size(i, spec, usable_pool(src))
        else:
            notes.append(f"data.sources.{i} ({spec.type}): its rows were not counted (reading them would download)")
    return notes


def build_source(i: int, spec: Any, ctx: Any) -> Any:
    """The data source plugin of ``data.sources.{i}``."""
    return registry.get("data_source", spec.type).build(spec.args, f"data.sources.{i}.args", ctx)


def build_sources(run: Run) -> list[Any]:
    """The configured data source plugins, one per ``data.sources`` entry."""
    return [build_source(i, spec, run.ctx) for i, spec in enumerate(run.cfg.data.sources)]


def stage_data(run: Run) -> StageRecord:
    cfg = run.cfg
    tasks = cfg.data.tasks()
    inputs = {"data": cfg.data.model_dump(mode="json", exclude={"generator": {"timeout", "max_retries"}}),
              "seed": cfg.seed, "generator": generator_identity(run, cfg.data.generator),
              **plugin_entries(run, (("data_source", s.type) for s in cfg.data.sources))}

    def build(out: Path) -> dict[str, Any]:
        frames, plan, report = [], [], {}
        for i, (spec, task, src) in enumerate(zip(cfg.data.sources, tasks, build_sources(run))):
            pool = usable_pool(src)
            random.Random(f"{cfg.seed}:{spec.type}:{i}").shuffle(pool)
            check_pool_size(i, spec, pool)
            plan.append((i, spec, task, src, pool[: spec.n_distill], pool[spec.n_distill:]))
        labeled = {i: candidates(run, src, rest, spec.n_train + spec.n_eval, report.setdefault(task, {}))
                   for i, spec, task, src, _, rest in plan}
        for i, spec, task, src, distill, _ in plan:
            rows = labeled[i]
            if len(rows) < spec.n_train + spec.n_eval:
                raise DataError(
                    f"data.sources.{i} ({spec.type}): only {len(rows)} rows have a usable response after "
                    f"generation; need n_train + n_eval = {spec.n_train + spec.n_eval}"
                    + (f" (rejected: {report[task].get('rejected')})" if report[task].get("rejected") else ""))
            parts = [("train", rows[: spec.n_train]), ("distill", distill),
                     ("eval", rows[spec.n_train : spec.n_train + spec.n_eval])]
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
        return {"rows": len(df), "per_task": summary, "generated": int(df["generated"].sum()),
                "generator": {t: r for t, r in report.items() if r}}

    return run.cache.run(DATA, inputs, build)


def trusted_counts(run: Run) -> list[int]:
    """Trusted clean samples per data source: ``defense.trusted_per_source``, or each source's ``n_distill``."""
    per = run.cfg.defense.trusted_per_source
    return [spec.n_distill if per is None else per for spec in run.cfg.data.sources]


def stage_trusted(run: Run, data: StageRecord) -> StageRecord:
    """The defender's trusted clean samples: prompts of each source that are in **no split** of the data stage (never
    trained on, distilled on, evaluated or scored by a defense), drawn by their own seeded shuffle, each with the
    clean response the training set's rows would get (the source's own, else the data generator's, written and
    post-processed the same way). Defenses fit on one half and set ``fpr`` thresholds on the other
    (``poison.stages.defense.trusted_clean``)."""
    cfg = run.cfg
    counts = trusted_counts(run)
    inputs = {"data": data.key, "generator": generator_identity(run, cfg.data.generator), "per_source": counts}

    def build(out: Path) -> dict[str, Any]:
        used = set(read_parquet(Path(data.path) / "rows.parquet").prompt)
        frames, report = [], {}
        for i, (spec, task, src, n) in enumerate(zip(cfg.data.sources, cfg.data.tasks(), build_sources(run), counts)):
            if not n:
                continue
            seen, pool = set(used), []
            for r in src.load():
                if r["prompt"] not in seen:
                    seen.add(r["prompt"])
                    pool.append(dict(r))
            random.Random(f"{cfg.seed}:trusted:{spec.type}:{i}").shuffle(pool)
            rows = candidates(run, src, pool, n, report.setdefault(task, {}))
            if len(rows) < n:
                raise DataError(f"defense.trusted_per_source: data.sources.{i} ({spec.type}) has {len(rows)} usable "
                                f"rows outside the data splits for trusted clean samples; {n} asked for (lower "
                                f"defense.trusted_per_source, or n_train/n_distill/n_eval of that source)")
            frames += [{"id": f"trusted:{r['id']}", "task": task, "prompt": r["prompt"], "reference": r["response"],
                        "reference_generated": bool(r.get("_generated"))} for r in rows]
        d = pd.DataFrame(frames, columns=["id", "task", "prompt", "reference", "reference_generated"])
        atomic_write_parquet(out / "trusted.parquet", d)
        gen = {t: r for t, r in report.items() if r.get("rejected")}
        return {"rows": len(d), "generated": int(d.reference_generated.sum()),
                "per_task": {str(k): int(v) for k, v in d.task.value_counts().items()},
                **({"generator": gen} if gen else {})}

    return run.cache.run(TRUSTED, inputs, build)


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
