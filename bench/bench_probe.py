"""Cost of the likelihood probe by scorer: the same probe sequences (targeted_ads' probe texts after each prompt's
reference, ~9 sequences per prompt that share their context) scored by vLLM's prefill (``prompt_logprobs``, the
probe's scorer before poison.ground.engines.scoring), by plain transformers forward passes of every whole sequence, and
by the shared-context scorer the probe uses now. Prints each arm's scoring seconds and wall seconds (start-up
included), the ratio to the vLLM arm measured in the same run, and the largest per-token difference to the plain
forward pass (the same numbers in float32; bf16 rounding otherwise).

    .venv/bin/python bench/bench_probe.py [--prompts 60] [--model smollm2-135m-instruct] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=60)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=".cache/poison/models")
    ap.add_argument("--dtype", default=None, help="default: the machine's training dtype (bf16 where native)")
    ap.add_argument("--arms", default="vllm,hf,shared")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from poison.ground.core import registry
    from poison.ground.engines.context import RunContext
    from poison.ground.engines.generate import ScoreJob, score_hf, score_vllm
    from poison.ground.engines.scoring import score_shared
    from poison.stages.probe import probe_sequences

    ctx = RunContext.standalone(models_dir=args.models_dir)
    dtype = args.dtype or ctx.dtype
    model = str(ctx.model(args.model, "--model"))
    rows = registry.get("data_source", "gsm8k").build({}).load()[: args.prompts]  # prompts with references
    bias = registry.get("bias_type", "targeted_ads").build({})
    tok = AutoTokenizer.from_pretrained(model)
    seqs = [s for r in rows for s in probe_sequences(tok, bias, r["prompt"], r["response"], bias.probe_texts())]
    job = ScoreJob("probe", model, [s[2] for s in seqs], [s[3] for s in seqs])
    print(f"model {args.model} | {ctx.device} {dtype} | {len(rows)} prompts, {len(seqs)} sequences, "
          f"{sum(len(s[2]) for s in seqs)} tokens", flush=True)
    scorers = {"vllm": lambda: score_vllm([job], device=ctx.device, dtype=dtype),
               "hf": lambda: score_hf([job], device=ctx.device, dtype=dtype),
               "shared": lambda: score_shared([job], device=ctx.device, dtype=dtype)}
    res = {}
    for arm in args.arms.split(","):
        t0 = time.time()
        (lps, r), = scorers[arm]()
        res[arm] = (r.seconds, time.time() - t0, lps)
        print(f"{arm:<7} {r.seconds:7.1f} s scoring, {res[arm][1]:7.1f} s wall (start-up included)", flush=True)
    base = res.get("vllm")
    ref = res.get("hf")
    print()
    for arm, (s, wall, lps) in res.items():
        line = f"{arm:<7}"
        if base:
            line += f" vs vllm: {base[0] / s:5.2f}x scoring, {base[1] / wall:5.2f}x wall"
        if ref and arm != "hf":
            d = max(abs(a - b) for u, v in zip(lps, ref[2]) for a, b in zip(u, v))
            line += f"; max |logprob - hf| {d:.2e}"
        print(line)
    if base and "shared" in res:
        print(f"shared / vllm (wall): {base[1] / res['shared'][1]:.2f}x")


if __name__ == "__main__":
    main()
