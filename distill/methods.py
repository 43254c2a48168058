"""Distillation methods (plugins). Each gets the teacher, the held-out distillation prompts with the teacher's answers,
the student's spec and an output folder, and leaves a trained student in ``out_dir/model``.

``train`` receives keyword arguments only: ``student`` (the StudentSpec: model, finetune, lora, train), ``student_base``
(resolved folder), ``teacher_model`` (the trained teacher's merged folder), ``rows`` (distillation prompts with the
teacher's greedy answer in ``response`` plus ``task``, ``answer``, ``utility``), ``out_dir``, ``dtype``, ``device`` and
``generate`` (a callable ``generate(model_path, prompts, n=, temperature=, max_new_tokens=, seed=) -> list[list[str]]``
backed by the run's generation backend, for methods that sample from the teacher). Methods ignore what they do not use.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field

from distill.trainers import (finetune, load_trainable, save_trained, tokenizer_mismatch, train_summary,
                              trainer_args, weights_dtype)
from poison.registry import PluginConfig, distill_method


class SFTDistillConfig(PluginConfig):
    min_response_words: int = Field(
        1, ge=0, description="Drop teacher answers with fewer words (0 keeps even empty answers)."
    )


def usable(rows: list[dict[str, Any]], min_words: int) -> list[dict[str, Any]]:
    keep = [r for r in rows if len((r.get("response") or "").split()) >= min_words]
    if not keep:
        raise ValueError("the teacher produced no usable answers to distil from")
    return keep


@distill_method("sft", config=SFTDistillConfig)
class HardLabelSFT:
    """Hard-label distillation: the student is fine-tuned (TRL SFT) on the teacher's generated answers."""

    needs_shared_tokenizer = False

    def __init__(self, cfg: SFTDistillConfig):
        self.cfg = cfg

    def train(self, *, student: Any, student_base: Path, rows: list[dict[str, Any]], out_dir: Path, dtype: str,
              device: str, **_: Any) -> dict[str, Any]:
        keep = [{"prompt": r["prompt"], "response": r["response"]} for r in usable(rows, self.cfg.min_response_words)]
        summary = finetune(student_base, keep, student, out_dir, dtype=dtype, device=device)
        summary["dropped_empty"] = len(rows) - len(keep)
        return summary


class KDConfig(PluginConfig):
    """Generalized knowledge distillation (Agarwal et al. 2024) as TRL's GKDTrainer implements it."""

    beta: float = Field(
        0.5, ge=0, le=1,
        description="Generalized JSD interpolation: 0 = forward KL(teacher || student), 1 = reverse KL, between = JSD.")
    lmbda: float = Field(
        0.5, ge=0, le=1,
        description="Fraction of steps trained on the student's own sampled answers (on-policy); the rest on the "
                    "teacher's answers to the distillation prompts.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature of on-policy generations.")
    max_new_tokens: int = Field(128, ge=1, description="Length of on-policy generations.")
    seq_kd: bool = Field(False, description="Off-policy steps train on fresh teacher samples (sequence-level KD).")
    min_response_words: int = Field(1, ge=0, description="Drop teacher answers with fewer words.")


@distill_method("kd", config=KDConfig)
class LogitKD:
    """Soft-label distillation: the student matches the teacher's next-token distributions (TRL GKD: KL/JSD mix,
    on-policy fraction lmbda). Teacher and student must share a tokenizer."""

    needs_shared_tokenizer = True

    def __init__(self, cfg: KDConfig):
        self.cfg = cfg

    def train(self, *, student: Any, student_base: Path, teacher_model: Path, rows: list[dict[str, Any]],
              out_dir: Path, dtype: str, device: str, **_: Any) -> dict[str, Any]:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        why = tokenizer_mismatch(teacher_model, student_base)
        if why:
            raise ValueError(f"logit distillation (kd) needs the teacher's tokenizer for the student: {why} "
                             f"(teacher {teacher_model}, student {student_base})")
        keep = usable(rows, self.cfg.min_response_words)
        out_dir = Path(out_dir)
        t0 = time.time()
        model, tok, peft_config = load_trainable(student_base, student, dtype=dtype, device=device)
        teacher = AutoModelForCausalLM.from_pretrained(teacher_model, dtype=weights_dtype(dtype, device))
        ds = Dataset.from_list([{"messages": [{"role": "user", "content": r["prompt"]},
                                              {"role": "assistant", "content": r["response"]}]} for r in keep])
        c = self.cfg
        args = trainer_args(student, out_dir, dtype=dtype, device=device, total_rows=len(keep), cls=GKDConfig,
                            beta=c.beta, lmbda=c.lmbda, temperature=c.temperature, max_new_tokens=c.max_new_tokens,
                            seq_kd=c.seq_kd)
        trainer = GKDTrainer(model=model, teacher_model=teacher, args=args, train_dataset=ds, processing_class=tok,
                             peft_config=peft_config)
        t1 = time.time()
        result = trainer.train()
        train_s = time.time() - t1
        save_trained(trainer, student_base, student, out_dir, tok, dtype, device)
        return train_summary(trainer, result, student, len(keep), t0, train_s, dtype, device, out_dir,
                             dropped_empty=len(rows) - len(keep))


# QCRD lives in its own module; importing it registers it.
from distill import qcrd as _qcrd  # noqa: E402,F401
