"""The table of a run's evaluated models: name -> role (baseline, control, teacher, student), folder, cache identity,
public base (what an audit compares it to), generation (0 = the teacher, 1 = its students, k = a cascade's k-th
distillation), its teacher, method, clean twin, defended places (and, for a ``defense.per_defense`` arm, its
defense)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from poison.ground.engines.models import model_identity
from poison.ground.results.model_id import Arm, ModelId
from poison.stages.engine import trained_fields
from poison.stages.protocol import StageRecord


def model_table(cfg: Any, base_path: Path, baseline: Optional[StageRecord], teacher: StageRecord,
                students: dict[str, StageRecord], chains: dict[str, dict[int, StageRecord]],
                defended: Optional[dict[str, Any]], control: Optional[StageRecord],
                twins: dict[str, dict[int, StageRecord]],
                resolve: Callable[[Any], Path], null_control: Optional[StageRecord] = None,
                dtype: str = "float32") -> dict[str, dict[str, Any]]:
    """``chains``: student name -> {generation: record} of the cascade (generation 1 is in ``students``);
    ``twins``: the same for the clean chains distilled from the clean control (the probe's controls);
    ``resolve(spec)``: the base model folder of a training spec (where its LoRA adapter applies); ``null_control``:
    the probe's second clean control at another seed (``poison.probe_null``); ``dtype``: the run's compute dtype (that
    of a LoRA model's derived merged folder)."""

    def _trained(rec: StageRecord, role: str, spec: Any, **extra: Any) -> dict[str, Any]:
        return {"role": role, **extra, "identity": {"stage": rec.key}, "base_model": spec.model,
                "base_revision": spec.revision, **trained_fields(rec.path, spec, resolve, dtype)}

    def student_entry(spec: Any, rec: StageRecord, role: str = "student", **extra: Any) -> dict[str, Any]:
        return _trained(rec, role, spec, method=spec.method, student=spec.name,
                        **({"distill_tasks": spec.distill_tasks} if spec.distill_tasks else {}), **extra)

    models: dict[str, dict[str, Any]] = {}
    if baseline is None:
        models["baseline"] = {"role": "baseline", "path": str(base_path), "identity": model_identity(base_path),
                              "kind": "base", "spec": cfg.teacher.model}
    else:
        models["baseline"] = _trained(baseline, "baseline", cfg.teacher, kind="clean_finetune")
    if control is not None:
        models["clean_control"] = _trained(control, "control", cfg.teacher, kind="clean_finetune",
                                           note="trained for the likelihood probe (baseline.kind is base)")
    if null_control is not None:
        models["null_control"] = _trained(null_control, "control", cfg.teacher, kind="clean_finetune",
                                          note="the probe's null: the clean fine-tune at another training seed")
    clean_teacher = ModelId.single("clean_control" if control is not None else "baseline")
    main_teacher = ModelId.teacher()
    models[str(main_teacher)] = _trained(teacher, "teacher", cfg.teacher, generation=0)
    by_name = {s.name: s for s in cfg.students}
    for s in cfg.students:
        models[str(ModelId.of_student(s.name))] = student_entry(s, students[s.name], generation=1)
    for name, chain in chains.items():
        for k, rec in sorted(chain.items()):
            if k > 1:
                models[str(ModelId.of_student(name, k))] = student_entry(
                    by_name[name], rec, generation=k, teacher=str(ModelId.of_student(name, k - 1)))
    control_arm = Arm.control()
    for name, chain in twins.items():
        for k, rec in sorted(chain.items()):
            twin_of = ModelId.of_student(name, k)
            models[str(twin_of.in_arm(control_arm))] = student_entry(
                by_name[name], rec, role="control", generation=k, twin_of=str(twin_of),
                teacher=str(clean_teacher if k == 1 else ModelId.of_student(name, k - 1, control_arm)))
    if defended:
        arm = Arm.defended()
        defended_teacher = str(ModelId.teacher(arm))
        if defended["teacher"] is not teacher:
            models[defended_teacher] = _trained(defended["teacher"], "teacher", cfg.teacher, defended=True,
                                                defended_places=["train"])
        for s in cfg.students:
            if s.name in defended["students"]:
                models[str(ModelId.of_student(s.name, arm=arm))] = student_entry(
                    s, defended["students"][s.name], defended=True, defended_places=list(cfg.defense.places),
                    teacher=defended_teacher if defended_teacher in models else str(main_teacher))
        for s in cfg.students:
            rec = defended["distill_only_students"].get(s.name)
            if rec is not None:
                models[str(ModelId.of_student(s.name, arm=Arm.distill_defended()))] = student_entry(
                    s, rec, defended=True, defended_places=["distill"], teacher=str(main_teacher))
        for label, branch in (defended.get("per_defense") or {}).items():  # defense.per_defense: each defense alone
            arm = Arm.per_defense(label)
            name = str(ModelId.teacher(arm))
            models[name] = _trained(branch["teacher"], "teacher", cfg.teacher, defended=True,
                                    defended_places=["train"], defense=label)
            for s in cfg.students:
                if s.name in branch["students"]:
                    models[str(ModelId.of_student(s.name, arm=arm))] = student_entry(
                        s, branch["students"][s.name], defended=True, defended_places=["train"], teacher=name,
                        defense=label)
    return models
