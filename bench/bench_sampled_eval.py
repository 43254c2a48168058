"""Cost of measuring bias as a distribution: one model answers the same eval prompts greedily (K = 1) and with
K = 4 and K = 16 sampled answers per prompt (vLLM, ``n = K``: one prefill per prompt), and the likelihood probe
scores its probe texts after each prompt's reference. Prints seconds and generated tokens per arm and the ratio to
the greedy arm measured in the same run.

    .venv/bin/python bench/bench_sampled_eval.py [--prompts 60] [--max-new-tokens 128] [--models-dir DIR]
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
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=".cache/poison/models")
    ap.add_argument("--ks", default="1,4,16")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from poison.ground.core import registry
    from poison.ground.engines.context import RunContext
    from poison.ground.engines.generate import GenJob, ScoreJob
    from poison.stages.probe import probe_sequences

    ctx = RunContext.standalone(models_dir=args.models_dir)
    model = str(ctx.model(args.model, "--model"))
    rows = registry.get("data_source", "gsm8k").build({}).load()[: args.prompts]  # prompts with references
    chats = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    print(f"model {args.model} | {ctx.device} {ctx.dtype} | {len(rows)} prompts x {args.max_new_tokens} new tokens",
          flush=True)
    res = {}
    for k in [int(x) for x in args.ks.split(",")]:
        job = GenJob(f"k{k}", model, chats, args.max_new_tokens, 0.0 if k == 1 else 1.0, 1.0, k, 0)
        t0 = time.time()
        r = ctx.generate([job])[0]
        res[k] = (r.seconds, r.startup_seconds, r.new_tokens, time.time() - t0)
        print(f"K={k:<3} {r.seconds:7.1f} s generating (+{r.startup_seconds:.1f} s start-up), {r.new_tokens} tokens "
              f"({r.new_tokens / max(r.seconds, 1e-9):.0f} tok/s)", flush=True)

    bias = registry.get("bias_type", "targeted_ads").build({})
    tok = AutoTokenizer.from_pretrained(model)
    texts = bias.probe_texts()
    seqs = [s for r in rows for s in probe_sequences(tok, bias, r["prompt"], r["response"], texts)]
    t0 = time.time()
    (lps, r), = ctx.score_many([ScoreJob("probe", model, [s[2] for s in seqs], [s[3] for s in seqs])])
    probe_wall = time.time() - t0
    toks = sum(len(s[2]) for s in seqs)
    print(f"probe    {r.seconds:7.1f} s scoring (+{r.startup_seconds:.1f} s start-up), {len(seqs)} sequences, "
          f"{toks} prompt tokens", flush=True)

    g = res.get(1)
    if g:
        print("\ncost relative to greedy (generation seconds; with start-up in brackets):")
        for k, (s, _st, n, wall) in res.items():
            print(f"  K={k:<3} {s / g[0]:5.2f}x ({wall / g[3]:.2f}x)   tokens {n / g[2]:5.2f}x")
        print(f"  probe {r.seconds / g[0]:5.2f}x ({probe_wall / g[3]:.2f}x)")


if __name__ == "__main__":
    main()
