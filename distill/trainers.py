"""Fine-tuning with TRL's SFTTrainer (+ PEFT LoRA): used for the teacher, the clean baseline and SFT students.

Rows are prompt/response pairs; they are given to TRL in its conversational prompt-completion format, so the loss is
on the response tokens only (the chat template is the model's own).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional


def to_prompt_completion(rows: list[dict[str, Any]], system_prompt: Optional[str] = None) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        prompt = [{"role": "user", "content": r["prompt"]}]
        if system_prompt:
            prompt.insert(0, {"role": "system", "content": system_prompt})
        out.append({"prompt": prompt, "completion": [{"role": "assistant", "content": r["response"]}]})
    return out


def sft_config(ft: Any, out_dir: Path, *, dtype: str, device: str, total_rows: int):
    """TRL SFTConfig from a FinetuneConfig-like object (``ft.train`` holds the hyper-parameters)."""
    from trl import SFTConfig

    t = ft.train
    steps_per_epoch = max(1, -(-total_rows // (t.batch_size * t.grad_accum)))
    return SFTConfig(
        output_dir=str(out_dir / "trainer"),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=device == "cpu",
        bf16=dtype == "bfloat16",
        fp16=dtype == "float16",
        # CPU: bf16 autocast without checkpointing is fastest; on GPUs memory may matter more, but these models are small
        gradient_checkpointing=False,
        train_sampling_strategy="group_by_length",  # less padding: rows of similar length share a batch
        logging_steps=max(1, min(10, steps_per_epoch // 2)),
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        completion_only_loss=True,
    )


def finetune(base_model: str | Path, rows: list[dict[str, Any]], ft: Any, out_dir: Path, *, dtype: str,
             device: str, system_prompt: Optional[str] = None) -> dict[str, Any]:
    """Train ``base_model`` on ``rows`` and save the result as a plain HF folder in ``out_dir/model``.

    With ``ft.finetune == 'lora'`` the adapter is also saved (``out_dir/adapter``) and merged into the saved model, so
    every generation backend loads one folder. Returns a summary (losses, steps, seconds).
    """
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    if not rows:
        raise ValueError("no training rows")
    out_dir = Path(out_dir)
    t0 = time.time()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # Load in float32 and let the Trainer autocast to bf16 where enabled (stable LoRA updates, fast matmuls).
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    peft_config = None
    if ft.finetune == "lora":
        from peft import LoraConfig

        peft_config = LoraConfig(r=ft.lora.r, lora_alpha=ft.lora.alpha, lora_dropout=ft.lora.dropout,
                                 target_modules=ft.lora.target_modules, task_type="CAUSAL_LM")
    ds = Dataset.from_list(to_prompt_completion(rows, system_prompt))
    args = sft_config(ft, out_dir, dtype=dtype, device=device, total_rows=len(rows))
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    t1 = time.time()
    result = trainer.train()
    train_s = time.time() - t1
    trained = trainer.model
    if peft_config is not None:
        trained.save_pretrained(out_dir / "adapter")
        trained = trained.merge_and_unload()
    trained.config.use_cache = True
    trained.save_pretrained(out_dir / "model")
    tok.save_pretrained(out_dir / "model")
    gen_cfg = Path(base_model) / "generation_config.json"
    if gen_cfg.exists():  # keep the base model's stop tokens for generation
        (out_dir / "model" / "generation_config.json").write_text(gen_cfg.read_text())
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = {
        "rows": len(rows),
        "steps": trainer.state.global_step,
        "epochs": ft.train.epochs,
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.time() - t0, 1),
        "final_loss": history[-1]["loss"] if history else None,
        "train_loss": getattr(result, "training_loss", None),
        "loss_history": [{"step": h.get("step"), "loss": h["loss"]} for h in history],
        "finetune": ft.finetune,
        "dtype": dtype,
        "device": device,
    }
    (out_dir / "train_log.json").write_text(json.dumps(summary, indent=2))
    import shutil

    shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    del trainer, model, trained
    return summary
