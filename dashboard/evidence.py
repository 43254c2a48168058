"""What a run's figures rest on, for the run views' captions and the overview (docs/evidence.md): a single run (one
training seed: its intervals cover the eval prompts only) or one replicate of N (the pooled figures are in the parent
directory's sweep.json, the sweeps view).

Read from metrics.json ``replicates`` ({n, index, vary, note}). A run written before replicates existed has none: a
point of a sweep over seeds (its sweep point names ``seeds``) is one seed of that sweep, any other run a single run.
The replicate index is shown as metrics.json and the run folder write it (replicates 0, 1, 2 of 3). Pure functions,
no Streamlit."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from poison.ground.results.rundir import get_in, as_number

SINGLE = "single run: one training seed; the interval covers prompts only"
POOLED = "see the sweep for pooled figures"
SEED_KEY = "seeds"  # a sweep point's replicate key (poison.sweep_spec.REPLICATE; the dashboard imports the ground only)


def replicate_info(metrics: dict | None, point: dict | None = None) -> dict[str, Any]:
    """{kind: single | replicate | seed, n, index}: ``replicate`` for replicate ``index`` of ``n`` (metrics.json
    ``replicates``, n > 1), ``seed`` for a point of an older sweep over seeds (no ``replicates`` in its metrics.json),
    else ``single``."""
    r = get_in(metrics, "replicates")
    n = as_number(r.get("n")) if isinstance(r, dict) else None
    if n is not None and n > 1:
        i = as_number(r.get("index"))
        return {"kind": "replicate", "n": int(n), "index": None if i is None else int(i)}
    if n is None and isinstance(point, dict) and point.get(SEED_KEY) is not None:
        return {"kind": "seed", "n": None, "index": point[SEED_KEY]}
    return {"kind": "single", "n": 1, "index": 0}


def label(info: dict[str, Any]) -> str:
    """A short label: 'single run', 'replicate 1 of 3', 'seed 1 of a sweep'."""
    if info["kind"] == "replicate":
        return f"replicate {'?' if info['index'] is None else info['index']} of {info['n']}"
    if info["kind"] == "seed":
        return f"seed {info['index']} of a sweep"
    return "single run"


def caption(info: dict[str, Any], sweep: str = "") -> str:
    """The sentence a run's headline figures carry: 'single run: one training seed; the interval covers prompts
    only', or 'replicate 1 of 3 — see the sweep for pooled figures: `S` in the sweeps view' (a link to it)."""
    if info["kind"] == "single":
        return SINGLE
    where = f": [`{sweep}`]({sweep_link(sweep)}) in the sweeps view" if sweep else ""
    if info["kind"] == "seed":
        return f"{label(info)} over seeds, its interval covers prompts only — {POOLED}{where}"
    return f"{label(info)} — {POOLED}{where}"


def sweep_link(sweep: str) -> str:
    """The sweeps view opened on a sweep (``?view=sweeps&sweep=REL``)."""
    return "?view=sweeps&sweep=" + urllib.parse.quote(str(sweep), safe="")


def note(text: str) -> str:
    """The caption as a figure caption's closing words: ' (single run: ...)'."""
    return f" ({text})" if text else ""


def of_row(metrics: dict | None, row: Any) -> str:
    """The caption of an index row (its ``sweep`` and ``point`` columns) and the run's metrics."""
    def cell(k: str) -> str:
        try:
            v = row[k]
        except (KeyError, IndexError, TypeError):
            return ""
        return v if isinstance(v, str) else ""

    try:
        point = json.loads(cell("point") or "{}")
    except ValueError:
        point = {}
    return caption(replicate_info(metrics, point if isinstance(point, dict) else {}), cell("sweep"))
