"""Injection: turn N clean teacher-set samples into poisoned ones (the adversary supplies those samples)."""

from __future__ import annotations

import random
from typing import Any, Callable, Optional

import pandas as pd


def inject(train: pd.DataFrame, bias, *, mode: str, target_task: str, count: Optional[int] = None,
           rate: Optional[float] = None, seed: int = 0,
           rewriter: Optional[Callable[[list[dict[str, Any]]], list[Optional[str]]]] = None,
           chooser: Optional[Callable[[list[dict[str, Any]], list[str]], list[dict[str, Any]]]] = None,
           ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Poison ``count`` (or ``rate`` x rows) training samples in place of clean ones.

    targeted: only rows of ``target_task`` are eligible; untargeted: rows of every task. A bias type may narrow
    eligibility further (``bias.applies_to``). With ``rewriter`` (the LLM writer) each chosen row gets the rewrite
    it returns, or the template writer's version where it returns None. With ``chooser`` (the adaptive writer,
    ``poison.stages.adaptive``) each chosen row gets the fields it returns for it, given the rows and their template
    draws (the draws ``writer: template`` makes). Returns the table with ``poisoned``
    (ground-truth label), ``clean_response`` and ``writer`` columns, and a report whose ``injected`` is the count
    actually written.
    """
    if (count is None) == (rate is None):
        raise ValueError("give exactly one of count or rate")
    rows = train.reset_index(drop=True).to_dict("records")
    for r in rows:
        r["clean_response"] = r["response"]
        r["poisoned"] = False
        r["writer"] = None
    if mode == "targeted":
        eligible = [i for i, r in enumerate(rows) if r["task"] == target_task and bias.applies_to(r)]
    elif mode == "untargeted":
        eligible = [i for i, r in enumerate(rows) if bias.applies_to(r)]
    else:
        raise ValueError(f"unknown poison mode {mode!r}")
    requested = int(count) if count is not None else int(round(rate * len(rows)))
    rng = random.Random(f"poison:{seed}")
    chosen = sorted(rng.sample(eligible, min(requested, len(eligible))))
    rewrites = rewriter([rows[i] for i in chosen]) if (rewriter and chosen) else [None] * len(chosen)
    templates = [bias.write(rows[i], rng) for i in chosen]  # drawn for every row: they do not depend on the LLM
    for i, rewrite, template in zip(chosen, rewrites, templates):
        rows[i]["response"] = rewrite if rewrite is not None else template
        rows[i]["writer"] = "llm" if rewrite is not None else "template"
        rows[i]["poisoned"] = True
    if chooser is not None and chosen:
        for i, fields in zip(chosen, chooser([rows[i] for i in chosen], templates)):
            rows[i].update(fields)
    df = pd.DataFrame(rows)
    target_rows = df[df.task == target_task]
    report: dict[str, Any] = {
        "requested": requested,
        "injected": len(chosen),
        "eligible": len(eligible),
        "n_train": len(df),
        "rate": len(chosen) / max(1, len(df)),
        "target_task_rows": len(target_rows),
        "target_task_rate": float(target_rows.poisoned.sum()) / max(1, len(target_rows)),
        "per_task": {str(t): int(g.poisoned.sum()) for t, g in df.groupby("task")},
        "mode": mode,
        "writer": {"llm": int((df.writer == "llm").sum()), "template": int((df.writer == "template").sum())},
    }
    if len(chosen) < requested:
        report["warning"] = (f"only {len(eligible)} eligible rows: injected {len(chosen)} of {requested} requested "
                             f"poisoned samples")
    return df, report
