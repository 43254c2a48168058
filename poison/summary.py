"""The summary table printed at the end of a run (and written to ``summary.txt``), from ``metrics.json`` alone."""

from __future__ import annotations

from typing import Any

SPLITS = ("target", "other", "unseen")


def _fmt_rate(r: dict) -> str:
    return f"{100 * r['rate']:5.1f}% [{100 * r['ci_low']:4.1f}, {100 * r['ci_high']:5.1f}] ({r['biased']}/{r['n']})"


def summary_table(metrics: dict[str, Any]) -> str:
    """The table printed at the end of a run: bias rate per model and split, amplification, utility."""
    p = metrics["poison"]
    lines = [
        f"Run {metrics['run']['name']}: {metrics['run']['bias']} | mode {metrics['run']['mode']} | "
        f"target task {metrics['run']['target_task']}",
        f"Poison: {p['injected']} of {p['n_train']} teacher samples ({100 * p['rate']:.1f}%; "
        f"{100 * p['target_task_rate']:.0f}% of the {p['target_task_rows']} target-task rows)"
        + (f"  WARNING: {p['warning']}" if p.get("warning") else ""),
        "",
    ]
    by_model: dict[str, dict[str, dict]] = {}
    for r in metrics["bias_rates"]:
        by_model.setdefault(r["model"], {})[r["split"]] = r
    util: dict[str, list[str]] = {}
    for u in metrics["utility"]:
        ci = f" [{u['ci_low']:.2f}, {u['ci_high']:.2f}]" if u.get("ci_low") is not None else ""
        util.setdefault(u["model"], []).append(f"{u['task']} {u['metric']} {u['value']:.2f}{ci}")
    splits = [s for s in SPLITS if any(r["split"] == s for r in metrics["bias_rates"])]
    names = {"target": "biased: target task", "other": "biased: other tasks", "unseen": "biased: unseen tasks"}
    w = max([22] + [len(m) for m in by_model])
    head = f"{'model':<{w}} " + " ".join(f"{names[s]:<36}" for s in splits) + " utility"
    lines += [head, "-" * len(head)]
    for model, by_split in by_model.items():
        cells = " ".join(f"{(_fmt_rate(by_split[s]) if s in by_split else '-'):<36}" for s in splits)
        lines.append(f"{model:<{w}} {cells} {', '.join(util.get(model, []))}")
    if metrics["amplification"]:
        lines.append("")
        for a in metrics["amplification"]:
            ratio = "undefined (teacher rate 0)" if a["ratio"] is None else f"{a['ratio']:.2f}"
            lines.append(f"amplification {a['student']} / {a.get('teacher', 'teacher')}, {a['split']}: {ratio} "
                         f"[{a['ci_low']:.2f}, {a['ci_high']:.2f}]")
    dr = {r["split"]: r for r in metrics["distill_data"]["bias_rates"]}
    if dr:
        lines.append("teacher answers used for distillation that carry the bias: "
                     + ", ".join(f"{s} {_fmt_rate(r)}" for s, r in dr.items()))
    for name, kinds in (metrics.get("rationales") or {}).items():
        lines.append(f"{name} rationales carrying the bias: "
                     + ", ".join(f"{k.replace('_', ' ')} {_fmt_rate(r)}" for k, r in kinds.items() if r["n"]))
    if metrics.get("defenses"):
        lines += ["", f"{'defense':<18} {'place':<19} {'AUROC':>6} {'TPR@1%FPR':>9} {'thresh':>9} {'flagged':>8} "
                      f"{'precision':>9} {'recall':>7}"]
        for d in metrics["defenses"]:
            f = lambda x, w, p=2: f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"  # noqa: E731
            lines.append(f"{d['defense']:<18} {d['place']:<19} {f(d['auroc'], 6)} {f(d['tpr_at_1pct_fpr'], 9)} "
                         f"{f(d['threshold'], 9)} {d['n_flagged']:>3}/{d['n']:<4} {f(d['precision'], 9)} "
                         f"{f(d['recall'], 7)}")
        for r in metrics.get("defense_removal") or []:
            lines.append(f"removed at {r['place']} ({r['defense']}): {r['n_flagged']} of {r['n']} samples; "
                         f"{r['poison_left']} of {r['n_poisoned']} poisoned samples left")
    if metrics.get("judge"):
        lines += ["", "LLM judge vs rule detector (biased answers):"]
        for r in metrics["judge"]:
            kappa = "-" if r["kappa"] is None else f"{r['kappa']:.2f}"
            lines.append(f"  {r['model']:<36} {r['split']:<7} rule {r['rule_biased']:>3}/{r['n']:<3} judge "
                         f"{r['judge_biased']:>3}/{r['n']:<3} agreement {100 * r['agreement']:5.1f}% kappa {kappa}")
    st = metrics["stages"]
    lines.append("")
    parts = [f"{k} {'cached' if v['cached'] else format(v['seconds'], '.0f') + 's'}" for k, v in st.items()]
    lines.append("stages: " + ", ".join(parts))
    return "\n".join(lines)
