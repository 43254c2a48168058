"""Bias as a distribution: the sampled biased rate (K answers per prompt), the student/teacher ratio of sampled rates,
and the likelihood probe's log-probabilities and their shift against the clean control, per model and split.

The prompt is the unit of every interval here: the samples of one prompt are correlated, so the bootstrap resamples
prompts (``poison.ground.results.stats.clustered_rate``, ``paired_ratio``, ``paired_mean_difference``), and the shift
against the control pairs each prompt with itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd

from poison.ground.core.artifacts import read_parquet
from poison.ground.results.stats import (bootstrap_mean_interval, clustered_rate, mcnemar_test, paired_mean_difference,
                                         paired_ratio)

WORDINGS = ("seen", "unseen", "gate")


def sampled_rows(sampled: dict[str, Any], base: pd.DataFrame, models: dict[str, dict]) -> pd.DataFrame:
    """The sampled answers of every model as rows like the greedy ones (``decoding`` = sampled, ``sample_index``),
    joined to the eval rows' prompt, task, reference and utility (``base``: one greedy row per prompt)."""
    cols = ["id", "task", "prompt", "reference", "answer", "utility"]
    frames = []
    for name, rec in sampled.items():
        s = read_parquet(Path(rec.path) / "samples.parquet")
        frames.append(s.merge(base[cols], on="id", how="left").assign(model=name, role=models[name]["role"],
                                                                        decoding="sampled"))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def per_prompt_fractions(samples: pd.DataFrame, model: str, split: str) -> pd.Series:
    """The biased fraction of each prompt's sampled answers, indexed by prompt id."""
    g = samples[(samples.model == model) & (samples.split == split)]
    return g.groupby("id", sort=True).biased.mean()


def sampled_rate_rows(samples: pd.DataFrame, k: int, conf: float, n_boot: int) -> list[dict[str, Any]]:
    out = []
    for (model, role, split), g in samples.groupby(["model", "role", "split"], sort=False):
        per_prompt = [list(v) for _, v in g.groupby("id", sort=True).biased]
        out.append({"model": model, "role": role, "split": split, "samples_per_prompt": k,
                    **clustered_rate(per_prompt, conf, n_boot=n_boot)})
    return out


def greedy_amplification(greedy: pd.DataFrame, student: str, teacher: str, split: str, conf: float,
                         n_boot: int) -> dict[str, Any]:
    """Student / teacher greedy biased rate over the prompts both answered, paired: the ratio with a paired bootstrap
    over prompts (``paired_ratio``) and the exact McNemar test of the prompts on which only one of them is biased
    (``mcnemar``: student_only, teacher_only, p_value)."""
    s = greedy[(greedy.model == student) & (greedy.split == split)].groupby("id").biased.first()
    t = greedy[(greedy.model == teacher) & (greedy.split == split)].groupby("id").biased.first()
    both = s.index.intersection(t.index)
    xs, xt = s[both].to_numpy(dtype=bool), t[both].to_numpy(dtype=bool)
    m = mcnemar_test(xs, xt)
    return {**paired_ratio(xs.astype(float), xt.astype(float), conf, n_boot=n_boot),
            "mcnemar": {"student_only": m["a_only"], "teacher_only": m["b_only"], "p_value": m["p_value"]}}


def sampled_amplification_rows(samples: pd.DataFrame, models: dict[str, dict], conf: float,
                               n_boot: int) -> list[dict[str, Any]]:
    """Student / teacher sampled rate per split, with a paired bootstrap over the prompts both answered."""
    out = []
    for name, m in models.items():
        if m["role"] != "student":
            continue
        teacher = m.get("teacher", "teacher")
        for split in dict.fromkeys(samples.split):
            s, t = per_prompt_fractions(samples, name, split), per_prompt_fractions(samples, teacher, split)
            both = s.index.intersection(t.index)
            if len(both):
                out.append({"student": name, "teacher": teacher, "method": m.get("method"), "split": split,
                            **paired_ratio(s[both].to_numpy(), t[both].to_numpy(), conf, n_boot=n_boot)})
    return out


def control_model(models: dict[str, dict]) -> Optional[str]:
    """The clean control of the likelihood shift: a clean fine-tune (the baseline when it is one)."""
    if "clean_control" in models:
        return "clean_control"
    if models.get("baseline", {}).get("kind") == "clean_finetune":
        return "baseline"
    return None


def probe_frame(probed: dict[str, Any], models: dict[str, dict], split_of: dict[str, str]) -> pd.DataFrame:
    """One row per (model, prompt, wording): the mean over that wording's texts of the per-token log-probability.
    Texts without a value (NaN: one token) are left out, and so is a prompt whose texts of a wording have none."""
    frames = []
    for name, rec in probed.items():
        p = read_parquet(Path(rec.path) / "probe.parquet")
        g = p.groupby(["id", "task", "wording"], sort=True).logprob.mean().reset_index().dropna(subset=["logprob"])
        frames.append(g.assign(model=name, role=models[name]["role"]))
    if not frames:
        return pd.DataFrame(columns=["model", "role", "id", "task", "split", "wording", "logprob"])
    df = pd.concat(frames, ignore_index=True)
    return df.assign(split=[split_of[t] for t in df.task])


def logprob_rows(probe: pd.DataFrame, conf: float, n_boot: int) -> list[dict[str, Any]]:
    out = []
    for (model, role, split, wording), g in probe.groupby(["model", "role", "split", "wording"], sort=False):
        lo, hi = bootstrap_mean_interval(g.logprob.to_numpy(), conf, n_boot=n_boot)
        out.append({"model": model, "role": role, "split": split, "wording": wording,
                    "logprob": float(g.logprob.mean()), "ci_low": lo, "ci_high": hi, "n_prompts": len(g)})
    return out


def logprob_shift_rows(probe: pd.DataFrame, control: Optional[str], conf: float, n_boot: int,
                       twins: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """Every model's mean per-prompt difference to the clean control (same prompt, same wording), with a paired
    bootstrap interval over prompts; controls themselves are left out. A student with a clean twin (``twins``:
    model -> the same student distilled from the clean control) also gets a row against that twin."""
    if control is None or probe.empty:
        return []
    by_model = {m: g.set_index(["id", "wording"]).logprob for m, g in probe.groupby("model")}
    out = []
    for (model, role, split, wording), g in probe.groupby(["model", "role", "split", "wording"], sort=False):
        if role == "control" or model == control:
            continue
        g = g.set_index(["id", "wording"]).logprob
        for ctrl_name in [control] + ([twins[model]] if twins and model in twins else []):
            ctrl = by_model.get(ctrl_name)
            if ctrl is None:
                continue
            both = g.index.intersection(ctrl.index)
            out.append({"model": model, "role": role, "split": split, "wording": wording, "control": ctrl_name,
                        **paired_mean_difference(g[both].to_numpy(), ctrl[both].to_numpy(), conf, n_boot=n_boot)})
    return out
