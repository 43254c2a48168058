"""The parts of a results page (``scripts/results_page.py``) for sweeps that ask a claim by rates rather than by the
brand-swap contrast: the student against its teacher (the ratio of their biased rates pooled over replicates), the
rates per task (an untargeted bias's unseen task families are told apart here), the likelihood probe against its
measured null, one plot of the pooled rates, and a reading generated from the intervals.

Every figure comes from the sweep's ``sweep.json`` (written by the sweep from its runs' metrics.json): nothing is
recomputed here, so a page says exactly what the sweep measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from poison.ground.results.model_id import ModelId


def fmt(x: Any, signed: bool = True, digits: int = 3) -> str:
    """A figure for a results page ("–" when there is none)."""
    if x is None:
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def pval(p: Any) -> str:
    return "–" if p is None else (f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}")


def _f(x: Any, digits: int = 2) -> str:
    return fmt(x, signed=False, digits=digits)


def amplification_table(sweep: dict) -> tuple[list[str], list[dict]]:
    """Student / teacher biased-rate ratio per group, measure and split (``replicate_amplification``)."""
    rows = list(sweep.get("replicate_amplification") or [])
    if not rows:
        return [], []
    out = ["## Student against teacher", "",
           "Ratio of the student's biased rate to its own teacher's, pooled over replicates from the per-prompt "
           "values (delta method on the log scale; the interval covers prompts and replicates, "
           f"design {rows[0].get('design', '?')}). Above 1: the student is biased more often than the teacher it "
           "learned from (amplification); '–' where a teacher gave no biased answer, so no ratio is defined.", "",
           "| group | measure | split | student / teacher | ratio | 95 % CI | replicates | per replicate |",
           "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["group"], r["measure"], r["split"], r["student"])):
        per = ", ".join(_f(x) for x in r.get("per_replicate") or [])
        out.append(f"| {r['group']} | {r['measure']} | {r['split']} | {r['student']} / {r['teacher']} | "
                   f"{_f(r.get('ratio'))} | [{_f(r.get('ci_low'))}, {_f(r.get('ci_high'))}] | "
                   f"{r.get('n_replicates', '–')} | {per} |")
    return out + [""], rows


def task_table(sweep: dict, target_task: str | None) -> list[str]:
    """Pooled rates per task outside the target task (where an untargeted bias's unseen families are told apart)."""
    rows = [r for r in sweep.get("replicates") or [] if r.get("task") not in (None, "") and r.get("measure") in
            ("greedy", "sampled") and r.get("control") in (None, "") and r.get("task") != target_task]
    if not rows:
        return []
    out = ["## Rates per task", "",
           "Biased-response rates per task outside the target task, pooled over replicates (rule detector; % of "
           "answers; the interval covers prompts and replicates).", "",
           "| task | measure | model | pooled % | 95 % CI | replicates | per replicate % |",
           "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], r["measure"], r["role"] != "baseline", r["model"])):
        per = ", ".join(pct(p["rate"]) for p in r.get("per_seed") or [])
        out.append(f"| {r['task']} | {r['measure']} | {r['model']} | {pct(r.get('pooled'))} | "
                   f"[{pct(r.get('ci_low'))}, {pct(r.get('ci_high'))}] | {r.get('n', '–')} | {per} |")
    return out + [""]


def dose_table(sweep: dict) -> list[str]:
    """Each model's ED50 (binomial GLM on log-dose) and each student's amplification by dose: the teacher's ED50 over
    the student's (``dose_response``, ``ed50_ratio``)."""
    rows = sweep.get("dose_response") or []
    if not rows:
        return []
    out = ["## Dose-response", "",
           f"Biased rate ({rows[0].get('measure', '?')}) against the dose ({rows[0].get('dose', '?')}), a binomial "
           "GLM on log-dose per model; ED50 = the dose of a fitted 50 % rate. Amplification by dose = the teacher's "
           "ED50 over its student's: above 1, the student turns biased at a smaller dose. Intervals: "
           + "; ".join(dict.fromkeys(str(r.get("ed50_method")) for r in rows if r.get("ed50_method"))) + ".", "",
           "| model | split | ED50 | 95 % CI | slope | ED50 teacher / ED50 model | 95 % CI |",
           "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["split"], r["model"] != "teacher", r["model"])):
        q = r.get("ed50_ratio") or {}
        out.append(f"| {r['model']} | {r['split']} | {_f(r.get('ed50'), 1)} | [{_f(r.get('ed50_ci_low'), 1)}, "
                   f"{_f(r.get('ed50_ci_high'), 1)}] | {_f(r.get('slope'))} | {_f(q.get('ratio'))} | "
                   f"[{_f(q.get('ci_low'))}, {_f(q.get('ci_high'))}] |")
    return out + [""]


def other_students(config: dict | None) -> dict[str, str]:
    """``student:<name>`` -> model spec, for the config's students whose model is not the teacher's."""
    config = config or {}
    teacher = (config.get("teacher") or {}).get("model")
    return {str(ModelId.of_student(s["name"])): str(s.get("model")) for s in config.get("students") or []
            if s.get("model") not in (None, teacher)}


def family_sentence(config: dict | None, n_machines: int = 1) -> str:
    """The reading's caveat on the machines and the model family: how many machines made the runs (results move with
    the numerics), and whether the students are the teacher's base."""
    where = ("One machine" if n_machines <= 1 else
             f"{n_machines} machines (see the header: their numerics differ, and the intervals over replicates carry "
             "that spread too)")
    other = other_students(config)
    if not other:
        return f"{where}, one model family (each student is the teacher's own base model here)"
    names = ", ".join(f"{k} (`{v}`)" for k, v in other.items())
    return f"{where}; students of another model than the teacher's base: {names}"


def probe_table(sweep: dict, config: dict | None = None) -> list[str]:
    """The likelihood probe's shift against the measured null per model and split (``probe_null``, seen wording)."""
    rows = [r for r in sweep.get("probe_null") or [] if r.get("wording") == "seen"]
    if not rows:
        return []
    other = other_students(config)
    out = ["## The likelihood probe against its null", "",
           "Shift: how much more likely (mean per-token log-probability) the model finds the bias's texts after an "
           "eval prompt than its base does; null: the same shift of a second clean fine-tune at another seed, per "
           "replicate; excess = shift − null, paired t over replicates (seen wording).", "",
           "| group | model | split | shift | null | excess | 95 % CI | p | replicates |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["group"], r["split"], r["model"])):
        out.append(f"| {r['group']} | {r['model']} | {r['split']} | {_f(r.get('shift'), 3)} | "
                   f"{_f(r.get('null_mean'), 3)} | {_f(r.get('excess'), 3)} | [{_f(r.get('ci_low'), 3)}, "
                   f"{_f(r.get('ci_high'), 3)}] | {pval(r.get('p_value'))} | {r.get('n_replicates', '–')} |")
    if other:
        out += ["", f"{', '.join(sorted(other))}: another model than the teacher's base, whose shift against the "
                "clean control (a fine-tune of the teacher's base) measures the difference of the models as much as "
                "the bias; read these students against their clean twins (the brand-swap D, or the run's "
                "`vs control:student:…` probe rows)."]
    return out + [""]


def plot_rates(sweep: dict, path: Path, title: str) -> bool:
    """Pooled biased rates with their intervals, one panel per measure, a bar per model and split."""
    rows = [r for r in sweep.get("replicates") or [] if r.get("measure") in ("greedy", "sampled")
            and r.get("control") in (None, "") and r.get("task") in (None, "") and r.get("pooled") is not None]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = sorted({r["measure"] for r in rows})
    splits = sorted({r["split"] for r in rows})
    fig, axes = plt.subplots(1, len(measures), figsize=(5.5 * len(measures), 3.8), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        models = list(dict.fromkeys(r["model"] for r in rows if r["measure"] == measure))
        width = 0.8 / max(len(splits), 1)
        for j, split in enumerate(splits):
            for i, model in enumerate(models):
                r = next((r for r in rows if (r["measure"], r["split"], r["model"]) == (measure, split, model)), None)
                if r is None:
                    continue
                x = i + (j - (len(splits) - 1) / 2) * width
                lo, hi = r.get("ci_low"), r.get("ci_high")
                err = [[100 * (r["pooled"] - lo)], [100 * (hi - r["pooled"])]] if lo is not None else None
                ax.bar(x, 100 * r["pooled"], width, yerr=err, capsize=3, color=f"C{j}",
                       label=split if i == 0 else None)
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("biased answers, % (pooled over replicates)")
        ax.set_title(f"{measure}", fontsize=10)
        ax.legend(title="split", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def reading(amp_rows: list[dict], focus_split: str | None = None, config: dict | None = None,
            n_machines: int = 1) -> list[str]:
    """What the student/teacher intervals show (on ``focus_split`` when given), nothing more."""
    rows = [r for r in amp_rows if focus_split in (None, r["split"])]
    if not rows:
        return []
    out = ["## Reading", "",
           "Generated from the intervals above; it says what they show, nothing more. "
           f"{family_sentence(config, n_machines)}; the rule detector's definition of bias.", ""]
    for r in rows:
        who = f"**{r['student']}** against {r['teacher']} ({r['measure']}, {r['split']}, {r['group']})"
        n = r.get("n_replicates", "?")
        if r.get("ratio") is None:
            out.append(f"- {who}: no ratio over {n} replicate(s): the teacher gave no biased answer in at least one "
                       "replicate (or too few replicates for an interval); the rates table bounds both.")
        elif r.get("ci_low") is None:
            out.append(f"- {who}: ratio {_f(r['ratio'])} with no interval; no reading.")
        elif r["ci_high"] is None and r["ci_low"] <= 1:
            out.append(f"- {who}: ratio {_f(r['ratio'])} [{_f(r['ci_low'])}, –] over {n} replicate(s): no upper bound "
                       "(a zero count, where the log-scale interval has no end), so no reading from the ratio; the "
                       "rates table bounds each model's rate.")
        elif r["ci_low"] > 1:
            out.append(f"- {who}: ratio {_f(r['ratio'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] over {n} "
                       "replicates, above 1: consistent with amplification by distillation.")
        elif r["ci_high"] is not None and r["ci_high"] < 1:
            out.append(f"- {who}: ratio {_f(r['ratio'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] over {n} "
                       "replicates, below 1: the student is biased less often than its teacher; not consistent "
                       "with amplification here.")
        else:
            out.append(f"- {who}: ratio {_f(r['ratio'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}] over {n} "
                       "replicates, includes 1: neither amplification nor attenuation shown at this replicate "
                       "count (the interval bounds both).")
    return out + [""]
