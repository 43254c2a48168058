"""vLLM vs HF generate: steady-state throughput on the same prompts and model, in one run (ratio printed).

    python bench/bench_generation.py [--prompts 64] [--new-tokens 64] [--model smollm2-135m-instruct]

Both backends generate exactly --new-tokens per prompt (EOS ignored), greedy, from real eval prompts (drug-review
summaries and GSM8K). Start-up (engine start / model load) is reported separately from generation throughput. HF is
measured at several batch sizes and the best one is the baseline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def prompts(n: int) -> list[list[dict[str, str]]]:
    from poison.ground.core import registry

    rows = registry.get("data_source", "drug_reviews").build({}).load()[: n // 2]
    rows += registry.get("data_source", "gsm8k").build({}).load()[: n - len(rows)]
    return [[{"role": "user", "content": r["prompt"]}] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=".cache/poison/models")
    ap.add_argument("--hf-batch-sizes", default="16,32,64")
    args = ap.parse_args()

    from poison.ground.engines.generate import GenJob, generate_hf, generate_vllm
    from poison.ground.engines.models import pick_device, pick_dtype, resolve_model

    device = pick_device()
    dtype = pick_dtype("auto", device)
    path = str(resolve_model(args.model, args.models_dir))
    msgs = prompts(args.prompts)

    def job(key):
        return GenJob(key, path, msgs, max_new_tokens=args.new_tokens, temperature=0.0, ignore_eos=True)

    print(f"model {args.model} | device {device} | dtype {dtype} | {len(msgs)} prompts x {args.new_tokens} new tokens")
    rows = []
    v = generate_vllm([job("vllm")], device=device, dtype=dtype, vllm_settings={})[0]
    rows.append(("vllm", len(msgs), v.startup_seconds, v.seconds, v.new_tokens / v.seconds))
    for bs in [int(b) for b in args.hf_batch_sizes.split(",")]:
        h = generate_hf([job(f"hf-b{bs}")], device=device, dtype=dtype, batch_size=bs)[0]
        rows.append((f"hf batch {bs}", bs, h.startup_seconds, h.seconds, h.new_tokens / h.seconds))
    print(f"\n{'backend':<14} {'batch':>6} {'start-up s':>11} {'generate s':>11} {'tok/s':>8}")
    for name, bs, st, gs, tps in rows:
        print(f"{name:<14} {bs:>6} {st:>11.1f} {gs:>11.1f} {tps:>8.1f}")
    best_hf = max(rows[1:], key=lambda r: r[4])
    ratio = rows[0][4] / best_hf[4]
    print(f"\nvLLM / best HF generate ({best_hf[0]}): {ratio:.2f}x steady-state throughput")


if __name__ == "__main__":
    main()
