"""Cost of the training_dynamics defense against the perplexity filter, in seconds per 1,000 samples, same run.

    nice python bench/bench_defense_cost_dynamics.py [--n 32] [--epochs 1] [--models-dir DIR] [--model NAME]
                                                     [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16]

Both defenses score the same --n real samples (bench/bench_perplexity.py's pool: GSM8K worked answers, CommonsenseQA,
ShareGPT first turns, Drugs.com review prompts) with the same reference / proxy model, the perplexity filter first,
then training_dynamics with --epochs (its LoRA fine-tune plus epochs + 1 loss passes; the default config's epochs is
2). Each cost is the wall time of ``run_defense`` (model load included) divided by --n and scaled to 1,000 samples:
an extrapolation from a short run, linear in the samples (both defenses' work is; the proxy's fine-tune is epochs x
steps), which the printout says. Prints the ratio dynamics / perplexity, the thread count and the load average (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_perplexity import cycle, real_pool  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32, help="samples each defense scores")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of the dynamics defense's proxy fine-tune")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--models-dir", default=os.environ.get("POISON_TEST_MODELS", ".cache/poison/models"))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    import torch

    from defenses.base import run_defense
    from poison.ground.engines.context import RunContext

    ctx = RunContext.standalone(models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                                cache_dir=Path(args.models_dir).parent)
    samples = cycle(real_pool(), args.n)
    common = {"model": args.model, "batch_size": args.batch_size, "max_length": 384, "progress": False}
    out = {}
    for name, extra in (("perplexity", {}), ("training_dynamics", {"epochs": args.epochs})):
        t0 = time.perf_counter()
        run = run_defense(name, samples, args={**common, **extra}, ctx=ctx)
        out[name] = time.perf_counter() - t0
        print(f"{name:<18} {args.n} samples in {out[name]:7.1f} s  ->  {1000 * out[name] / args.n:8.0f} s per 1,000 "
              f"samples (extrapolated)  mean score {run.scores.mean():.3f}")
    ratio = out["training_dynamics"] / out["perplexity"]
    print(f"ratio training_dynamics ({args.epochs} epoch(s)) / perplexity: {ratio:.1f}x  |  device {ctx.device}, "
          f"dtype {ctx.dtype}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
