"""The training stages: ``poison`` (the adversary injects biased samples into the teacher's set), ``teacher``
(fine-tuned on it), ``baseline`` (the clean control: the same fine-tune on the clean set), ``distill_data`` (the
teacher answers the held-out distillation prompts) and ``student`` (one per configured distillation method)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

from distill.base import DistillJob
from distill.trainers import finetune
from poison.ground.core import registry
from poison.ground.core.artifacts import read_json, read_parquet
from poison.ground.core.io import atomic_write_json, atomic_write_parquet
from poison.ground.engines.generate import GenJob
from poison.ground.engines.models import model_identity
from poison.ground.results.model_id import MAIN, Arm, ModelId, distill_label
from poison.stages import Run
from poison.stages.adaptive import adaptive_inputs, make_chooser
from poison.stages.data import generate_with, generator_identity, stage_trusted
from poison.stages.inject import inject
from poison.stages.engine import engine_target, ready, trained_entry
from poison.stages.plugins import plugin_entries
from poison.stages.protocol import StageRecord, StageSpec, stage

log = logging.getLogger("poison")


#: settings added after the first version, left out of the key at the value that behaves as before (so adding them
#: kept existing caches valid)
NEUTRAL = {"revision": None, "distill_tasks": None}
#: packing None: padding-free batches, the padded batches' loss; the attention kernel: the same maths
TRAIN_NEUTRAL = {"packing": None, "extra": {}, "attn_implementation": None}
#: how fast a model trains, never what it learns (distill.speed): never in a key
TRAIN_SPEED = ("labelled_only", "compile", "frozen_weights")

POISON = stage("poison", 1, ("data", "poison", "target_task"),
               doc="the teacher's training set: the clean training rows with N of them turned into poisoned ones")
TEACHER = stage("teacher", 1, ("base", "finetune", "dtype", "device"), training=True,
                doc="the teacher: its base model fine-tuned on the (poisoned or defended) training set")
BASELINE = stage("baseline", 1, ("base", "finetune", "dtype", "device"), training=True,
                 doc="a model fine-tuned on the clean training set (the clean control, the null control)")
DISTILL_DATA = stage("distill_data", 1, ("teacher", "data", "generation"),
                     doc="the teacher's answers to the distillation prompts (greedy or sampled)")
STUDENT = stage("student", 1, ("distill", "teacher", "student", "base", "dtype", "device"), training=True,
                doc="a student distilled from the teacher's answers (or logits) by its method")


def finetune_key(ft: Any) -> dict[str, Any]:
    """The training settings that define a trained model (QLoRA settings only count when QLoRA is used; a student's
    own distillation generation counts through its distillation stage's key; the experiment tracker does not
    change the model)."""
    d = ft.model_dump(mode="json")
    if d.get("finetune") != "qlora":
        d.pop("qlora", None)
    d.pop("distill_generation", None)
    for k, v in NEUTRAL.items():
        if k in d and d[k] == v:
            del d[k]
    train = d["train"]
    train.pop("report_to", None)
    for k in TRAIN_SPEED:
        train.pop(k, None)
    for k, v in TRAIN_NEUTRAL.items():
        if k in train and train[k] == v:
            del train[k]
    return d


def removed_ids(defense: Optional[StageRecord], only: Optional[str] = None) -> set[str]:
    """Ids of the rows a defense stage flagged for removal (empty without a defense); with ``only`` (a defense's
    label), the rows that defense alone flagged (its ``flagged`` rows in scores.parquet), whatever the filter."""
    if defense is None:
        return set()
    if only is not None:
        df = read_parquet(Path(defense.path) / "scores.parquet")
        return set(df.row_id[(df.defense == only) & df.flagged.astype(bool)].astype(str))
    return set(read_json(Path(defense.path) / "removed.json"))


def rewriter_config(run: Run):
    """The generator that rewrites poisoned answers for ``poison.writer: llm`` (default: the data generator's model
    with room for a longer answer)."""
    p = run.cfg.poison
    if p.rewriter is not None:
        return p.rewriter
    gen = run.cfg.data.generator.model_copy(deep=True)
    gen.generation.max_new_tokens = 192
    return gen


def stage_poison(run: Run, data: StageRecord) -> StageRecord:
    cfg, bias = run.cfg, run.bias
    adaptive = cfg.poison.writer == "adaptive"
    unkeyed = {"rewriter": {"timeout", "max_retries"}, **({} if adaptive else {"adaptive": True})}
    inputs = {"data": data.key, "poison": cfg.poison.model_dump(mode="json", exclude=unkeyed),
              "target_task": cfg.data.target_task, **plugin_entries(run, [("bias_type", cfg.poison.bias.type)])}
    if cfg.poison.writer == "llm":
        inputs["rewriter"] = generator_identity(run, rewriter_config(run))
    chooser = None
    if adaptive:  # the attacker fits the defenses it knows on what the defender fits them on
        trusted = stage_trusted(run, data)
        inputs.update(adaptive_inputs(run, trusted, rewriter_config(run)))
        chooser = make_chooser(run, trusted, rewriter_config(run))

    def rewrite(rows: list[dict]) -> list[Optional[str]]:
        log.info("LLM writer rewrites %d poisoned samples", len(rows))
        texts = generate_with(run, rewriter_config(run), [bias.rewrite_messages(r) for r in rows], "rewriter",
                              field="poison.rewriter")
        return [bias.accept_rewrite(r, t) for r, t in zip(rows, texts)]

    def build(out: Path) -> dict[str, Any]:
        df = read_parquet(Path(data.path) / "rows.parquet")
        p = cfg.poison
        out_df, report = inject(df[df.split == "train"], bias, mode=p.mode, target_task=cfg.data.target_task,
                                count=p.count, rate=p.rate, seed=p.seed,
                                rewriter=rewrite if p.writer == "llm" else None, chooser=chooser)
        report["bias"] = bias.plugin_record
        if chooser is not None:
            report["adaptive"] = chooser.report
        if "warning" in report:
            log.warning(report["warning"])
        atomic_write_parquet(out / "train.parquet", out_df)
        atomic_write_json(out / "poison.json", report)
        return report

    return run.cache.run(POISON, inputs, build)


def _train_stage(run: Run, stage: StageSpec, base_spec: str, ft: Any, rows_fn: Callable[[], list[dict]],
                 upstream: dict[str, Any], field_name: str, label: Optional[str] = None) -> StageRecord:
    ctx = run.ctx
    base = ctx.model(base_spec, field_name, ft.revision)
    inputs = {**upstream, "base": model_identity(base), "finetune": finetune_key(ft), "dtype": ctx.dtype,
              "device": ctx.device}

    def build(out: Path):
        return finetune(base, rows_fn(), ft, out, dtype=ctx.dtype, device=ctx.device)

    return run.cache.run(stage, inputs, build, label=label or stage.name)


def clean_rows(data: StageRecord) -> list[dict]:
    """The clean training set's (prompt, response) records, in order."""
    df = read_parquet(Path(data.path) / "rows.parquet")
    return df[df.split == "train"][["prompt", "response"]].to_dict("records")


def stage_teacher(run: Run, poison: StageRecord, defense: Optional[StageRecord] = None,
                  data: Optional[StageRecord] = None, only: Optional[str] = None) -> StageRecord:
    """The teacher on the poisoned set; with ``defense``, on what is left once its flagged rows are removed (with
    ``only``, a defense's label: the rows that defense alone flagged; ``defense.per_defense``).

    A teacher whose rows are exactly the clean set's (``poison.count: 0``, a sweep's clean-dose point) is the clean
    control's fine-tune, so with ``data`` given it is that artifact (``baseline``, trained once for both), and what
    is distilled and evaluated from it is shared with the control's branch too."""
    removed = removed_ids(defense, only)

    def rows():
        df = read_parquet(Path(poison.path) / "train.parquet")
        df = df[~df.id.astype(str).isin(removed)]
        return df[["prompt", "response"]].to_dict("records")

    if defense is None and data is not None and poison.info.get("injected") == 0 and rows() == clean_rows(data):
        log.info("[teacher] no row is poisoned: the teacher is the clean fine-tune (stage baseline)")
        return stage_baseline(run, data, label=str(ModelId.teacher()))
    upstream = {"poison": poison.key, **({"defense": defense.key} if defense else {}),
                **({"only": only} if only is not None else {})}
    arm = (Arm.per_defense(only) if only is not None else Arm.defended()) if defense else MAIN
    return _train_stage(run, TEACHER, run.cfg.teacher.model, run.cfg.teacher, rows, upstream, "teacher.model",
                        label=str(ModelId.teacher(arm)))


def stage_baseline(run: Run, data: StageRecord, label: Optional[str] = None) -> Optional[StageRecord]:
    """The clean control: the teacher's fine-tune on the clean set, when ``baseline.kind`` is ``clean_finetune`` (or
    when ``label`` asks for it anyway: the likelihood probe's control, ``clean_control``; or ``teacher``, a teacher
    whose rows are the clean set's)."""
    if run.cfg.baseline.kind == "base" and label is None:
        return None
    return _train_stage(run, BASELINE, run.cfg.teacher.model, run.cfg.teacher, lambda: clean_rows(data),
                        {"data": data.key}, "teacher.model", label=label)


def stage_null_control(run: Run, data: StageRecord) -> StageRecord:
    """The probe's null: the clean control's fine-tune again at its training seed + 1 (``eval.probe_null``). In a
    replicated run whose replicates vary only the training seed, it is the next replicate's clean control (one
    artifact, trained once)."""
    ft = run.cfg.teacher
    ft = ft.model_copy(update={"train": ft.train.model_copy(update={"seed": ft.train.seed + 1})})
    return _train_stage(run, BASELINE, ft.model, ft, lambda: clean_rows(data), {"data": data.key}, "teacher.model",
                        label=str(ModelId.single("null_control")))


def stage_distill_data(run: Run, teacher: StageRecord, data: StageRecord, arm: Arm = MAIN, generation: int = 1,
                       student: Optional[str] = None, sampling: Any = None, teacher_spec: Any = None) -> StageRecord:
    """The teacher's answers to the distillation prompts that the students of ``arm`` at ``generation`` learn from
    (with ``student``: that student's own set, answered with its ``sampling``; default the distill section's
    generation settings); ``teacher_spec``: the training spec of the answering model, default the run's teacher; a
    cascade's student). The label is :func:`~poison.ground.results.model_id.distill_label`."""
    g = sampling or run.cfg.distill.generation
    entry = trained_entry(run, teacher.path, teacher_spec or run.cfg.teacher)
    path, adapter, engine = engine_target(run, entry)
    inputs = {"teacher": teacher.key, "data": data.key, "generation": g.model_dump(), **run.ctx.backend_identity(),
              **engine}

    def build(out: Path):
        df = read_parquet(Path(data.path) / "rows.parquet")
        d = df[df.split == "distill"].reset_index(drop=True)
        job = GenJob("teacher:distill", ready(run, entry, path), [[{"role": "user", "content": p}] for p in d.prompt],
                     g.max_new_tokens, g.temperature, g.top_p, 1, g.seed, adapter=adapter)
        res = run.ctx.generate([job])[0]
        d = d.assign(response=[t[0].strip() for t in res.texts], finish_reason=[f[0] for f in res.finish_reasons()])
        atomic_write_parquet(out / "distill.parquet", d)
        return {"rows": len(d), "new_tokens": res.new_tokens, "gen_seconds": round(res.seconds, 1)}

    return run.cache.run(DISTILL_DATA, inputs, build, label=distill_label(arm, generation, student))


def student_distill(run: Run, spec: Any, teacher: StageRecord, data: StageRecord, shared: StageRecord,
                    arm: Arm = MAIN, generation: int = 1, teacher_spec: Any = None) -> StageRecord:
    """The distillation set a student (of ``arm`` at ``generation``) learns from: ``shared`` (the teacher's answers
    with the distill section's settings), or the teacher's answers with the student's own ``distill_generation``."""
    if spec.distill_generation is None:
        return shared
    return stage_distill_data(run, teacher, data, arm, generation, student=spec.name,
                              sampling=spec.distill_generation, teacher_spec=teacher_spec)


def clean_control_of(run: Run, spec: Any, teacher: StageRecord, teacher_spec: Any = None) -> Optional[StageRecord]:
    """The clean control a student of ``spec`` compares its teacher with: the run's (``run.clean_control``) when the
    method declares ``needs={"clean_control"}`` and the teacher is the run's teacher trained as the run trains it
    (not a cascade's student, not the clean control itself); else None."""
    ctrl = run.clean_control
    if ctrl is None or teacher_spec is not None or teacher.key == ctrl.key:
        return None
    return ctrl if registry.needs("distill_method", spec.method, "clean_control") else None


def control_fields(run: Run, control: Optional[StageRecord]) -> dict[str, Any]:
    """The DistillJob fields that hand a method the clean control (none without one)."""
    if control is None:
        return {}
    entry = trained_entry(run, control.path, run.cfg.teacher)
    return {"control_model": Path(ready(run, entry)), "control_base": entry.get("adapter_base"),
            "control_artifact": Path(control.path)}


def build_method(run: Run, spec: Any) -> Any:
    """The distillation method plugin of a student spec, built with the run's context."""
    i = run.cfg.students.index(spec)
    return registry.get("distill_method", spec.method).build(spec.args, f"students.{i}.args", run.ctx)


def stage_student(run: Run, spec: Any, teacher: StageRecord, distill: StageRecord,
                  defense: Optional[StageRecord] = None, arm: Arm = MAIN, generation: int = 1,
                  teacher_spec: Any = None) -> StageRecord:
    """One student of ``spec`` distilled from ``teacher`` (trained as ``teacher_spec``: default the run's teacher; a
    cascade's student) on ``distill``; its label is its model name in ``arm`` at ``generation``."""
    ctx = run.ctx
    method = build_method(run, spec)
    base = ctx.model(spec.model, f"students.{run.cfg.students.index(spec)}.model", spec.revision)
    inputs = {"distill": distill.key, "teacher": teacher.key, "student": finetune_key(spec),
              "base": model_identity(base), "dtype": ctx.dtype, "device": ctx.device,
              **({"defense": defense.key} if defense else {}),
              **plugin_entries(run, [("distill_method", spec.method)])}
    removed = removed_ids(defense)
    control = clean_control_of(run, spec, teacher, teacher_spec)
    if control is not None:
        inputs["control"] = control.key

    def build(out: Path):
        d = read_parquet(Path(distill.path) / "distill.parquet")
        d = d[~d.id.astype(str).isin(removed)]
        if spec.distill_tasks is not None:  # only the prompts of these task families (the subliminal channel)
            d = d[d.task.isin(spec.distill_tasks)]
        rows = d.to_dict("records")
        entry = trained_entry(run, teacher.path, teacher_spec or run.cfg.teacher)
        info = method.train(DistillJob(student=spec, student_base=base, teacher_model=Path(ready(run, entry)),
                                       rows=rows, out_dir=out, teacher_adapter=entry.get("adapter"),
                                       teacher_base=entry.get("adapter_base"),
                                       teacher_artifact=Path(teacher.path), **control_fields(run, control)))
        info["method"] = method.plugin_record
        return info

    return run.cache.run(STUDENT, inputs, build, label=str(ModelId.of_student(spec.name, generation, arm)))
