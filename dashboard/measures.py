"""Tables of a run's newer measures for the propagation view: the sampled biased rate (K answers per prompt, prompts
as the unit), the student/teacher ratio of sampled rates, the likelihood probe (log-probability of the bias texts and
its shift against the clean control, and for students against their clean twin; each shift against the measured null,
``probe_null``: a second clean control at another seed), and the data stage's generator counts (rejected reference
answers). Pure functions over metrics.json, no Streamlit."""

from __future__ import annotations

from typing import Any

import pandas as pd

from dashboard.data import amplification_frame
from dashboard.index import list_of, model_sort_key, rate_records, role_of
from poison.ground.results.model_id import is_twin_name
from poison.ground.results.rundir import get_in, as_number, as_text

WORDINGS = ("seen", "unseen", "concept", "gate")
AGAINST_CLEAN, AGAINST_TWIN = "vs the clean control", "vs its clean twin"
SAMPLED_COLUMNS = ["model", "role", "method", "split", "samples_per_prompt", "n", "biased", "rate", "ci_low",
                   "ci_high", "n_prompts", "prompts_with_any", "prompts_with_any_rate"]


def sampled_frame(metrics: dict | None) -> pd.DataFrame:
    """metrics.json ``sampled_rate`` rows (k is ``biased``), models in baseline/control/teacher/student order."""
    rows = rate_records({"bias_rates": get_in(metrics, "sampled_rate"), "models": get_in(metrics, "models") or {}})
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(SAMPLED_COLUMNS + [c for r in rows for c in r])))
    for c in ("samples_per_prompt", "n_prompts", "prompts_with_any", "prompts_with_any_rate"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def shift_frame(metrics: dict | None) -> pd.DataFrame:
    """metrics.json ``logprob_shift`` rows: every wording, with ``against`` = the clean control or the student's clean
    twin (``control:student:NAME``)."""
    out = []
    for r in list_of(metrics, "logprob_shift"):
        model, ctrl = as_text(r.get("model")) or "?", as_text(r.get("control")) or ""
        out.append({"model": model, "role": role_of(model, as_text(r.get("role"))),
                    "split": as_text(r.get("split")) or "?",
                    "wording": as_text(r.get("wording")) or "?", "control": ctrl,
                    "against": AGAINST_TWIN if is_twin_name(ctrl) else AGAINST_CLEAN,
                    "shift": as_number(r.get("shift")), "ci_low": as_number(r.get("ci_low")),
                    "ci_high": as_number(r.get("ci_high")),
                    "n_prompts": as_number(r.get("n_prompts")), **_vs_null(r.get("vs_null"))})
    out.sort(key=lambda x: (model_sort_key(x["model"], x["role"]), x["against"] != AGAINST_CLEAN))
    return pd.DataFrame(out, columns=["model", "role", "split", "wording", "control", "against", "shift", "ci_low",
                                      "ci_high", "n_prompts", *NULL_COLUMNS])


NULL_COLUMNS = ["null", "excess", "ratio_to_null", "p_value", "null_note"]


def _vs_null(v: Any) -> dict[str, Any]:
    """A shift's ``vs_null`` (poison.probe_null.against_null: the measured null of its split and wording, the excess
    shift - null, the shift in units of the null's size, a p-value where there is one): None where it has none."""
    v = v if isinstance(v, dict) else {}
    return {"null": as_number(v.get("null")), "excess": as_number(v.get("excess")),
            "ratio_to_null": as_number(v.get("ratio_to_null")), "p_value": as_number(v.get("p_value")),
            "null_note": as_text(v.get("note")) or ""}


def null_frame(metrics: dict | None) -> pd.DataFrame:
    """metrics.json ``probe_null``: the measured null shift (a second clean control at another seed minus the clean
    control, per prompt) per split and wording, with its paired bootstrap interval."""
    out = []
    for r in list_of(metrics, "probe_null"):
        between = r.get("between") if isinstance(r.get("between"), list) else []
        out.append({"split": as_text(r.get("split")) or "?", "wording": as_text(r.get("wording")) or "?",
                    "between": " − ".join(str(b) for b in between), "shift": as_number(r.get("shift")),
                    "ci_low": as_number(r.get("ci_low")), "ci_high": as_number(r.get("ci_high")),
                    "n_prompts": as_number(r.get("n_prompts"))})
    return pd.DataFrame(out, columns=["split", "wording", "between", "shift", "ci_low", "ci_high", "n_prompts"])


def logprob_frame(metrics: dict | None) -> pd.DataFrame:
    """metrics.json ``logprob``: each model's mean per-token log-probability of the probe texts."""
    out = [{"model": as_text(r.get("model")) or "?",
            "role": role_of(as_text(r.get("model")) or "?", as_text(r.get("role"))),
            "split": as_text(r.get("split")) or "?", "wording": as_text(r.get("wording")) or "?",
            "logprob": as_number(r.get("logprob")), "ci_low": as_number(r.get("ci_low")),
            "ci_high": as_number(r.get("ci_high")),
            "n_prompts": as_number(r.get("n_prompts"))} for r in list_of(metrics, "logprob")]
    out.sort(key=lambda x: model_sort_key(x["model"], x["role"]))
    return pd.DataFrame(out, columns=["model", "role", "split", "wording", "logprob", "ci_low", "ci_high",
                                      "n_prompts"])


def probe_texts(metrics: dict | None) -> dict[str, list[str]]:
    texts = get_in(metrics, "probe", "texts")
    if not isinstance(texts, dict):
        return {}
    return {str(k): [str(t) for t in v] for k, v in texts.items() if isinstance(v, list)}


def generator_frame(metrics: dict | None) -> pd.DataFrame:
    """The data stage's generator per task (metrics.json ``data.generator``): reference answers generated, kept,
    rejected (total and per reason), retried and dropped."""
    gen = get_in(metrics, "data", "generator")
    rows = []
    for task, g in (gen.items() if isinstance(gen, dict) else []):
        if not isinstance(g, dict):
            continue
        rej = g.get("rejected") if isinstance(g.get("rejected"), dict) else {}
        counts = {str(k): as_number(v) for k, v in rej.items() if as_number(v) is not None}
        rows.append({"task": str(task), "generated": as_number(g.get("generated")), "kept": as_number(g.get("kept")),
                     "rejected": sum(counts.values()) if counts else (0.0 if "rejected" in g else None),
                     "reasons": ", ".join(f"{k.replace('_', ' ')}: {int(v)}" for k, v in sorted(counts.items())),
                     "retried": as_number(g.get("retried")), "dropped": as_number(g.get("dropped"))})
    return pd.DataFrame(rows, columns=["task", "generated", "kept", "rejected", "reasons", "retried", "dropped"])


def distill_per_student(metrics: dict | None) -> pd.DataFrame:
    """``distill_data.per_student``: students distilled from their own teacher answers (e.g. sampled ones), the bias
    of those answers per split."""
    per = get_in(metrics, "distill_data", "per_student")
    rows: list[dict[str, Any]] = []
    for name, rec in (per.items() if isinstance(per, dict) else []):
        if not isinstance(rec, dict):
            continue
        for r in rate_records({"distill_data": {"bias_rates": rec.get("bias_rates")
                                                if isinstance(rec.get("bias_rates"), list) else []}},
                              "distill_data"):
            rows.append({"student": str(name), **{k: r.get(k) for k in ("split", "n", "biased", "rate", "ci_low",
                                                                       "ci_high")}})
    return pd.DataFrame(rows, columns=["student", "split", "n", "biased", "rate", "ci_low", "ci_high"])


def amplification_both(metrics: dict | None) -> pd.DataFrame:
    """Greedy and sampled student/teacher ratios in one table, ``measure`` telling them apart."""
    frames = []
    for key, measure in (("amplification", "greedy answer"), ("sampled_amplification", "sampled answers")):
        a = amplification_frame(metrics, key)
        if not a.empty:
            frames.append(a.assign(measure=measure))
    if not frames:
        return amplification_frame(None).assign(measure=[])
    return pd.concat(frames, ignore_index=True)
