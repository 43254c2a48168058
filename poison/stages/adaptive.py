"""The adaptive poison writer (``poison.writer: adaptive``, issue 28 item 3): an attacker who knows the defenses.

Threat model, white box: the attacker knows which defenses the defender runs, with their arguments, and fits them as
the defender does (on the trusted stage's fit half: ``stage_defense``'s own ``trusted_clean``). For each poisoned row
it writes candidates:

* ``template_variants`` draws of the bias type's template writer; the first is the draw ``writer: template`` makes
  for that row (the same random stream), the others come from a stream of their own per row;
* ``llm_variants`` rewrites by the rewriter model (``poison.rewriter``): the first greedy (what ``writer: llm`` writes),
  the others sampled at ``llm_temperature``; a rewrite is a candidate only when the bias's rule detector finds the
  bias in it (``bias.accept_rewrite``), as with ``writer: llm``.

Every known defense scores every candidate and the clean answers of the rows (which the attacker holds: they are what
it rewrites). A candidate's suspicion under one defense is the mid-rank quantile of its score among that defense's
clean-answer scores; its suspicion is the highest over the known defenses (it must pass all of them). The attacker
keeps, per row, the candidate of least suspicion; ties keep the non-adaptive one (what ``writer: llm`` writes when
``llm_variants`` > 0, else what ``writer: template`` writes), which is the first candidate.

The poisoned table keeps the non-adaptive text beside the chosen one (``nonadaptive_response``): the train-place
defense stage scores it too, so the report gives each defense's AUROC against the adaptive poison and against the
poison it would have met otherwise, on the same clean rows (``poison.defense_report``).
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Optional

import numpy as np

from defenses.base import run_defense
from poison.ground import registry
from poison.stages import Run
from poison.stages.data import generate_n, generator_identity
from poison.stages.defense_checks import defense_key, trusted_clean
from poison.stages.evaluation import judge_identity
from poison.stages.protocol import StageRecord

log = logging.getLogger("poison.adaptive")


def known_defenses(run: Run) -> list[tuple[int, Any]]:
    """(index in defense.defenses, spec) of the defenses the attacker knows (``poison.adaptive.defenses``)."""
    names = run.cfg.poison.adaptive.defenses
    return [(i, d) for i, d in enumerate(run.cfg.defense.defenses) if names is None or d.label in names]


def adaptive_inputs(run: Run, trusted: StageRecord, rewriter: Any) -> dict[str, Any]:
    """The adaptive writer's part of the poison stage's key: the defenses it knows, what they are fitted on, the
    rewriter (when it writes LLM candidates) and the judge's identity when a known defense calls it."""
    known = known_defenses(run)
    judge = any(registry.needs("defense", d.type, "judge") for _, d in known)
    return {"adaptive_defenses": [defense_key(d) for _, d in known], "trusted": trusted.key,
            **({"rewriter": generator_identity(run, rewriter)} if run.cfg.poison.adaptive.llm_variants else {}),
            **({"judge": judge_identity(run)} if judge else {}),
            **registry.versions_entry(("defense", d.type) for _, d in known)}


def _llm_candidates(run: Run, rewriter: Any, rows: list[dict]) -> list[list[Optional[str]]]:
    """Per row, ``llm_variants`` rewrites (greedy first, then sampled), None where the detector rejects one."""
    a, bias = run.cfg.poison.adaptive, run.bias
    if not a.llm_variants or not rows:
        return [[] for _ in rows]
    msgs = [bias.rewrite_messages(r) for r in rows]
    log.info("adaptive writer: %d LLM rewrites of %d rows", a.llm_variants * len(rows), len(rows))
    texts = [[t[0]] for t in generate_n(run, rewriter, msgs, "rewriter", 1, field="poison.rewriter")]
    if a.llm_variants > 1:
        sampled = rewriter.model_copy(deep=True)
        sampled.generation.temperature = a.llm_temperature
        for got, more in zip(texts, generate_n(run, sampled, msgs, "rewriter", a.llm_variants - 1,
                                               field="poison.rewriter")):
            got.extend(more)
    return [[bias.accept_rewrite(r, t) for t in ts] for r, ts in zip(rows, texts)]


def suspicion(scores: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Mid-rank quantile of each score among the clean scores (0: below every clean answer, 1: above all)."""
    clean = np.sort(np.asarray(clean, dtype=np.float64))
    lo = np.searchsorted(clean, scores, side="left")
    hi = np.searchsorted(clean, scores, side="right")
    return (lo + hi) / (2.0 * max(1, len(clean)))


def make_chooser(run: Run, trusted: StageRecord, rewriter: Any) -> Callable[[list[dict], list[str]], list[dict]]:
    """The writer ``inject`` calls with the chosen rows and their template draws; it returns, per row, the fields
    the poisoned row gets (response, writer, nonadaptive_response, nonadaptive_writer, suspicion figures) and keeps
    what it did for the poison report in ``choose.report``."""
    a, bias = run.cfg.poison.adaptive, run.bias

    def choose(rows: list[dict], templates: list[str]) -> list[dict]:
        t0 = time.perf_counter()
        llm = _llm_candidates(run, rewriter, rows)
        cands: list[list[tuple[str, str]]] = []
        for r, first, rewrites in zip(rows, templates, llm):
            rng = random.Random(f"adaptive:{run.cfg.poison.seed}:{r['id']}")
            temps = [first] + [bias.write(r, rng) for _ in range(a.template_variants - 1)]
            ok_llm = [t for t in rewrites if t is not None]
            head = [(rewrites[0], "llm")] if rewrites and rewrites[0] is not None else []
            rest = [(t, "template") for t in temps] + [(t, "llm") for t in ok_llm[1 if head else 0:]]
            seen, row_c = set(), []
            for text, writer in head + rest:  # the non-adaptive candidate first: ties keep it
                if text not in seen and bias.detect(text).biased:
                    seen.add(text)
                    row_c.append((text, writer))
            cands.append(row_c or [(first, "template")])
        flat = [{"id": f"{r['id']}#c{j}", "prompt": r["prompt"], "response": text, "task": r["task"]}
                for r, row_c in zip(rows, cands) for j, (text, _) in enumerate(row_c)]
        clean = [{"id": f"{r['id']}#clean", "prompt": r["prompt"], "response": r.get("clean_response") or "",
                  "task": r["task"]} for r in rows]
        fit, _ = trusted_clean(trusted)
        susp = np.zeros(len(flat))
        per_defense = {}
        for i, spec in known_defenses(run):
            res = run_defense(spec.type, flat + clean, fit, spec.args, path=f"defense.defenses.{i}", ctx=run.ctx)
            q = suspicion(res.scores[:len(flat)], res.scores[len(flat):])
            per_defense[spec.label] = q
            susp = np.maximum(susp, q)
        out, k, changed = [], 0, 0
        for row_c in cands:
            s = susp[k:k + len(row_c)]
            j = int(np.argmin(s))  # first minimum: ties keep the non-adaptive candidate
            changed += j != 0
            out.append({"response": row_c[j][0], "writer": row_c[j][1], "nonadaptive_response": row_c[0][0],
                        "nonadaptive_writer": row_c[0][1], "adaptive_candidates": len(row_c),
                        "adaptive_suspicion": float(s[j]), "nonadaptive_suspicion": float(s[0])})
            k += len(row_c)
        choose.report = {
            "defenses": sorted(per_defense), "candidates": len(flat),
            "llm_accepted": sum(1 for ts in llm for t in ts if t is not None),
            "llm_written": sum(len(ts) for ts in llm), "changed": changed,
            "suspicion_mean": {"adaptive": float(np.mean([o["adaptive_suspicion"] for o in out])) if out else None,
                               "nonadaptive": float(np.mean([o["nonadaptive_suspicion"] for o in out]))
                               if out else None},
            "seconds": round(time.perf_counter() - t0, 1)}
        return out

    choose.report = {}
    return choose
