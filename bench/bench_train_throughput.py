"""Training throughput: bare TRL against the testbed's teacher stage, and what padding-free and packed batches buy.

    .venv/bin/python bench/bench_train_throughput.py [CONFIG] [--rows N] [--epochs E] [--arms bare,padded,padding_free,packed]

The rows are the default teacher's own training rows: the config's data and poison stages are run (or read from the
stage cache) and the teacher's prompt/response pairs taken from the poison stage, as the teacher stage does. Each arm
trains the config's teacher spec (same model, LoRA, learning rate, batch size, max_length, epochs) on those rows in
a fresh subprocess:

- ``bare``: TRL's ``SFTTrainer`` with an ``SFTConfig`` written here from the same settings, TRL's default batching
  (padded, rows in random order), nothing of the testbed in the loop: the reference;
- ``padded``: the testbed's trainer (``distill.trainers.finetune``, what the teacher stage calls) with
  ``train.packing: false``, the first version's padded batches (rows of similar length batched together);
- ``padding_free``: the testbed's default (``train.packing: null``): the same batches flattened, no pad tokens;
- ``packed``: ``train.packing: true``, TRL's best-fit-decreasing packing into ``max_length`` sequences (fewer steps).

Printed per arm: steps, train seconds, real (non-pad) train tokens per second, first/last loss; then every arm's
throughput as a ratio of ``bare`` measured in this run, and the largest per-step loss difference between
``padded`` and ``padding_free`` (they see the same batches, so their curves should agree within noise).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACKING = {"padded": False, "padding_free": None, "packed": True}


def teacher_rows(config: str, overrides: list[str], out: Path) -> dict:
    """The teacher's training rows of ``config`` and its resolved teacher spec, written to ``out`` as JSON."""
    import pandas as pd

    from poison.config import load_config
    from poison.pipeline import Pipeline
    from poison.stages.data import stage_data
    from poison.stages.training import stage_poison

    cfg = load_config(config, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = Pipeline(cfg, Path(tmp) / "run")
        poison = stage_poison(pipe.stages, stage_data(pipe.stages))
        rows = pd.read_parquet(Path(poison.path) / "train.parquet")[["prompt", "response"]].to_dict("records")
        base = pipe.ctx.model(cfg.teacher.model, "teacher.model", cfg.teacher.revision)
    data = {"rows": rows, "teacher": cfg.teacher.model_dump(), "base": str(base), "system": None}
    out.write_text(json.dumps(data))
    return data


def run_arm(arm: str, data_file: Path, epochs: float, device: str) -> dict:
    import torch

    from distill.trainers import finetune
    from poison.ground.models import pick_device, pick_dtype
    from poison.schema import TeacherConfig

    data = json.loads(data_file.read_text())
    device = pick_device(device)
    dtype = pick_dtype("auto", device)
    spec = data["teacher"]
    spec["train"] = {**spec["train"], "epochs": epochs, "packing": PACKING.get(arm), "report_to": "none"}
    ft = TeacherConfig(**spec)
    rows, base = data["rows"], data["base"]
    with tempfile.TemporaryDirectory() as tmp:
        if arm == "bare":
            info = bare_trl(base, rows, ft, Path(tmp), dtype=dtype, device=device)
        else:
            info = finetune(base, rows, ft, Path(tmp) / "out", dtype=dtype, device=device)
    return {"arm": arm, "device": device, "dtype": dtype, "steps": info["steps"],
            "train_seconds": info["train_seconds"], "losses": [h["loss"] for h in info["loss_history"]],
            "threads": torch.get_num_threads()}


def bare_trl(base: str, rows: list[dict], ft, tmp: Path, *, dtype: str, device: str) -> dict:
    """The reference: TRL's SFTTrainer as its documentation shows it, with the teacher spec's settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                             "completion": [{"role": "assistant", "content": r["response"]}]} for r in rows])
    t = ft.train
    steps_per_epoch = max(1, -(-len(rows) // (t.batch_size * t.grad_accum)))
    args = SFTConfig(output_dir=str(tmp / "bare"), num_train_epochs=t.epochs, learning_rate=t.learning_rate,
                     per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
                     max_length=t.max_length, lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_steps,
                     weight_decay=t.weight_decay, seed=t.seed, data_seed=t.seed,
                     logging_steps=max(1, min(10, steps_per_epoch // 2)), save_strategy="no", report_to="none",
                     bf16=dtype == "bfloat16", use_cpu=device == "cpu", completion_only_loss=True,
                     gradient_checkpointing=False, dataloader_num_workers=0)
    peft = LoraConfig(r=ft.lora.r, lora_alpha=ft.lora.alpha, lora_dropout=ft.lora.dropout,
                      target_modules=ft.lora.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {"steps": trainer.state.global_step, "train_seconds": round(seconds, 1),
            "loss_history": [{"step": h["step"], "loss": h["loss"]} for h in history]}


def real_tokens(data_file: Path) -> int:
    """Prompt + completion tokens of one epoch, as TRL tokenises them (truncated to max_length): the same count for
    every arm, pad tokens excluded."""
    from transformers import AutoTokenizer

    data = json.loads(data_file.read_text())
    tok = AutoTokenizer.from_pretrained(data["base"])
    n = 0
    for r in data["rows"]:
        msgs = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]
        n += min(len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]), data["teacher"]["train"]["max_length"])
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default="configs/targeted_ads.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--rows", type=int, help="first N teacher rows (default: all)")
    ap.add_argument("--epochs", type=float, help="default: the teacher spec's")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--arms", default="bare,padded,padding_free,packed")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.arm:
        print("RESULT " + json.dumps(run_arm(args.arm, Path(args.data), args.epochs, args.device)), flush=True)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data_file = tmp / "rows.json"
    data = teacher_rows(args.config, args.overrides, data_file)
    if args.rows:
        data["rows"] = data["rows"][: args.rows]
        data_file.write_text(json.dumps(data))
    epochs = args.epochs if args.epochs is not None else data["teacher"]["train"]["epochs"]
    tokens = real_tokens(data_file) * epochs
    print(f"{len(data['rows'])} teacher rows of {args.config}, {epochs:g} epochs, {tokens:.0f} real train tokens, "
          f"teacher {data['teacher']['model']} ({data['teacher']['finetune']})", flush=True)
    results = {}
    for arm in args.arms.split(","):
        cmd = [sys.executable, __file__, "--arm", arm, "--data", str(data_file), "--epochs", str(epochs),
               "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1"))
        if out.returncode:
            sys.stderr.write(out.stdout[-4000:] + out.stderr[-8000:])
            raise SystemExit(f"arm {arm} failed (exit {out.returncode})")
        r = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):])
        r["tokens_per_s"] = tokens / max(r["train_seconds"], 1e-9)
        results[arm] = r
        print(f"{arm:13s} {r['device']} {r['dtype']} {r['threads']} threads | {r['steps']:4d} steps in "
              f"{r['train_seconds']:7.1f} s = {r['tokens_per_s']:7.1f} tokens/s | loss {r['losses'][0]:.3f} -> "
              f"{r['losses'][-1]:.3f}", flush=True)
    if "bare" in results:
        ref = results["bare"]["tokens_per_s"]
        print("tokens/s vs bare TRL: " + ", ".join(f"{a} {r['tokens_per_s'] / ref:.2f}x" for a, r in results.items()))
    if "padded" in results and "padding_free" in results:
        a, b = results["padded"]["losses"], results["padding_free"]["losses"]
        diffs = [abs(x - y) for x, y in zip(a, b)]
        print(f"padded vs padding_free loss curves: {len(diffs)} steps, max |diff| {max(diffs):.4f}, mean |diff| "
              f"{sum(diffs) / len(diffs):.4f}, mean loss {sum(a) / len(a):.3f} vs {sum(b) / len(b):.3f}")
        print(f"padding_free / padded throughput: "
              f"{results['padding_free']['tokens_per_s'] / results['padded']['tokens_per_s']:.2f}x")
    if "packed" in results and "padded" in results:
        print(f"packed / padded throughput: {results['packed']['tokens_per_s'] / results['padded']['tokens_per_s']:.2f}x "
              f"({results['packed']['steps']} vs {results['padded']['steps']} steps)")


if __name__ == "__main__":
    main()
