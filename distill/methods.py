"""Distillation methods (plugins): hard-label SFT on the teacher's answers and logit KD (TRL GKD); QCRD lives in
``distill.qcrd``. Each is a ``distill.base.DistillMethod``: ``train(job)`` leaves a trained student in
``job.out_dir / "model"``, with the run's device and dtype from its context.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import Field

from distill.base import DistillJob, DistillMethod, load_teacher, usable
from distill import speed
from distill.trainers import (finetune, load_trainable, save_trained, speed_options, tokenizer_mismatch,
                              train_summary, trainer_args, weights_dtype)
from poison.ground.core.errors import TrainingError
from poison.ground.core.registry import PluginConfig, distill_method


class SFTDistillConfig(PluginConfig):
    min_response_words: int = Field(
        1, ge=0, description="Drop teacher answers with fewer words (0 keeps even empty answers)."
    )


@distill_method("sft", config=SFTDistillConfig, needs={"sft_batches"})
class HardLabelSFT(DistillMethod):
    """Hard-label distillation: the student is fine-tuned (TRL SFT) on the teacher's generated answers."""

    def train(self, job: DistillJob) -> dict[str, Any]:
        keep = [{"prompt": r["prompt"], "response": r["response"]}
                for r in usable(job.rows, self.cfg.min_response_words)]
        summary = finetune(job.student_base, keep, job.student, job.out_dir, dtype=self.ctx.dtype,
                           device=self.ctx.device)
        summary["dropped_empty"] = len(job.rows) - len(keep)
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


@distill_method("kd", config=KDConfig, needs={"shared_tokenizer"})
class LogitKD(DistillMethod):
    """Soft-label distillation: the student matches the teacher's next-token distributions (TRL GKD: KL/JSD mix,
    on-policy fraction lmbda). Teacher and student must share a tokenizer."""

    def train(self, job: DistillJob) -> dict[str, Any]:
        from datasets import Dataset
        from trl.experimental.gkd import GKDConfig

        student, student_base, teacher_model, rows = job.student, job.student_base, job.teacher_model, job.rows
        dtype, device = self.ctx.dtype, self.ctx.device
        why = tokenizer_mismatch(teacher_model, student_base)
        if why:
            raise TrainingError(f"logit distillation (kd) needs the teacher's tokenizer for the student: {why} "
                                f"(teacher {teacher_model}, student {student_base})")
        keep = usable(rows, self.cfg.min_response_words)
        out_dir = Path(job.out_dir)
        t0 = time.time()
        opts = speed_options(student, len(keep), dtype=dtype, device=device)
        model, tok, peft_config = load_trainable(student_base, student, dtype=dtype, device=device,
                                                 frozen=opts["frozen_weights"])
        tdtype = weights_dtype(dtype, device) if opts["frozen_weights"] == "float32" else model.dtype
        teacher = load_teacher(job, str(tdtype).split(".")[-1], run_dtype=dtype, device="cpu")
        ds = Dataset.from_list([{"messages": [{"role": "user", "content": r["prompt"]},
                                              {"role": "assistant", "content": r["response"]}]} for r in keep])
        c = self.cfg
        args = trainer_args(student, out_dir, dtype=dtype, device=device, total_rows=len(keep), cls=GKDConfig,
                            beta=c.beta, lmbda=c.lmbda, temperature=c.temperature, max_new_tokens=c.max_new_tokens,
                            seq_kd=c.seq_kd)
        trainer = self.make_trainer(job, model=model, teacher_model=teacher, args=args, train_dataset=ds,
                                    processing_class=tok, peft_config=peft_config)
        first = speed.prepare(trainer, opts)
        if opts["compile"]:
            speed.compile_backbone(trainer.teacher_model)
        t1 = time.time()
        result = trainer.train()
        train_s = time.time() - t1
        save_trained(trainer, student_base, student, out_dir, tok, dtype, device)
        return train_summary(trainer, result, student, len(keep), t0, train_s, dtype, device, out_dir,
                             dropped_empty=len(rows) - len(keep), speed=opts,
                             first_step_seconds=first.first_step_s, **self.extra_summary(trainer, out_dir))

    def make_trainer(self, job: DistillJob, **kw: Any) -> Any:
        """The GKD trainer of this method (a variant overrides only this and :meth:`extra_summary`); ``kw`` are
        TRL's arguments, the teacher already loaded in the student's dtype."""
        return gkd_trainer_cls()(**kw)

    def extra_summary(self, trainer: Any, out_dir: Path) -> dict[str, Any]:
        """What a variant adds to the training summary once trained (default: nothing)."""
        return {}


def gkd_trainer_cls():
    """TRL's ``GKDTrainer`` whose loss, with ``labelled_only`` on (``distill.speed``), computes the student's and the
    teacher's logits only at the positions that carry a label: the generalized JSD over the same positions, divided
    by the same count (TRL computes both over every position and keeps the labelled ones)."""
    import torch
    from trl.experimental.gkd import GKDTrainer

    class FastGKDTrainer(GKDTrainer):
        speed: dict[str, Any] = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not (self.speed.get("labelled_only") and not return_outputs and speed.plain_head(model)
                    and speed.plain_head(self.teacher_model)):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                     "labels": inputs["labels"]}
            self.teacher_model.eval()
            with self.accelerator.autocast():  # what accelerate wraps the models' own forwards in
                hidden, _, mask = speed.hidden_at_labels(model, batch)
                with torch.no_grad():
                    t_hidden, _, _ = speed.hidden_at_labels(self.teacher_model, batch)
                    t_logits = speed.labelled_logits(self.teacher_model, t_hidden)
                s_logits = speed.labelled_logits(model, hidden)
            # rows are positions already: no mask; "batchmean" divides by their number (= labelled tokens)
            return self.generalized_jsd_loss(student_logits=s_logits, teacher_logits=t_logits, labels=None,
                                             beta=self.beta, num_items_in_batch=num_items_in_batch)

    return FastGKDTrainer


