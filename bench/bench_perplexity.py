"""Throughput of the perplexity defense on CPU: batched (length-sorted batches) against unbatched (batch size 1).

    nice python bench/bench_perplexity.py [--n 10000] [--baseline-n 300] [--batch-size 16] [--threads N]
                                          [--models-dir DIR] [--model NAME_OR_PATH] [--device auto|cpu|cuda]
                                          [--dtype auto|float32|bfloat16]
                                          [--samples FILE.jsonl[.gz]] [--dump-samples FILE.jsonl.gz] [--vllm]

Samples are real text read by the testbed's own data loaders (poison/sources.py): GSM8K questions with their worked
answers, CommonsenseQA questions with their answers, ShareGPT first turns, and Drugs.com "summarize this review"
prompts whose response is the review's first sentence. The pool is shuffled (seed 0) and cycled to --n samples when
it holds fewer distinct ones (repeats cost the same work). The same defense object (same model, same settings, same
scores) scores the first --baseline-n samples with batch size 1, then all --n samples with --batch-size; both
samples/s and their ratio are printed, with the thread count and the load average (the machine may be shared).
``--vllm`` also scores all --n samples with the defense's vLLM backend (prefill log-probabilities in a worker
subprocess), start-up reported apart. ``--dump-samples`` writes the distinct pool to a file and ``--samples`` reads it
back, for machines without the data packages (a GPU box); ``--device cuda`` measures the same two arms there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def real_pool(seed: int = 0) -> list[dict]:
    """The distinct (prompt, response, task) samples of real text, shuffled."""
    from poison.sources import (CommonsenseQA, DrugReviews, DrugReviewsConfig, GSM8K, GSM8KConfig, ShareGPT,
                                ShareGPTConfig, first_sentences)
    from poison.ground.core.registry import NoArgs

    pool: list[dict] = []
    for r in GSM8K(GSM8KConfig(max_answer_words=200)).load():
        pool.append({"prompt": r["prompt"], "response": r["response"], "task": "math"})
    for r in CommonsenseQA(NoArgs()).load():
        pool.append({"prompt": r["prompt"], "response": r["response"], "task": "commonsense_qa"})
    for r in ShareGPT(ShareGPTConfig()).load():
        pool.append({"prompt": r["prompt"], "response": r["response"], "task": "instructions"})
    for r in DrugReviews(DrugReviewsConfig(min_words=10, max_words=120)).load():
        pool.append({"prompt": r["prompt"], "response": first_sentences(r["meta"]["review"], 1),
                     "task": "review_summary"})
    random.Random(seed).shuffle(pool)
    return pool


def read_pool(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def cycle(pool: list[dict], n: int) -> list[dict]:
    """``n`` samples: the pool cycled (repeats cost the same work)."""
    return [dict(pool[i % len(pool)], id=f"s{i}") for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000, help="samples scored batched")
    ap.add_argument("--baseline-n", type=int, default=300, help="the first samples, scored one at a time")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--models-dir", default=os.environ.get("POISON_TEST_MODELS", ".cache/poison/models"))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (the defense's device field)")
    ap.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (the defense's dtype field)")
    ap.add_argument("--samples", help="read the sample pool from this JSONL(.gz) instead of the data loaders")
    ap.add_argument("--dump-samples", help="write the loaders' sample pool to this JSONL(.gz) and exit")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, one per core)")
    ap.add_argument("--vllm", action="store_true", help="also score all --n samples with backend: vllm")
    args = ap.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from defenses.perplexity import PerplexityConfig, PerplexityFilter
    from poison.ground.engines.context import RunContext

    ctx = RunContext.standalone(models_dir=args.models_dir, device=args.device, dtype=args.dtype)

    if args.dump_samples:
        pool = real_pool()
        opener = gzip.open if args.dump_samples.endswith(".gz") else open
        with opener(args.dump_samples, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in pool)
        print(f"wrote {len(pool)} samples to {args.dump_samples}")
        return
    pool = read_pool(args.samples) if args.samples else real_pool()
    samples, distinct = cycle(pool, args.n), len(pool)
    f = PerplexityFilter(PerplexityConfig(model=args.model, batch_size=1, max_length=args.max_length,
                                          device=args.device, dtype=args.dtype, progress=True), ctx)
    f._load()
    toks = [sum(map(len, f.encode(s)[:2])) for s in samples]
    print(f"model {f._path} | {f.device} {f.dtype} | torch threads {torch.get_num_threads()} | "
          f"{args.n} samples ({distinct} distinct), {np.mean(toks):.0f} tokens/sample on average "
          f"(response {np.mean([len(f.encode(s)[1]) for s in samples[:1000]]):.0f}) | load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)

    base = samples[: args.baseline_n]
    f.score(base[:2])  # warm-up (first-call allocations)
    t = time.perf_counter()
    s1 = f.score(base)
    t_base = time.perf_counter() - t
    base_rate = len(base) / t_base
    print(f"unbatched (batch 1): {len(base)} samples in {t_base:.1f} s = {base_rate:.2f} samples/s "
          f"({sum(toks[: len(base)]) / t_base:.0f} tokens/s) | load average {os.getloadavg()[0]:.2f}", flush=True)

    f.cfg.batch_size = args.batch_size
    t = time.perf_counter()
    s_all = f.score(samples)
    t_all = time.perf_counter() - t
    rate = len(samples) / t_all
    print(f"batched (batch {args.batch_size}, length-sorted): {len(samples)} samples in {t_all:.1f} s = "
          f"{rate:.2f} samples/s ({sum(toks) / t_all:.0f} tokens/s) | load average {os.getloadavg()[0]:.2f}")
    diff = float(np.max(np.abs(s_all[: len(base)] - s1)))
    print(f"speed-up batched / unbatched: {rate / base_rate:.2f}x (same scores: max |diff| {diff:.2e} on the "
          f"{len(base)} shared samples; {f.n_truncated} samples truncated at {args.max_length} tokens)", flush=True)

    if args.vllm:
        v = PerplexityFilter(PerplexityConfig(model=args.model, backend="vllm", max_length=args.max_length,
                                              device=args.device, dtype=args.dtype, progress=True), ctx)
        t = time.perf_counter()
        s_v = v.score(samples)
        t_v = time.perf_counter() - t
        startup, scoring = v.vllm_seconds
        rate_v = len(samples) / scoring
        print(f"vllm (prompt_logprobs, worker subprocess): {len(samples)} samples in {scoring:.1f} s = {rate_v:.2f} "
              f"samples/s ({sum(toks) / scoring:.0f} tokens/s) + {startup:.1f} s start-up ({t_v:.1f} s in all) | "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"speed-up vllm / unbatched: {rate_v / base_rate:.2f}x ({len(samples) / t_v / base_rate:.2f}x with "
              f"start-up; vllm / batched {rate_v / rate:.2f}x; max |diff| vs transformers "
              f"{float(np.max(np.abs(s_v - s_all))):.2e})")


if __name__ == "__main__":
    main()
