"""Model audits (plugins registered with ``@poison.ground.core.registry.audit``): a defender who receives only a model
and its public base asks whether, and towards what, it was biased, without its training data.

An audit is built as ``Audit(cfg, ctx)`` and called as ``run(suspect, base, prompts) -> dict`` with the two model
folders and neutral probe prompts; it returns a model-level suspicion ``score`` (higher = more suspicious), the
``top`` strings the suspect is biased towards (``[{string, score, count}]``, best first) and ``info``. A model the
audit cannot read (``adapter_stats`` on a model without a LoRA adapter) gets ``score: None`` and ``info["skipped"]``
saying why: the report lists it and leaves it out of the audit's AUROC; input that is wrong (no probe prompts, a
suspect and base without a shared tokenizer) is a DefenseError.

Built-in ``logit_shift`` (after Distill-to-Detect's idea of auditing the logit shift between a suspect and its base;
no code of theirs is used):

1. contexts: each probe prompt with the base model's own greedy answer, read by both models in one forward pass:
   at every answer position (and the one after the answer) the two next-token distributions;
2. divergence points: the ``divergence_points`` positions with the largest KL(suspect || base);
3. from each, a contrastive continuation of ``expand_tokens`` tokens: at each step the token with the largest
   log p_suspect - log p_base among those the suspect finds plausible (p >= ``plausibility`` x its most likely
   token's), so what the suspect says where it departs from its base;
4. strings: the word n-grams (1 to ``max_ngram`` distinct words) of those continuations, each scored by the summed
   log-ratio of its tokens, averaged over divergence points; ranked, the top ``top_k`` returned;
5. the model's score: the top string's score (a fine-tune that only shifts style spreads its log-ratio over
   common words; an injected brand, link or claim concentrates it on strings the base never writes).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import Field

from defenses.base import placement
from poison.ground.core.errors import DefenseError
from poison.ground.core.registry import PluginConfig, audit


class LogitShiftConfig(PluginConfig):
    answer_tokens: int = Field(64, ge=4, description="Length of the base model's greedy answer read as context.")
    divergence_points: int = Field(24, ge=1, description="Contexts with the largest KL(suspect || base) to follow.")
    expand_tokens: int = Field(16, ge=1, description="Tokens of each contrastive continuation.")
    plausibility: float = Field(0.1, gt=0, le=1, description="A continuation token needs p_suspect >= this x the "
                                                             "suspect's most likely token's probability.")
    max_ngram: int = Field(3, ge=1, le=6, description="Longest string (in words) that is ranked.")
    top_k: int = Field(10, ge=1, description="Strings returned.")
    batch_size: int = Field(4, ge=1, description="Contexts per forward pass.")
    device: str = Field("auto", description="auto (the run's device) | cpu | cuda")


def _words(pieces: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Merge token pieces into words (a piece that starts with whitespace starts a new word), summing log-ratios."""
    out: list[list] = []
    for text, lr in pieces:
        if not out or text[:1].isspace() or not re.match(r"[\w'.-]", text[:1]):
            out.append([text.strip(), lr])
        else:
            out[-1][0] += text
            out[-1][1] += lr
    return [(w.strip(".,;:!?()\"'").lower(), v) for w, v in out if w.strip(".,;:!?()\"'")]


@audit("logit_shift", config=LogitShiftConfig,
       description="Ranks the strings a suspect model says where its next-token distribution departs from its base")
class LogitShiftAudit:
    """Contrastive continuations from the contexts where the suspect's logits depart most from its base's."""

    def __init__(self, cfg: LogitShiftConfig, ctx: Any):
        self.cfg = cfg
        self.ctx = ctx
        self.device = placement(cfg, ctx)[0]

    def _load(self, path: Path):
        from poison.ground.engines.models import load_causal_lm

        model, tok = load_causal_lm(path, dtype=self.ctx.dtype, device=self.device)
        return model.eval(), tok

    def run(self, suspect: str | Path, base: str | Path, prompts: list[str]) -> dict[str, Any]:
        import torch

        if not prompts:
            raise DefenseError("logit_shift audit: no probe prompts")
        sus, tok = self._load(Path(suspect))
        ref, tok_b = self._load(Path(base))
        if tok.get_vocab() != tok_b.get_vocab():
            raise DefenseError(f"logit_shift audit: {suspect} and its base {base} do not share a tokenizer")
        special = set(tok.all_special_ids)
        seqs = self._contexts(ref, tok, prompts)
        points, kls = [], []
        with torch.inference_mode():
            for s in range(0, len(seqs), self.cfg.batch_size):
                chunk = seqs[s: s + self.cfg.batch_size]
                lp_s, lp_b, att = self._logprobs(sus, ref, [c for c, _ in chunk], tok.pad_token_id)
                kl_all = (lp_s.exp() * (lp_s - lp_b)).sum(-1).cpu()  # KL(suspect || base) at every position
                del lp_s, lp_b
                for b, (ids, start) in enumerate(chunk):
                    for t in range(start - 1, len(ids)):  # positions predicting the answer and what follows it
                        kl = float(kl_all[b, t])
                        kls.append(kl)
                        points.append((kl, ids[: t + 1]))
        points.sort(key=lambda p: -p[0])
        scores: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        chosen = points[: self.cfg.divergence_points]
        for _, ctx_ids in chosen:
            pieces = self._contrast(sus, ref, tok, ctx_ids, special)
            words = _words(pieces)
            seen = set()
            for n in range(1, self.cfg.max_ngram + 1):
                for i in range(len(words) - n + 1):
                    parts = [w for w, _ in words[i: i + n]]
                    gram = " ".join(parts)
                    if gram in seen or len(set(parts)) < n:  # a repeated word is degenerate decoding, not content
                        continue
                    seen.add(gram)
                    scores[gram] += sum(v for _, v in words[i: i + n])
                    counts[gram] += 1
        k = max(1, len(chosen))
        ranked = sorted(scores, key=lambda g: -scores[g])
        top = [{"string": g, "score": scores[g] / k, "count": counts[g]} for g in ranked[: self.cfg.top_k]]
        return {"score": top[0]["score"] if top else 0.0, "top": top,
                "info": {"contexts": len(points), "prompts": len(prompts), "divergence_points": len(chosen),
                         "mean_kl": sum(kls) / len(kls) if kls else 0.0, "max_kl": chosen[0][0] if chosen else 0.0,
                         "device": self.device, "dtype": self.ctx.dtype}}

    # ------------------------------------------------------------------ pieces
    def _contexts(self, ref, tok, prompts: list[str]) -> list[tuple[list[int], int]]:
        """(chat prompt + the base model's greedy answer, index of the answer's first token) per prompt."""
        import torch

        out = []
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            for s in range(0, len(prompts), self.cfg.batch_size):
                chats = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True)
                         for p in prompts[s: s + self.cfg.batch_size]]
                enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
                with torch.inference_mode():
                    gen = ref.generate(**enc, max_new_tokens=self.cfg.answer_tokens, do_sample=False,
                                       pad_token_id=tok.pad_token_id)
                for b in range(len(chats)):
                    prompt_ids = [int(x) for x, m in zip(enc["input_ids"][b], enc["attention_mask"][b]) if m]
                    answer = [int(x) for x in gen[b, enc["input_ids"].shape[1]:] if int(x) != tok.pad_token_id]
                    out.append((prompt_ids + answer, len(prompt_ids)))
        finally:
            tok.padding_side = side
        return out

    def _logprobs(self, sus, ref, seqs: list[list[int]], pad: int):
        import torch

        L = max(len(x) for x in seqs)
        ids = torch.full((len(seqs), L), pad if pad is not None else 0, dtype=torch.long)
        att = torch.zeros((len(seqs), L), dtype=torch.long)
        for b, x in enumerate(seqs):
            ids[b, : len(x)] = torch.tensor(x)
            att[b, : len(x)] = 1
        ids, att = ids.to(self.device), att.to(self.device)
        ls = sus(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
        lb = ref(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
        return ls, lb, att

    def _contrast(self, sus, ref, tok, ctx_ids: list[int], special: set[int]) -> list[tuple[str, float]]:
        """The contrastive continuation from a context: (token text, log-ratio) per step."""
        import torch

        ids = torch.tensor([ctx_ids], device=self.device)
        past_s = past_b = None
        pieces = []
        with torch.inference_mode():
            for _ in range(self.cfg.expand_tokens):
                out_s = sus(input_ids=ids, past_key_values=past_s, use_cache=True)
                out_b = ref(input_ids=ids, past_key_values=past_b, use_cache=True)
                past_s, past_b = out_s.past_key_values, out_b.past_key_values
                ls = out_s.logits[0, -1].float().log_softmax(-1)
                lb = out_b.logits[0, -1].float().log_softmax(-1)
                ok = ls >= ls.max() + torch.log(torch.tensor(self.cfg.plausibility))
                ratio = torch.where(ok, ls - lb, torch.full_like(ls, -float("inf")))
                t = int(ratio.argmax())
                if t in special:
                    break
                pieces.append((tok.decode([t]), float(ratio[t])))
                ids = torch.tensor([[t]], device=self.device)
        return pieces
