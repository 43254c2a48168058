"""vLLM worker: ``python -m poison.ground.vllm_worker jobs.json results.json``.

Runs each job's prompts through vLLM's offline engine, one model at a time, and writes the completions. Started by
poison.ground.generate with the environment vLLM needs (CPU thread binding, in-process engine); not meant to be run by hand.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time


def cpu_memory_fraction(configured: float) -> float:
    """vLLM's CPU backend reserves ``gpu_memory_utilization`` x total RAM and refuses to start unless that much is
    free. When other jobs hold memory, use what is free (85 % of MemAvailable) instead of failing the run."""
    try:
        info = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/meminfo") if l.split()[1:2]}
        total, avail = info["MemTotal"], info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return configured
    fraction = min(configured, 0.85 * avail / total)
    if fraction < configured:
        print(f"[vllm_worker] only {avail / 2**20:.1f} of {total / 2**20:.1f} GiB free: gpu_memory_utilization "
              f"{configured} -> {fraction:.3f}", file=sys.stderr, flush=True)
    return max(fraction, 0.01)


def score_tokens(llm, job: dict, startup: float) -> dict:
    """Log-probability of every token of each given sequence from position ``starts[i]`` on (prefill only: one
    forward pass per sequence, batched by vLLM's scheduler; ``prompt_logprobs=0`` returns the actual token's)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    seqs, starts = job["token_ids"], job["starts"]
    sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    t1 = time.time()
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in seqs], sp, use_tqdm=True)
    seconds = time.time() - t1
    logprobs = []
    for ids, start, o in zip(seqs, starts, outs):
        lp = o.prompt_logprobs or []
        logprobs.append([float(lp[i][ids[i]].logprob) for i in range(max(start, 1), len(ids))])
    n_tok = sum(len(s) for s in seqs)
    print(f"[vllm_worker] {job['key']}: scored {len(seqs)} sequences, {n_tok} tokens in {seconds:.1f}s "
          f"(+{startup:.1f}s start-up)", file=sys.stderr, flush=True)
    return dict(key=job["key"], texts=[], new_tokens=0, seconds=seconds, startup_seconds=startup, backend="vllm",
                meta={"logprobs": logprobs, "tokens": n_tok})


def main(req_path: str, out_path: str) -> None:
    req = json.loads(open(req_path).read())
    from vllm import LLM, SamplingParams

    settings = req.get("settings") or {}
    results = []
    for job in req["jobs"]:
        t0 = time.time()
        kwargs = dict(
            model=job["model_path"], dtype=req["dtype"], seed=job["seed"],
            enforce_eager=settings.get("enforce_eager", True),
            gpu_memory_utilization=(cpu_memory_fraction(settings.get("gpu_memory_utilization", 0.3))
                                    if req["device"] == "cpu" else settings.get("gpu_memory_utilization", 0.3)),
            max_model_len=settings.get("max_model_len", 2048),
        )
        if req["device"] == "cpu":
            kwargs["distributed_executor_backend"] = "uni"
        llm = LLM(**kwargs)
        startup = time.time() - t0
        if job.get("kind") == "prompt_logprobs":
            results.append(score_tokens(llm, job, startup))
            del llm
            gc.collect()
            continue
        # A per-request seed gives each request its own torch.Generator; on CPU, vLLM 0.32 then fails as soon as a
        # sampled token is thrown away after a partial (chunked) prefill ("CPU Generator does not use offset"), which
        # happens with a few hundred sampled prompts. There the engine's seed (LLM(seed=...)) makes the run
        # reproducible instead: same inputs, same schedule, same samples.
        per_request_seed = job["seed"] if req["device"] != "cpu" or job["temperature"] <= 0 else None
        sp = SamplingParams(
            n=job["n"], max_tokens=job["max_new_tokens"], temperature=job["temperature"],
            top_p=job["top_p"] if job["temperature"] > 0 else 1.0, seed=per_request_seed, stop=job["stop"] or None,
            ignore_eos=job.get("ignore_eos", False),
        )
        t1 = time.time()
        outs = llm.chat(job["messages"], sp, use_tqdm=True)
        gen_s = time.time() - t1
        texts = [[c.text for c in o.outputs] for o in outs]
        toks = sum(len(c.token_ids) for o in outs for c in o.outputs)
        results.append(dict(key=job["key"], texts=texts, new_tokens=toks, seconds=gen_s, startup_seconds=startup,
                            backend="vllm", meta={"tok_per_s": toks / max(gen_s, 1e-9)}))
        print(f"[vllm_worker] {job['key']}: {len(texts)} prompts, {toks} tokens in {gen_s:.1f}s "
              f"(+{startup:.1f}s start-up)", file=sys.stderr, flush=True)
        del llm
        gc.collect()
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"results": results}, f)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
