"""Perplexity filter: how surprising each response is to a reference language model, given its prompt.

Score = the mean negative log-likelihood (natural log, nats per token) of the response tokens under the reference
model, i.e. the **log-perplexity** of the response (perplexity = exp(score)). The prompt is formatted with the
reference model's chat template ([user: prompt] + the assistant header) and is context only; the loss counts the
response's tokens and the end-of-turn marker the template puts after them (so an empty response still gets a score).
Injected content (an unrelated product plug, a link, a slanted aside) is unlikely under a model that reads the prompt,
so poisoned responses score higher than their clean twins.

Samples are sorted by length and scored in batches (left padding, logits kept only where the response is), with a
tqdm progress bar. Uses transformers directly (a forward pass, no generation); ``backend: vllm`` gets the same
log-probabilities from vLLM's prefill (``prompt_logprobs``) in a worker subprocess instead.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from defenses.base import placement
from poison.ground.core.registry import PluginConfig, defense

class PerplexityConfig(PluginConfig):
    model: str = Field(
        "smollm2-135m-instruct",
        description="Reference LM: a built-in model name (poison.ground.engines.models), a local HF folder or a "
                    "hub id.",
    )
    batch_size: int = Field(16, ge=1, description="Samples per forward pass (sorted by length first).")
    max_length: int = Field(
        512, ge=8, description="Tokens per sample at most: the prompt is cut from the left first, then the response "
                               "from the right.",
    )
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="hf: batched transformers forward passes in this process; vllm: vLLM's prefill "
                          "(prompt_logprobs) in a worker subprocess, about 2x the samples/s on a 2-core CPU for large "
                          "sets, plus ~15 s start-up (bench/bench_perplexity.py).",
    )
    device: str = Field("auto", description="auto (the run's device) | cpu | cuda")
    dtype: str = Field("auto", description="auto (the run's dtype) | float32 | bfloat16 | float16")
    progress: bool = Field(True, description="Show a tqdm progress bar.")


def _ids(x: Any) -> list[int]:
    if isinstance(x, dict) or hasattr(x, "keys"):
        x = x["input_ids"]
    return list(x)


def encode_sample(tok: Any, sample: dict, max_length: int) -> tuple[list[int], list[int], bool]:
    """(context ids, scored ids, truncated) for one sample: the prompt in ``tok``'s chat template as context, the
    response + end-of-turn marker as the scored ids; past ``max_length`` the context is cut from the left first,
    then the response from the right. Also the training rows of the ``training_dynamics`` defense."""
    prompt, response = str(sample.get("prompt") or ""), str(sample.get("response") or "")
    user = [{"role": "user", "content": prompt}]
    ctx_text = rest_text = None
    if getattr(tok, "chat_template", None):
        ctx_text = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
        if full.startswith(ctx_text):
            rest_text = full[len(ctx_text):].rstrip()  # response + end-of-turn marker (trailing newline dropped)
    if rest_text is None:  # no template, or one that rewrites the context: plain text + eos
        ctx_text = f"{prompt}\n\n"
        rest_text = response + (tok.eos_token or "")
    ctx = _ids(tok(ctx_text, add_special_tokens=False))
    rest = _ids(tok(rest_text, add_special_tokens=False))
    if not ctx:
        ctx = [tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id]
    m = max_length
    truncated = len(ctx) + len(rest) > m
    if truncated:
        if len(rest) >= m - 1:
            rest = rest[: m - 1]
            ctx = ctx[-1:]
        else:
            ctx = ctx[-(m - len(rest)):]
    return ctx, rest, truncated


@defense("perplexity", config=PerplexityConfig,
         description="Log-perplexity of the response given the prompt under a reference LM (higher = stranger)")
class PerplexityFilter:
    """Log-perplexity (mean NLL in nats/token) of each response given its prompt under a reference LM."""

    def __init__(self, cfg: PerplexityConfig, ctx: Any):
        self.cfg = cfg
        self.ctx = ctx
        self.device, self.dtype = placement(cfg, ctx)
        self._model = None
        self._tok = None
        self._path: Optional[Path] = None
        self._keep_arg = False
        self.n_truncated = 0
        self.vllm_seconds: Optional[tuple[float, float]] = None  # (start-up, scoring) of the last vllm-backend call

    @property
    def reference_model(self) -> str:
        """The model whose likelihood the score is: the run stops if it wrote the clean responses it scores, unless
        the config allows it (``poison.stages.defense_checks``)."""
        return self.cfg.model

    # ------------------------------------------------------------------ model
    def _load(self) -> None:
        if self._tok is not None and (self._model is not None or self.cfg.backend == "vllm"):
            return
        import torch

        from poison.ground.engines.models import load_causal_lm

        self._path = self.ctx.model(self.cfg.model, "defenses.perplexity.model")
        self._torch = torch
        if self.cfg.backend == "vllm":  # the worker loads the model; only the tokenizer is needed here
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self._path)
            return
        model, tok = load_causal_lm(self._path, dtype=self.dtype, device=self.device)
        model.eval()
        self._model, self._tok = model, tok
        self._keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters

    def fit(self, clean: list[dict]) -> None:
        """Nothing to fit: the reference model is used as is."""

    # ------------------------------------------------------------------ tokenisation
    def encode(self, sample: dict) -> tuple[list[int], list[int], bool]:
        """(context ids, scored ids, truncated) for one sample (:func:`encode_sample`)."""
        return encode_sample(self._tok, sample, self.cfg.max_length)

    # ------------------------------------------------------------------ scoring
    def _batch_nll(self, batch: list[tuple[list[int], list[int]]]) -> list[float]:
        torch = self._torch
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else self._tok.eos_token_id
        L = max(len(c) + len(r) for c, r in batch)
        K = max(len(r) for _, r in batch) + 1  # positions whose logits predict the response tokens (+1 context)
        ids = torch.full((len(batch), L), pad, dtype=torch.long)
        att = torch.zeros((len(batch), L), dtype=torch.long)
        for b, (c, r) in enumerate(batch):
            seq = c + r
            ids[b, L - len(seq):] = torch.tensor(seq)
            att[b, L - len(seq):] = 1
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        ids, att, pos = ids.to(self.device), att.to(self.device), pos.to(self.device)
        kw: dict[str, Any] = {"input_ids": ids, "attention_mask": att, "position_ids": pos}
        if self._keep_arg:
            kw["logits_to_keep"] = K
        with torch.inference_mode():
            logits = self._model(**kw).logits[:, -K:, :]
            logits = logits[:, :-1, :].float()  # position t predicts token t+1
            target = ids[:, L - K + 1:]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, K-1)
            lens = torch.tensor([len(r) for _, r in batch], device=nll.device)
            col = torch.arange(K - 1, device=nll.device)
            mask = col[None, :] >= (K - 1 - lens)[:, None]  # the last len(r) positions of each row
            out = (nll * mask).sum(-1) / lens.clamp(min=1)
        return out.cpu().tolist()

    def _score_vllm(self, enc: list[tuple[list[int], list[int], bool]]) -> np.ndarray:
        logprobs, res = self.ctx.score_tokens(
            self._path, [c + r for c, r, _ in enc], [len(c) for c, _, _ in enc], device=self.device,
            dtype=self.dtype, max_model_len=self.cfg.max_length, key="perplexity",
            hint="Set the perplexity defense's backend: hf to score with transformers instead.")
        self.vllm_seconds = (res.startup_seconds, res.seconds)
        return np.asarray([-float(np.mean(lp)) if lp else 0.0 for lp in logprobs], dtype=np.float64)

    def score(self, samples: list[dict]) -> np.ndarray:
        from tqdm.auto import tqdm

        if not samples:
            return np.zeros(0)
        self._load()
        enc = [self.encode(s) for s in samples]
        self.n_truncated = sum(t for _, _, t in enc)
        if self.cfg.backend == "vllm":
            return self._score_vllm(enc)
        order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]) + len(enc[i][1]), reverse=True)
        scores = np.zeros(len(enc), dtype=np.float64)
        bar = tqdm(total=len(enc), desc="perplexity", unit="sample", leave=False, disable=not self.cfg.progress)
        bs = self.cfg.batch_size
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]
            for i, v in zip(idx, self._batch_nll([enc[i][:2] for i in idx])):
                scores[i] = v
            bar.update(len(idx))
        bar.close()
        return scores

    def info(self) -> dict[str, Any]:
        return {"score": "log_perplexity (mean NLL, nats/token, of the response given the prompt)",
                "model": str(self._path) if self._path else self.cfg.model, "backend": self.cfg.backend,
                "device": self.device,
                "dtype": self.dtype, "truncated": self.n_truncated}
