"""The likelihood probe's measured null: how far two clean controls, the same fine-tune at two training seeds, move
apart. A shift of a poisoned model against the clean control only says that two sets of weights differ; read
against the clean-vs-clean shift it says whether the poison moved the model further than a reseed does.

In one run (``eval.probe_null``) the pipeline trains a second clean control (``null_control``: the clean control's
fine-tune at its training seed + 1) and :func:`null_rows` gives the null shift (null_control minus the clean
control, per prompt, paired bootstrap over prompts) per split and wording; :func:`against_null` puts each shift
against it. One null draw gives no p-value (it is one sample of the reseed spread), so a single run reports the
shift's size in units of the null's (``ratio_to_null``) and says so. Over replicates (:func:`pooled_null`) each
replicate has its own null draw, and the shift's excess over the null, shift_i - null_i, gets a paired t test over
the replicates (N - 1 df).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import pandas as pd

from poison.ground.results.pooling import replicate_t
from poison.ground.results.stats import paired_mean_difference

NULL_CONTROL = "null_control"


def null_rows(probe: pd.DataFrame, control: Optional[str], conf: float, n_boot: int) -> list[dict[str, Any]]:
    """The null shift (``null_control`` minus the clean control, same prompt, same wording) per split and
    wording, with its paired bootstrap interval over prompts. Empty without both controls."""
    if control is None or probe.empty or NULL_CONTROL not in set(probe.model):
        return []
    out = []
    for (split, wording), g in probe.groupby(["split", "wording"], sort=False):
        a = g[g.model == NULL_CONTROL].set_index("id").logprob
        c = g[g.model == control].set_index("id").logprob
        both = a.index.intersection(c.index)
        if len(both):
            out.append({"split": split, "wording": wording, "between": [NULL_CONTROL, control],
                        **paired_mean_difference(a[both].to_numpy(), c[both].to_numpy(), conf, n_boot=n_boot)})
    return out


def against_null(shifts: list[dict[str, Any]], nulls: list[dict[str, Any]], control: Optional[str]) -> None:
    """Add ``vs_null`` to every shift row measured against the clean control: the null shift of its split and
    wording, the excess (shift - null) and the shift in units of the null's size. No p-value from one null draw."""
    by = {(n["split"], n["wording"]): n for n in nulls}
    for r in shifts:
        n = by.get((r["split"], r["wording"]))
        if n is None or r.get("control") != control or r.get("shift") is None or n.get("shift") is None:
            continue
        size = abs(n["shift"])
        r["vs_null"] = {"null": n["shift"], "excess": r["shift"] - n["shift"],
                        "ratio_to_null": abs(r["shift"]) / size if size > 0 else None, "p_value": None,
                        "note": "one null draw: no p-value (run replicates for one)"}


def pooled_null(runs: list[tuple[dict, dict[str, Any]]], group_of: Callable[[dict], str],
                conf: float = 0.95) -> list[dict[str, Any]]:
    """Per sweep group (a point without its replicate), model, split and wording: the shifts against the clean
    control over replicates, each replicate's null, and the paired t test of shift - null over replicates."""
    pairs: dict[tuple, list[tuple[float, float]]] = {}
    for pt, m in runs:
        nulls = {(n["split"], n["wording"]): n["shift"]
                 for n in m.get("probe_null") or [] if n.get("shift") is not None}
        control = (m.get("probe") or {}).get("control")
        for r in m.get("logprob_shift") or []:
            null = nulls.get((r["split"], r["wording"]))
            if null is None or r.get("control") != control or r.get("shift") is None:
                continue
            pairs.setdefault((group_of(pt), r["model"], r["split"], r["wording"]), []).append((r["shift"], null))
    out = []
    for (group, model, split, wording), v in pairs.items():
        s, n = np.array([x for x, _ in v]), np.array([y for _, y in v])
        d = s - n
        row = {"group": group, "model": model, "split": split, "wording": wording, "n_replicates": len(v),
               "shifts": s.tolist(), "nulls": n.tolist(), "shift": float(s.mean()), "null_mean": float(n.mean()),
               "null_sd": float(n.std(ddof=1)) if len(v) > 1 else None, "excess": float(d.mean()),
               "ci_low": None, "ci_high": None, "p_value": None, "test": None}
        t = replicate_t(d, conf)
        if t is not None:
            row.update(ci_low=t[0], ci_high=t[1], p_value=t[2], test="paired t over replicates (shift - null)")
        out.append(row)
    return out


def null_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The sweep summary's block: each model's shift against the measured null over replicates."""
    rows = [r for r in rows if r["wording"] == "seen"]
    if not rows:
        return []
    f = lambda x: "-" if x is None else f"{x:+.2f}"  # noqa: E731
    out = ["likelihood shift against the measured null (clean control vs a second clean control at another seed, "
           "per replicate; seen wording): excess = shift - null [95% CI], paired t over replicates:"]
    for r in rows:
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3g}"
        out.append(f"  {r['group']:<22} {r['split']:<6} {r['model']:<26} shift {f(r['shift'])}, null "
                   f"{f(r['null_mean'])} (sd {f(r['null_sd']).lstrip('+')}), excess {f(r['excess'])} "
                   f"[{f(r['ci_low'])}, {f(r['ci_high'])}] p {p} (n = {r['n_replicates']})")
    return out
