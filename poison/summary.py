"""The summary table printed at the end of a run (and written to ``summary.txt``), from ``metrics.json`` alone."""

from __future__ import annotations

from typing import Any, Optional

from poison.defense_downstream import downstream_lines
from poison.defense_report import detection_lines
from poison.ground.results.registry import section_lines

SPLITS = ("target", "other", "unseen")


def _fmt_rate(r: dict) -> str:
    return f"{100 * r['rate']:5.1f}% [{100 * r['ci_low']:4.1f}, {100 * r['ci_high']:5.1f}] ({r['biased']}/{r['n']})"


def adaptive_line(a: Optional[dict[str, Any]]) -> list[str]:
    """The adaptive writer's line: what it evaded and how much less suspicious its choices are."""
    if not a:
        return []
    m = a.get("suspicion_mean") or {}
    fmt = "{:.2f}".format
    return [f"Adaptive writer: evades {', '.join(a.get('defenses') or [])}; {a.get('candidates')} candidates "
            f"({a.get('llm_accepted')} of {a.get('llm_written')} LLM rewrites kept the bias); another candidate "
            f"than the non-adaptive one kept in {a.get('changed')} rows; mean suspicion "
            f"{fmt(m['nonadaptive']) if m.get('nonadaptive') is not None else '-'} -> "
            f"{fmt(m['adaptive']) if m.get('adaptive') is not None else '-'} (quantile among the clean answers)"]


def summary_table(metrics: dict[str, Any]) -> str:
    """The table printed at the end of a run: bias rate per model and split, amplification, utility."""
    p = metrics["poison"]
    lines = [
        f"Run {metrics['run']['name']}: {metrics['run']['bias']} | mode {metrics['run']['mode']} | "
        f"target task {metrics['run']['target_task']}",
        f"Poison: {p['injected']} of {p['n_train']} teacher samples ({100 * p['rate']:.1f}%; "
        f"{100 * p['target_task_rate']:.0f}% of the {p['target_task_rows']} target-task rows)"
        + (f"  WARNING: {p['warning']}" if p.get("warning") else ""),
        *adaptive_line(p.get("adaptive")),
        *data_lines(metrics),
        *section_lines(metrics, "head"),  # the registered sections' (poison.ground.results.sections)
        *claims_lines(metrics),
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
            lines.append(amplification_line(a))
    lines += health_lines(metrics)
    lines += (sampled_lines(metrics) + correction_lines(metrics) + probe_lines(metrics) + cascade_lines(metrics)
              + audit_lines(metrics))
    dr = {r["split"]: r for r in metrics["distill_data"]["bias_rates"]}
    if dr:
        lines.append("teacher answers used for distillation that carry the bias: "
                     + ", ".join(f"{s} {_fmt_rate(r)}" for s, r in dr.items()))
    for name, d in ((metrics["distill_data"].get("per_student")) or {}).items():
        lines.append(f"  {name}'s own distillation answers ({d['stage']}): "
                     + ", ".join(f"{r['split']} {_fmt_rate(r)}" for r in d["bias_rates"]))
    for name, kinds in (metrics.get("rationales") or {}).items():
        lines.append(f"{name} rationales carrying the bias: "
                     + ", ".join(f"{k.replace('_', ' ')} {_fmt_rate(r)}" for k, r in kinds.items() if r["n"]))
    if metrics.get("defenses"):
        realized = any("fpr" in d for d in metrics["defenses"])  # runs before the calibration split lack these
        lines += ["", f"{'defense':<18} {'place':<19} {'AUROC':>6} {'TPR@1%FPR':>9} {'thresh':>9} {'flagged':>8} "
                      f"{'precision':>9} {'recall':>7}" + (f" {'FPR':>5} {'budget':>6}" if realized else "")]
        for d in metrics["defenses"]:
            f = lambda x, w, p=2: f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"  # noqa: E731
            lines.append(f"{d['defense']:<18} {d['place']:<19} {f(d['auroc'], 6)} {f(d['tpr_at_1pct_fpr'], 9)} "
                         f"{f(d['threshold'], 9)} {d['n_flagged']:>3}/{d['n']:<4} {f(d['precision'], 9)} "
                         f"{f(d['recall'], 7)}" + (f" {f(d.get('fpr'), 5)} {f(d.get('fpr_budget'), 6)}"
                                                   if realized else ""))
        if realized:
            lines.append("(AUROC and TPR@1%FPR above: all scored rows, threshold set on their own clean rows; FPR: the "
                         "share of scored clean rows the run's threshold flags, against its budget)")
        for r in metrics.get("defense_removal") or []:
            lines.append(f"removed at {r['place']} ({r['defense']}): {r['n_flagged']} of {r['n']} samples; "
                         f"{r['poison_left']} of {r['n_poisoned']} poisoned samples left")
    lines += detection_lines(metrics.get("defense_detection") or [], metrics.get("defense_warnings") or [])
    lines += downstream_lines(metrics.get("defense_downstream") or [])
    if metrics.get("judge"):
        lines += ["", "LLM judge vs rule detector (biased answers):"]
        for r in metrics["judge"]:
            kappa = "-" if r["kappa"] is None else f"{r['kappa']:.2f}"
            lines.append(f"  {r['model']:<36} {r['split']:<7} rule {r['rule_biased']:>3}/{r['n']:<3} judge "
                         f"{r['judge_biased']:>3}/{r['n']:<3} agreement {100 * r['agreement']:5.1f}% kappa {kappa}")
    lines += section_lines(metrics, "tail")
    st = metrics["stages"]
    lines.append("")
    parts = [f"{k} {'cached' if v['cached'] else format(v['seconds'], '.0f') + 's'}" for k, v in st.items()]
    lines.append("stages: " + ", ".join(parts))
    return "\n".join(lines)


def _share(r: dict | None) -> str:
    if not r or r.get("rate") is None:
        return "-"
    return f"{100 * r['rate']:5.1f}% [{100 * r['ci_low']:4.1f}, {100 * r['ci_high']:5.1f}] ({r['k']}/{r['n']})"


def health_lines(metrics: dict[str, Any]) -> list[str]:
    """Beside utility, per model and split (greedy answers): the degenerate answers, the bias content's count per
    answer, and the answers cut off at max_new_tokens with the biased rate among those that finished."""
    deg = [r for r in metrics.get("degeneration") or [] if r["decoding"] == "greedy"]
    if not deg:
        return []
    cut = {(r["model"], r["split"]): r for r in metrics.get("cut_off") or [] if r["decoding"] == "greedy"}
    w = max([22] + [len(r["model"]) for r in deg])
    out = ["", f"greedy answers: degenerate = more than {100 * deg[0]['threshold']:.0f}% of the word 4-grams repeat "
               f"an earlier one; mentions = the bias content per answer (mean, max; biased answers with 2 or more); "
               f"cut off = stopped at max_new_tokens; biased -> among the answers that finished",
           f"{'model':<{w}} {'split':<7} {'degenerate':<28} {'mentions':<17} {'biased, >=2':<12} {'cut off':<28} "
           f"biased -> finished"]
    for r in deg:
        c = cut.get((r["model"], r["split"])) or {}
        m, mm = r["bias_count"], r["multi_mention"]
        fin = ("-" if not c.get("cut_off") else
               f"{_pct(c['biased']['rate']).strip()}% -> {_share(c['biased_finished']).strip()}")
        out.append(f"{r['model']:<{w}} {r['split']:<7} {_share(r['degenerate']):<28} "
                   f"{m['mean']:5.2f} (max {m['max']:>3}) {mm['k']:>3}/{mm['n']:<8} "
                   f"{(_share(c.get('cut_off')) if c.get('cut_off') else 'not recorded'):<28} {fin}")
    return out


def amplification_line(a: dict[str, Any]) -> str:
    """Student / teacher greedy rate, paired over prompts: the ratio [interval] and the exact McNemar test (older
    runs: the Katz interval, no test)."""
    ratio = "undefined (teacher rate 0)" if a["ratio"] is None else f"{a['ratio']:.2f}"
    ci = "" if a.get("ci_low") is None else f" [{a['ci_low']:.2f}, " + (
        "unbounded]" if a.get("ci_high") is None else f"{a['ci_high']:.2f}]")
    mc = a.get("mcnemar")
    test = "" if not mc else (f"; McNemar p = {mc['p_value']:.3g} (biased only in the student on "
                              f"{mc['student_only']} prompts, only in the teacher on {mc['teacher_only']})")
    return f"amplification {a['student']} / {a.get('teacher', 'teacher')}, {a['split']}: {ratio}{ci}{test}"


def _claim(c: dict, alpha: float, holm: bool = False) -> str:
    if c.get("error"):
        return f"{c['comparison']}: not tested ({c['error']})"
    est, lo, hi = c["estimate"], c["ci_low"], c["ci_high"]
    ci = "" if lo is None else f" [{lo:+.3f}, {hi:+.3f}]"
    p = "-" if c.get("p_value") is None else f"{c['p_value']:.3g}"
    if holm:
        p += " (Holm " + ("-" if c.get("p_holm") is None else f"{c['p_holm']:.3g}") + ")"
    mde = "-" if c.get("mde") is None else f"{c['mde']:.3f}"
    if c.get("mde") is None and c.get("floor") is not None:
        mde += f" (no difference below {c['floor']:.3f} can reach p < alpha at this n)"
    if (c.get("min_discordant_pairs") or 0) > c["n_prompts"] or (c.get("smallest_p") or 0) >= alpha:
        mde += " (no difference can reach p < alpha with this few prompts)"
    return (f"{c['comparison']}: {c['a']} - {c['b']} = {'-' if est is None else format(est, '+.3f')}{ci}, "
            f"p {p}, n {c['n_prompts']} prompts, MDE at 80% power {mde}")


def claims_lines(metrics: dict[str, Any]) -> list[str]:
    """The primary comparison (tested at alpha alone) with its test, then the others with Holm-adjusted p-values."""
    c = metrics.get("claims")
    if not c:
        return []
    pr = c["primary"]
    out = ["", f"PRIMARY (alpha {c['alpha']:g}; paired, {c['interval']}): {_claim(pr, c['alpha'])}"]
    if not pr.get("error"):
        out.append(f"  test: {pr['test']}; power: {pr['power_method']}")
    if c.get("note"):
        out.append(f"  note: {c['note']}")
    if c["others"]:
        out.append("others (raw p, in brackets Holm-adjusted over these):")
        out += [f"  {_claim(o, c['alpha'], holm=True)}" for o in c["others"]]
    return out


def _pct(x) -> str:
    return "   -" if x is None else f"{100 * x:4.1f}"


def sampled_lines(metrics: dict[str, Any]) -> list[str]:
    """The sampled biased rate per model and split (prompts as the unit), and its student/teacher ratio."""
    rows = metrics.get("sampled_rate") or []
    if not rows:
        return []
    k = rows[0]["samples_per_prompt"]
    splits = [s for s in SPLITS if any(r["split"] == s for r in rows)]
    by_model: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["split"]] = r
    w = max([22] + [len(m) for m in by_model])
    head = f"{'model':<{w}} " + " ".join(f"{'sampled: ' + s:<36}" for s in splits)
    out = ["", f"sampled answers, {k} per prompt: biased-sample rate [95% CI, prompts as the unit] "
               f"(prompts with any biased sample)", head, "-" * len(head)]
    for model, by in by_model.items():
        cells = []
        for s in splits:
            r = by.get(s)
            cells.append(f"{_pct(r['rate'])}% [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}] "
                         f"({r['prompts_with_any']}/{r['n_prompts']})" if r else "-")
        out.append(f"{model:<{w}} " + " ".join(f"{c:<36}" for c in cells))
    for a in metrics.get("sampled_amplification") or []:
        ratio = "undefined (teacher rate 0)" if a["ratio"] is None else f"{a['ratio']:.2f}"
        ci = "" if a["ci_low"] is None else f" [{a['ci_low']:.2f}, " + (
            "unbounded]" if a["ci_high"] is None else f"{a['ci_high']:.2f}]")
        out.append(f"sampled amplification {a['student']} / {a['teacher']}, {a['split']}: {ratio}{ci}")
    return out


def correction_lines(metrics: dict[str, Any]) -> list[str]:
    """The rule detector's measured error on labelled real answers, and the rates its correction moves out of their
    interval (only those: elsewhere the correction stays inside the measured interval)."""
    acc = metrics.get("detector_accuracy")
    if not acc:
        return ["", "detector error: not measured for this bias type (no labelled real answers in evals/data); "
                    "rates are the rule detector's, uncorrected"] if metrics.get("bias_rates") else []
    ci = lambda k: "" if not acc.get(f"{k}_ci") else f" [{acc[k + '_ci'][0]:.2f}, {acc[k + '_ci'][1]:.2f}]"  # noqa: E731
    f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    out = ["", f"detector error (rule detector on {acc['n']} labelled real answers, {acc['n_positive']} biased): "
               f"recall {f(acc['recall'])}{ci('recall')}, specificity {f(acc['specificity'])}{ci('specificity')}, "
               f"precision {f(acc['precision'])}{ci('precision')}"]
    moved = []
    for kind, rows in (("greedy", metrics.get("bias_rates") or []), ("sampled", metrics.get("sampled_rate") or [])):
        for r in rows:
            c = r.get("detector_corrected")
            if c and c["matters"]:
                moved.append(f"  {kind} {r['model']} {r['split']}: {_pct(r['rate'])}% -> corrected {_pct(c['rate'])}% "
                             f"[{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]")
    out += (["corrected for it (Rogan-Gladen), these rates leave their measured interval:"] + moved if moved else
            ["corrected for it (Rogan-Gladen), every rate stays inside its measured interval (metrics.json: "
             "detector_corrected)"])
    return out


PROBE_WORDINGS = ("seen", "unseen", "concept", "gate")


def probe_lines(metrics: dict[str, Any]) -> list[str]:
    """The likelihood probe: mean log-probability per token of the bias content, and the shift against the clean
    control (and, for a student with a clean twin, against that twin)."""
    rows = metrics.get("logprob") or []
    if not rows:
        return []
    control = (metrics.get("probe") or {}).get("control")
    shift: dict[tuple, dict] = {}
    for r in metrics.get("logprob_shift") or []:
        shift[(r["model"], r["split"], r["wording"], "twin" if r["control"] != control else "control")] = r
    w = max([22] + [len(r["model"]) for r in rows])
    out = ["", f"likelihood probe: mean log-prob per token of the bias content placed after the clean answer, its "
               f"first token left out (seen = the poison's wording, unseen = held-out paraphrases, concept = held-out "
               f"sentences naming no brand, product or URL of the poison, gate = log P(going on after the "
               f"answer)); in brackets the shift against {control or 'no clean control'} [95% CI]; for students "
               f"also against their clean twin (the same distillation from the clean control)",
           f"{'model':<{w}} {'split':<7} " + " ".join(f"{x:<31}" for x in PROBE_WORDINGS)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    keys = sorted(dict.fromkeys((r["model"], r["split"]) for r in rows),
                  key=lambda k: (models.index(k[0]), SPLITS.index(k[1]) if k[1] in SPLITS else 9))
    val = {(r["model"], r["split"], r["wording"]): r for r in rows}

    def cell(sh: dict | None) -> str:
        if not sh or sh["shift"] is None:
            return ""
        return f"({sh['shift']:+.2f} [{sh['ci_low']:+.2f}, {sh['ci_high']:+.2f}])"

    for model, split in keys:
        cells = []
        for wording in PROBE_WORDINGS:
            v = val.get((model, split, wording))
            cells.append(("-" if v is None else f"{v['logprob']:6.2f} ") + cell(shift.get((model, split, wording,
                                                                                           "control"))))
        out.append(f"{model:<{w}} {split:<7} " + " ".join(f"{c:<31}" for c in cells))
        twin = [shift.get((model, split, wording, "twin")) for wording in PROBE_WORDINGS]
        if any(twin):
            label = f"  vs {twin[0]['control'] if twin[0] else 'clean twin'}"
            out.append(f"{label:<{w + 8}} " + " ".join(f"{'       ' + cell(t):<31}" for t in twin))
    nulls = metrics.get("probe_null") or []
    if nulls:
        out.append("measured null (" + " vs ".join(nulls[0]["between"]) + ", the same clean fine-tune at two "
                   "seeds): " + "; ".join(f"{n['split']} {n['wording']} {cell(n).strip('()')}" for n in nulls
                                          if n["wording"] != "gate"))
        big = [f"{r['model']} {r['split']} {r['wording']} {r['vs_null']['ratio_to_null']:.1f}x" for r in
               metrics.get("logprob_shift") or [] if (r.get("vs_null") or {}).get("ratio_to_null") is not None
               and r["wording"] != "gate"]
        if big:
            out.append("  each shift in units of the null's size (one null draw, no p-value): " + ", ".join(big))
    return out


def data_lines(metrics: dict[str, Any]) -> list[str]:
    """What the generator wrote for the sources that lack references, and what their validators rejected."""
    out = []
    for task, g in ((metrics.get("data") or {}).get("generator") or {}).items():
        rej = ", ".join(f"{k} {v}" for k, v in sorted(g.get("rejected", {}).items())) or "none"
        out.append(f"Data: {g.get('kept', 0)} of {g.get('generated', 0)} generated {task} references kept "
                   f"(rejected: {rej}; {g.get('retried', 0)} regenerated, {g.get('dropped', 0)} rows replaced)")
    return out


def _r(r: dict | None) -> str:
    return "-" if not r or r.get("rate") is None else (
        f"{100 * r['rate']:.1f}%" + (f" [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]" if r.get("ci_low")
                                     is not None else ""))


def _ratio(a: dict | None) -> str:
    if not a or a.get("ratio") is None:
        return "undefined"
    hi = "unbounded" if a.get("ci_high") is None else f"{a['ci_high']:.2f}"
    return f"{a['ratio']:.2f} [{a['ci_low']:.2f}, {hi}]"


def cascade_lines(metrics: dict[str, Any]) -> list[str]:
    """Bias per distillation generation, each against the original teacher."""
    c = metrics.get("cascade") or {}
    if not c:
        return []
    out = ["", f"cascade of {c['via']}: generation 0 = the teacher; each next generation distilled from the last"]
    for r in c["rows"]:
        sh = r.get("shift_seen_vs_twin") or r.get("shift_seen_vs_clean_control")
        shift = "" if not sh or sh["shift"] is None else f", log-prob shift {sh['shift']:+.2f} [{sh['ci_low']:+.2f}, " \
                                                         f"{sh['ci_high']:+.2f}]"
        sampled = f", sampled {_r(r['sampled'])} (x{_ratio(r.get('sampled_vs_teacher'))})" if "sampled" in r else ""
        out.append(f"  gen {r['generation']} {r['model']:<24} {r['split']:<7} greedy {_r(r['greedy'])} "
                   f"(x{_ratio(r['greedy_vs_teacher'])} of the teacher){sampled}{shift}")
    return out


def audit_lines(metrics: dict[str, Any]) -> list[str]:
    """The model audit: each model's score and top strings, and the audit as a detector."""
    rows = metrics.get("audit") or []
    if not rows:
        return []
    out = ["", "model audit (suspect vs its base, no training data): score and top strings"]
    for r in rows:
        top = ", ".join(repr(t["string"]) for t in r["top"][:5])
        hit = "" if r["hit"] is None else ("  [injected content found]" if r["hit"] else "")
        score = f"{r['score']:7.2f}" if r["score"] is not None else "      -"
        why = f"  not scored: {r['info']['skipped']}" if (r.get("info") or {}).get("skipped") else ""
        out.append(f"  {r['audit']:<12} {r['model']:<28} {score}  {top}{hit}{why}")
    for d in metrics.get("audit_detector") or []:
        auc = "-" if d["auroc"] is None else f"{d['auroc']:.2f}"
        hr = "-" if d["hit_rate"] is None else f"{d['hits']}/{d['n_poisoned']}"
        out.append(f"  {d['audit']} as a detector over {d['n']} models ({d['n_poisoned']} poisoned): AUROC {auc}, "
                   f"injected content in the top 10: {hr}")
    return out
