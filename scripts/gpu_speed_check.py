"""The training-speed options on a GPU, with a random-init model of a real architecture (no weights travel): a few
steps of SFT (each option alone and all together), a KD student and a QLoRA SFT, each arm in its own process through
bench/bench_train_throughput.py's arm runner, reporting real tokens/s and peak GPU memory per arm.

Made for the device tool's GPU machines (no network, 64 MiB sent): the model is built from the architecture's
config, the tokenizer is one carried beside it (the SmolLM2 tokenizer under the models dir, or --tokenizer), the rows
are synthetic prompt/answer pairs of the default teacher's lengths. Needs trl, peft and bitsandbytes importable
there (carry wheels where the image lacks them). On a CPU, --tiny checks the script itself in seconds.

    python scripts/gpu_speed_check.py [--arch qwen2.5-0.5b] [--steps 6] [--tokenizer DIR] [--out DIR] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARCHS = {  # the published configs' shapes (no weights)
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1e6),
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True,
                         max_position_embeddings=8192, rope_theta=1e5),
}
SFT_ARMS = "padding_free,labelled_only,compile,frozen_weights,all,default"
KD_ARMS = "padding_free,labelled_only"
QLORA_ARMS = "padding_free,labelled_only"


def build_model(arch: str, tokenizer: str, out: Path, tiny: bool) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    shape = dict(ARCHS[arch])
    if tiny:
        shape.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2)
    tok = AutoTokenizer.from_pretrained(tokenizer)
    shape["vocab_size"] = max(shape["vocab_size"], len(tok))
    cfg = AutoConfig.for_model(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Prompt/answer pairs of about the default teacher rows' lengths (60 / 50 tokens on average)."""
    rng = random.Random(seed)
    words = ("the review says patient dose week side effect pain sleep better worse doctor started stopped weight "
             "answer number total each more less first then because so therefore").split()
    say = lambda k: " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."  # noqa: E731
    return [{"prompt": say(rng.randint(25, 70)), "response": say(rng.randint(15, 60))} for _ in range(n)]


def data_file(base: Path, rows: list[dict], finetune: str, batch: int, out: Path) -> Path:
    teacher = {"model": str(base), "finetune": finetune, "lora": {"r": 16, "alpha": 32},
               "train": {"epochs": 1, "learning_rate": 1e-3, "batch_size": batch, "max_length": 384}}
    out.write_text(json.dumps({"rows": rows, "teacher": teacher, "base": str(base), "system": None}))
    return out


def run(method: str, arm: str, data: Path, device: str) -> dict:
    from bench.bench_train_throughput import arm_in_subprocess

    t0 = time.time()
    r, out = arm_in_subprocess(arm, data, 1, device, method, dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1"))
    if r is None:
        return {"method": method, "arm": arm, "error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return {"method": method, **r, "wall_seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(ARCHS), default="qwen2.5-0.5b")
    ap.add_argument("--tokenizer", help="a tokenizer folder (default: the built-in SmolLM2-135M-Instruct's)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model of the same kind: check the script on a CPU")
    ap.add_argument("--methods", default="sft,kd,qlora")
    ap.add_argument("--out", help="write the arms' results here as JSON")
    a = ap.parse_args()
    if a.tokenizer is None:
        from poison.ground.engines.models import resolve_model

        a.tokenizer = str(resolve_model("smollm2-135m-instruct", ROOT / ".cache/poison/models", "--tokenizer"))
    if not Path(a.tokenizer).exists():
        raise SystemExit(f"error: --tokenizer: {a.tokenizer}: no such folder (carry a tokenizer folder)")
    tmp = Path(tempfile.mkdtemp(prefix="gpu-speed-"))
    base = build_model(a.arch, a.tokenizer, tmp / "model", a.tiny)
    rows = synthetic_rows(a.steps * a.batch_size)
    import torch

    print(f"{a.arch}{' (tiny)' if a.tiny else ''} random-init | torch {torch.__version__} | "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA'} | {len(rows)} rows, "
          f"batch {a.batch_size}", flush=True)
    plan = {"sft": ("sft", "lora", SFT_ARMS), "kd": ("kd", "lora", KD_ARMS), "qlora": ("sft", "qlora", QLORA_ARMS)}
    results = []
    for name in a.methods.split(","):
        method, finetune, arms = plan[name]
        data = data_file(base, rows, finetune, a.batch_size, tmp / f"{name}.json")
        tokens = None
        for arm in arms.split(","):
            r = run(method, arm, data, a.device)
            r["what"] = name
            if "error" not in r:
                if tokens is None:
                    from bench.bench_train_throughput import real_tokens

                    tokens = real_tokens(data)
                r["tokens_per_s"] = round(tokens / max(r["train_seconds"], 1e-9), 1)
                print(f"{name:6s} {arm:14s} {r['device']} {r['dtype']} | {r['steps']} steps "
                      f"{r['train_seconds']:7.1f} s | {r['tokens_per_s']:8.1f} tokens/s | peak {r.get('peak_gib')} GiB "
                      f"| first step {r.get('first_step_seconds')} s "
                      f"| loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}", flush=True)
            else:
                print(f"{name:6s} {arm:14s} FAILED: {r['error']}", flush=True)
            results.append(r)
        ok = {r["arm"]: r for r in results if r.get("what") == name and "error" not in r}
        if "padding_free" in ok:
            print(f"{name}: tokens/s vs padding_free: " + ", ".join(
                f"{k} {v['tokens_per_s'] / ok['padding_free']['tokens_per_s']:.2f}x" for k, v in ok.items()),
                flush=True)
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "gpu_speed_check.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
