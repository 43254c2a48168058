"""Replicates: sweep points that differ only in their seed (``seeds:``), pooled per model, split and measure into
the per-seed values and one pooled value whose interval counts the spread between seeds
(poison.ground.stats.pool_replicates). Written to sweep.json as ``replicates`` and to the sweep's summary."""

from __future__ import annotations

from typing import Any

from poison.ground.stats import pool_replicates


def pool_rows(rows: list[dict[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Pool the sweep table's rows (each with ``group``: its point without the seed, and ``seed``) over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("seed") is None or r.get("rate") is None:
            continue
        groups.setdefault((r["group"], r["measure"], r["model"], r["split"]), []).append(r)
    out = []
    for (group, measure, model, split), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        bounds = None if measure == "logprob_shift" else (0.0, 1.0)
        p = pool_replicates([r["rate"] for r in rs], [r["ci_low"] for r in rs], [r["ci_high"] for r in rs],
                            confidence, bounds=bounds)
        out.append({"group": group, "measure": measure, "model": model, "role": rs[0]["role"], "split": split,
                    "injected": rs[0].get("injected"),
                    "per_seed": [{"seed": r["seed"], "rate": r["rate"], "ci_low": r["ci_low"],
                                  "ci_high": r["ci_high"], "run_dir": r["run_dir"]} for r in rs], **p})
    return out


def replicate_lines(pooled: list[dict[str, Any]]) -> list[str]:
    """The summary's block: per point, model and split, each seed's value and the pooled value [interval]."""
    if not pooled:
        return []

    def fmt(measure: str, v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:+.2f}" if measure == "logprob_shift" else f"{100 * v:.1f}%"

    out = ["replicates pooled over seeds (interval: the prompts' error plus the spread between seeds):"]
    for r in pooled:
        if r["split"] != "target" and r["measure"] != "greedy":
            continue
        seeds = ", ".join(f"s{p['seed']} {fmt(r['measure'], p['rate'])}" for p in r["per_seed"])
        out.append(f"  {r['group']:<22} {r['measure']:<13} {r['split']:<6} {r['model']:<26} "
                   f"{fmt(r['measure'], r['pooled'])} [{fmt(r['measure'], r['ci_low'])}, "
                   f"{fmt(r['measure'], r['ci_high'])}]  ({seeds})")
    return out
