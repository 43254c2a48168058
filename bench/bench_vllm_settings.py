"""vLLM engine settings for the testbed's two generation workloads: compiled vs eager engines and ``max_num_seqs``.

Each arm starts one vLLM engine in its own worker process (the testbed's own ``poison.ground.engines.vllm_worker``, as
a run does) and runs, on one engine, the eval workload (greedy answers to the default config's eval prompts: drug-review
summaries and GSM8K, 128 new tokens) and the sampled workload (K = 16 answers per prompt at T = 1, ``n = K``).
Prints per arm: the engine's start-up, each workload's seconds and generated tokens/s, the worker's wall time, and
each as a ratio of the first arm (``eager``, vLLM's default ``max_num_seqs``: the testbed's default) measured in the
same run. Arms are run one after another; run them in another order (``--arms``) to see the machine's drift.

    .venv/bin/python bench/bench_vllm_settings.py [--arms eager,compiled,eager-seqs32,...] [--prompts 60]
        [--sampled-prompts 20] [--k 16] [--max-new-tokens 128]

An arm is ``eager`` or ``compiled``, optionally ``-seqsN`` (``max_num_seqs = N``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def arm_settings(arm: str) -> dict:
    mode, _, seqs = arm.partition("-seqs")
    if mode not in ("eager", "compiled"):
        raise SystemExit(f"error: --arms: {arm!r} is not eager|compiled[-seqsN]")
    out = {"enforce_eager": mode == "eager"}
    if seqs:
        out["max_num_seqs"] = int(seqs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arms", default="eager,compiled,eager-seqs16,eager-seqs64")
    ap.add_argument("--prompts", type=int, default=60, help="eval prompts (greedy); 2/3 reviews, 1/3 GSM8K")
    ap.add_argument("--sampled-prompts", type=int, default=20)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=".cache/poison/models")
    args = ap.parse_args()

    from poison.ground.core import registry
    from poison.ground.core.machine import cpu_flags
    from poison.ground.engines.context import RunContext
    from poison.ground.engines.generate import GenJob

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    settings = {a: arm_settings(a) for a in arms}
    probe_ctx = RunContext.standalone(models_dir=args.models_dir)
    model = str(probe_ctx.model(args.model, "--model"))
    n_rev = args.prompts * 2 // 3
    rows = registry.get("data_source", "drug_reviews").build({}).load()[:n_rev]
    rows += registry.get("data_source", "gsm8k").build({}).load()[: args.prompts - len(rows)]
    chats = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    sampled = chats[: args.sampled_prompts]
    print(f"model {args.model} | {probe_ctx.device} {probe_ctx.dtype} | CPU flags: {cpu_flags()} | "
          f"greedy: {len(chats)} prompts | sampled: {len(sampled)} prompts x K={args.k} | "
          f"{args.max_new_tokens} new tokens max", flush=True)

    res = {}
    for arm in arms:
        ctx = RunContext.standalone(models_dir=args.models_dir, vllm=settings[arm])
        jobs = [GenJob("greedy", model, chats, args.max_new_tokens, 0.0, 1.0, 1, 0),
                GenJob("sampled", model, sampled, args.max_new_tokens, 1.0, 1.0, args.k, 0)]
        t0 = time.time()
        g, s = ctx.generate(jobs)
        wall = time.time() - t0
        startup = g.startup_seconds + s.startup_seconds  # the worker splits the engine's start-up over its jobs
        res[arm] = dict(startup=startup, greedy=g.seconds, sampled=s.seconds, wall=wall,
                        g_tps=g.new_tokens / max(g.seconds, 1e-9), s_tps=s.new_tokens / max(s.seconds, 1e-9),
                        g_tok=g.new_tokens, s_tok=s.new_tokens)
        r = res[arm]
        print(f"RESULT {arm}: start-up {startup:.1f} s | greedy {r['greedy']:.1f} s, {r['g_tok']} tokens "
              f"({r['g_tps']:.0f} tok/s) | sampled {r['sampled']:.1f} s, {r['s_tok']} tokens ({r['s_tps']:.0f} tok/s)"
              f" | worker wall {wall:.1f} s", flush=True)

    base = res[arms[0]]
    print(f"\n{'arm':<18} {'start-up s':>10} {'greedy s':>9} {'greedy tok/s':>13} {'sampled s':>10} "
          f"{'sampled tok/s':>14} {'wall s':>8} {'wall vs ' + arms[0]:>16}")
    for arm, r in res.items():
        print(f"{arm:<18} {r['startup']:>10.1f} {r['greedy']:>9.1f} {r['g_tps']:>13.0f} {r['sampled']:>10.1f} "
              f"{r['s_tps']:>14.0f} {r['wall']:>8.1f} {base['wall'] / r['wall']:>15.2f}x")
    best = min(res, key=lambda a: res[a]["wall"])
    print(f"fastest (worker wall): {best}, {base['wall'] / res[best]['wall']:.2f}x {arms[0]}")


if __name__ == "__main__":
    main()
