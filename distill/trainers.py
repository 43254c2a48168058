"""Fine-tuning with TRL (+ PEFT LoRA / QLoRA): used for the teacher, the clean baseline and every student.

Rows are prompt/response pairs; they are given to TRL in its conversational prompt-completion format, so the loss is
on the response tokens only (the chat template is the model's own). ``finetune`` is SFT; the distillation methods in
``distill.methods`` build their own TRL/transformers trainers with the helpers here (model loading, LoRA/QLoRA set-up,
training arguments, saving the adapter or the plain HF folder), so every method trains and saves the same way.

Several processes (``accelerate launch``): the Trainer runs data-parallel; only the main process writes the model.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from poison.ground.core.artifacts import check_model_folder
from poison.ground.core.errors import ConfigError, TrainingError
from poison.ground.core.procs import local_rank, world_size
from poison.ground.engines.merged import ADAPTER, TOKENIZER, merge_dtype


def to_prompt_completion(rows: list[dict[str, Any]], system_prompt: Optional[str] = None) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        prompt = [{"role": "user", "content": r["prompt"]}]
        if system_prompt:
            prompt.insert(0, {"role": "system", "content": system_prompt})
        out.append({"prompt": prompt, "completion": [{"role": "assistant", "content": r["response"]}]})
    return out


def trainer_args(ft: Any, out_dir: Path, *, dtype: str, device: str, total_rows: int, cls: Any = None,
                 **extra: Any):
    """TRL training arguments (``SFTConfig`` or a subclass such as ``GKDConfig``) from a FinetuneConfig-like object."""
    from trl import SFTConfig

    cls = cls or SFTConfig
    t = ft.train
    kw = dict(
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
        # CPU: no checkpointing is fastest; on GPUs memory may matter more, but these models are small
        gradient_checkpointing=False,
        logging_steps=max(1, min(10, steps_per_epoch(ft, total_rows) // 2)),
        save_strategy="no",
        report_to=getattr(t, "report_to", "none"),  # tensorboard writes under trainer/runs: kept as logs/
        dataloader_num_workers=0,
        ddp_backend="gloo" if device == "cpu" and world_size() > 1 else None,
    )
    kw.update(extra)
    user = dict(getattr(t, "extra", {}) or {})
    kw.update(user)  # the user's own TRL/transformers arguments win
    try:
        return cls(**kw)
    except TypeError as e:
        bad = [k for k in user if k not in getattr(cls, "__dataclass_fields__", {})]
        raise ConfigError(f"train.extra: {', '.join(bad) or 'an argument'} is not a {cls.__name__} field "
                          f"({e})") from None


def steps_per_epoch(ft: Any, rows: int) -> int:
    """Optimizer steps an epoch of ``rows`` rows takes (before packing), over every process."""
    t = ft.train
    return max(1, -(-rows // (t.batch_size * t.grad_accum * world_size())))


def speed_options(ft: Any, rows: int, *, dtype: str, device: str) -> dict[str, Any]:
    """The ``distill.speed`` options in effect for training ``ft`` on ``rows`` rows (every method asks here)."""
    from distill import speed

    return speed.resolve(ft.train, device=device, dtype=dtype, finetune=ft.finetune,
                         steps=int(steps_per_epoch(ft, rows) * ft.train.epochs), processes=world_size())


def sft_batching(ft: Any) -> str:
    """How an SFT run batches its rows (``train.packing``):

    - ``padding_free`` (default, ``packing: null`` or ``padding_free``): each batch holds the same rows as a padded
      batch would, but flattened into one sequence with position ids restarting per row; transformers' masks keep
      attention within each row, so the loss is the padded batch's loss (measured equal to 1e-5 in float32)
      without computing a single pad token (bench/bench_train_throughput.py: 1.10x the padded tokens/s on the
      default teacher's rows, CPU, SDPA attention).
    - ``packed`` (``packing: true``): TRL's best-fit-decreasing packing, rows packed into ``max_length`` sequences
      and a batch is ``batch_size`` packs: fewer, fuller optimizer steps, so not the same training.
    - ``padded`` (``packing: false``): padded batches of similar lengths (the first version's batching).
    """
    packing = getattr(ft.train, "packing", None)
    if packing is None or packing == "padding_free":
        return "padding_free"
    return "packed" if packing else "padded"


def sft_config(ft: Any, out_dir: Path, *, dtype: str, device: str, total_rows: int, batching: str):
    extra: dict[str, Any] = dict(packing=True, packing_strategy="bfd") if batching == "packed" else dict(
        train_sampling_strategy="group_by_length")  # less padding (or a shorter flat sequence): similar lengths
    return trainer_args(ft, out_dir, dtype=dtype, device=device, total_rows=total_rows, completion_only_loss=True,
                        **extra)


def sft_trainer_cls():
    """TRL's ``SFTTrainer`` whose training loss, with ``labelled_only`` on (``distill.speed``), runs the LM head and
    the cross-entropy only where a label is set: the same sum over the same positions divided by the same count as
    TRL's loss. Everything else (data, batching, metrics of token counts) is TRL's."""
    import torch
    from trl import SFTTrainer

    from distill import speed

    class FastSFTTrainer(SFTTrainer):
        speed: dict[str, Any] = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not (self.speed.get("labelled_only") and model.training and not return_outputs
                    and speed.plain_head(model)):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            with self.accelerator.autocast():  # what accelerate wraps the model's own forward in
                hidden, targets, mask = speed.hidden_at_labels(model, inputs)
            n = mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = speed.labelled_ce(model, hidden, targets, fp32_head=True) / torch.as_tensor(n).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            count = inputs["attention_mask"].sum() if "attention_mask" in inputs else torch.tensor(
                inputs["position_ids"].size(1), device=inputs["position_ids"].device)
            self._total_train_tokens += self.accelerator.gather_for_metrics(count).sum().item() // self._tp_size
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            return loss

    return FastSFTTrainer


def make_padding_free(trainer: Any) -> None:
    """Flatten the trainer's batches (see ``sft_batching``). TRL refuses ``padding_free`` without packing when
    ``max_length`` is set, because it then does not truncate at collation; it does truncate when it prepares the
    dataset, so the rows are already within ``max_length`` and only the collator needs to change."""
    trainer.data_collator.padding_free = True
    trainer.padding_free = True


def weights_dtype(dtype: str, device: str):
    """float32 weights on CPU (the Trainer autocasts where bf16 is on); the run's dtype on GPUs (large models). A LoRA
    adapter is merged in the same dtype (``poison.ground.engines.merged.merge_dtype``)."""
    import torch

    return getattr(torch, merge_dtype(dtype, device))


def load_trainable(base_model: str | Path, ft: Any, *, dtype: str, device: str, frozen: str = "float32"):
    """(model, tokenizer, peft_config) for training ``base_model`` as ``ft.finetune`` says.

    ``lora``: float32 weights (the Trainer autocasts where bf16/fp16 is on) + a LoRA adapter, or with
    ``frozen="compute"`` (``distill.speed``) the frozen base in the compute dtype (PEFT keeps the adapter in
    float32); ``qlora``: the base is quantised to 4-bit NF4 with bitsandbytes (CPU or CUDA kernels), prepared for
    k-bit training, + a LoRA adapter; ``full``: every weight trains.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_folder(base_model, "base model")  # a damaged folder: one error naming its file
    tok = AutoTokenizer.from_pretrained(base_model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kw: dict[str, Any] = {"dtype": weights_dtype(dtype, device)}
    if frozen == "compute" and ft.finetune == "lora":
        kw["dtype"] = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype, torch.float32)
    if getattr(ft.train, "attn_implementation", None):
        kw["attn_implementation"] = ft.train.attn_implementation
    if ft.finetune == "qlora":
        from transformers import BitsAndBytesConfig

        compute = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype, torch.float32)
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=ft.qlora.quant_type, bnb_4bit_compute_dtype=compute,
            bnb_4bit_use_double_quant=ft.qlora.double_quant)
        if device == "cpu":
            kw["device_map"] = {"": "cpu"}
        elif world_size() == 1:
            kw["device_map"] = {"": 0}
        else:
            kw["device_map"] = {"": local_rank()}
    try:
        model = AutoModelForCausalLM.from_pretrained(base_model, **kw)
    except (ValueError, ImportError) as e:
        if "attn_implementation" not in kw:
            raise
        raise ConfigError(f"train.attn_implementation: {kw['attn_implementation']!r} cannot be used here "
                          f"({str(e).splitlines()[0][:300]})") from None
    peft_config = None
    if ft.finetune in ("lora", "qlora"):
        from peft import LoraConfig

        if ft.finetune == "qlora":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        peft_config = LoraConfig(r=ft.lora.r, lora_alpha=ft.lora.alpha, lora_dropout=ft.lora.dropout,
                                 target_modules=ft.lora.target_modules, task_type="CAUSAL_LM")
    return model, tok, peft_config


def save_trained(trainer: Any, base_model: str | Path, ft: Any, out_dir: Path, tok: Any, dtype: str = "float32",
                 device: str = "cpu") -> None:
    """Save the trained model in ``out_dir``, main process only.

    LoRA / QLoRA: the adapter (``out_dir/adapter``) and the files a loader needs beside the weights
    (``out_dir/tokenizer``: the tokenizer, its chat template, the base model's generation config with its stop tokens).
    That is the artifact, a few MB; the merged weights an engine loads are derived from it on demand
    (``poison.ground.engines.merged``: the adapter merged into an unquantised copy of the base in the usual weight
    dtype, so the result depends neither on QLoRA's 4-bit base nor on ``frozen_weights``). A full fine-tune: the plain
    HF folder ``out_dir/model``.
    """
    if not trainer.is_world_process_zero():
        return
    trained = trainer.model
    if hasattr(trained, "peft_config"):
        trained.save_pretrained(out_dir / ADAPTER)
        files = out_dir / TOKENIZER
        files.mkdir(parents=True, exist_ok=True)
        gen = getattr(trained, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(files)
    else:
        trained.config.use_cache = True
        files = out_dir / "model"
        trained.save_pretrained(files)
    tok.save_pretrained(files)
    gen_cfg = Path(base_model) / "generation_config.json"
    if gen_cfg.exists():  # keep the base model's stop tokens for generation
        (files / "generation_config.json").write_text(gen_cfg.read_text())


def train_summary(trainer: Any, result: Any, ft: Any, rows: int, t0: float, train_s: float, dtype: str,
                  device: str, out_dir: Path, **extra: Any) -> dict[str, Any]:
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = {
        "rows": rows,
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
        "processes": world_size(),
        **extra,
    }
    if trainer.is_world_process_zero():
        (out_dir / "train_log.json").write_text(json.dumps(summary, indent=2, default=str))
        if (out_dir / "trainer" / "runs").is_dir():  # a tracker's local logs stay with the stage's artifact
            shutil.move(str(out_dir / "trainer" / "runs"), str(out_dir / "logs"))
        shutil.rmtree(out_dir / "trainer", ignore_errors=True)
    return summary


def finetune(base_model: str | Path, rows: list[dict[str, Any]], ft: Any, out_dir: Path, *, dtype: str,
             device: str, system_prompt: Optional[str] = None) -> dict[str, Any]:
    """SFT ``base_model`` on ``rows``; save the result in ``out_dir`` (``save_trained``: the adapter and tokenizer
    files with LoRA/QLoRA, the plain HF folder ``out_dir/model`` for a full fine-tune). Returns a summary (losses,
    steps, seconds).
    """
    from datasets import Dataset

    from distill import speed

    if not rows:
        raise TrainingError("no training rows")
    out_dir = Path(out_dir)
    t0 = time.time()
    opts = speed_options(ft, len(rows), dtype=dtype, device=device)
    model, tok, peft_config = load_trainable(base_model, ft, dtype=dtype, device=device,
                                             frozen=opts["frozen_weights"])
    ds = Dataset.from_list(to_prompt_completion(rows, system_prompt))
    batching = sft_batching(ft)
    args = sft_config(ft, out_dir, dtype=dtype, device=device, total_rows=len(rows), batching=batching)
    trainer = sft_trainer_cls()(model=model, args=args, train_dataset=ds, processing_class=tok,
                                peft_config=peft_config)
    if batching == "padding_free":
        make_padding_free(trainer)
    first = speed.prepare(trainer, opts)
    t1 = time.time()
    result = trainer.train()
    train_s = time.time() - t1
    save_trained(trainer, base_model, ft, out_dir, tok, dtype, device)
    summary = train_summary(trainer, result, ft, len(rows), t0, train_s, dtype, device, out_dir,
                            batching=batching, speed=opts, first_step_seconds=first.first_step_s,
                            train_tokens=int(sum(len(x) for x in trainer.train_dataset["input_ids"])))
    del trainer, model
    return summary


def tokenizer_mismatch(a: str | Path, b: str | Path) -> Optional[str]:
    """None when the two model folders share a tokenizer (same vocabulary), else what differs."""
    from transformers import AutoTokenizer

    ta, tb = AutoTokenizer.from_pretrained(a), AutoTokenizer.from_pretrained(b)
    va, vb = ta.get_vocab(), tb.get_vocab()
    if va == vb:
        return None
    diff = len(set(va.items()) ^ set(vb.items()))
    return f"vocabularies differ ({len(va)} vs {len(vb)} tokens, {diff} token-id pairs not shared)"
