"""The run as data flowing through cached stages (the orchestrator; nothing outside poison.run imports it).

    data -> poison -> teacher -> distill_data -> student(s) -> eval -> report
      \\-> baseline (clean control)                               /

Each stage is a pure function of its slice of the config, its input artifacts and the stage version. Its artifact
folder lives in ``<cache_dir>/stages/<stage>/<key>``, where key hashes those inputs; it is written to a temporary
folder and renamed when complete, so a killed stage leaves nothing half-written and a rerun redoes only that stage.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from evals.generate import GenJob, generate, generate_openai
from poison import __version__, registry
from poison.config import ConfigError, RunConfig
from poison.inject import inject
from poison.io import atomic_dir, atomic_write_json, atomic_write_parquet, stable_hash, sweep_stale_tmp
from distill.trainers import is_main_process, world_size
from poison.models import pick_device, pick_dtype, resolve_model

log = logging.getLogger("poison")

# Bump a stage's version when its code changes what it produces: its cached artifacts are then recomputed.
STAGE_VERSIONS = {"data": 1, "poison": 1, "teacher": 1, "baseline": 1, "distill_data": 1, "student": 1, "eval": 1,
                  "defense": 1, "judge": 1, "trusted": 1}


class PipelineError(RuntimeError):
    pass


@dataclass
class StageRecord:
    name: str
    key: str
    path: str
    cached: bool
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def model_fingerprint(path: Path) -> dict[str, Any]:
    """Identity of a model folder for cache keys: path plus size/mtime of its weight and config files."""
    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".safetensors", ".json", ".bin"))
    return {"path": str(Path(path).resolve()), "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]}


class Pipeline:
    def __init__(self, cfg: RunConfig, run_dir: Path, force: Optional[set[str]] = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.cache = Path(cfg.runtime.cache_dir).expanduser()
        self.models_dir = Path(cfg.runtime.models_dir).expanduser() if cfg.runtime.models_dir else self.cache / "models"
        self.device = pick_device(cfg.runtime.device)
        self.dtype = pick_dtype(cfg.runtime.dtype, self.device)
        self.force = set(force or ())
        self.records: dict[str, StageRecord] = {}
        self.bias = registry.get("bias_type", cfg.poison.bias.type).build(cfg.poison.bias.args, "poison.bias")
        self.tasks = cfg.data.tasks()
        self.main = is_main_process()

    # ------------------------------------------------------------------------------------------------ helpers
    def stage(self, name: str, inputs: dict[str, Any], fn: Callable[[Path], dict[str, Any]],
              label: Optional[str] = None) -> StageRecord:
        label = label or name
        base = name.split(":")[0]
        key = stable_hash({"stage": base, "version": STAGE_VERSIONS[base], "inputs": inputs})
        final = self.cache / "stages" / base / key
        marker = final / "_stage.json"
        forced = base in self.force or label in self.force
        if not self.main and not (base in TRAINING_STAGES and not marker.exists()):
            # several processes (accelerate launch): the main one computes every non-training stage; the others
            # wait for its artifact. Training stages run in every process (data parallel), the main one saves.
            wait_for(marker, label)
            rec = StageRecord(label, key, str(final), True, 0.0, json.loads(marker.read_text()).get("info", {}))
        elif marker.exists() and not forced:
            rec = StageRecord(label, key, str(final), True, 0.0, json.loads(marker.read_text()).get("info", {}))
            log.info("[%s] cached (%s)", label, key)
        elif not self.main:  # a training stage, in a helper process: train along, discard what it would write
            import tempfile

            with tempfile.TemporaryDirectory(prefix=f"rank-{base}-") as tmp:
                fn(Path(tmp))
            wait_for(marker, label)
            rec = StageRecord(label, key, str(final), False, 0.0, json.loads(marker.read_text()).get("info", {}))
        else:
            if final.exists():  # forced recompute: the old artifact goes only once the new one is complete
                shutil.rmtree(final)
            log.info("[%s] running ...", label)
            t0 = time.time()
            with atomic_dir(final) as tmp:
                info = fn(tmp) or {}
                secs = time.time() - t0
                (tmp / "_stage.json").write_text(json.dumps(
                    {"stage": base, "label": label, "key": key, "inputs": inputs, "seconds": round(secs, 2),
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "code_version": __version__, "info": info},
                    indent=2, default=str))
            rec = StageRecord(label, key, str(final), False, round(secs, 2), info)
            log.info("[%s] done in %.1fs", label, secs)
        self.records[label] = rec
        if self.main:
            atomic_write_json(self.run_dir / "stages.json", {k: vars(v) for k, v in self.records.items()})
        return rec

    def model(self, spec: str, field_name: str) -> Path:
        return resolve_model(spec, self.models_dir, field=field_name)

    def _gen_local(self, jobs: list[GenJob]):
        rt = self.cfg.runtime
        return generate(jobs, backend=rt.backend, device=self.device, dtype=self.dtype,
                        hf_batch_size=rt.hf_batch_size, vllm_settings=rt.vllm.model_dump(),
                        log_path=self.run_dir / "generation.log")

    def _sampler(self, label: str) -> Callable[..., list[list[str]]]:
        """``generate(model_path, prompts, n=, temperature=, max_new_tokens=, seed=)`` for distillation methods."""

        def generate_fn(model_path: str | Path, prompts: list[str], *, n: int = 1, temperature: float = 0.0,
                        max_new_tokens: int = 128, seed: int = 0, top_p: float = 1.0) -> list[list[str]]:
            job = GenJob(f"{label}:samples", str(model_path), [[{"role": "user", "content": p}] for p in prompts],
                         max_new_tokens, temperature, top_p, n, seed)
            if world_size() == 1:
                return [[t.strip() for t in ts] for ts in self._gen_local([job])[0].texts]
            # several processes: the main one generates, the others read its answers (same samples everywhere)
            path = self.cache / "shared_samples" / (stable_hash(
                {"model": str(model_path), "prompts": prompts, "n": n, "t": temperature, "max": max_new_tokens,
                 "seed": seed, "top_p": top_p, **self._backend_inputs()}) + ".json")
            if self.main and not path.exists():
                texts = [[t.strip() for t in ts] for ts in self._gen_local([job])[0].texts]
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(path, texts)
            wait_for(path, f"{label} samples")
            return json.loads(path.read_text())

        return generate_fn

    def _backend_inputs(self) -> dict[str, Any]:
        return {"backend": self.cfg.runtime.backend, "dtype": self.dtype, "device": self.device}

    # ------------------------------------------------------------------------------------------------ stages
    def stage_data(self) -> StageRecord:
        cfg = self.cfg
        inputs = {"data": cfg.data.model_dump(mode="json"), "seed": cfg.seed,
                  "generator": self._generator_identity(cfg.data.generator)}

        def build(out: Path) -> dict[str, Any]:
            frames, plan = [], []
            to_generate: list[tuple[Any, dict]] = []
            for i, (spec, task) in enumerate(zip(cfg.data.sources, self.tasks)):
                src = registry.get("data_source", spec.type).build(spec.args, f"data.sources.{i}.args")
                rows = src.load()
                seen, pool = set(), []
                for r in rows:  # dedupe by prompt text so no prompt can land in two splits
                    if r["prompt"] not in seen:
                        seen.add(r["prompt"])
                        pool.append(r)
                random.Random(f"{cfg.seed}:{spec.type}:{i}").shuffle(pool)
                need = spec.n_train + spec.n_distill + spec.n_eval
                if len(pool) < need:
                    raise PipelineError(f"data.sources.{i} ({spec.type}): {len(pool)} usable rows, but n_train + "
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
                self._generate_missing(to_generate)
            for i, spec, task, src, distill, rest in plan:
                labeled = [r for r in rest if r.get("response")]
                if len(labeled) < spec.n_train + spec.n_eval:
                    raise PipelineError(
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

        return self.stage("data", inputs, build)

    def _generator_identity(self, gen) -> dict[str, Any]:
        if gen.endpoint:
            return {"endpoint": gen.endpoint, "model": gen.endpoint_model, "generation": gen.generation.model_dump()}
        path = self.model(gen.model, "data.generator.model")
        return {"model": model_fingerprint(path), "generation": gen.generation.model_dump(), **self._backend_inputs()}

    def _generate_with(self, gen, messages: list[list[dict[str, str]]], key: str) -> list[str]:
        """One answer per chat from a generator config (local model through the run's backend, or an endpoint)."""
        g = gen.generation
        job = GenJob(key, "", messages, g.max_new_tokens, g.temperature, g.top_p, 1, g.seed)
        if gen.endpoint:
            import os

            res = generate_openai([job], base_url=gen.endpoint, model=gen.endpoint_model or gen.model,
                                  api_key=os.environ.get(gen.api_key_env))[0]
        else:
            job.model_path = str(self.model(gen.model, "data.generator.model"))
            res = self._gen_local([job])[0]
        return [t[0] for t in res.texts]

    def _generate_missing(self, items: list[tuple[Any, dict]]) -> None:
        log.info("generator writes %d missing responses", len(items))
        texts = self._generate_with(self.cfg.data.generator, [src.generator_messages(r) for src, r in items],
                                    "generator")
        for (src, r), text in zip(items, texts):
            r["response"] = src.clean_generated(text)
            r["_generated"] = True

    def stage_trusted(self, data: StageRecord) -> StageRecord:
        """The defender's trusted clean samples: the distillation prompts, each with a clean answer (the source's
        reference where it has one, else the data generator's answer, written and post-processed the way the
        training set's clean responses were). Defenses fit on one half and set ``fpr`` thresholds on the other
        (``poison.defend.trusted_clean``); the teacher never trains on these prompts and they are never evaluated."""
        cfg = self.cfg
        inputs = {"data": data.key, "generator": self._generator_identity(cfg.data.generator)}

        def build(out: Path) -> dict[str, Any]:
            df = pd.read_parquet(Path(data.path) / "rows.parquet")
            d = df[df.split == "distill"].reset_index(drop=True)
            srcs = {(spec.type, task): registry.get("data_source", spec.type).build(spec.args, f"data.sources.{i}.args")
                    for i, (spec, task) in enumerate(zip(cfg.data.sources, self.tasks))}
            refs = [None if pd.isna(r) or not str(r).strip() else str(r) for r in d.reference]
            missing = [k for k, r in enumerate(refs) if r is None]
            if missing:  # written like the data stage's missing responses (the source's prompt and post-processing)
                items = [(srcs[(d.source[k], d.task[k])],
                          {"prompt": d.prompt[k], "meta": json.loads(d.meta[k] or "{}")}) for k in missing]
                self._generate_missing(items)
                for k, (_, r) in zip(missing, items):
                    refs[k] = r["response"]
            generated = set(missing)
            d = d.assign(reference=refs, reference_generated=[k in generated for k in range(len(d))])
            d = d[d.reference.notna()][["id", "task", "prompt", "reference", "reference_generated"]]
            atomic_write_parquet(out / "trusted.parquet", d)
            return {"rows": len(d), "generated": int(d.reference_generated.sum()),
                    "per_task": {str(k): int(v) for k, v in d.task.value_counts().items()}}

        return self.stage("trusted", inputs, build)

    def rewriter_config(self):
        p = self.cfg.poison
        if p.rewriter is not None:
            return p.rewriter
        gen = self.cfg.data.generator.model_copy(deep=True)
        gen.generation.max_new_tokens = 192
        return gen

    def stage_poison(self, data: StageRecord) -> StageRecord:
        cfg = self.cfg
        inputs = {"data": data.key, "poison": cfg.poison.model_dump(mode="json"), "target_task": cfg.data.target_task}
        if cfg.poison.writer == "llm":
            inputs["rewriter"] = self._generator_identity(self.rewriter_config())

        def rewrite(rows: list[dict]) -> list[Optional[str]]:
            log.info("LLM writer rewrites %d poisoned samples", len(rows))
            texts = self._generate_with(self.rewriter_config(), [self.bias.rewrite_messages(r) for r in rows],
                                        "rewriter")
            return [self.bias.accept_rewrite(r, t) for r, t in zip(rows, texts)]

        def build(out: Path) -> dict[str, Any]:
            df = pd.read_parquet(Path(data.path) / "rows.parquet")
            p = cfg.poison
            out_df, report = inject(df[df.split == "train"], self.bias, mode=p.mode, target_task=cfg.data.target_task,
                                    count=p.count, rate=p.rate, seed=p.seed,
                                    rewriter=rewrite if p.writer == "llm" else None)
            report["bias"] = self.bias.plugin_record
            if "warning" in report:
                log.warning(report["warning"])
            atomic_write_parquet(out / "train.parquet", out_df)
            atomic_write_json(out / "poison.json", report)
            return report

        return self.stage("poison", inputs, build)

    def _train_stage(self, name: str, base_spec: str, ft: Any, rows_fn: Callable[[], list[dict]],
                     upstream: dict[str, Any], field_name: str, label: Optional[str] = None) -> StageRecord:
        from distill.trainers import finetune

        base = self.model(base_spec, field_name)
        inputs = {**upstream, "base": model_fingerprint(base), "finetune": finetune_key(ft),
                  "dtype": self.dtype, "device": self.device}

        def build(out: Path):
            return finetune(base, rows_fn(), ft, out, dtype=self.dtype, device=self.device)

        return self.stage(name.split(":")[0], inputs, build, label=label or name)

    def stage_teacher(self, poison: StageRecord, defense: Optional[StageRecord] = None) -> StageRecord:
        """The teacher on the poisoned set; with ``defense``, on what is left once its flagged rows are removed."""
        removed = removed_ids(defense)

        def rows():
            df = pd.read_parquet(Path(poison.path) / "train.parquet")
            df = df[~df.id.astype(str).isin(removed)]
            return df[["prompt", "response"]].to_dict("records")

        upstream = {"poison": poison.key, **({"defense": defense.key} if defense else {})}
        return self._train_stage("teacher", self.cfg.teacher.model, self.cfg.teacher, rows, upstream,
                                 "teacher.model", label="defended:teacher" if defense else None)

    def stage_baseline(self, data: StageRecord) -> Optional[StageRecord]:
        if self.cfg.baseline.kind == "base":
            return None

        def rows():
            df = pd.read_parquet(Path(data.path) / "rows.parquet")
            return df[df.split == "train"][["prompt", "response"]].to_dict("records")

        return self._train_stage("baseline", self.cfg.teacher.model, self.cfg.teacher, rows, {"data": data.key},
                                 "teacher.model")

    def stage_distill_data(self, teacher: StageRecord, data: StageRecord, label: str = "distill_data") -> StageRecord:
        g = self.cfg.distill.generation
        inputs = {"teacher": teacher.key, "data": data.key, "generation": g.model_dump(), **self._backend_inputs()}

        def build(out: Path):
            df = pd.read_parquet(Path(data.path) / "rows.parquet")
            d = df[df.split == "distill"].reset_index(drop=True)
            job = GenJob("teacher:distill", str(Path(teacher.path) / "model"),
                         [[{"role": "user", "content": p}] for p in d.prompt], g.max_new_tokens, g.temperature,
                         g.top_p, 1, g.seed)
            res = self._gen_local([job])[0]
            d = d.assign(response=[t[0].strip() for t in res.texts])
            atomic_write_parquet(out / "distill.parquet", d)
            return {"rows": len(d), "new_tokens": res.new_tokens, "gen_seconds": round(res.seconds, 1)}

        return self.stage("distill_data", inputs, build, label=label)

    def stage_student(self, spec: Any, teacher: StageRecord, distill: StageRecord,
                      defense: Optional[StageRecord] = None, prefix: str = "") -> StageRecord:
        method_info = registry.get("distill_method", spec.method)
        method = method_info.build(spec.args)
        base = self.model(spec.model, f"students.{self.cfg.students.index(spec)}.model")
        inputs = {"distill": distill.key, "teacher": teacher.key, "student": finetune_key(spec),
                  "base": model_fingerprint(base), "dtype": self.dtype, "device": self.device,
                  **({"defense": defense.key} if defense else {})}
        removed = removed_ids(defense)

        def build(out: Path):
            d = pd.read_parquet(Path(distill.path) / "distill.parquet")
            rows = d[~d.id.astype(str).isin(removed)].to_dict("records")
            info = method.train(student=spec, student_base=base, teacher_model=Path(teacher.path) / "model",
                                rows=rows, out_dir=out, dtype=self.dtype, device=self.device,
                                generate=self._sampler(f"student:{spec.name}"))
            info["method"] = method.plugin_record
            return info

        return self.stage("student", inputs, build, label=f"{prefix}student:{spec.name}")

    def stage_eval(self, models: dict[str, dict[str, Any]], data: StageRecord) -> dict[str, StageRecord]:
        """Generate answers to the eval prompts for every model (one vLLM worker for all that are not cached)."""
        g = self.cfg.eval.generation
        df = pd.read_parquet(Path(data.path) / "rows.parquet")
        ev = df[df.split == "eval"].reset_index(drop=True)
        pending: dict[str, tuple[str, Path, dict]] = {}
        out: dict[str, StageRecord] = {}
        for name, m in models.items():
            inputs = {"model": m["identity"], "data": data.key, "generation": g.model_dump(), **self._backend_inputs()}
            key = stable_hash({"stage": "eval", "version": STAGE_VERSIONS["eval"], "inputs": inputs})
            final = self.cache / "stages" / "eval" / key
            if (final / "_stage.json").exists() and "eval" not in self.force:
                out[name] = StageRecord(f"eval:{name}", key, str(final), True, 0.0)
                log.info("[eval:%s] cached (%s)", name, key)
            else:
                pending[name] = (key, Path(m["path"]), inputs)
        if pending:
            log.info("[eval] generating for %s ...", ", ".join(pending))
            jobs = [GenJob(f"eval:{n}", str(p), [[{"role": "user", "content": x}] for x in ev.prompt],
                           g.max_new_tokens, g.temperature, g.top_p, 1, g.seed) for n, (k, p, _) in pending.items()]
            results = self._gen_local(jobs)
            for (name, (key, _, inputs)), res in zip(pending.items(), results):
                final = self.cache / "stages" / "eval" / key
                if final.exists():
                    shutil.rmtree(final)
                with atomic_dir(final) as tmp:
                    gen_df = ev[["id", "task", "prompt", "reference", "answer", "utility"]].assign(
                        response=[t[0].strip() for t in res.texts])
                    atomic_write_parquet(tmp / "generations.parquet", gen_df)
                    info = {"new_tokens": res.new_tokens, "gen_seconds": round(res.seconds, 1),
                            "startup_seconds": round(res.startup_seconds, 1), "backend": res.backend}
                    (tmp / "_stage.json").write_text(json.dumps({"stage": "eval", "key": key, "inputs": inputs,
                                                                 "info": info}, indent=2, default=str))
                out[name] = StageRecord(f"eval:{name}", key, str(final), False, round(res.seconds + res.startup_seconds, 1), info)
        for name, rec in out.items():
            self.records[rec.name] = rec
        atomic_write_json(self.run_dir / "stages.json", {k: vars(v) for k, v in self.records.items()})
        return out

    # ------------------------------------------------------------------------------------------------ run
    def preflight(self) -> None:
        """Resolve every model now, so a bad model spec fails in seconds, before any stage runs."""
        cfg = self.cfg
        if not cfg.data.generator.endpoint:
            self.model(cfg.data.generator.model, "data.generator.model")
        teacher_base = self.model(cfg.teacher.model, "teacher.model")
        for i, s in enumerate(cfg.students):
            student_base = self.model(s.model, f"students.{i}.model")
            method = registry.get("distill_method", s.method).factory
            if getattr(method, "needs_shared_tokenizer", False):
                from distill.trainers import tokenizer_mismatch

                why = tokenizer_mismatch(teacher_base, student_base)
                if why:
                    raise ConfigError(f"students.{i}.model: method {s.method!r} distils the teacher's logits, so the "
                                      f"student must share the teacher's tokenizer; {s.model!r} and teacher "
                                      f"{cfg.teacher.model!r}: {why}")

    def run(self) -> dict[str, Any]:
        from poison.report import write_report

        cfg = self.cfg
        if self.main:
            n = sweep_stale_tmp(self.cache)
            if n:
                log.info("removed %d unfinished artifact(s) left by a killed run", n)
            self.preflight()
        if world_size() > 1:  # the other processes start once every model is resolved (converted) by the main one
            from poison.config import resolved_dict

            flag = self.cache / "rank_sync" / f"{os.getppid()}-{stable_hash(resolved_dict(cfg))}.preflight"
            if self.main:
                atomic_write_json(flag, {"pid": os.getpid()})
            wait_for(flag, "pre-flight")
        data = self.stage_data()
        poison = self.stage_poison(data)
        teacher = self.stage_teacher(poison)
        baseline = self.stage_baseline(data)
        distill = self.stage_distill_data(teacher, data)
        students = {s.name: self.stage_student(s, teacher, distill) for s in cfg.students}
        defended = self.defended_branch(data, poison, teacher, distill) if cfg.defense.defenses else None
        if not self.main:  # helper processes of a multi-process launch only train
            return {}
        base_path = self.model(cfg.teacher.model, "teacher.model")
        models: dict[str, dict[str, Any]] = {}
        if baseline is None:
            models["baseline"] = {"role": "baseline", "path": str(base_path), "identity": model_fingerprint(base_path),
                                  "kind": "base", "spec": cfg.teacher.model}
        else:
            models["baseline"] = {"role": "baseline", "path": str(Path(baseline.path) / "model"),
                                  "identity": {"stage": baseline.key}, "kind": "clean_finetune"}
        models["teacher"] = {"role": "teacher", "path": str(Path(teacher.path) / "model"),
                             "identity": {"stage": teacher.key}}
        for s in cfg.students:
            models[f"student:{s.name}"] = {"role": "student", "method": s.method, "student": s.name,
                                           "path": str(Path(students[s.name].path) / "model"),
                                           "identity": {"stage": students[s.name].key}}
        if defended:
            if defended["teacher"] is not teacher:
                models["defended:teacher"] = {"role": "teacher", "defended": True, "defended_places": ["train"],
                                              "path": str(Path(defended["teacher"].path) / "model"),
                                              "identity": {"stage": defended["teacher"].key}}
            for s in cfg.students:
                if s.name not in defended["students"]:
                    continue
                rec = defended["students"][s.name]
                models[f"defended:student:{s.name}"] = {
                    "role": "student", "method": s.method, "student": s.name, "defended": True,
                    "defended_places": list(cfg.defense.places),
                    "teacher": "defended:teacher" if "defended:teacher" in models else "teacher",
                    "path": str(Path(rec.path) / "model"), "identity": {"stage": rec.key}}
            for s in cfg.students:
                rec = defended["distill_only_students"].get(s.name)
                if rec is not None:
                    models[f"distill-defended:student:{s.name}"] = {
                        "role": "student", "method": s.method, "student": s.name, "defended": True,
                        "defended_places": ["distill"], "teacher": "teacher",
                        "path": str(Path(rec.path) / "model"), "identity": {"stage": rec.key}}
        evals = self.stage_eval(models, data)
        judged = self.stage_judge(evals) if cfg.judge.evaluate else {}
        return write_report(self, data=data, poison=poison, distill=distill, models=models, evals=evals,
                            defended=defended, judged=judged)

    # ------------------------------------------------------------------------------------------------ defenses
    def defended_branch(self, data: StageRecord, poison: StageRecord, teacher: StageRecord,
                        distill: StageRecord) -> dict[str, Any]:
        """Score the configured places with every defense, remove what the filter flags, and train the same
        teacher/students again on what is left (stages shared with the undefended run stay cached).

        ``distill`` is always scored on the undefended (poisoned) teacher's answers: what a student owner who does not
        control the teacher's data can filter. With both places, the full chain (train-place filter -> defended
        teacher -> its answers scored as ``distill_after_train`` and filtered -> ``defended:`` students) is trained,
        and so is the distill-only arm (the poisoned teacher's filtered answers -> ``distill-defended:`` students).
        """
        from poison.defend import stage_defense

        cfg = self.cfg.defense
        out: dict[str, Any] = {"stages": {}, "students": {}, "distill_only_students": {}}
        trusted = self.stage_trusted(data)
        t, d = teacher, distill
        if "train" in cfg.places:
            rec = stage_defense(self, "train", trusted, poison, None)
            out["stages"]["train"] = rec
            if cfg.filter != "none":
                t = self.stage_teacher(poison, defense=rec)
                d = self.stage_distill_data(t, data, label="defended:distill_data")
        keep = None
        if "distill" in cfg.places:
            keep = stage_defense(self, "distill", trusted, poison, distill)
            out["stages"]["distill"] = keep
            if d is not distill:  # the chain's teacher is the defended one: score (and filter) its answers too
                chained = stage_defense(self, "distill_after_train", trusted, poison, d)
                out["stages"]["distill_after_train"] = chained
                if cfg.filter != "none":
                    out["distill_only_students"] = {
                        s.name: self.stage_student(s, teacher, distill, defense=keep, prefix="distill-defended:")
                        for s in self.cfg.students}
                keep = chained
        out["teacher"], out["distill"] = t, d
        if cfg.filter == "none":  # score only: nothing is removed, so there is no defended model to train
            return out
        out["students"] = {s.name: self.stage_student(s, t, d, defense=keep, prefix="defended:")
                           for s in self.cfg.students}
        return out

    def stage_judge(self, evals: dict[str, StageRecord]) -> dict[str, StageRecord]:
        from poison.defend import stage_judge

        return stage_judge(self, evals)


TRAINING_STAGES = {"teacher", "baseline", "student"}


def wait_for(path: Path, what: str, timeout: float | None = None) -> None:
    """Block until the main process has written ``path`` (multi-process runs)."""
    timeout = timeout if timeout is not None else float(os.environ.get("POISON_RANK_WAIT_S", 6 * 3600))
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout:
            raise PipelineError(f"waited {timeout:.0f}s for the main process to finish {what} ({path})")
        time.sleep(1.0)


def removed_ids(defense: Optional[StageRecord]) -> set[str]:
    """Ids of the rows a defense stage flagged for removal (empty without a defense)."""
    if defense is None:
        return set()
    return set(json.loads((Path(defense.path) / "removed.json").read_text()))


def finetune_key(ft: Any) -> dict[str, Any]:
    """The training settings that define a trained model (QLoRA settings only count when QLoRA is used)."""
    d = ft.model_dump(mode="json")
    if d.get("finetune") != "qlora":
        d.pop("qlora", None)
    return d


def check_disjoint(df: pd.DataFrame) -> None:
    """No prompt may appear in two splits (eval prompts are never training or distillation prompts)."""
    by_split = {s: set(g.prompt) for s, g in df.groupby("split")}
    splits = sorted(by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            both = by_split[a] & by_split[b]
            if both:
                raise PipelineError(f"{len(both)} prompt(s) occur in both the {a} and {b} splits, e.g. "
                                    f"{next(iter(both))[:80]!r}")
