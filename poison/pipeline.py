"""The run as data flowing through cached stages (the orchestrator's spine; ``poison.runner`` calls it).

    data -> poison -> teacher -> distill_data -> student(s) -> eval -> report
      \\-> baseline (clean control)                               /

``Pipeline`` builds the run context (``poison.ground.engines.context.RunContext``) and the stage cache
(``poison.stages.protocol.StageCache``) from the config, resolves every model before any stage runs, calls the
stages in order (``poison.stages``; every arm that distils, main, control and defended, with its cascade, through one
``poison.stages.branch.Branch``), and hands the stage records to the report (``poison.report``).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from distill import speed
from poison.ground.core import registry
from poison.ground.core.artifacts import CacheMiss
from poison.ground.core.errors import ConfigError
from poison.ground.core.io import atomic_write_json, stable_hash
from poison.ground.core.procs import is_main_process, wait_for, world_size
from poison.ground.engines.context import JudgeSpec, RunContext
from poison.ground.engines.generate import visible_gpus
from poison.ground.engines.models import pick_device, pick_dtype, resolve_model
from poison.ground.results.model_id import Arm, ModelId
from poison.housekeeping import clean_leftovers
from poison.model_table import model_table
from poison.report import write_report
from poison.schema import RunConfig
from poison.stages import Run
from poison.stages.audit import stage_audit
from poison.stages.branch import Branch, TeacherSource, branch_teacher, run_branch
from poison.stages.data import stage_data
from poison.stages.defense import defended_branch
from poison.stages.defense_checks import writer_reference_checks
from poison.stages.evaluation import stage_eval, stage_judge
from poison.stages.plugins import build_judge, configured_plugins, needs_judge
from poison.stages.probe import stage_probe, stage_samples
from poison.stages.protocol import StageCache, StageRecord
from poison.stages.training import stage_baseline, stage_null_control, stage_poison

log = logging.getLogger("poison")


def run_context(cfg: RunConfig, run_dir: Optional[Path]) -> RunContext:
    """The context a config's ``runtime`` and ``judge`` sections describe (device and dtype resolved; the judge
    that plugins declaring ``needs={"judge"}`` get is ``judge.type`` from the registry)."""
    rt = cfg.runtime
    cache = Path(rt.cache_dir).expanduser()
    device = pick_device(rt.device)
    models = Path(rt.models_dir).expanduser() if rt.models_dir else cache / "models"
    speed.use_cache_dir(cache)  # torch.compile's caches: paid once per machine, not once per stage
    return RunContext(cache_dir=cache, models_dir=models, device=device, dtype=pick_dtype(rt.dtype, device),
                      run_dir=run_dir, backend=rt.backend, hf_batch_size=rt.hf_batch_size, vllm=rt.vllm.model_dump(),
                      judge=JudgeSpec(cfg.judge.model, cfg.judge.endpoint, cfg.judge.endpoint_model,
                                      cfg.judge.revision),
                      judge_factory=functools.partial(build_judge, cfg.judge.type, cfg.judge.args))


class Pipeline:
    def __init__(self, cfg: RunConfig, run_dir: Path, force: Optional[set[str]] = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.ctx = run_context(cfg, self.run_dir)
        self.main = is_main_process()
        self.cache = StageCache(self.ctx.cache_dir / "stages", self.run_dir, force, main=self.main,
                                verify=cfg.runtime.verify_cache)
        bias = registry.get("bias_type", cfg.poison.bias.type).build(cfg.poison.bias.args, "poison.bias", self.ctx)
        self.stages = Run(cfg, self.ctx, self.cache, bias)

    def preflight(self, create: bool = True) -> list[str]:
        """Resolve every model now, so a bad model spec fails in seconds, before any stage runs. ``create=False``
        (``--check``) converts, builds and downloads nothing: it only checks that each spec would resolve, and
        returns notes on what it could not check (hub ids while the hub is out of reach)."""
        cfg, notes = self.cfg, [] if not create else None
        self._check_gpus()
        resolve = lambda spec, field, rev: resolve_model(spec, self.ctx.models_dir, field, rev, create,  # noqa: E731
                                                         notes)
        if not cfg.data.generator.endpoint:
            resolve(cfg.data.generator.model, "data.generator.model", cfg.data.generator.revision)
        if cfg.poison.rewriter is not None and not cfg.poison.rewriter.endpoint:
            resolve(cfg.poison.rewriter.model, "poison.rewriter.model", cfg.poison.rewriter.revision)
        if (cfg.judge.evaluate or needs_judge(configured_plugins(cfg))) and not cfg.judge.endpoint:
            resolve(cfg.judge.model, "judge.model", cfg.judge.revision)
        teacher_base = resolve(cfg.teacher.model, "teacher.model", cfg.teacher.revision)
        for i, s in enumerate(cfg.students):
            student_base = resolve(s.model, f"students.{i}.model", s.revision)
            if registry.needs("distill_method", s.method, "shared_tokenizer") \
                    and (teacher_base / "config.json").exists() and (student_base / "config.json").exists():
                from distill.trainers import tokenizer_mismatch

                why = tokenizer_mismatch(teacher_base, student_base)
                if why:
                    raise ConfigError(f"students.{i}.model: method {s.method!r} distils the teacher's logits, so the "
                                      f"student must share the teacher's tokenizer; {s.model!r} and teacher "
                                      f"{cfg.teacher.model!r}: {why}")
        return notes or []

    def _check_gpus(self) -> None:
        """vLLM's tensor x data parallel size must fit the GPUs this process sees."""
        v = self.cfg.runtime.vllm
        if v.tensor_parallel_size * v.data_parallel_size == 1:
            return
        gpus = 0 if self.ctx.device == "cpu" else visible_gpus()
        where = f"{gpus} visible" + (" (the run's device is the CPU)" if self.ctx.device == "cpu" else "")
        if v.tensor_parallel_size > max(gpus, 1):
            raise ConfigError(f"runtime.vllm.tensor_parallel_size: {v.tensor_parallel_size} needs as many GPUs; "
                              f"{where}")
        if v.tensor_parallel_size * v.data_parallel_size > gpus:
            raise ConfigError(f"runtime.vllm.data_parallel_size: {v.data_parallel_size} engines of "
                              f"{v.tensor_parallel_size} GPU(s) need {v.tensor_parallel_size * v.data_parallel_size} "
                              f"GPUs; {where}")

    def run(self) -> dict[str, Any]:
        with self.ctx:  # stops what the context started (a local judge server) when the run ends
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg, run = self.cfg, self.stages
        if self.main and not self.cache.checking:
            clean_leftovers(cfg)
            self.preflight()
        if world_size() > 1:  # the other processes start once every model is resolved (converted) by the main one
            from poison.config import resolved_dict

            flag = self.ctx.cache_dir / "rank_sync" / f"{os.getppid()}-{stable_hash(resolved_dict(cfg))}.preflight"
            if self.main:
                atomic_write_json(flag, {"pid": os.getpid()})
            wait_for(flag, "pre-flight")
        data = stage_data(run)
        # a likelihood defense whose reference model wrote the clean responses: stop before anything is trained
        writer_notes = writer_reference_checks(run, data, list(cfg.defense.places)) if cfg.defense.defenses else []
        poison = stage_poison(run, data)
        main = self.branch(Arm.main(), TeacherSource.poisoned(), distill_sets_first=True)
        teacher = branch_teacher(run, main, poison, data)  # first: the clean controls train before its distill set
        baseline = stage_baseline(run, data)
        control = None
        if cfg.eval.probe and baseline is None:  # the probe's control is a clean fine-tune, not the base model
            log.info("eval.probe: training the clean control (the teacher's fine-tune on the clean set), since "
                     "baseline.kind is base")
            control = stage_baseline(run, data, label=str(ModelId.single("clean_control")))
        null = stage_null_control(run, data) if cfg.eval.probe and cfg.eval.probe_null else None

        def ready_clean_control() -> None:  # the clean control a distillation method compares its teacher with
            if any(registry.needs("distill_method", s.method, "clean_control") for s in cfg.students):
                run.clean_control = control or baseline or stage_baseline(
                    run, data, label=str(ModelId.single("clean_control")))

        ran = run_branch(run, replace(main, teacher=TeacherSource.given(teacher)), data,
                         before_students=ready_clean_control)
        distill, distills, students = ran.distill, ran.distills, ran.students
        via = self.via()
        chains = {via.name: ran.chains[via.name]} if cfg.cascade.generations > 1 else {}
        twins = self.clean_students(control or baseline, data) if cfg.eval.probe else {}
        defended = defended_branch(run, data, poison, teacher, distill, writer_notes) if cfg.defense.defenses else None
        if not self.main:  # helper processes of a multi-process launch only train
            return {}
        if self.cache.checking:
            return {}
        base_path = self.ctx.model(cfg.teacher.model, "teacher.model", cfg.teacher.revision)
        models = model_table(cfg, base_path, baseline, teacher, students, chains, defended, control, twins,
                             lambda spec: self.ctx.model(spec.model, "model", spec.revision), null,
                             dtype=self.ctx.dtype)
        evals = stage_eval(run, models, data)
        sampled = stage_samples(run, models, data) if cfg.eval.samples_per_prompt > 1 else {}
        probed = stage_probe(run, models, data) if cfg.eval.probe else {}
        judged = stage_judge(run, evals) if cfg.judge.evaluate else {}
        audits = stage_audit(run, models, data) if cfg.audit.audits else {}
        return write_report(run, data=data, poison=poison, distill=distill, models=models, evals=evals,
                            defended=defended, judged=judged, sampled=sampled, probed=probed, distills=distills,
                            audits=audits)

    def check_cache(self) -> str:
        """``--check``: walk the stages over the cache, computing, converting and writing nothing. Each cached
        artifact on the way is checked (StageError naming the stage and ``--force STAGE`` if it is damaged); the walk
        ends at the first thing a run would compute. Returns a note saying how far it got."""
        self.cache.checking, self.cache.run_dir, self.ctx.run_dir, self.ctx.create_models = True, None, None, False
        try:
            with self.ctx:
                self._run()
        except CacheMiss as e:
            done = len(self.cache.records)
            return f"cache: {done} cached artifact(s) checked; {e} and what follows it would be computed"
        return f"cache: every stage is cached ({len(self.cache.records)} artifacts checked)"

    def via(self) -> Any:
        """The student whose chain a cascade distils again (``cascade.via``, default the first)."""
        if not self.cfg.students:  # a teacher-only run
            return None
        return next(s for s in self.cfg.students if s.name == (self.cfg.cascade.via or self.cfg.students[0].name))

    def branch(self, arm: Arm, teacher: TeacherSource, **kw: Any) -> Branch:
        """The branch of ``arm`` with every student and the run's cascade (``cascade.generations`` of ``via``)."""
        return Branch(arm, teacher, tuple(self.cfg.students), generations=self.cfg.cascade.generations,
                      via=self.via(), **kw)

    def clean_students(self, clean_teacher: Optional[StageRecord],
                       data: StageRecord) -> dict[str, dict[int, StageRecord]]:
        """The control arm: every student distilled the same way from the clean control instead of the poisoned
        teacher (and, in a cascade, the clean chain distilled on from it): the controls a student's probe shift is
        measured against (``eval.student_controls``)."""
        if clean_teacher is None or not self.cfg.eval.student_controls:
            return {}
        return run_branch(self.stages, self.branch(Arm.control(), TeacherSource.given(clean_teacher)), data).chains
