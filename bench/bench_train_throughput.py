"""Training throughput: bare TRL against the testbed's teacher stage, and what padding-free and packed batches buy.

    .venv/bin/python bench/bench_train_throughput.py [CONFIG] [--rows N] [--epochs E] [--method sft|kd|qcrd]
        [--arms ...]

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

from poison.ground.core.machine import cpu_flags  # noqa: E402

PACKING = {"padded": False, "padding_free": None, "packed": True}
#: the speed options of distill.speed, all off (today's path before them) and each alone
OFF = {"labelled_only": False, "compile": False, "frozen_weights": "float32"}
ARMS = {
    "padded": OFF, "padding_free": OFF, "packed": OFF,
    "labelled_only": {**OFF, "labelled_only": True},
    "compile": {**OFF, "compile": True},
    "frozen_weights": {**OFF, "frozen_weights": "compute"},
    "all": {"labelled_only": True, "compile": True, "frozen_weights": "compute"},
    "default": {"labelled_only": "auto", "compile": "auto", "frozen_weights": "auto"},
}


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


def peak_gib() -> float | None:
    """Peak GPU memory this arm's process allocated (GiB); None off CUDA."""
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def run_arm(arm: str, data_file: Path, epochs: float, device: str, method: str = "sft") -> dict:
    import torch

    from distill.trainers import finetune
    from poison.ground.engines.models import pick_device, pick_dtype
    from poison.schema import TeacherConfig

    data = json.loads(data_file.read_text())
    device = pick_device(device)
    dtype = pick_dtype("auto", device)
    spec = data["teacher"]
    spec["train"] = {**spec["train"], "epochs": epochs, "packing": PACKING.get(arm), "report_to": "none",
                     **ARMS.get(arm, {})}
    ft = TeacherConfig(**spec)
    if method in ("kd", "qcrd"):
        return run_student(arm, data, ft, device, dtype, method)
    rows, base = data["rows"], data["base"]
    with tempfile.TemporaryDirectory() as tmp:
        if arm == "bare":
            info = bare_trl(base, rows, ft, Path(tmp), dtype=dtype, device=device)
        else:
            info = finetune(base, rows, ft, Path(tmp) / "out", dtype=dtype, device=device)
    return {"arm": arm, "device": device, "dtype": dtype, "steps": info["steps"],
            "train_seconds": info["train_seconds"], "losses": [h["loss"] for h in info["loss_history"]],
            "threads": torch.get_num_threads(), "first_step_seconds": info.get("first_step_seconds"),
            "speed": info.get("speed"), "peak_gib": peak_gib()}


STUDENT_ARGS = {"kd": {"lmbda": 0.0},  # off-policy GKD: every step a student forward, a teacher forward, a backward
                "qcrd": {"k_samples": 2, "disc_pretrain_steps": 50}}  # fewer teacher samples: the step is timed


def run_student(arm: str, data: dict, ft, device: str, dtype: str, method_name: str) -> dict:
    """A KD or QCRD student of the config's teacher spec on the teacher rows, the base model as its own teacher
    (what is timed is the student's training; QCRD's teacher sampling and discriminator pre-training are reported
    apart in ``other_seconds`` from its train_log)."""
    import torch

    from distill.base import DistillJob
    from poison.ground.core import registry
    from poison.ground.engines.context import RunContext
    from poison.schema import StudentSpec

    if arm == "bare":
        raise SystemExit(f"the {method_name} bench has no bare arm (padding_free is its path with every option off)")
    spec = StudentSpec(name=method_name, method=method_name, **ft.model_dump())
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext.standalone(device=device, dtype=dtype, cache_dir=Path(tmp) / "cache")
        method = registry.get("distill_method", method_name).build(STUDENT_ARGS[method_name], "students.0.args", ctx)
        (Path(tmp) / "out").mkdir()  # the stage hands its method an existing folder
        t0 = time.time()
        info = method.train(DistillJob(student=spec, student_base=Path(data["base"]), teacher_model=Path(data["base"]),
                                       rows=data["rows"], out_dir=Path(tmp) / "out"))
        wall = time.time() - t0
    return {"arm": arm, "device": device, "dtype": dtype, "steps": info["steps"],
            "train_seconds": info["train_seconds"], "losses": [h["loss"] for h in info["loss_history"]],
            "threads": torch.get_num_threads(), "first_step_seconds": info.get("first_step_seconds"),
            "speed": info.get("speed"), "other_seconds": round(wall - info["train_seconds"], 1), "peak_gib": peak_gib()}


def matrix_rate(dtype: str, tokens: int = 2048, reps: int = 5) -> dict:
    """The machine's own matrix rate, measured now: FLOP/s of ``torch.mm`` at the model's shapes (tokens x hidden
    against the attention, MLP and LM-head widths of SmolLM2-135M), in the training dtype, with the threads training
    uses. Returns the per-shape rates and their FLOP-weighted mean for one LoRA step's mix."""
    import torch

    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype, torch.float32)
    shapes = {"576x576": (576, 576), "576x1536": (576, 1536), "1536x576": (1536, 576), "576x49152": (576, 49152)}
    rates = {}
    for name, (k, n) in shapes.items():
        a, b = torch.randn(tokens, k, dtype=dt), torch.randn(k, n, dtype=dt)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t)
        rates[name] = 2 * tokens * k * n / best
    # per layer: q,o (576x576) + k,v (576x192, counted as 576x576 shapes) + gate,up (576x1536) + down (1536x576)
    mix = {"576x576": 4 * 576 * 576 * 30, "576x1536": 2 * 576 * 1536 * 30, "1536x576": 576 * 1536 * 30,
           "576x49152": 576 * 49152}
    total = sum(mix.values())
    mean = total / sum(mix[s] / rates[s] for s in mix)
    return {"dtype": str(dt).replace("torch.", ""), "per_shape": rates, "mix_rate": mean}


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
        n += min(len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]),
                 data["teacher"]["train"]["max_length"])
    return n


def param_count(base: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    import torch

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    return sum(p.numel() for p in model.parameters())


def arm_in_subprocess(arm: str, data_file: Path, epochs: float, device: str, method: str,
                      env: dict[str, str]) -> tuple[dict | None, subprocess.CompletedProcess]:
    """One arm in a fresh process (``run_arm`` through this file's ``--arm``): its RESULT, or None when it failed,
    and the finished process."""
    cmd = [sys.executable, __file__, "--arm", arm, "--data", str(data_file), "--epochs", str(epochs),
           "--device", device, "--method", method]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        return None, out
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1][len("RESULT "):]), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default="configs/targeted_ads.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--rows", type=int, help="first N teacher rows (default: all)")
    ap.add_argument("--epochs", type=float, help="default: the teacher spec's")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--method", choices=["sft", "kd", "qcrd"], default="sft",
                    help="sft: the teacher's training (also the sft student's); kd: a logit-KD student (TRL GKD); "
                         "qcrd: a QCRD student (its step: label, positive and negative-hinge passes)")
    ap.add_argument("--arms", default="bare,padding_free,labelled_only,compile,frozen_weights,all,default",
                    help="any of bare, padded, padding_free, packed, labelled_only, compile, frozen_weights, all, "
                         "default")
    ap.add_argument("--arm", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.arm:
        print("RESULT " + json.dumps(run_arm(args.arm, Path(args.data), args.epochs, args.device, args.method)),
              flush=True)
        return

    from poison.ground.engines.models import pick_device, pick_dtype

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    data_file = tmp / "rows.json"
    data = teacher_rows(args.config, args.overrides, data_file)
    if args.rows:
        data["rows"] = data["rows"][: args.rows]
        data_file.write_text(json.dumps(data))
    epochs = args.epochs if args.epochs is not None else data["teacher"]["train"]["epochs"]
    tokens = real_tokens(data_file) * epochs
    dtype = pick_dtype("auto", pick_device(args.device))
    params = param_count(data["base"])
    flop_per_token = (4 if args.method == "sft" else 6) * params  # LoRA: 2 forward + 2 input-grad; kd: + teacher fwd
    if args.method == "qcrd":
        print("qcrd: tokens/s counts the teacher rows' tokens once; a QCRD step runs its label, positive and negative "
              "passes on its own texts, so compare the arms' ratios (same work in each); no share of the matrix rate",
              flush=True)
    print(f"{len(data['rows'])} teacher rows of {args.config}, {epochs:g} epochs, {tokens:.0f} real train tokens, "
          f"{args.method} of {data['teacher']['model']} ({data['teacher']['finetune']}, {params / 1e6:.1f} M params, "
          + (f"{flop_per_token / 1e6:.0f} MFLOP per token counted for every arm)" if args.method != "qcrd" else
             "FLOP not counted)"), flush=True)
    roof = matrix_rate(dtype)
    print(f"machine: CPU flags {cpu_flags()}, {os.cpu_count()} cores, training dtype {dtype}; matrix rate now "
          f"({roof['dtype']} torch.mm, 2,048 tokens): " + ", ".join(f"{k} {v / 1e12:.2f}" for k, v in
                                                                   roof["per_shape"].items())
          + f" TFLOP/s; the step's mix {roof['mix_rate'] / 1e12:.2f} TFLOP/s", flush=True)
    results = {}
    env = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1")
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(tmp / "inductor"))  # cold compile cache: the compile is counted
    for arm in args.arms.split(","):
        r, out = arm_in_subprocess(arm, data_file, epochs, args.device, args.method, env)
        if r is None:
            sys.stderr.write(out.stdout[-4000:] + out.stderr[-8000:])
            raise SystemExit(f"arm {arm} failed (exit {out.returncode})")
        r["tokens_per_s"] = tokens / max(r["train_seconds"], 1e-9)
        r["share"] = r["tokens_per_s"] * flop_per_token / roof["mix_rate"] if args.method != "qcrd" else None
        results[arm] = r
        first = f", first step {r['first_step_seconds']:.1f} s" if r.get("first_step_seconds") else ""
        share = f"{100 * r['share']:5.1f} % of the matrix rate" if r["share"] is not None else "share not counted"
        other = f", {r['other_seconds']:.1f} s outside the train loop" if r.get("other_seconds") is not None else ""
        print(f"{arm:14s} {r['device']} {r['dtype']} {r['threads']} threads | {r['steps']:4d} steps in "
              f"{r['train_seconds']:7.1f} s = {r['tokens_per_s']:7.1f} tokens/s = {share}{first}{other} "
              f"| loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f} | {r.get('speed')}",
              flush=True)
    for ref in ("bare", "padding_free"):
        if ref in results:
            base = results[ref]["tokens_per_s"]
            print(f"tokens/s vs {ref}: " + ", ".join(f"{a} {r['tokens_per_s'] / base:.2f}x" for a, r in
                                                     results.items()))
    if "padding_free" in results:
        a = results["padding_free"]["losses"]
        for arm, r in results.items():
            if arm not in ("bare", "padding_free", "packed") and len(r["losses"]) == len(a):
                d = max(abs(x - y) for x, y in zip(a, r["losses"]))
                print(f"loss curve {arm} vs padding_free: {len(a)} logged steps, max |diff| {d:.5f}")
    if "packed" in results and "padded" in results:
        print("packed / padded throughput: "
              f"{results['packed']['tokens_per_s'] / results['padded']['tokens_per_s']:.2f}x "
              f"({results['packed']['steps']} vs {results['padded']['steps']} steps)")
    end = matrix_rate(dtype)
    if end["mix_rate"] > roof["mix_rate"] and args.method != "qcrd":
        print(f"matrix rate measured again after the arms: {end['mix_rate'] / 1e12:.2f} TFLOP/s (was "
              f"{roof['mix_rate'] / 1e12:.2f} at the start; shares against the higher): "
              + ", ".join(f"{a} {100 * r['share'] * roof['mix_rate'] / end['mix_rate']:.1f} %" for a, r in
                          results.items()))
    if "default" in results and "padding_free" in results:
        print("default / padding_free: "
              f"{results['default']['tokens_per_s'] / results['padding_free']['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
