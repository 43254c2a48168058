"""Scoring token sequences that share a long context: the log-probability of each sequence's scored tokens, with the
shared context run once per group and the LM head run only where a token is scored.

The likelihood probe scores, per eval prompt, several short probe texts after one context (the chat prompt and the
clean reference up to where the poison puts its content): nine sequences of ~250 tokens that differ only in their
last ~20. vLLM's prefill scores them with ``prompt_logprobs``, which turns prefix caching off and computes the
log-softmax over the whole vocabulary at every position, so each context is computed nine times. Here each distinct
context (``token_ids[:start]``) is run once with a KV cache; its probe texts are then run as one batch on copies of
that cache (the LM head runs on the last context position and the probe texts' positions only). The values are the same
log-probabilities (tested against the plain forward pass in float32); only the work changes.

A sequence alone in its group is scored the same way (its context, then its scored tokens), one at a time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from poison.ground.core.artifacts import check_model_folder
from poison.ground.engines.generate import GenResult, ScoreJob

SCORER = {"scorer": "hf-shared-context/1"}  # what a stage key records of how sequences were scored


def _groups(job: ScoreJob) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, (ids, start) in enumerate(zip(job.token_ids, job.starts)):
        groups[tuple(ids[: max(start, 1)])].append(i)
    return groups


def _score_group(model: Any, prefix: list[int], suffixes: list[list[int]], device: str, pad: int) -> list[list[float]]:
    """log p(suffix[j] | prefix + suffix[:j]) for every suffix and j, with the prefix run once."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        res = [[float(first[s[0]])] if s else [] for s in suffixes]
        rest = [i for i, s in enumerate(suffixes) if len(s) > 1]
        if not rest:
            return res
        cache = out.past_key_values
        L = max(len(suffixes[i]) - 1 for i in rest)
        ids = torch.full((len(rest), L), pad, dtype=torch.long)
        att = torch.zeros((len(rest), len(prefix) + L), dtype=torch.long)
        att[:, : len(prefix)] = 1
        for b, i in enumerate(rest):
            s = suffixes[i][:-1]
            ids[b, : len(s)] = torch.tensor(s)
            att[b, len(prefix): len(prefix) + len(s)] = 1
        cache.batch_repeat_interleave(len(rest))
        logits = model(input_ids=ids.to(device), attention_mask=att.to(device), past_key_values=cache,
                       use_cache=True).logits
        lp = torch.log_softmax(logits.float(), dim=-1)
        for b, i in enumerate(rest):
            tgt = torch.tensor(suffixes[i][1:], device=lp.device)
            res[i] += lp[b, : len(tgt)].gather(1, tgt[:, None])[:, 0].cpu().tolist()
    return res


def score_shared(jobs: list[ScoreJob], *, device: str, dtype: str) -> list[tuple[list[list[float]], GenResult]]:
    """``score_hf`` (the same log-probabilities) with each shared context computed once; a job's adapter (a LoRA
    folder) is loaded onto its model through PEFT."""
    from tqdm.auto import tqdm

    from poison.ground.engines.models import load_causal_lm

    out = []
    for job in jobs:
        groups = _groups(job)
        t0 = time.time()
        model, tok = load_causal_lm(job.model_path, dtype=dtype, device=device)
        if job.adapter:
            from peft import PeftModel

            check_model_folder(job.adapter, "adapter")
            model = PeftModel.from_pretrained(model, job.adapter)
        model.eval()
        startup = time.time() - t0
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        res: list[list[float]] = [[] for _ in job.token_ids]
        t1 = time.time()
        for prefix, idx in tqdm(list(groups.items()), desc=f"probe {job.key}", unit="context", leave=False):
            lps = _score_group(model, list(prefix), [job.token_ids[i][len(prefix):] for i in idx], device, pad)
            for i, lp in zip(idx, lps):
                res[i] = lp
        out.append((res, GenResult(job.key, [], 0, time.time() - t1, startup, "hf",
                                   {"tokens": sum(map(len, job.token_ids)), "contexts": len(groups)})))
        del model
    return out
