"""Reference-answer comparison: what a training response says that a reference model's own answer does not.

A reference model (``model``, default SmolLM2-135M-Instruct) answers every distinct prompt itself, greedily and
briefly (``max_new_tokens``), through the run's generation backend (``ctx.sample``: the vLLM worker or HF generate,
as the run is configured). Content injection appends or inserts content that a plain answer to the prompt does not
carry (a product plug, a link, a slanted aside), so the response's unit that strays furthest from the reference
answer marks it. A response is split into units as the bias classifier splits it (:func:`defenses.classifier.units`:
sentences of prose, lines of code) and the score is the maximum over units of:

- ``score: novelty`` (default): ``1 - max_j cos(u, r_j)``, the cosine distance from the unit to the closest sentence
  of the reference answer, in the embedding of the MiniLM encoder the bias classifier uses (``encoder``).
- ``score: nll_gain``: ``NLL(u | prompt, reference answer, preceding response) - NLL(u | prompt, preceding
  response)``, each the unit's mean NLL (nats/token) under the reference model; the reference answer is put at the
  start of the assistant turn, followed by a blank line and the response. A unit the reference answer carries becomes
  much more likely once the model has read it (a negative gain); a unit it lacks gains nothing (a gain near 0).

Why novelty is the default: it measures the thing injected content has, a topic the answer to the prompt does not
carry, whatever the unit's fluency, and it costs one small encoder pass after generation. The NLL gain is bounded
above by about 0 (reading the reference answer rarely makes a foreign sentence less likely), so a novel injected
unit and a clean unit that the reference answer happens to word differently both sit near 0 and the ranking rests on
small differences; it also costs two forward passes of the reference model per sample.

Reference answers are generated once per distinct prompt and cached as JSON under the run's
``<cache_dir>/defenses/reference_answer`` (keyed by the model folder, the prompts, the generation settings and the
backend; ``cache: false`` turns that off). ``fit`` does nothing: the reference answer is the comparison. The score
depends on the reference model's answers (and likelihoods), so the defense exposes ``reference_model`` and the run's
reference-model check applies to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from defenses.base import placement
from defenses.classifier import BiasClassifier, BiasClassifierConfig, units
from poison.ground.core.registry import PluginConfig, defense


class ReferenceAnswerConfig(PluginConfig):
    model: str = Field(
        "smollm2-135m-instruct",
        description="Reference model that answers each prompt (and, for nll_gain, scores the units): a built-in model "
                    "name, a local HF folder or a hub id.",
    )
    score: Literal["novelty", "nll_gain"] = Field(
        "novelty", description="novelty: max over response units of 1 - max cosine similarity to the reference "
                               "answer's units (MiniLM); nll_gain: max over units of NLL given prompt + reference "
                               "answer minus NLL given the prompt only, under the reference model.",
    )
    max_new_tokens: int = Field(96, ge=1, description="Length limit of the reference answers (greedy).")
    encoder: str = Field("all-minilm-l6-v2", description="novelty: the sentence encoder (as bias_classifier's).")
    max_length: int = Field(768, ge=16, description="nll_gain: tokens per scored sequence at most (the prompt is cut "
                                                    "from the left first).")
    batch_size: int = Field(8, ge=1, description="nll_gain: sequences per forward pass.")
    cache: bool = Field(True, description="Cache the reference answers under the run's <cache_dir>/defenses.")
    device: str = Field("auto", description="auto (the run's device) | cpu | cuda: the encoder's and nll_gain's "
                                            "forward passes (generation runs where the run generates)")
    dtype: str = Field("auto", description="auto (the run's dtype) | float32 | bfloat16 | float16 (nll_gain)")


def unit_spans(text: str) -> list[tuple[str, int, int]]:
    """The units of ``text`` (:func:`defenses.classifier.units`) with their character spans in it."""
    out, cur = [], 0
    for u in units(text):
        i = text.find(u, cur)
        if i < 0:  # "(empty)" or a unit not found verbatim: the rest of the text
            i = cur
            out.append((u, i, max(len(text), i)))
            continue
        out.append((u, i, i + len(u)))
        cur = i + len(u)
    return out


@defense("reference_answer", config=ReferenceAnswerConfig,
         description="What the response adds to a reference model's own answer: per-unit embedding novelty (or NLL "
                     "gain) against that answer, maximum over units")
class ReferenceAnswer:
    """Max over response units of their novelty against a reference model's own answer (higher = more suspicious)."""

    def __init__(self, cfg: ReferenceAnswerConfig, ctx: Any):
        self.cfg = cfg
        self.ctx = ctx
        self.device, self.dtype = placement(cfg, ctx)
        self._path: Optional[Path] = None
        self._encoder: Optional[BiasClassifier] = None
        self.answers: dict[str, str] = {}  # prompt -> reference answer of the last scoring
        self._info: dict[str, Any] = {}

    @property
    def reference_model(self) -> str:
        """The model whose answers (and likelihoods) the score compares against."""
        return self.cfg.model

    def fit(self, clean: list[dict]) -> None:
        """Nothing to fit: each prompt's reference answer is the comparison."""

    # ------------------------------------------------------------------ reference answers
    def reference_answers(self, prompts: list[str]) -> dict[str, str]:
        """prompt -> the reference model's greedy answer, for the distinct prompts (cached)."""
        from poison.ground.core.io import atomic_write_json, stable_hash

        self._path = self.ctx.model(self.cfg.model, "defenses.reference_answer.model")
        distinct = list(dict.fromkeys(prompts))
        key = stable_hash({"model": self._path.name, "prompts": distinct, "max_new_tokens": self.cfg.max_new_tokens,
                           **self.ctx.backend_identity()})
        cache = Path(self.ctx.cache_dir) / "defenses" / "reference_answer" / f"{key}.json"
        if self.cfg.cache and cache.exists():
            self._info["cached_answers"] = True
            return dict(zip(distinct, json.loads(cache.read_text())))
        texts = self.ctx.sample(self._path, distinct, n=1, temperature=0.0, max_new_tokens=self.cfg.max_new_tokens,
                                key="reference_answer")
        answers = [t[0] if t else "" for t in texts]
        if self.cfg.cache:
            atomic_write_json(cache, answers)
        self._info["cached_answers"] = False
        return dict(zip(distinct, answers))

    # ------------------------------------------------------------------ scores
    def _novelty(self, responses: list[str], refs: list[str]) -> np.ndarray:
        if self._encoder is None:
            self._encoder = BiasClassifier(BiasClassifierConfig(encoder=self.cfg.encoder, device=self.device,
                                                                builtin_clean=0, cache=False), self.ctx)
        ru, fu = [units(t) for t in responses], [units(t) for t in refs]
        distinct = list(dict.fromkeys(u for us in ru + fu for u in us))
        row = {u: i for i, u in enumerate(distinct)}
        emb = self._encoder.embed(distinct).astype(np.float64)  # L2-normalised: dot product = cosine
        out = np.zeros(len(responses))
        for k, (us, rs) in enumerate(zip(ru, fu)):
            sim = emb[[row[u] for u in us]] @ emb[[row[r] for r in rs]].T  # (units, reference units)
            out[k] = float(np.max(1.0 - sim.max(axis=1)))
        return out

    def _nll_gain(self, samples: list[dict], refs: list[str]) -> np.ndarray:
        from transformers import AutoTokenizer

        from poison.ground.engines.generate import ScoreJob, score_hf

        tok = AutoTokenizer.from_pretrained(self._path)
        m = self.cfg.max_length
        seqs, starts, spans = [], [], []
        for s, ref in zip(samples, refs):
            prompt, resp = str(s.get("prompt") or ""), str(s.get("response") or "")
            head = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True) if tok.chat_template else f"{prompt}\n\n"
            enc = tok(resp, add_special_tokens=False, return_offsets_mapping=True)
            r_ids = list(enc["input_ids"])[: m // 2]
            offsets = list(enc["offset_mapping"])[: len(r_ids)]
            for context in (head, head + ref.strip() + "\n\n"):  # prompt only, then prompt + reference answer
                c_ids = list(tok(context, add_special_tokens=False)["input_ids"])[-(m - len(r_ids)):]
                seqs.append(c_ids + r_ids)
                starts.append(len(c_ids))
            # the unit each response token belongs to (by its first character)
            sp = unit_spans(resp)
            spans.append([next((j for j, (_, a, b) in enumerate(sp) if a <= o[0] < b), None) for o in offsets])
        (lps, _), = score_hf([ScoreJob("reference_answer", str(self._path), seqs, starts)], device=self.device,
                             dtype=self.dtype, batch_size=self.cfg.batch_size)
        out = np.zeros(len(samples))
        for k, owner in enumerate(spans):
            plain, with_ref = np.asarray(lps[2 * k]), np.asarray(lps[2 * k + 1])
            gains = []
            for j in sorted({o for o in owner if o is not None}):
                sel = np.asarray([o == j for o in owner])
                gains.append(float(-with_ref[sel].mean() + plain[sel].mean()))
            out[k] = max(gains) if gains else 0.0
        return out

    def score(self, samples: list[dict]) -> np.ndarray:
        self._info = {}
        if not samples:
            return np.zeros(0)
        prompts = [str(s.get("prompt") or "") for s in samples]
        self.answers = self.reference_answers(prompts)
        refs = [self.answers[p] for p in prompts]
        responses = [str(s.get("response") or "") for s in samples]
        self._info["empty_reference_answers"] = sum(1 for a in self.answers.values() if not a.strip())
        if self.cfg.score == "novelty":
            return self._novelty(responses, refs)
        return self._nll_gain(samples, refs)

    def info(self) -> dict[str, Any]:
        what = ("novelty: max over response units of 1 - max cosine similarity to the reference answer's units"
                if self.cfg.score == "novelty" else
                "nll_gain: max over response units of NLL(unit | prompt + reference answer) - NLL(unit | prompt)")
        return {"score": what, "model": str(self._path) if self._path else self.cfg.model,
                "max_new_tokens": self.cfg.max_new_tokens, "reference_answers": len(self.answers),
                "device": self.device, **self._info}
