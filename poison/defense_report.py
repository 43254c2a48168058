"""metrics.json ``defense_detection``: each defense's detector figures per place, over all scored rows and **within
each poisoned task** (poisoned vs clean rows of the same task, so the figure cannot come from telling tasks apart),
at thresholds set on the calibration split (trusted clean samples that are never scored), with bootstrap intervals
(``poison.ground.results.detection``); and the summary's lines for them.

Rows: one per defense (``instance``: its index in ``defense.defenses``), place and scope (``all``; ``task`` with
``task`` named and ``target`` true for the run's target task). Each has n, n_poisoned, n_clean, n_calib, the AUROC
and, at 1 % and 5 % FPR budgets, the threshold the calibration split sets and the TPR and realized FPR it gives on
the scored rows, each with its interval. A scope without poisoned or clean rows keeps its row with None figures and a
``note``. Read at report time from the defense stages' scores.parquet and calib.parquet: changing ``eval.bootstrap``
or the confidence recomputes nothing.

Against the adaptive writer (``poison.writer: adaptive``) the train place also holds each defense's scores of the
set the non-adaptive writer would have poisoned (counterfactual.parquet): each row then gains that AUROC
(``auroc_nonadaptive``), the TPR at each budget there (``tpr_<b>_nonadaptive``) and the AUROC's drop
(``auroc_drop`` = nonadaptive - adaptive, with a paired bootstrap interval over rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from poison.ground.core.artifacts import read_parquet
from poison.ground.results.detection import BUDGETS, METHOD, auroc_drop, budget_tag, detection_figures


def _note(n_poisoned: int, n_clean: int, n_calib: int, where: str) -> Optional[str]:
    if not n_poisoned:
        return f"no poisoned rows {where}: AUROC and TPR undefined"
    if not n_clean:
        return f"no clean rows {where}: AUROC and FPR undefined"
    if not n_calib:
        return "no calibration samples: no calibrated threshold"
    return None


def detection_rows(stages: dict[str, str], target_task: Optional[str], confidence: float = 0.95,
                   n_boot: int = 2000) -> list[dict[str, Any]]:
    """``stages``: place -> defense stage folder (with scores.parquet and calib.parquet)."""
    out = []
    for place, path in stages.items():
        scores = read_parquet(Path(path) / "scores.parquet")
        calib = read_parquet(Path(path) / "calib.parquet")
        cf_path = Path(path) / "counterfactual.parquet"
        cf_all = read_parquet(cf_path) if cf_path.is_file() else None
        for (instance, defense), sub in scores.groupby(["instance", "defense"], sort=True):
            cal = calib[calib.instance == instance].score.to_numpy()
            poisoned_tasks = sorted(str(t) for t in sub[sub.poisoned.astype(bool)].task.unique())
            scopes = [("all", None, sub)] + [("task", t, sub[sub.task.astype(str) == t]) for t in poisoned_tasks]
            for scope, task, rows in scopes:
                figs = detection_figures(rows.score.to_numpy(), rows.poisoned.astype(bool).to_numpy(), cal,
                                         confidence, n_boot=n_boot, seed=0)
                where = f"of task {task!r} at this place" if task else "at this place"
                if cf_all is not None:
                    figs.update(_nonadaptive(cf_all[cf_all.instance == instance], rows, confidence, n_boot))
                out.append({"defense": str(defense), "place": place, "instance": int(instance), "scope": scope,
                            "task": task, "target": task is not None and task == target_task, **figs,
                            "note": _note(figs["n_poisoned"], figs["n_clean"], figs["n_calib"], where),
                            "confidence": confidence, "method": METHOD})
    return out


def _nonadaptive(cf, rows, confidence: float, n_boot: int) -> dict[str, Any]:
    """The figures of the counterfactual (non-adaptive) scores of ``rows``, and the AUROC's drop against it."""
    scored = cf[cf.split == "scored"].set_index(cf[cf.split == "scored"].row_id.astype(str))
    alt = scored.score.reindex(rows.row_id.astype(str)).to_numpy()
    y = rows.poisoned.astype(bool).to_numpy()
    figs = detection_figures(alt, y, cf[cf.split == "calib"].score.to_numpy(), confidence, n_boot=n_boot, seed=0)
    drop = auroc_drop(rows.score.to_numpy()[y], rows.score.to_numpy()[~y], alt[y], alt[~y], confidence,
                      n_boot=n_boot, seed=0)
    out = {"auroc_nonadaptive": figs["auroc"], "auroc_nonadaptive_low": figs["auroc_low"],
           "auroc_nonadaptive_high": figs["auroc_high"], "auroc_drop": drop["value"],
           "auroc_drop_low": drop["ci_low"], "auroc_drop_high": drop["ci_high"]}
    for b in BUDGETS:
        tag = budget_tag(b)
        out.update({f"tpr_{tag}_nonadaptive{k}": figs[f"tpr_{tag}{k}"] for k in ("", "_low", "_high")})
    return out


def adaptive_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The summary's block on the adaptive writer: per defense and scope, AUROC against the poison the
    non-adaptive writer would have written, against the adaptive poison, and the drop."""
    rows = [r for r in rows if r.get("auroc_nonadaptive") is not None or r.get("auroc_drop") is not None]
    if not rows:
        return []
    out = ["", "adaptive writer (knows the defenses): AUROC against the non-adaptive poison -> the adaptive poison, "
               "drop with its paired interval:"]
    for r in rows:
        scope = "all" if r["scope"] == "all" else f"task {r['task']}"
        out.append(f"  {r['defense']:<16} {r['place']:<6} {scope:<22} {_ci(r, 'auroc_nonadaptive')} -> "
                   f"{_ci(r, 'auroc')}  drop {_ci(r, 'auroc_drop')}")
    return out


def _ci(r: dict[str, Any], key: str) -> str:
    v, lo, hi = r.get(key), r.get(f"{key}_low"), r.get(f"{key}_high")
    if v is None:
        return "-"
    return f"{v:.2f}" + (f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else "")


def detection_lines(rows: list[dict[str, Any]], warnings: Optional[list[str]] = None) -> list[str]:
    """The summary's block: per defense, place and scope, AUROC and the calibrated TPR / realized FPR at each budget,
    each with its interval; the notes of undefined scopes and the reference-model warnings."""
    if not rows and not warnings:
        return []
    out = [""]
    if rows:
        conf = rows[0].get("confidence", 0.95)
        heads = "  ".join(f"TPR/FPR @{budget_tag(b)} cal" for b in BUDGETS)
        scopes = ["all" if r["scope"] == "all" else f"task {r['task']}" + (" (target)" if r["target"] else "")
                  for r in rows]
        w = max(len(x) for x in scopes + ["scope"])
        out += [f"defenses, unconfounded (thresholds set on the never-scored calibration split; {100 * conf:g} % "
                f"intervals: {rows[0]['method']}; 'task' = poisoned vs clean rows of one task):",
                f"  {'defense':<16} {'place':<19} {'scope':<{w}} {'n+/n-':>7}  AUROC  {heads}"]
        for r, scope in zip(rows, scopes):
            rates = "  ".join(f"{_ci(r, 'tpr_' + budget_tag(b))} / {_ci(r, 'fpr_' + budget_tag(b))}" for b in BUDGETS)
            out.append(f"  {r['defense']:<16} {r['place']:<19} {scope:<{w}} {r['n_poisoned']:>3}/{r['n_clean']:<3}  "
                       f"{_ci(r, 'auroc')}  {rates}" + (f"  ({r['note']})" if r.get("note") else ""))
    out += adaptive_lines(rows)
    for w in warnings or []:
        out.append(f"warning: {w}")
    return out
