"""Distillation methods (plugins). Each gets the teacher, the held-out distillation prompts with the teacher's answers,
the student's spec and an output folder, and leaves a trained student in ``out_dir/model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from distill.trainers import finetune
from poison.registry import PluginConfig, distill_method


class SFTDistillConfig(PluginConfig):
    min_response_words: int = Field(
        1, ge=0, description="Drop teacher answers with fewer words (0 keeps even empty answers)."
    )


@distill_method("sft", config=SFTDistillConfig)
class HardLabelSFT:
    """Hard-label distillation: the student is fine-tuned (TRL SFT) on the teacher's generated answers."""

    #: what the method needs from the distill-data stage
    needs_teacher_generations = True

    def __init__(self, cfg: SFTDistillConfig):
        self.cfg = cfg

    def train(self, *, student: Any, student_base: Path, teacher_model: Path, rows: list[dict[str, Any]],
              out_dir: Path, dtype: str, device: str) -> dict[str, Any]:
        keep = [
            {"prompt": r["prompt"], "response": r["response"]}
            for r in rows
            if len((r.get("response") or "").split()) >= self.cfg.min_response_words
        ]
        if not keep:
            raise ValueError("the teacher produced no usable answers to distil from")
        summary = finetune(student_base, keep, student, out_dir, dtype=dtype, device=device)
        summary["dropped_empty"] = len(rows) - len(keep)
        return summary
