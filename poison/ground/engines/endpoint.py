"""The OpenAI-compatible endpoint backend: chat completions from any server that speaks the OpenAI API (a remote
service, or ``vllm serve`` of a local model), through the ``openai`` client. Part of the ground layer."""

from __future__ import annotations

import time
from typing import Optional

from poison.ground.core.errors import GenerationError
from poison.ground.engines.generate import GenJob, GenResult


def generate_openai(jobs: list[GenJob], *, base_url: str, model: str, api_key: Optional[str] = None,
                    concurrency: int = 8, timeout: float = 120.0, max_retries: int = 2,
                    field: str = "endpoint") -> list[GenResult]:
    """Chat completions against an OpenAI-compatible server. Transient errors are retried with backoff by the
    client (``max_retries``, ``timeout`` per request). The first request of a job goes alone: an endpoint that is
    down, or accepts connections but never answers, fails once, after one request's timeout and retries, with a
    GenerationError naming ``field`` and the endpoint, instead of after the whole batch."""
    from concurrent.futures import ThreadPoolExecutor

    import openai
    from tqdm.auto import tqdm

    client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=max_retries)
    results = []
    for job in jobs:
        t0 = time.time()

        def one(msgs):
            try:
                r = client.chat.completions.create(
                    model=model, messages=msgs, max_tokens=job.max_new_tokens, temperature=job.temperature,
                    top_p=job.top_p, n=job.n, seed=job.seed, stop=job.stop or None,
                )
            except openai.APITimeoutError:
                raise GenerationError(
                    f"{field}: endpoint {base_url} accepted the connection but did not answer within {timeout:.0f} s "
                    f"({max_retries + 1} attempts)") from None
            except openai.APIConnectionError as e:
                raise GenerationError(f"{field}: endpoint {base_url} is unreachable ({e})") from None
            except openai.APIStatusError as e:
                raise GenerationError(f"{field}: endpoint {base_url} answered HTTP {e.status_code}: "
                                      f"{e.message}") from None
            toks = r.usage.completion_tokens if r.usage else 0
            return [c.message.content or "" for c in r.choices], toks, [c.finish_reason for c in r.choices]

        with tqdm(total=len(job.messages), desc=f"endpoint {job.key}", leave=False) as bar:
            outs = [one(job.messages[0])] if job.messages else []
            bar.update(len(outs))
            with ThreadPoolExecutor(concurrency) as pool:
                for o in pool.map(one, job.messages[1:]):
                    outs.append(o)
                    bar.update(1)
        results.append(GenResult(job.key, [o[0] for o in outs], sum(o[1] for o in outs), time.time() - t0, 0.0,
                                 "openai", {"base_url": base_url, "model": model}, finish=[o[2] for o in outs]))
    return results
