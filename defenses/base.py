"""The defense interface and a helper that runs a registered defense by name.

A defense is a plugin (``@poison.ground.core.registry.defense``), built as ``Defense(cfg, ctx)`` with the run's context
(its device, dtype, cache and model folders, judge endpoint), whose instances have two methods::

    fit(clean)      optional trusted clean samples (a no-op where not needed)
    score(samples)  one finite float per sample; higher = more suspicious

Samples are dicts with keys ``prompt``, ``response``, ``task`` (and maybe ``id``). A defense may also expose
``info() -> dict`` (JSON-safe facts about the last scoring: model used, counts of unparseable judge replies, ...);
:func:`run_defense` collects it. A likelihood defense names the model whose likelihood its score is as
``reference_model`` (a model spec, e.g. ``perplexity``'s ``model``); the run checks it against the models that wrote
the clean responses (:func:`reference_model`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from poison.ground.core import registry
from poison.ground.core.errors import DefenseError


@runtime_checkable
class Defense(Protocol):
    def fit(self, clean: list[dict]) -> None: ...

    def score(self, samples: list[dict]) -> np.ndarray: ...


REQUIRED_KEYS = ("prompt", "response")


def check_samples(name: str, samples: list[dict], what: str = "samples") -> None:
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise DefenseError(f"defense {name!r}: {what}[{i}] is a {type(s).__name__}, not a dict")
        missing = [k for k in REQUIRED_KEYS if k not in s]
        if missing:
            raise DefenseError(f"defense {name!r}: {what}[{i}] lacks {', '.join(missing)} (has {sorted(s)})")


def check_scores(name: str, scores: Any, n: int) -> np.ndarray:
    """Scores as a 1-D float64 array of length ``n`` with finite values, or a DefenseError naming the defense."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DefenseError(f"defense {name!r} returned scores that are not numbers ({e})") from None
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.size == n else arr
    if arr.ndim != 1 or arr.size != n:
        raise DefenseError(f"defense {name!r} returned {arr.size} scores (shape {arr.shape}) for {n} samples")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise DefenseError(
            f"defense {name!r} returned {bad.size} non-finite score(s) (first at sample {int(bad[0])}: {arr[bad[0]]})"
        )
    return arr


@dataclass
class DefenseRun:
    name: str
    scores: np.ndarray  # one finite float per sample, higher = more suspicious
    defense: Any  # the instance (e.g. the autorater, whose ``last_verdicts`` hold the judge's verdicts)
    record: dict[str, Any]  # registry record: kind, name, resolved args, module
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)  # ``defense.info()`` when the defense has it


def build_defense(name: str, args: Optional[dict[str, Any]] = None, path: Optional[str] = None,
                  ctx: Any = None) -> Any:
    """Instantiate a registered defense with validated arguments (PluginError naming ``path`` on bad arguments) and
    the run context (a standalone one when ``ctx`` is None)."""
    return registry.get("defense", name, path).build(args, path, ctx)


def run_defense(name: str, samples: list[dict], clean: Optional[list[dict]] = None,
                args: Optional[dict[str, Any]] = None, path: Optional[str] = None, ctx: Any = None) -> DefenseRun:
    """Build the defense ``name`` from the registry, ``fit`` it on ``clean`` when given (non-empty), score
    ``samples`` and validate the scores (length, finite). Errors raised by the defense are re-raised as
    DefenseError naming it (the original is chained); registry errors (unknown name, bad args) pass through."""
    d = build_defense(name, args, path, ctx)
    check_samples(name, samples)
    t0 = time.perf_counter()
    try:
        if clean:
            check_samples(name, clean, "clean")
            d.fit(clean)
        raw = d.score(samples)
    except DefenseError:
        raise
    except Exception as e:
        raise DefenseError(f"defense {name!r} failed: {type(e).__name__}: {e}") from e
    scores = check_scores(name, raw, len(samples))
    info = d.info() if callable(getattr(d, "info", None)) else {}
    record = getattr(d, "plugin_record", None) or {"kind": "defense", "name": name, "args": dict(args or {})}
    return DefenseRun(name, scores, d, record, time.perf_counter() - t0, info)


def reference_model(name: str, args: Optional[dict[str, Any]] = None, path: Optional[str] = None,
                    ctx: Any = None) -> Optional[str]:
    """The reference model spec of a likelihood defense (its ``reference_model``), None for other defenses. Builds
    the defense (cheap: models load on first use) with validated arguments."""
    ref = getattr(build_defense(name, args, path, ctx), "reference_model", None)
    return str(ref) if ref else None


def placement(cfg: Any, ctx: Any) -> tuple[str, str]:
    """(device, dtype) a defense runs in: its ``device`` / ``dtype`` arguments, each "auto" (or absent) meaning the
    run's own (``ctx``)."""
    device, dtype = getattr(cfg, "device", "auto"), getattr(cfg, "dtype", "auto")
    return (ctx.device if device == "auto" else device), (ctx.dtype if dtype == "auto" else dtype)
