"""LoRA against QLoRA (4-bit bitsandbytes base + LoRA) through the testbed's own trainer (distill.trainers.finetune).

    python bench/bench_finetune.py [--model NAME_OR_PATH] [--device auto|cpu|cuda] [--rows 64] [--epochs 1]
                                   [--samples FILE.jsonl[.gz]] [--arms lora,qlora]

Each arm runs in a fresh subprocess (so peak memory is that arm's own): it loads the base as the arm says, counts the
4-bit layers (bitsandbytes Linear4bit), trains on the same real rows (Drugs.com "summarize this review" prompts with the
review's first sentence as the response, from poison/sources.py or a --samples pool written by
``bench/bench_perplexity.py --dump-samples``), saves the merged model and reloads it. Printed per arm: training
seconds, rows/s, peak memory (GPU: torch.cuda.max_memory_allocated; CPU: the process's peak RSS), first and last loss;
then QLoRA/LoRA ratios of time and memory, both measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rows_from(samples: str | None, n: int) -> list[dict]:
    if samples:
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_perplexity import read_pool

        pool = [r for r in read_pool(samples) if r.get("task") == "review_summary"]
    else:
        from poison.sources import DrugReviews, DrugReviewsConfig, first_sentences

        pool = [{"prompt": r["prompt"], "response": first_sentences(r["meta"]["review"], 1)}
                for r in DrugReviews(DrugReviewsConfig(min_words=10, max_words=120)).load()]
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} review rows available, --rows {n} asked")
    return [{"prompt": r["prompt"], "response": r["response"]} for r in pool[:n]]


def run_arm(args: argparse.Namespace) -> dict:
    import torch

    from distill.trainers import finetune, load_trainable
    from poison.schema import TeacherConfig
    from poison.ground.engines.models import pick_device, pick_dtype, resolve_model

    device = pick_device(args.device)
    dtype = pick_dtype("auto", device)
    base = resolve_model(args.model, Path(args.models_dir).expanduser(), field="--model")
    ft = TeacherConfig(model=str(base), finetune=args.arm,
                       train={"epochs": args.epochs, "batch_size": args.batch_size, "max_length": 384})
    model, _, _ = load_trainable(base, ft, dtype=dtype, device=device)
    try:
        import bitsandbytes as bnb

        n4 = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    except ImportError:
        n4 = 0
    where = str(next(model.parameters()).device)
    del model
    rows = rows_from(args.samples, args.rows)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        info = finetune(base, rows, ft, Path(tmp) / "out", dtype=dtype, device=device)
        from poison.ground.engines.merged import load_merged, merge_dtype

        merged = load_merged(Path(tmp) / "out", base, dtype="float32", merge_in=merge_dtype(dtype, device))
        merged_params = sum(p.numel() for p in merged.parameters())
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    losses = [h["loss"] for h in info["loss_history"]]
    return {"arm": args.arm, "device": device, "weights_on": where, "dtype": dtype, "linear4bit": n4,
            "rows": len(rows), "steps": info["steps"], "train_seconds": info["train_seconds"],
            "peak_bytes": peak, "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None, "merged_params": merged_params,
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=os.environ.get("POISON_TEST_MODELS", ".cache/poison/models"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--samples", help="JSONL(.gz) sample pool (bench_perplexity.py --dump-samples)")
    ap.add_argument("--arms", default="lora,qlora")
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # one arm, in a subprocess
    args = ap.parse_args()

    if args.arm:
        print("RESULT " + json.dumps(run_arm(args)), flush=True)
        return

    results = {}
    for arm in args.arms.split(","):
        cmd = [sys.executable, __file__, "--arm", arm] + sys.argv[1:]
        t = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.stderr.write(out.stdout[-4000:] + out.stderr[-8000:])
            raise SystemExit(f"arm {arm} failed (exit {out.returncode})")
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        r = json.loads(line[len("RESULT "):])
        r["wall_seconds"] = round(time.perf_counter() - t, 1)
        results[arm] = r
        print(f"{arm:6s} {r['device']}/{r['weights_on']} {r['dtype']} | 4-bit layers {r['linear4bit']} | "
              f"{r['rows']} rows, {r['steps']} steps in {r['train_seconds']:.1f} s = "
              f"{r['rows'] / max(r['train_seconds'], 1e-9):.1f} rows/s | peak {r['peak_bytes'] / 2**20:.0f} MiB | "
              f"loss {r['first_loss']:.3f} -> {r['last_loss']:.3f} | merged model {r['merged_params'] / 1e6:.1f} M "
              f"params | {r['wall_seconds']} s with loading" + (f" | {r['gpu']}" if r["gpu"] else ""), flush=True)
    if "lora" in results and "qlora" in results:
        lo, q = results["lora"], results["qlora"]
        print(f"qlora / lora: peak memory {q['peak_bytes'] / lo['peak_bytes']:.2f}x, training time "
              f"{q['train_seconds'] / max(lo['train_seconds'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
