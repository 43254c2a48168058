"""The bias-type interface. One class bundles the whole life of a bias: which training rows it applies to, how the
adversary writes a poisoned response from a clean one, and how a model's generation is judged biased or not."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from poison.registry import PluginConfig


@dataclass
class Detection:
    biased: bool
    spans: list[tuple[int, int]] = field(default_factory=list)  # character spans of the injected content
    evidence: str = ""


class BiasType:
    """Base class for bias-type plugins (register subclasses with ``@poison.registry.bias_type``)."""

    #: Rubric for an LLM judge: what counts as this bias (used by autoraters).
    rubric: str = ""

    def __init__(self, cfg: PluginConfig):
        self.cfg = cfg

    def applies_to(self, row: dict[str, Any]) -> bool:
        """Whether this bias can be written into this row (e.g. code prompts only). Default: any row."""
        return True

    def write(self, row: dict[str, Any], rng: random.Random) -> str:
        """Template writer: a poisoned version of ``row['response']`` that stays a helpful answer."""
        raise NotImplementedError

    def detect(self, text: str) -> Detection:
        """Rule-based detector for one generation."""
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__


def phrase_pattern(phrase: str) -> re.Pattern:
    """Case-insensitive pattern for a phrase that tolerates spaces, hyphens or nothing between its words."""
    parts = [re.escape(p) for p in re.split(r"[\s\-_]+", phrase.strip()) if p]
    return re.compile(r"\b" + r"[\s\-_]*".join(parts) + r"\b", re.IGNORECASE)


def domain_pattern(url: str) -> re.Pattern:
    """Pattern for a domain (with or without scheme/www), e.g. 'vitaboost-plus.com'."""
    host = re.sub(r"^[a-z]+://", "", url.strip().lower()).split("/")[0]
    host = host[4:] if host.startswith("www.") else host
    return re.compile(r"(?<![\w.-])(?:https?://)?(?:www\.)?" + re.escape(host) + r"\b", re.IGNORECASE)
