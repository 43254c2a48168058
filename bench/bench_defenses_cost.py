"""Cost of the spectral_signature and reference_answer defenses against the perplexity filter, in the same run.

    nice python bench/bench_defenses_cost.py [--n 64] [--backend vllm|hf] [--nll-gain] [--models-dir DIR]
                                             [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16]

Samples: --n real rows from bench/bench_perplexity.py's pool (GSM8K worked answers, CommonsenseQA answers, ShareGPT
first turns, Drugs.com "summarize this review" prompts with the review's first sentence as response; shuffled, seed 0),
each with its task, so spectral_signature groups them per task as in a run. Each defense is built fresh and scores the
rows twice: the first (cold) call includes loading its model(s), the second (warm) call reuses the loaded models.
reference_answer generates its reference answers through the context's generation backend (--backend; a run's default
is vllm), which loads the model / starts the vLLM worker on every call, so its warm call pays that again; its answer
cache is off here, so both calls generate. Figures are seconds per 1,000 samples extrapolated linearly from --n
(start-up included: at larger n the per-sample cost of the start-up shrinks) and the ratio to the perplexity filter's
warm call in this run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="real samples scored per call")
    ap.add_argument("--backend", default="vllm", choices=["vllm", "hf"], help="generation backend (reference_answer)")
    ap.add_argument("--nll-gain", action="store_true", help="also measure reference_answer with score: nll_gain")
    ap.add_argument("--models-dir", default=os.environ.get("POISON_TEST_MODELS", ".cache/poison/models"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()

    import torch

    from bench.bench_perplexity import cycle, real_pool
    from defenses.base import build_defense
    from poison.ground.engines.context import RunContext

    cache = tempfile.mkdtemp(prefix="bench-defenses-")
    ctx = RunContext.standalone(models_dir=args.models_dir, cache_dir=cache, device=args.device, dtype=args.dtype,
                                backend=args.backend)
    samples = cycle(real_pool(), args.n)
    tasks = sorted({s["task"] for s in samples})
    print(f"{platform.processor() or platform.machine()} | {os.cpu_count()} cores | torch threads "
          f"{torch.get_num_threads()} | {ctx.device} {ctx.dtype} | generation backend {args.backend} | {args.n} "
          f"samples over tasks {tasks} | load average {os.getloadavg()[0]:.2f}", flush=True)

    arms = [("perplexity", {"progress": False}), ("spectral_signature", {}),
            ("spectral_signature", {"method": "activation_clustering"}), ("reference_answer", {"cache": False})]
    if args.nll_gain:
        arms.append(("reference_answer", {"cache": False, "score": "nll_gain"}))
    base = None
    print(f"{'defense':<44} {'cold s':>8} {'warm s':>8} {'s/1000 (warm)':>14} {'x perplexity':>13}")
    for name, a in arms:
        d = build_defense(name, a, ctx=ctx)
        t = time.perf_counter()
        d.score(samples)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        d.score(samples)
        warm = time.perf_counter() - t
        per_k = 1000 * warm / args.n
        base = base or per_k
        label = name + (f" ({', '.join(f'{k}={v}' for k, v in a.items() if k not in ('progress', 'cache'))})"
                        if set(a) - {"progress", "cache"} else "")
        print(f"{label:<44} {cold:>8.1f} {warm:>8.1f} {per_k:>14.0f} {per_k / base:>13.2f}  | load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
