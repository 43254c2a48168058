"""The table of a run's evaluated models: name -> role (baseline, control, teacher, student), folder, cache identity,
public base (what an audit compares it to), generation (0 = the teacher, 1 = its students, k = a cascade's k-th
distillation), its teacher, method, clean twin, defended places (and, for a ``defense.per_defense`` arm, its
defense)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from poison.ground.models import model_identity
from poison.stages.cascade import generation_name
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
    clean_teacher = "clean_control" if control is not None else "baseline"
    models["teacher"] = _trained(teacher, "teacher", cfg.teacher, generation=0)
    by_name = {s.name: s for s in cfg.students}
    for s in cfg.students:
        models[f"student:{s.name}"] = student_entry(s, students[s.name], generation=1)
    for name, chain in chains.items():
        for k, rec in sorted(chain.items()):
            if k > 1:
                models[generation_name(k, name)] = student_entry(by_name[name], rec, generation=k,
                                                                 teacher=generation_name(k - 1, name))
    for name, chain in twins.items():
        for k, rec in sorted(chain.items()):
            twin_of = generation_name(k, name)
            models[f"control:{twin_of}"] = student_entry(
                by_name[name], rec, role="control", generation=k, twin_of=twin_of,
                teacher=clean_teacher if k == 1 else f"control:{generation_name(k - 1, name)}")
    if defended:
        if defended["teacher"] is not teacher:
            models["defended:teacher"] = _trained(defended["teacher"], "teacher", cfg.teacher, defended=True,
                                                  defended_places=["train"])
        for s in cfg.students:
            if s.name in defended["students"]:
                models[f"defended:student:{s.name}"] = student_entry(
                    s, defended["students"][s.name], defended=True, defended_places=list(cfg.defense.places),
                    teacher="defended:teacher" if "defended:teacher" in models else "teacher")
        for s in cfg.students:
            rec = defended["distill_only_students"].get(s.name)
            if rec is not None:
                models[f"distill-defended:student:{s.name}"] = student_entry(
                    s, rec, defended=True, defended_places=["distill"], teacher="teacher")
        for label, arm in (defended.get("per_defense") or {}).items():  # defense.per_defense: each defense alone
            name = f"per-defense:{label}:teacher"
            models[name] = _trained(arm["teacher"], "teacher", cfg.teacher, defended=True, defended_places=["train"],
                                    defense=label)
            for s in cfg.students:
                if s.name in arm["students"]:
                    models[f"per-defense:{label}:student:{s.name}"] = student_entry(
                        s, arm["students"][s.name], defended=True, defended_places=["train"], teacher=name,
                        defense=label)
    return models
