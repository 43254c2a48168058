"""The run's claims: the primary comparison (``claims.primary``) tested at ``claims.alpha`` alone, and the others
(``claims.also``) with Holm-adjusted p-values beside their raw ones, each a paired test over the prompts both models
answered (``poison.ground.results.compare``).

What is paired, per measure: ``greedy`` pairs each prompt's greedy verdicts (the ``samples`` frame), ``sampled`` each
prompt's biased fraction of its K sampled answers (the ``drawn`` frame), ``probe`` each prompt's seen-wording mean
log-probability (the probe frame). A comparison that names a model the run lacks, or a measure it did not measure,
gets an ``error`` instead of figures.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from poison.ground.results.claim_spec import parse_comparison, resolve_model
from poison.ground.results.compare import holm, paired_fractions, paired_proportions, paired_t

SINGLE_RUN_NOTE = "one training seed; the interval covers prompts only"


def _per_prompt(frame: pd.DataFrame, model: str, split: str, value: str) -> pd.Series:
    g = frame[(frame.model == model) & (frame.split == split)]
    return g.groupby("id", sort=True)[value].mean()


def compare(text: str, models: dict[str, dict], samples: pd.DataFrame, drawn: pd.DataFrame, probe: pd.DataFrame,
            alpha: float, n_boot: int) -> dict[str, Any]:
    """One comparison's figures (A minus B), paired over the prompts both models answered."""
    c = parse_comparison(text)
    a, b = resolve_model(c.a, list(models)), resolve_model(c.b, list(models))
    head = {"comparison": c.text, "a": a or c.a, "b": b or c.b, "measure": c.measure, "split": c.split}
    missing = [w for w, m in ((c.a, a), (c.b, b)) if m is None]
    if missing:
        return {**head, "error": f"{missing[0]!r} is no model of this run"}
    if c.measure == "greedy":
        frame, value = samples, "biased"
    elif c.measure == "sampled":
        frame, value = drawn, "biased"
    else:
        frame, value = (probe[probe.wording == "seen"] if not probe.empty else probe), "logprob"
    if frame.empty:
        return {**head, "error": f"this run did not measure {c.measure}"}
    x, y = _per_prompt(frame, a, c.split, value), _per_prompt(frame, b, c.split, value)
    both = x.index.intersection(y.index)
    if not len(both):
        return {**head, "error": f"no prompt of the {c.split} split has a {c.measure} figure for both models"}
    x, y = x[both].to_numpy(), y[both].to_numpy()
    if c.measure == "greedy":
        figures = paired_proportions(x.astype(bool), y.astype(bool), alpha)
    elif c.measure == "sampled":
        figures = paired_fractions(x, y, alpha, n_resamples=n_boot)
    else:
        figures = paired_t(x, y, alpha)
    return {**head, **figures}


def claims_section(claims: Any, models: dict[str, dict], samples: pd.DataFrame, drawn: pd.DataFrame,
                   probe: pd.DataFrame, n_boot: int, replicates: int = 1) -> dict[str, Any]:
    """metrics.json's ``claims``: the primary at alpha alone, the others Holm-corrected as one family."""
    alpha = claims.alpha
    primary = compare(claims.primary, models, samples, drawn, probe, alpha, n_boot)
    if primary.get("p_value") is not None:
        primary["significant"] = primary["p_value"] < alpha
    others = [compare(t, models, samples, drawn, probe, alpha, n_boot) for t in claims.also or []]
    for o, q in zip(others, holm([o.get("p_value") for o in others], alpha)):
        if q is not None:
            o["p_holm"] = q
            o["significant"] = q < alpha
    out = {"primary": primary, "others": others, "alpha": alpha, "correction": "holm",
           "interval": f"{100 * (1 - alpha):g}% interval over prompts, estimate A minus B",
           "power": "power_at_estimate: the test's power at the observed difference; mde: the smallest difference "
                    "it finds with 80% power at this n and alpha (power_method names the formula); floor (greedy): "
                    "the smallest difference the exact test can find at all at this n",
           "replicates": replicates}
    out["note"] = SINGLE_RUN_NOTE if replicates == 1 else (
        f"one replicate of {replicates}; the interval covers prompts only (the pooled figures are in the parent "
        "directory's sweep.json)")
    return out
