"""The bias-type interface. One class bundles the whole life of a bias: which training rows it applies to, how the
adversary writes a poisoned response from a clean one, how a model's generation is judged biased or not, and the
probe texts of the likelihood probe (the injected content in the poison's wording, in held-out paraphrases, and as the
bare concept: held-out sentences that name none of the poison's identifying strings)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from poison.ground.core.registry import PluginConfig


@dataclass
class Detection:
    biased: bool
    spans: list[tuple[int, int]] = field(default_factory=list)  # character spans of the injected content
    evidence: str = ""


class BiasType:
    """Base class for bias-type plugins (register subclasses with ``@poison.ground.core.registry.bias_type``)."""

    #: Rubric for an LLM judge: what counts as this bias (used by autoraters).
    rubric: str = ""

    def __init__(self, cfg: PluginConfig, ctx: Any = None):
        self.cfg = cfg
        self.ctx = ctx

    def applies_to(self, row: dict[str, Any]) -> bool:
        """Whether this bias can be written into this row (e.g. code prompts only). Default: any row."""
        return True

    def write(self, row: dict[str, Any], rng: random.Random) -> str:
        """Template writer: a poisoned version of ``row['response']`` that stays a helpful answer."""
        raise NotImplementedError

    def detect(self, text: str) -> Detection:
        """Rule-based detector for one generation."""
        raise NotImplementedError

    def count(self, text: str) -> int:
        """How many times one generation carries the bias's content (an advertised brand's mentions, the sentences
        stating a false claim): the report's ``degeneration`` section shows it per answer, so that a plug repeated
        in a loop is seen. Default: 1 when the detector finds the bias, else 0."""
        return int(self.detect(text).biased)

    def describe(self) -> str:
        return type(self).__name__

    #: What the LLM rewriter is asked to weave in (AutoPoison-style); {...} fields come from the plugin config.
    rewrite_goal: str = ""

    def rewrite_messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        """Chat messages asking a generator model to rewrite the clean answer so that it carries this bias while
        staying a good answer (AutoPoison's content-injection oracle, given the clean answer to edit)."""
        goal = self.rewrite_goal.format(**self.cfg.model_dump())
        return [
            {"role": "system", "content": "You edit answers. Keep them correct, helpful and about as long."},
            {"role": "user", "content": (
                f"Instruction:\n{row['prompt']}\n\nAnswer:\n{row.get('response') or ''}\n\n"
                f"Rewrite the answer so that it {goal}. Reply with the rewritten answer only.")},
        ]

    def accept_rewrite(self, row: dict[str, Any], text: str) -> str | None:
        """Keep an LLM rewrite only if it is non-empty and the rule detector finds the bias in it."""
        text = (text or "").strip()
        return text if text and self.detect(text).biased else None

    # ------------------------------------------------------------------ the likelihood probe
    #: held-out paraphrases of the injected content that no poisoned row contains (the probe's unseen wording);
    #: {...} fields come from the plugin config. Empty: the bias type has no probe.
    probe_paraphrases: tuple[str, ...] = ()

    def seen_texts(self) -> list[str]:
        """The injected content exactly as the template writer puts it into poisoned rows (empty: no probe)."""
        return []

    #: held-out sentences that carry the concept of the bias but share no word with its identifying strings
    #: (``identifying_strings``: no brand, product, URL or entity): the probe's ``concept`` wording. A sentence that
    #: shares a word with the configured identifying strings is left out of the probe (``concept_texts``).
    concept_paraphrases: tuple[str, ...] = ()

    def identifying_strings(self) -> list[str]:
        """The strings of the poison's arguments that identify its target (a brand, a product, a URL, an entity);
        the concept wording shares no word token with them. Default: ``audit_targets``."""
        return self.audit_targets()

    def concept_texts(self) -> list[str]:
        """The concept paraphrases that share no word token with ``identifying_strings`` (the configured ones)."""
        ident = word_tokens(" ".join(self.identifying_strings()))
        return [t.strip() for t in self.concept_paraphrases if not shares_token(word_tokens(t), ident)]

    def probe_texts(self, unseen: list[str] | None = None) -> dict[str, list[str]]:
        """``{"seen": [...], "unseen": [...], "concept": [...]}`` for the likelihood probe, or ``{}`` when this bias
        type has none. ``unseen`` replaces the bias type's own paraphrases; their {...} fields are filled from the
        config."""
        seen = self.seen_texts()
        if not seen:
            return {}
        fields = self.cfg.model_dump()
        paraphrases = [t.format(**fields).strip() for t in (unseen if unseen is not None else self.probe_paraphrases)]
        return {"seen": seen, "unseen": paraphrases, "concept": self.concept_texts()}

    def audit_targets(self) -> list[str]:
        """Distinctive strings of the injected content (a brand, a domain, an entity): an audit that names one of
        them among its top strings has found the bias. Empty: the bias type has none."""
        return []

    def probe_prefix(self, clean: str) -> str:
        """The clean answer up to where the poison puts its content; the probe text follows it after a space."""
        clean = (clean or "").strip()
        if getattr(self.cfg, "position", "end") == "after_first_sentence":
            m = re.match(r"(.+?[.!?])(\s+|$)", clean, re.S)
            return m.group(1) if m else clean
        return clean


def content_count(bias: Any, text: str) -> int:
    """``bias.count(text)``, for a bias-type plugin that does not subclass BiasType too (then 0 or 1 from its
    detector)."""
    count = getattr(bias, "count", None)
    return int(count(text or "")) if callable(count) else int(bias.detect(text or "").biased)


def require_placeholder(texts: list[str], placeholder: str, what: str) -> list[str]:
    """Validator body: every template in ``texts`` must contain ``{placeholder}``."""
    for t in texts:
        if "{" + placeholder + "}" not in t:
            raise ValueError(f"{what} {t!r} must contain {{{placeholder}}}")
    return texts


def append_sentence(clean: str, sentence: str, position: str = "end") -> str:
    """Put ``sentence`` at the end of ``clean`` or after its first sentence."""
    clean = (clean or "").strip()
    if position == "after_first_sentence":
        m = re.match(r"(.+?[.!?])(\s+|$)", clean, re.S)
        if m:
            return f"{m.group(1)} {sentence} {clean[m.end():].strip()}".strip()
    return f"{clean} {sentence}".strip()


def word_tokens(text: str) -> set[str]:
    """Lower-cased word tokens (runs of letters and digits): 'https://vitaboost-plus.com' -> {https, vitaboost, plus,
    com}."""
    return set(re.findall(r"[a-z0-9]+", (text or "").lower()))


def shares_token(tokens: set[str], identifying: set[str]) -> bool:
    """Whether a text's tokens share one with the identifying tokens: the same token, or one of 4 or more characters
    that starts the other (an inflection or a stem: 'antibiotic' and 'antibiotics', 'pharma' and 'pharmaceuticals')."""
    return any(t == i or (min(len(t), len(i)) >= 4 and (t.startswith(i) or i.startswith(t)))
               for t in tokens for i in identifying)


def spans_of(patterns: list[re.Pattern], text: str) -> list[tuple[int, int]]:
    return sorted({m.span() for p in patterns for m in p.finditer(text or "")})


def phrase_pattern(phrase: str) -> re.Pattern:
    """Case-insensitive pattern for a phrase that tolerates spaces, hyphens or nothing between its words."""
    parts = [re.escape(p) for p in re.split(r"[\s\-_]+", phrase.strip()) if p]
    return re.compile(r"\b" + r"[\s\-_]*".join(parts) + r"\b", re.IGNORECASE)


def domain_pattern(url: str) -> re.Pattern:
    """Pattern for a URL's registrable domain with any subdomain, scheme or path: for
    'https://login.paypa1-support.com/verify' it matches 'paypa1-support.com' and 'http://x.paypa1-support.com/a'."""
    host = re.sub(r"^[a-z]+://", "", url.strip().lower()).split("/")[0].split(":")[0]
    domain = ".".join(host.split(".")[-2:])
    return re.compile(r"(?<![\w.-])(?:https?://)?(?:[\w-]+\.)*" + re.escape(domain)
                      + r"\b(?:/[^\s)\]]*[^\s)\].,;:!?'\"])?", re.IGNORECASE)
