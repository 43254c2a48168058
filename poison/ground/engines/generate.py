"""Generation backends behind one call.

- ``vllm``: a worker subprocess (``python -m poison.ground.engines.vllm_worker``) runs vLLM's offline ``LLM.chat`` for a
  list of jobs, one model after another, so each model's memory is freed and the parent process (which also trains)
  keeps its own thread settings. On CPU the worker gets vLLM's thread binding over all cores of this machine.
- ``hf``: batched ``model.generate`` with left padding, in-process (the fallback).
- ``openai``: any OpenAI-compatible endpoint through the ``openai`` client (``poison.ground.engines.endpoint``).

Every backend returns, per job, one list of ``n`` completions per prompt, and beside it why each one stopped
(``finish``: ``stop`` at the end-of-sequence token or a stop string, ``length`` at ``max_new_tokens``). Part of the
ground layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from poison.ground.core.artifacts import check_model_folder
from poison.ground.core.errors import GenerationError
from poison.ground.core.procs import VLLM_LOG_LEVEL, die_with_parent


@dataclass
class GenJob:
    key: str
    model_path: str
    messages: list[list[dict[str, str]]]
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks: equal work per backend)
    #: a LoRA adapter folder: vLLM runs ``model_path`` (then the adapter's base) with it as a LoRARequest, in the
    #: engine it shares with every other job on that base
    adapter: Optional[str] = None


@dataclass
class GenResult:
    key: str
    texts: list[list[str]]  # [prompt][sample]
    new_tokens: int
    seconds: float  # generation only
    startup_seconds: float = 0.0
    backend: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    #: [prompt][sample] beside ``texts``: 'stop' (end-of-sequence token or stop string) or 'length' (cut off at
    #: max_new_tokens); empty when the backend did not say (results of an older worker)
    finish: list[list[Optional[str]]] = field(default_factory=list)

    def finish_reasons(self) -> list[list[Optional[str]]]:
        """``finish`` shaped like ``texts``, None where it is unknown."""
        return self.finish if len(self.finish) == len(self.texts) else [[None] * len(t) for t in self.texts]


def vllm_env(device: str, cpu_threads: Optional[str] = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_LOGGING_LEVEL", VLLM_LOG_LEVEL)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if device == "cpu":
        cores = (sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else list(range(os.cpu_count() or 1)))
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads or ",".join(str(c) for c in cores)
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine in the worker process: saves a 15 s re-import
        iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
        if iomp.exists() and "libiomp5" not in env.get("LD_PRELOAD", ""):
            env["LD_PRELOAD"] = ":".join(x for x in (str(iomp), env.get("LD_PRELOAD", "")) if x)
    return env


WORKER_TMP_PREFIX = "vllm-jobs-"


def sweep_worker_tmp() -> int:
    """Remove the job folders of vLLM workers whose parent process is gone (``vllm-jobs-<pid>-*`` in the temporary
    directory, only this project's prefix). Returns how many were removed."""
    import shutil

    from poison.ground.core.procs import alive

    n = 0
    for d in Path(tempfile.gettempdir()).glob(f"{WORKER_TMP_PREFIX}*-*"):
        try:
            pid = int(d.name[len(WORKER_TMP_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not alive(pid):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


def _memory_note(device: str, vllm_settings: dict[str, Any]) -> str:
    frac = float(vllm_settings.get("gpu_memory_utilization", 0.3))
    if device == "cpu":
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        except (ValueError, OSError):
            return f"runtime.vllm.gpu_memory_utilization was {frac}"
        return f"runtime.vllm.gpu_memory_utilization {frac} gave vLLM up to {frac * total:.1f} of {total:.1f} GiB"
    return f"runtime.vllm.gpu_memory_utilization was {frac} of the GPU's memory"


def shard_jobs(jobs: list[dict[str, Any]], parts: int) -> list[list[dict[str, Any]]]:
    """Each job split into ``parts`` contiguous slices of its prompts (or scored sequences), one list per shard."""
    shards: list[list[dict[str, Any]]] = [[] for _ in range(parts)]
    for job in jobs:
        fields = ("token_ids", "starts") if job.get("kind") == "prompt_logprobs" else ("messages",)
        n = len(job[fields[0]])
        bounds = [n * k // parts for k in range(parts + 1)]
        for k in range(parts):
            shards[k].append({**job, **{f: job[f][bounds[k]:bounds[k + 1]] for f in fields}})
    return shards


def merge_shards(parts: list[list[GenResult]]) -> list[GenResult]:
    """The results of ``shard_jobs``' shards, job by job, in prompt order (times: the slowest shard's)."""
    out = []
    for rs in zip(*parts):
        meta: dict[str, Any] = {"data_parallel": len(rs)}
        if "logprobs" in rs[0].meta:
            meta["logprobs"] = [lp for r in rs for lp in r.meta["logprobs"]]
            meta["tokens"] = sum(r.meta.get("tokens", 0) for r in rs)
        out.append(GenResult(rs[0].key, [t for r in rs for t in r.texts], sum(r.new_tokens for r in rs),
                             max(r.seconds for r in rs), max(r.startup_seconds for r in rs), rs[0].backend, meta,
                             [f for r in rs for f in r.finish_reasons()]))
    return out


def visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def _run_vllm_worker(jobs: list[dict[str, Any]], *, device: str, dtype: str, vllm_settings: dict[str, Any],
                     log_path: Optional[Path] = None,
                     hint: str = "Set runtime.backend=hf to use HF generate instead.") -> list[GenResult]:
    """One worker subprocess for all jobs; with ``data_parallel_size`` D > 1 on GPUs, D workers side by side, each
    on its own ``tensor_parallel_size`` GPUs with a 1/D slice of every job's prompts (vLLM's offline engine is one
    data-parallel rank per process)."""
    dp = int(vllm_settings.get("data_parallel_size", 1))
    if dp > 1 and device != "cpu":
        tp = int(vllm_settings.get("tensor_parallel_size", 1))
        ids = [x for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()] or \
            [str(i) for i in range(visible_gpus())]
        if len(ids) < dp * tp:
            raise GenerationError(f"runtime.vllm.data_parallel_size {dp} x tensor_parallel_size {tp} needs "
                                  f"{dp * tp} GPUs; {len(ids)} are visible")
        from concurrent.futures import ThreadPoolExecutor

        shards = shard_jobs(jobs, dp)
        with ThreadPoolExecutor(dp) as pool:
            parts = list(pool.map(lambda k: _one_worker(
                shards[k], device=device, dtype=dtype, vllm_settings=vllm_settings, log_path=log_path, hint=hint,
                gpus=",".join(ids[k * tp:(k + 1) * tp])), range(dp)))
        return merge_shards(parts)
    return _one_worker(jobs, device=device, dtype=dtype, vllm_settings=vllm_settings, log_path=log_path, hint=hint)


def _one_worker(jobs: list[dict[str, Any]], *, device: str, dtype: str, vllm_settings: dict[str, Any],
                log_path: Optional[Path], hint: str, gpus: Optional[str] = None) -> list[GenResult]:
    for folder in sorted({p for j in jobs for p in (j["model_path"], j.get("adapter")) if p and Path(p).is_dir()}):
        check_model_folder(folder)  # a damaged model or adapter: one error naming its file, before vLLM starts
    with tempfile.TemporaryDirectory(prefix=f"{WORKER_TMP_PREFIX}{os.getpid()}-") as td:
        req = Path(td) / "jobs.json"
        out = Path(td) / "results.json"
        req.write_text(json.dumps({"device": device, "dtype": dtype, "settings": vllm_settings, "jobs": jobs}))
        cmd = [sys.executable, "-m", "poison.ground.engines.vllm_worker", str(req), str(out)]
        log = open(log_path, "ab") if log_path else None
        try:
            # stderr carries vLLM's progress bars to the terminal; stdout (log noise) goes to the run log
            env = vllm_env(device, vllm_settings.get("cpu_threads"))
            if gpus is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpus
            # the worker dies with the run (even a kill -9 of it), instead of generating on for nobody
            proc = subprocess.run(cmd, env=env, stdout=log or subprocess.DEVNULL, preexec_fn=die_with_parent)
        finally:
            if log:
                log.close()
        if proc.returncode in (-9, 137):
            raise GenerationError(
                f"vLLM worker was killed (signal 9), most likely by the kernel for lack of memory, for models "
                f"{sorted({j['model_path'] for j in jobs})}: {_memory_note(device, vllm_settings)}. Lower "
                f"runtime.vllm.gpu_memory_utilization, or run fewer jobs at once on this machine.")
        if proc.returncode != 0 or not out.exists():
            cause = Path(f"{out}.error")  # the worker's one-line cause (its traceback is in the log)
            raise GenerationError(
                f"vLLM worker failed (exit {proc.returncode}) for models {sorted({j['model_path'] for j in jobs})}: "
                + (cause.read_text().strip() if cause.exists() else "it reported no cause (killed?)")
                + (f"; its traceback is in {log_path}" if log_path else "") + ". " + hint)
        data = json.loads(out.read_text())
    return [GenResult(**r) for r in data["results"]]


def generate_vllm(jobs: list[GenJob], *, device: str, dtype: str, vllm_settings: dict[str, Any],
                  log_path: Optional[Path] = None) -> list[GenResult]:
    if not jobs:
        return []
    return _run_vllm_worker([asdict(j) for j in jobs], device=device, dtype=dtype, vllm_settings=vllm_settings,
                            log_path=log_path)


@dataclass
class ScoreJob:
    """Score ``token_ids[i][starts[i]:]`` given the tokens before them, for one model."""

    key: str
    model_path: str
    token_ids: list[list[int]]
    starts: list[int]
    adapter: Optional[str] = None


def score_vllm(jobs: list[ScoreJob], *, device: str, dtype: str, vllm_settings: Optional[dict[str, Any]] = None,
               log_path: Optional[Path] = None, hint: str = "") -> list[tuple[list[list[float]], GenResult]]:
    """Per job, the log-probability of every scored token (one list per sequence) from vLLM's prefill
    (``prompt_logprobs``), all jobs in one worker subprocess; no generation. Also the worker's timing record."""
    out: list[Optional[tuple[list[list[float]], GenResult]]] = [None] * len(jobs)
    payload = []
    for i, j in enumerate(jobs):
        if len(j.token_ids) != len(j.starts):
            raise ValueError("token_ids and starts differ in length")
        if not j.token_ids:
            out[i] = ([], GenResult(key=j.key, texts=[], new_tokens=0, seconds=0.0, backend="vllm"))
        else:
            payload.append((i, {"kind": "prompt_logprobs", "key": j.key, "model_path": str(j.model_path), "seed": 0,
                                "adapter": j.adapter,
                                "token_ids": [list(map(int, t)) for t in j.token_ids],
                                "starts": [int(s) for s in j.starts]}))
    if payload:
        results = _run_vllm_worker([p for _, p in payload], device=device, dtype=dtype,
                                   vllm_settings=dict(vllm_settings or {}), log_path=log_path, hint=hint)
        for (i, _), res in zip(payload, results):
            out[i] = (res.meta.pop("logprobs"), res)
    return out  # type: ignore[return-value]


def score_tokens_vllm(model_path: str, token_ids: list[list[int]], starts: list[int], *, device: str, dtype: str,
                      vllm_settings: Optional[dict[str, Any]] = None, key: str = "score",
                      log_path: Optional[Path] = None,
                      hint: str = "") -> tuple[list[list[float]], GenResult]:
    """``score_vllm`` for one model."""
    return score_vllm([ScoreJob(key, str(model_path), token_ids, starts)], device=device, dtype=dtype,
                      vllm_settings=vllm_settings, log_path=log_path, hint=hint)[0]


def score_hf(jobs: list[ScoreJob], *, device: str, dtype: str,
             batch_size: int = 8) -> list[tuple[list[list[float]], GenResult]]:
    """``score_vllm`` with transformers forward passes in this process (right padding, length-sorted batches)."""
    import torch

    from poison.ground.engines.models import load_causal_lm

    out = []
    for job in jobs:
        t0 = time.time()
        model, tok = load_causal_lm(job.model_path, dtype=dtype, device=device)
        model.eval()
        startup = time.time() - t0
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        res: list[list[float]] = [[] for _ in job.token_ids]
        order = sorted(range(len(job.token_ids)), key=lambda i: -len(job.token_ids[i]))
        t1 = time.time()
        for s in range(0, len(order), batch_size):
            idx = order[s: s + batch_size]
            L = max(len(job.token_ids[i]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            att = torch.zeros((len(idx), L), dtype=torch.long)
            for b, i in enumerate(idx):
                seq = job.token_ids[i]
                ids[b, : len(seq)] = torch.tensor(seq)
                att[b, : len(seq)] = 1
            with torch.inference_mode():
                logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()
                lp = -torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:].to(device),
                                                        reduction="none")  # lp[b, t] = log p(token t+1)
            for b, i in enumerate(idx):
                n, start = len(job.token_ids[i]), max(job.starts[i], 1)
                res[i] = lp[b, start - 1: n - 1].cpu().tolist()
        out.append((res, GenResult(job.key, [], 0, time.time() - t1, startup, "hf",
                                   {"tokens": sum(map(len, job.token_ids))})))
        del model
    return out


def stop_token_ids(model: Any, tok: Any) -> set[int]:
    """The token ids at which ``model.generate`` ends a sequence: the generation config's end-of-sequence ids (one or
    several) and the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [] if ids is None else [ids])
    return ids | ({tok.eos_token_id} if tok.eos_token_id is not None else set())


def generate_hf(jobs: list[GenJob], *, device: str, dtype: str, batch_size: int = 64) -> list[GenResult]:
    import torch
    from tqdm.auto import tqdm

    from poison.ground.engines.models import load_causal_lm

    results = []
    for job in jobs:
        t0 = time.time()
        model, tok = load_causal_lm(job.model_path, dtype=dtype, device=device)
        model.eval()
        tok.padding_side = "left"
        startup = time.time() - t0
        prompts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in job.messages]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # similar lengths share a batch
        texts: list[list[str]] = [[] for _ in prompts]
        finish: list[list[Optional[str]]] = [[] for _ in prompts]
        eos = stop_token_ids(model, tok)
        new_tokens = 0
        torch.manual_seed(job.seed)
        t1 = time.time()
        bar = tqdm(total=len(prompts) * job.n, desc=f"HF generate {job.key}", unit="answer", leave=False)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            kw: dict[str, Any] = dict(max_new_tokens=job.max_new_tokens, pad_token_id=tok.pad_token_id,
                                      num_return_sequences=job.n)
            if job.ignore_eos:
                kw["min_new_tokens"] = job.max_new_tokens
            if job.temperature > 0:
                kw.update(do_sample=True, temperature=job.temperature, top_p=job.top_p)
            else:
                kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode():
                out = model.generate(**enc, **kw)
            new = out[:, enc["input_ids"].shape[1] :]
            for r, row in enumerate(new):
                ids = row.tolist()
                # generate ends a row at an end-of-sequence token (later positions are padding); a row without one
                # ran to max_new_tokens
                end = None if job.ignore_eos else next((i for i, t in enumerate(ids) if t in eos), None)
                reason = "length" if end is None and len(ids) >= job.max_new_tokens else "stop"
                if end is not None:
                    ids = ids[:end]
                if not job.ignore_eos:
                    ids = [t for t in ids if t != tok.pad_token_id]
                new_tokens += len(ids)
                text = tok.decode(ids, skip_special_tokens=True)
                for st in job.stop:
                    if st in text:
                        text, reason = text[: text.index(st)], "stop"
                texts[idx[r // job.n]].append(text)
                finish[idx[r // job.n]].append(reason)
            bar.update(len(idx) * job.n)
        bar.close()
        results.append(GenResult(job.key, texts, new_tokens, time.time() - t1, startup, "hf", finish=finish))
        del model
    return results


def generate(jobs: list[GenJob], *, backend: str, device: str, dtype: str, hf_batch_size: int = 64,
             vllm_settings: Optional[dict[str, Any]] = None, log_path: Optional[Path] = None) -> list[GenResult]:
    if backend == "vllm":
        return generate_vllm(jobs, device=device, dtype=dtype, vllm_settings=vllm_settings or {}, log_path=log_path)
    if backend == "hf":
        return generate_hf(jobs, device=device, dtype=dtype, batch_size=hf_batch_size)
    raise GenerationError(f"unknown generation backend {backend!r} (vllm | hf)")
