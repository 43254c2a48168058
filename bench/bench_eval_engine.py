"""One vLLM engine for every LoRA adapter vs one engine per merged model: the eval of N models on one base (the base
and N - 1 LoRA adapters, as a run's baseline, teacher and students), the same prompts, greedy. Prints, for each N,
the wall time of both paths, their ratio (measured in the same run) and how many greedy answers agree.

The adapters are the real model's LoRA shape (all linear layers, rank 16) with small random weights, saved both as
adapters and merged into full folders, so both paths serve exactly the same models. In float32 the answers agree
token for token; in bfloat16 the merged folder's weights are rounded after merging, so some answers differ.

    .venv/bin/python bench/bench_eval_engine.py [--ns 3,6] [--prompts 40] [--max-new-tokens 64] [--dtype auto]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_models(base: Path, n: int, out: Path, scale: float) -> list[tuple[str, str]]:
    """``n`` (adapter folder, merged folder) pairs on ``base`` with LoRA B weights drawn at ``scale``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from poison.ground.engines.models import load_causal_lm

    pairs = []
    for i in range(n):
        torch.manual_seed(100 + i)
        model, tok = load_causal_lm(base, dtype="float32", device="cpu")
        peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, scale)
        peft.save_pretrained(out / f"adapter{i}")
        peft.merge_and_unload().save_pretrained(out / f"merged{i}")
        tok.save_pretrained(out / f"merged{i}")
        gen = base / "generation_config.json"
        if gen.exists():
            (out / f"merged{i}" / "generation_config.json").write_text(gen.read_text())
        pairs.append((str(out / f"adapter{i}"), str(out / f"merged{i}")))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="3,6", help="numbers of models (the base + N - 1 adapters)")
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=".cache/poison/models")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--lora-scale", type=float, default=0.02, help="std of the random LoRA B weights")
    args = ap.parse_args()

    from poison.ground.core import registry
    from poison.ground.engines.context import RunContext
    from poison.ground.engines.generate import GenJob, generate_vllm
    from poison.ground.engines.models import pick_dtype

    ctx = RunContext.standalone(models_dir=args.models_dir)
    dtype = pick_dtype(args.dtype, ctx.device)
    base = ctx.model(args.model, "--model")
    rows = registry.get("data_source", "gsm8k").build({}).load()[: args.prompts]
    chats = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    ns = [int(x) for x in args.ns.split(",")]
    settings = dict(ctx.vllm)
    print(f"model {args.model} | {ctx.device} {dtype} | {len(chats)} prompts x {args.max_new_tokens} new tokens, "
          f"greedy", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-eval-engine-") as td:
        pairs = make_models(Path(base), max(ns) - 1, Path(td), args.lora_scale)
        for n in ns:
            job = lambda key, path, adapter=None: GenJob(key, str(path), chats, args.max_new_tokens,  # noqa: E731
                                                         ignore_eos=False, adapter=adapter)
            one_jobs = [job("base", base)] + [job(f"m{i}", base, a) for i, (a, _) in enumerate(pairs[: n - 1])]
            per_jobs = [job("base", base)] + [job(f"m{i}", m) for i, (_, m) in enumerate(pairs[: n - 1])]
            t0 = time.time()
            one = generate_vllm(one_jobs, device=ctx.device, dtype=dtype, vllm_settings=settings)
            t_one = time.time() - t0
            t0 = time.time()
            per = generate_vllm(per_jobs, device=ctx.device, dtype=dtype, vllm_settings=settings)
            t_per = time.time() - t0
            same = sum(a == b for r1, r2 in zip(one, per) for a, b in zip(r1.texts, r2.texts))
            total = sum(len(r.texts) for r in one)
            adapters_same = sum(a == b for r1, r2 in zip(one[1:], per[1:]) for a, b in zip(r1.texts, r2.texts))
            print(f"N={n}: one engine {t_one:6.1f} s (start-up {sum(r.startup_seconds for r in one):5.1f} s, "
                  f"generating {sum(r.seconds for r in one):5.1f} s) | one engine per model {t_per:6.1f} s "
                  f"(start-up {sum(r.startup_seconds for r in per):5.1f} s, generating "
                  f"{sum(r.seconds for r in per):5.1f} s) | ratio per-model / one = {t_per / t_one:.2f}x | "
                  f"greedy answers equal {same}/{total} (adapted models {adapters_same}/{total - len(chats)})",
                  flush=True)


if __name__ == "__main__":
    main()
