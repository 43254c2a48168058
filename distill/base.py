"""The distillation-method interface.

A method is a plugin (``@poison.ground.core.registry.distill_method``) built as ``Method(cfg, ctx)``: ``cfg`` its
validated arguments, ``ctx`` the run's :class:`~poison.ground.engines.context.RunContext` (device, dtype, and
``ctx.sample`` for methods that sample from the teacher). The student stage calls ``train(job)`` once; the report
calls ``bias_diagnostics(out_dir)`` to learn which texts of the method's own making to score for the bias.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from poison.ground.core.artifacts import check_model_folder
from poison.ground.core.errors import TrainingError
from poison.ground.engines.context import RunContext
from poison.ground.engines.merged import adapter_only, load_merged, merge_dtype


@dataclass
class DistillJob:
    """One student to train.

    student        the StudentSpec (model, finetune, lora, qlora, train settings, name)
    student_base   the student's base model, resolved to a local folder
    teacher_model  a folder with the trained teacher's weights and tokenizer, loaded in the run's dtype (a LoRA
                   teacher's derived merged folder, in the run's compute dtype; a full fine-tune's own folder)
    rows           the distillation prompts with the teacher's greedy answer in ``response`` (plus ``task``,
                   ``answer``, ``utility``, ``id``)
    out_dir        the stage's folder: the trained student goes there (``distill.trainers.save_trained``)
    teacher_adapter, teacher_base, teacher_artifact
                   a LoRA teacher's adapter, the base it applies to, and its stage folder (None: a folder of its
                   own); :func:`load_teacher` merges them in memory in any dtype
    control_model, control_base, control_artifact
                   the teacher's clean control (the same fine-tune on the clean set), the same way, for a method
                   that declares ``needs={"clean_control"}``; None when the run has none for this teacher (a
                   cascade's later generation, or a student of the clean control itself); :func:`load_control`
    """

    student: Any
    student_base: Path
    teacher_model: Path
    rows: list[dict[str, Any]]
    out_dir: Path
    teacher_adapter: Optional[Path] = None
    teacher_base: Optional[Path] = None
    teacher_artifact: Optional[Path] = None
    control_model: Optional[Path] = None
    control_base: Optional[Path] = None
    control_artifact: Optional[Path] = None


def load_teacher(job: DistillJob, dtype: str, *, run_dtype: str, device: str) -> Any:
    """The teacher model in ``dtype`` (float32, bfloat16, float16) on ``device``. A LoRA teacher: its adapter merged in
    memory into its base held as the run trained it (``merge_dtype(run_dtype, device)``), then rounded to ``dtype``;
    a float32 teacher thus has the float32 merge, whatever dtype its merged folder was written in. Else
    ``job.teacher_model`` loaded in ``dtype``."""
    if job.teacher_artifact is not None and job.teacher_base is not None and adapter_only(job.teacher_artifact):
        return load_merged(job.teacher_artifact, job.teacher_base, dtype=dtype,
                           merge_in=merge_dtype(run_dtype, device), device=device)
    import torch
    from transformers import AutoModelForCausalLM

    check_model_folder(job.teacher_model, "teacher model")
    return AutoModelForCausalLM.from_pretrained(job.teacher_model, dtype=getattr(torch, dtype))


def load_control(job: DistillJob, dtype: str, *, run_dtype: str, device: str) -> Any:
    """The teacher's clean control, loaded as :func:`load_teacher` loads the teacher (None when the job has none)."""
    if job.control_model is None:
        return None
    return load_teacher(replace(job, teacher_model=job.control_model, teacher_base=job.control_base,
                                teacher_artifact=job.control_artifact), dtype, run_dtype=run_dtype, device=device)


class DistillMethod:
    """Base class of distillation methods."""

    def __init__(self, cfg: Any, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    def train(self, job: DistillJob) -> dict[str, Any]:
        """Train the student into ``job.out_dir`` (LoRA / QLoRA: ``adapter/`` + ``tokenizer/``; a full fine-tune:
        ``model/``, the layout ``distill.trainers.save_trained`` writes); return a JSON-safe summary (losses, steps,
        seconds)."""
        raise NotImplementedError

    def bias_diagnostics(self, out_dir: Path) -> dict[str, list[str]]:
        """Groups of texts the method produced or chose while training (read from its stage folder ``out_dir``),
        whose bias rate the report measures with the bias type's detector. Default: none."""
        return {}


def usable(rows: list[dict[str, Any]], min_words: int) -> list[dict[str, Any]]:
    """The rows whose teacher answer has at least ``min_words`` words (TrainingError if none has)."""
    keep = [r for r in rows if len((r.get("response") or "").split()) >= min_words]
    if not keep:
        raise TrainingError("the teacher produced no usable answers to distil from")
    return keep
