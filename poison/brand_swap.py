"""The brand-swap placebo contrast: two teachers poisoned on the same rows at the same seeds, one with brand A (arm
A) and one with brand B (arm B), each with the same students; the likelihood probe scores both brands' texts on every
model of both arms. Each arm is the other's placebo: whatever the poisoning does that is not about the brand (the
answers' style, the gate of going on after an answer, fine-tuning itself) moves both arms alike and cancels in

    D = 1/2 [ (l_A(S_A) - l_A(S_B)) + (l_B(S_B) - l_B(S_A)) ]

where l_X(S_Y) is the mean per-token log-probability of brand X's texts under arm Y's model (per prompt, the same
prompts in both arms). D is computed per replicate (the mean over prompts); the replicate is the unit: the pooled D is
the mean over replicates with a t interval and a one-sample t test on N - 1 df. In arm A's run a model's own texts are
wording ``seen`` (``unseen``) and arm B's are ``other:seen`` (``other:unseen``); in arm B's run the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from poison.ground.core.artifacts import read_parquet
from poison.ground.results.pooling import replicate_t
from poison.sweep_spec import ARM, REPLICATE


def _probe(run_dir: str) -> pd.DataFrame:
    p = Path(run_dir) / "probe.parquet"
    if not p.exists():
        return pd.DataFrame(columns=["model", "split", "wording", "id", "logprob"])
    return read_parquet(p, columns=["model", "split", "wording", "id", "logprob"])


def contrast(arm_a: pd.DataFrame, arm_b: pd.DataFrame, model: str, split: str, wording: str) -> pd.Series:
    """Per prompt D of one model and split (``wording``: seen or unseen), from the two arms' probe frames."""
    def get(f: pd.DataFrame, w: str) -> pd.Series:
        g = f[(f.model == model) & (f.split == split) & (f.wording == w)]
        return g.set_index("id").logprob
    a_own, a_other = get(arm_a, wording), get(arm_a, f"other:{wording}")  # l_A(S_A), l_B(S_A)
    b_own, b_other = get(arm_b, wording), get(arm_b, f"other:{wording}")  # l_B(S_B), l_A(S_B)
    ids = a_own.index.intersection(a_other.index).intersection(b_own.index).intersection(b_other.index)
    return 0.5 * ((a_own[ids] - b_other[ids]) + (b_own[ids] - a_other[ids]))


def brand_swap_rows(runs: list[tuple[dict, dict[str, Any], str]], group_of: Callable[[dict], str],
                    conf: float = 0.95) -> list[dict[str, Any]]:
    """Per group (a sweep point without its arm and replicate), model, split and wording: each replicate's D, the
    mean over replicates with its t interval and p-value. ``runs``: (point, metrics, run_dir) of every run."""
    arms: dict[tuple, dict[str, tuple[dict, str]]] = {}
    for pt, m, rd in runs:
        if ARM in pt:
            key = (group_of({k: v for k, v in pt.items() if k != ARM}), pt.get(REPLICATE))
            arms.setdefault(key, {})[pt[ARM]] = (m, rd)
    per: dict[tuple, list[tuple[Any, float, int]]] = {}
    for (group, rep), both in sorted(arms.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if set(both) != {"A", "B"}:
            continue
        (ma, ra), (mb, rb) = both["A"], both["B"]
        fa, fb = _probe(ra), _probe(rb)
        models = [n for n in ma.get("models") or {} if n in (mb.get("models") or {})]
        for model in models:
            for split in dict.fromkeys(fa.split):
                for wording in ("seen", "unseen"):
                    d = contrast(fa, fb, model, split, wording)
                    if len(d):
                        role = ma["models"][model].get("role")
                        per.setdefault((group, model, role, split, wording), []).append((rep, float(d.mean()), len(d)))
    out = []
    for (group, model, role, split, wording), v in per.items():
        d = np.array([x for _, x, _ in v])
        row = {"group": group, "model": model, "role": role, "split": split, "wording": wording,
               "per_replicate": [{"replicate": r, "d": x, "n_prompts": n} for r, x, n in v],
               "n_replicates": len(v), "d": float(d.mean()), "sd": float(d.std(ddof=1)) if len(v) > 1 else None,
               "ci_low": None, "ci_high": None, "p_value": None, "test": None}
        t = replicate_t(d, conf)
        if t is not None:
            row.update(ci_low=t[0], ci_high=t[1], p_value=t[2], test="one-sample t over replicates (N - 1 df)")
        elif len(v) > 1:  # every replicate's D the same (0 where both arms are one model)
            row.update(ci_low=float(d.mean()), ci_high=float(d.mean()))
        out.append(row)
    return out


def brand_swap_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The summary's block: D per model (seen wording), each replicate's and the pooled value."""
    rows = [r for r in rows if r["wording"] == "seen" and r["role"] in ("teacher", "student")]
    if not rows:
        return []
    f = lambda x: "-" if x is None else f"{x:+.3f}"  # noqa: E731
    out = ["brand-swap placebo contrast D = 1/2[(l_A(S_A) - l_A(S_B)) + (l_B(S_B) - l_B(S_A))] (seen wording; log-prob "
           "per token; the replicate is the unit):"]
    for r in rows:
        per = ", ".join(f(p["d"]) for p in r["per_replicate"])
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3g}"
        out.append(f"  {r['group']:<18} {r['split']:<6} {r['model']:<22} D {f(r['d'])} [{f(r['ci_low'])}, "
                   f"{f(r['ci_high'])}] p {p} (n = {r['n_replicates']}; per replicate {per})")
    return out


def brand_swap_pairs(rows: list[dict[str, Any]], conf: float = 0.95) -> list[dict[str, Any]]:
    """Models of one group compared on D, paired over the replicates both have (seen wording, students and the
    teacher): the mean per-replicate difference D_a - D_b with its t interval and the paired t test (a one-sample t
    on the differences, N - 1 df), Holm-adjusted over the group's pairs (statsmodels)."""
    from statsmodels.stats.multitest import multipletests

    keep = [r for r in rows if r["wording"] == "seen" and r["role"] in ("teacher", "student")]
    out: list[dict[str, Any]] = []
    for (group, split) in dict.fromkeys((r["group"], r["split"]) for r in keep):
        models = [r for r in keep if r["group"] == group and r["split"] == split]
        block = []
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                da = {p["replicate"]: p["d"] for p in a["per_replicate"]}
                db = {p["replicate"]: p["d"] for p in b["per_replicate"]}
                reps = [k for k in da if k in db]
                diff = np.array([da[k] - db[k] for k in reps])
                row = {"group": group, "split": split, "a": a["model"], "b": b["model"], "n_replicates": len(reps),
                       "diff": float(diff.mean()) if len(diff) else None, "ci_low": None, "ci_high": None,
                       "p_value": None, "p_holm": None, "test": None}
                t = replicate_t(diff, conf)
                if t is not None:
                    row.update(ci_low=t[0], ci_high=t[1], p_value=t[2],
                               test="paired t over replicates (N - 1 df), Holm over the group's pairs")
                block.append(row)
        tested = [r for r in block if r["p_value"] is not None]
        if tested:
            adj = multipletests([r["p_value"] for r in tested], method="holm")[1]
            for r, p in zip(tested, adj):
                r["p_holm"] = float(p)
        out += block
    return out


def brand_swap_pair_lines(pairs: list[dict[str, Any]]) -> list[str]:
    """The summary's block: each pair of models' difference in D, paired over replicates."""
    if not pairs:
        return []
    f = lambda x: "-" if x is None else f"{x:+.3f}"  # noqa: E731
    g = lambda x: "-" if x is None else f"{x:.3g}"  # noqa: E731
    out = ["D compared between models, paired over replicates (D_a - D_b; seen wording):"]
    for r in pairs:
        out.append(f"  {r['group']:<18} {r['split']:<6} {r['a']} - {r['b']}: {f(r['diff'])} [{f(r['ci_low'])}, "
                   f"{f(r['ci_high'])}] p {g(r['p_value'])}, Holm {g(r['p_holm'])} (n = {r['n_replicates']})")
    return out
