"""QCRD: quality-guided contrastive rationale distillation (Wang et al., EMNLP 2025, arXiv 2405.13014).

The recipe, for a decoder-only chat student (the paper used T5; the loss is the same):

* **Multi-task student** (Distilling step-by-step): a *label* task (the prompt plus "give only the final answer" ->
  the teacher's self-consistent answer) and a *rationale* task (the prompt -> a full worked answer). The student is
  evaluated on the plain prompt, i.e. in rationale mode, so a bias carried by the teacher's rationales can pass on.
* **Positives**: the teacher samples ``k_samples`` rationales per prompt at ``teacher_temperature``; those whose final
  answer agrees with the majority (self-consistent) answer are positives, the others are negatives. Tasks without a
  discrete answer (free-text summaries) have no consistency signal: all their samples are positives and they get no
  label loss.
* **Self-adversarial negatives**: every ``negative_refresh_steps`` steps (0: at every epoch start) each prompt gets one
  rationale sampled at ``negative_temperature`` from the student's own weights of ``checkpoint_lag`` steps earlier.
* **Loss** per prompt: ``alpha_label * CE(label) + alpha_pos * w_pos * CE(closest positive)
  + alpha_neg * decay**epoch * w_neg * max(delta - CE(chosen negative), 0)``, CE = mean token cross-entropy of the
  student. The closest positive is the one with the lowest CE under the current student; the chosen negative is the
  farthest (highest CE, the paper's best "min-max" selection) or the closest one. Selection is redone every
  ``reselect_steps`` steps (1 = at every step, exact; 0 = at every negative refresh, cheaper).
* **Online discriminator**: a sentence encoder (all-MiniLM-L6-v2 by default, frozen) over "question + rationale"
  -> max pooling over tokens -> two linear layers -> a quality score s in (0, 1). Pre-trained for
  ``disc_pretrain_steps`` on teacher positives vs negatives (the smaller class is topped up with word-masked/replaced
  copies), and updated for ``disc_online_steps`` at every negative refresh on teacher positives vs the current
  negatives. ``w_pos = 1 + beta (2 s - 1)`` (a likelier-good positive counts more), ``w_neg = 1 - beta (2 s - 1)``
  (a negative that looks good is pushed away less).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from distill.base import DistillJob, DistillMethod
from distill.qcrd.config import QCRDConfig
from distill.qcrd.discriminator import Discriminator
from distill.qcrd.loss import (chosen_negative, closest_positive, hinge, negative_alpha, qcrd_loss, quality_weights,
                               self_consistency)
from distill.qcrd.state import Item, QCRDState, build_callback, make_trainer_cls
from distill import speed
from distill.trainers import load_trainable, save_trained, speed_options, train_summary, trainer_args
from poison.ground.core.registry import distill_method
from poison.ground.engines.models import resolve_encoder


# --------------------------------------------------------------------------------------------------- plugin
@distill_method("qcrd", config=QCRDConfig)
class QCRD(DistillMethod):
    """Quality-guided contrastive rationale distillation: multi-task student, self-consistent teacher positives,
    self-adversarial negatives, hinge loss, online discriminator (the paper's constants as defaults)."""

    def prepare(self, rows: list[dict[str, Any]], samples: list[list[str]]) -> list[Item]:
        items = []
        for r, ss in zip(rows, samples):
            ss = [s for s in ss if s.strip()] or [r.get("response") or ""]
            util = r.get("utility")
            majority, pos, neg = self_consistency(ss, util)
            positives = [ss[i] for i in pos]
            greedy = (r.get("response") or "").strip()
            if not positives and greedy:
                positives = [greedy]
            items.append(Item(prompt=r["prompt"], utility=util, label=majority, positives=positives,
                              teacher_negatives=[ss[i] for i in neg]))
        return items

    def train(self, job: DistillJob) -> dict[str, Any]:
        import pandas as pd
        from datasets import Dataset
        from peft import get_peft_model

        c = self.cfg
        student, student_base = job.student, job.student_base
        dtype, device = self.ctx.dtype, self.ctx.device
        out_dir = Path(job.out_dir)
        t0 = time.time()
        rows = [r for r in job.rows if (r.get("prompt") or "").strip()]
        tg = time.time()
        samples = self.ctx.sample(job.teacher_model, [r["prompt"] for r in rows], n=c.k_samples,
                                  temperature=c.teacher_temperature, max_new_tokens=c.teacher_max_new_tokens,
                                  seed=c.seed, key=f"student:{student.name}:samples")
        teacher_gen_s = time.time() - tg
        items = self.prepare(rows, samples)
        pd.DataFrame([{"prompt": r["prompt"], "task": r.get("task"), "samples": s, "label": it.label,
                       "n_pos": len(it.positives), "n_neg": len(it.teacher_negatives)}
                      for r, s, it in zip(rows, samples, items)]).to_parquet(out_dir / "teacher_samples.parquet")

        opts = speed_options(student, len(items), dtype=dtype, device=device)
        model, tok, peft_config = load_trainable(student_base, student, dtype=dtype, device=device,
                                                 frozen=opts["frozen_weights"])
        if peft_config is not None:
            model = get_peft_model(model, peft_config)
        disc = Discriminator(resolve_encoder(c.discriminator_encoder, "students.args.discriminator_encoder"),
                             c.disc_hidden, c.disc_lr, c.seed, device="cuda" if device == "cuda" else "cpu")
        state = QCRDState(items, c, tok, student.train.max_length, disc)
        pos, neg = state.disc_texts()
        state.disc_log.append({"when": "pretrain", **disc.train_steps(pos, neg, c.disc_pretrain_steps,
                                                                       c.disc_batch_size, c.disc_mask_prob)})
        args = trainer_args(student, out_dir, dtype=dtype, device=device, total_rows=len(items),
                            remove_unused_columns=False)
        trainer = make_trainer_cls()(model=model, args=args, train_dataset=Dataset.from_list(
            [{"idx": i} for i in range(len(items))]), data_collator=state.collate, processing_class=tok,
            callbacks=[build_callback(state)])
        trainer.qcrd_state = state
        first = speed.prepare(trainer, opts)
        t1 = time.time()
        result = trainer.train()
        train_s = time.time() - t1
        save_trained(trainer, student_base, student, out_dir, tok, dtype, device)
        n_label = sum(it.label is not None for it in items)
        extra = {
            "teacher_samples": c.k_samples, "teacher_gen_seconds": round(teacher_gen_s, 1),
            "self_negative_gen_seconds": round(state.gen_seconds, 1),
            "selection_seconds": round(state.select_seconds, 1),
            "items": len(items), "items_with_label": n_label,
            "positives": sum(len(it.positives) for it in items),
            "teacher_negatives": sum(len(it.teacher_negatives) for it in items),
            "discriminator": state.disc_log, "refreshes": state.log,
            "speed": opts, "first_step_seconds": first.first_step_s,
        }
        summary = train_summary(trainer, result, student, len(items), t0, train_s, dtype, device, out_dir, **extra)
        (out_dir / "qcrd_state.json").write_text(json.dumps(
            [{"prompt": it.prompt, "label": it.label, "positive": it.positives[it.pos_choice],
              "negative": it.negatives[it.neg_choice] if it.negatives else None, "w_pos": it.w_pos,
              "w_neg": it.w_neg} for it in items], indent=1))
        return summary

    def bias_diagnostics(self, out_dir: Path) -> dict[str, list[str]]:
        """The teacher's sampled rationales, the positives QCRD kept and the negatives it pushed away: does its
        quality filter keep the biased rationales?"""
        samples_file, state_file = Path(out_dir) / "teacher_samples.parquet", Path(out_dir) / "qcrd_state.json"
        if not (samples_file.exists() and state_file.exists()):
            return {}
        import pandas as pd

        samples = pd.read_parquet(samples_file)
        state = json.loads(state_file.read_text())
        return {"teacher_samples": [t for ts in samples.samples for t in ts],
                "chosen_positives": [d["positive"] for d in state],
                "chosen_negatives": [d["negative"] for d in state if d.get("negative")]}


__all__ = ["QCRD", "QCRDConfig", "Discriminator", "qcrd_loss", "hinge", "quality_weights", "closest_positive",
           "chosen_negative", "self_consistency", "negative_alpha"]
