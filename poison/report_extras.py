"""The report's sections for the experiments beyond the paper: the cascade (bias, likelihood shift and utility per
distillation generation, each generation against the original teacher) and the model audit (each trained model's
suspicion score and top strings, and the audit scored as a detector over the run's poisoned and clean models)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from poison.ground.core.artifacts import read_json
from poison.ground.results.model_id import ModelId
from poison.ground.results.stats import auroc, paired_ratio
from poison.measures import greedy_amplification, per_prompt_fractions


def chain_of(models: dict[str, dict]) -> list[str]:
    """The cascade's models in generation order: the teacher, then each generation of the distilled chain (empty
    without a cascade)."""
    deep = sorted((m["generation"], n) for n, m in models.items()
                  if m["role"] == "student" and (m.get("generation") or 0) > 1 and not m.get("defended"))
    if not deep:
        return []
    via = models[deep[0][1]]["student"]
    return [str(ModelId.teacher()), str(ModelId.of_student(via))] + [n for _, n in deep
                                                                      if models[n]["student"] == via]


def cascade_section(models: dict[str, dict], rates: list[dict], greedy: pd.DataFrame, drawn: pd.DataFrame,
                    shift: list[dict], utility: list[dict], conf: float, n_boot: int) -> dict[str, Any]:
    chain = chain_of(models)
    if not chain:
        return {}
    rate = {(r["model"], r["split"]): r for r in rates}
    control_of = {m["twin_of"]: n for n, m in models.items() if m.get("twin_of")}
    rows = []
    for name in chain:
        gen = models[name]["generation"]
        for split in dict.fromkeys(greedy.split):
            row: dict[str, Any] = {"generation": gen, "model": name, "split": split,
                                   "greedy": rate.get((name, split)),
                                   "greedy_vs_teacher": greedy_amplification(greedy, name, "teacher", split, conf,
                                                                             n_boot)}
            if not drawn.empty:
                s = per_prompt_fractions(drawn, name, split)
                ts = per_prompt_fractions(drawn, "teacher", split)
                both = s.index.intersection(ts.index)
                row["sampled"] = {"rate": float(s.mean()) if len(s) else None}
                row["sampled_vs_teacher"] = paired_ratio(s[both].to_numpy(), ts[both].to_numpy(), conf,
                                                         n_boot=n_boot)
            for r in shift:
                if r["model"] == name and r["split"] == split:
                    against = "twin" if r["control"] == control_of.get(name) else "clean_control"
                    row[f"shift_{r['wording']}_vs_{against}"] = {k: r[k] for k in ("shift", "ci_low", "ci_high")}
            row["utility"] = [{k: u[k] for k in ("task", "metric", "value", "ci_low", "ci_high")}
                              for u in utility if u["model"] == name]
            rows.append(row)
    return {"chain": chain, "via": models[chain[-1]].get("student"), "rows": rows}


def audit_section(audits: dict[str, Any], models: dict[str, dict], bias: Any, injected: int
                  ) -> tuple[list[dict], list[dict]]:
    """(one row per audited model and audit, the audit as a detector per audit type). A model counts as poisoned
    when it descends from the poisoned teacher of a run that injected poison; the controls (clean fine-tunes and
    students of a clean teacher) are the clean models."""
    targets = [t.lower() for t in bias.audit_targets()]
    rows = []
    for rec in audits.values():
        res = read_json(Path(rec.path) / "audit.json")
        name = res["model"]
        m = models[name]
        poisoned: Optional[bool] = None
        if m["role"] in ("teacher", "student"):
            poisoned = injected > 0
        elif m["role"] in ("control", "baseline"):
            poisoned = False
        top10 = [t["string"] for t in res["top"][:10]]
        hit = any(t in s.lower() for s in top10 for t in targets) if targets and top10 else None  # no strings: none
        rows.append({"audit": res["audit"], "model": name, "role": m["role"], "generation": m.get("generation"),
                     "identity": json.dumps(m["identity"], sort_keys=True),
                     "score": res["score"], "poisoned": poisoned, "hit": hit, "top": res["top"],
                     "info": res.get("info", {})})
    return rows, audit_detector(rows)


def audit_detector(rows: list[dict]) -> list[dict]:
    """Per audit type: AUROC of the model-level score for poisoned vs clean models, and the hit rate (the injected
    content among a poisoned model's top-10 strings). A model the audit did not score (``score`` None, e.g. no
    adapter for ``adapter_stats``) is left out."""
    out = []
    for name in dict.fromkeys(r["audit"] for r in rows):
        lab = [r for r in rows if r["audit"] == name and r["poisoned"] is not None and r["score"] is not None]
        pos = [r for r in lab if r["poisoned"]]
        hits = [r["hit"] for r in pos if r["hit"] is not None]
        a = auroc([r["score"] for r in lab], [r["poisoned"] for r in lab]) if lab else float("nan")
        out.append({"audit": name, "n": len(lab), "n_poisoned": len(pos), "auroc": None if a != a else a,
                    "hits": sum(hits), "hit_rate": sum(hits) / len(hits) if hits else None})
    return out
