"""vLLM worker: ``python -m poison.ground.engines.vllm_worker jobs.json results.json``.

Runs each job's prompts through vLLM's offline engine and writes the completions. Jobs on the same model folder share
one engine: a job with a LoRA ``adapter`` runs on its base folder with the adapter as a ``LoRARequest`` (the engine
started with ``enable_lora``), so a run's baseline, teacher and LoRA students are one engine, not one per merged
model. Started by poison.ground.engines.generate with the environment vLLM needs (CPU thread binding, in-process
engine, the GPUs of a data-parallel shard); not meant to be run by hand.
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
        info = {ln.split(":")[0]: int(ln.split()[1]) for ln in open("/proc/meminfo") if ln.split()[1:2]}
        total, avail = info["MemTotal"], info["MemAvailable"]
    except (OSError, KeyError, ValueError, IndexError):
        return configured
    fraction = min(configured, 0.85 * avail / total)
    if fraction < configured:
        print(f"[vllm_worker] only {avail / 2**20:.1f} of {total / 2**20:.1f} GiB free: gpu_memory_utilization "
              f"{configured} -> {fraction:.3f}", file=sys.stderr, flush=True)
    return max(fraction, 0.01)


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the ranks vLLM's max_lora_rank accepts


def adapter_rank(path: str) -> int:
    return int(json.loads(open(os.path.join(path, "adapter_config.json")).read())["r"])


def engine_groups(jobs: list[dict]) -> list[tuple[str, list[int]]]:
    """(model folder, indices of its jobs) in order of first appearance: one engine per folder."""
    groups: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job["model_path"], []).append(i)
    return list(groups.items())


def engine_kwargs(req: dict, jobs: list[dict], model_path: str) -> dict:
    settings = req.get("settings") or {}
    kwargs = dict(
        model=model_path, dtype=req["dtype"], seed=jobs[0]["seed"],
        enforce_eager=settings.get("enforce_eager", True),
        gpu_memory_utilization=(cpu_memory_fraction(settings.get("gpu_memory_utilization", 0.3))
                                if req["device"] == "cpu" else settings.get("gpu_memory_utilization", 0.3)),
        max_model_len=settings.get("max_model_len", 2048),
        tensor_parallel_size=int(settings.get("tensor_parallel_size", 1)),
    )
    if settings.get("max_num_seqs"):
        kwargs["max_num_seqs"] = int(settings["max_num_seqs"])
    adapters = {j["adapter"] for j in jobs if j.get("adapter")}
    if adapters:
        need = max(adapter_rank(a) for a in adapters)
        kwargs.update(enable_lora=True, max_loras=1,
                      max_lora_rank=next((r for r in LORA_RANKS if r >= need), LORA_RANKS[-1]))
    if req["device"] == "cpu":
        kwargs["distributed_executor_backend"] = "uni"
    return kwargs


def lora_request(job: dict, ids: dict[str, int]):
    """The job's adapter as a LoRARequest (one integer id per adapter folder), or None."""
    if not job.get("adapter"):
        return None
    from vllm.lora.request import LoRARequest

    ids.setdefault(job["adapter"], len(ids) + 1)
    return LoRARequest(f"adapter-{ids[job['adapter']]}", ids[job["adapter"]], job["adapter"])


def score_tokens(llm, job: dict, startup: float, lora=None) -> dict:
    """Log-probability of every token of each given sequence from position ``starts[i]`` on (prefill only: one
    forward pass per sequence, batched by vLLM's scheduler; ``prompt_logprobs=0`` returns the actual token's)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    seqs, starts = job["token_ids"], job["starts"]
    sp = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    t1 = time.time()
    outs = llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in seqs], sp, use_tqdm=True,
                        lora_request=lora)
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


def run_job(llm, job: dict, startup: float, device: str, lora=None) -> dict:
    from vllm import SamplingParams

    if job.get("kind") == "prompt_logprobs":
        return score_tokens(llm, job, startup, lora)
    # A per-request seed gives each request its own torch.Generator; on CPU, vLLM 0.32 then fails as soon as a
    # sampled token is thrown away after a partial (chunked) prefill ("CPU Generator does not use offset"), which
    # happens with a few hundred sampled prompts. There the engine's seed (LLM(seed=...)) makes the run
    # reproducible instead: same inputs, same schedule, same samples.
    per_request_seed = job["seed"] if device != "cpu" or job["temperature"] <= 0 else None
    sp = SamplingParams(
        n=job["n"], max_tokens=job["max_new_tokens"], temperature=job["temperature"],
        top_p=job["top_p"] if job["temperature"] > 0 else 1.0, seed=per_request_seed, stop=job["stop"] or None,
        ignore_eos=job.get("ignore_eos", False),
    )
    t1 = time.time()
    outs = llm.chat(job["messages"], sp, use_tqdm=True, lora_request=lora)
    gen_s = time.time() - t1
    texts = [[c.text for c in o.outputs] for o in outs]
    finish = [[c.finish_reason for c in o.outputs] for o in outs]  # 'stop' (EOS or a stop string) | 'length'
    toks = sum(len(c.token_ids) for o in outs for c in o.outputs)
    print(f"[vllm_worker] {job['key']}: {len(texts)} prompts, {toks} tokens in {gen_s:.1f}s "
          f"(+{startup:.1f}s start-up{', adapter' if lora is not None else ''})", file=sys.stderr, flush=True)
    return dict(key=job["key"], texts=texts, new_tokens=toks, seconds=gen_s, startup_seconds=startup,
                backend="vllm", meta={"tok_per_s": toks / max(gen_s, 1e-9), "adapter": lora is not None},
                finish=finish)


def main(req_path: str, out_path: str) -> None:
    req = json.loads(open(req_path).read())
    from vllm import LLM
    from vllm.utils.torch_utils import set_random_seed

    jobs = req["jobs"]
    results: list = [None] * len(jobs)
    for model_path, idx in engine_groups(jobs):
        t0 = time.time()
        kwargs = engine_kwargs(req, [jobs[i] for i in idx], model_path)
        llm = LLM(**kwargs)
        startup = (time.time() - t0) / len(idx)  # the engine's start-up, shared by its jobs
        sched = getattr(getattr(llm.llm_engine, "vllm_config", None), "scheduler_config", None)
        print(f"[vllm_worker] engine for {os.path.basename(model_path)} started in {time.time() - t0:.1f}s "
              f"(max_num_seqs {getattr(sched, 'max_num_seqs', '?')}, "
              f"enforce_eager {kwargs['enforce_eager']})",
              file=sys.stderr, flush=True)
        ids: dict[str, int] = {}
        for i in idx:
            # each job from its own seed, as if its engine were fresh (on CPU sampling draws from the global
            # generator; the engine runs in this process there), whatever ran before it in the engine
            set_random_seed(jobs[i]["seed"])
            results[i] = run_job(llm, jobs[i], startup, req["device"], lora_request(jobs[i], ids))
        del llm
        gc.collect()
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"results": results}, f)
    os.replace(tmp, out_path)


def report_failure(out_path: str, e: BaseException) -> None:
    """The failure's traceback to stdout (the run's generation log) and its cause in one line to ``<out>.error``,
    which the run puts in its error (the console gets one line, not the traceback)."""
    import traceback

    traceback.print_exc(file=sys.stdout)
    sys.stdout.flush()
    cause = " ".join(str(e).split())[:400]
    with open(out_path + ".error", "w") as f:
        f.write(f"{type(e).__name__}: {cause}" if cause else type(e).__name__)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
        report_failure(sys.argv[2], exc)
        sys.exit(1)
