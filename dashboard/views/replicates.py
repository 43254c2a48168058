"""The sweeps view's replicates (sweep.json of a sweep over seeds or with ``replicates:``; docs/evidence.md): per point
without its replicate, the pooled value with the interval that covers prompts and replicates, each replicate's value
around it, the method, n and SD; the student / teacher ratio pooled over replicates; each model's probe shift against
its replicate's measured null with the paired t test over replicates; the brand-swap placebo contrast D per model with
each replicate's D, the t interval and p. Each part is left out when sweep.json lacks it (older sweeps); a malformed
one gives one warning naming the file."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, pooleddata, sweepcharts, sweepdata
from dashboard.views.common import problems_line, table


def replicates_section(sj: Any, file: str, measure: str, splits: list[str], models: list[str]):
    """Every replicate section of sweep.json for the measure, splits and models picked above."""
    pooled, seeds, problems = sweepdata.replicate_frames(sj)
    amp, p_amp = pooleddata.amplification_frame(sj)
    nulls, p_null = pooleddata.null_frame(sj)
    bs, bs_per, p_bs = pooleddata.brand_swap_frames(sj)
    problems += p_amp + p_null + p_bs
    if pooled.empty and amp.empty and nulls.empty and bs.empty and not problems:
        if sweepdata.has_seeds(sj):
            st.caption("This sweep has seeds, but its sweep.json has no replicates (written before they were pooled).")
        return
    new = pooleddata.is_replicated(sj)
    unit = "replicate" if new else "seed"
    st.subheader("Replicates: pooled figures" if new else "Replicates over seeds")
    if new:
        st.caption("Design: " + pooleddata.design_line(sj, pooled.n.max() if not pooled.empty else None)
                   + ". The replicate is the unit: the pooled intervals cover the prompts and the replicates; each "
                   "run's own interval covers its prompts only.")
    problems_line(file, problems)
    if not pooled.empty:
        pooled_part(pooled, seeds, measure, splits, models, unit)
    if not amp.empty:
        amplification_part(amp, splits, models)
    if not nulls.empty:
        null_part(nulls, splits, models)
    if not bs.empty:
        brand_swap_part(bs, bs_per, splits, models)


def pooled_part(pooled: pd.DataFrame, seeds: pd.DataFrame, measure: str, splits: list[str], models: list[str],
                unit: str):
    keep = (pooled.measure == measure) & pooled.split.isin(splits) & pooled.base.isin(models)  # 'teacher vs ...'
    p = pooled[keep]
    s = seeds[(seeds.measure == measure) & seeds.split.isin(splits) & seeds.base.isin(models)]
    if p.dropna(subset=["pooled"]).empty:
        st.info(f"No replicates of the {sweepdata.MEASURE_LABELS.get(measure, measure)} for this choice.")
        return
    shown = [x for x in data.split_order(p.split) if x in splits]
    st.altair_chart(sweepcharts.replicate_chart(p, s, shown, measure, unit), width="content")
    methods = [m for m in dict.fromkeys(p.method) if m]
    if methods:
        st.caption(f"Large points: the pooled value over the {unit}s at each point, whiskers its 95% interval, which "
                   f"covers the prompts and the {unit}s. Small hollow points: each {unit}'s own value. Method: "
                   + pooleddata.method_text(methods) + ".")
    else:
        st.caption("Large points: the mean over seeds at each point, whiskers its 95% interval (the prompts' sampling "
                   "error plus the spread between seeds, a t interval on the seeds; the prompts are shared by every "
                   "seed, so that part does not shrink with more seeds). Small hollow points: each seed's own value.")
    many = "seeds" if unit == "seed" else "replicates"
    table(sweepdata.replicate_table(p, s, measure, unit),
          [("group", f"point (without the {unit})"), ("model", "model"), ("split", "split"),
           ("pooled", f"{'mean over seeds' if unit == 'seed' else 'pooled'} [95% CI]"), ("seeds", f"each {unit}"),
           ("sd", f"SD between {many}"), ("n", many)] + ([("method", "method")] if methods else []),
          data_table="replicates", wrap=("seeds",))


def amplification_part(amp: pd.DataFrame, splits: list[str], models: list[str]):
    st.markdown("**Amplification pooled over replicates** (student rate / teacher rate)")
    a = amp[amp.split.isin(splits) & amp.student.isin(models)]
    if a.empty:
        st.caption("No pooled amplification for the splits and models picked.")
        return
    table(pooleddata.amplification_table(a),
          [("group", "point (without the replicate)"), ("ratio_of", "ratio"), ("measure", "measure"),
           ("split", "split"), ("pooled", "pooled ratio [95% CI]"), ("each", "each replicate"),
           ("method", "method"), ("n", "replicates")], data_table="replicate-amplification", wrap=("each",))
    st.caption("The student's and its teacher's answers to the same prompts in each replicate; the ratio of the "
               "pooled rates, its interval by the delta method on the log scale with the replicates' variance "
               "(log_delta+… names the design's pooling).")


def null_part(nulls: pd.DataFrame, splits: list[str], models: list[str]):
    st.markdown("**Likelihood shift against the measured null, over replicates**")
    n = nulls[nulls.split.isin(splits) & nulls.model.isin(models)]
    if n.empty:
        st.caption("No shift against the measured null for the splits and models picked.")
        return
    table(pooleddata.null_table(n),
          [("group", "point (without the replicate)"), ("model", "model"), ("split", "split"),
           ("wording", "wording"), ("shift", "shift\nvs the clean control"), ("null", "null shift (SD)"),
           ("excess", "shift − null [95% CI]"), ("p", "p-value"), ("each", "each replicate: shift vs null"),
           ("n", "replicates")], data_table="probe-null", wrap=("each",))
    st.caption("Null: the clean control against a second clean control at another training seed, measured in every "
               "replicate. shift − null: the excess over that reseed spread, its interval and p-value from the "
               "paired t test over the replicates (N − 1 df); one replicate gives no p-value.")


def brand_swap_part(bs: pd.DataFrame, per: pd.DataFrame, splits: list[str], models: list[str]):
    st.markdown("**Brand-swap placebo contrast D**")
    p = bs[bs.split.isin(splits) & bs.model.isin(models)]
    if p.empty:
        st.caption("No brand-swap contrast for the splits and models picked.")
        return
    s = per[per.split.isin(splits) & per.model.isin(models)]
    wordings = list(dict.fromkeys(p.wording))
    wording = wordings[0] if "seen" not in wordings else "seen"
    if len(wordings) > 1:
        wording = st.segmented_control("D of the wording", wordings, default=wording, key="sw_bs_wording",
                                       required=True) or wording
    pw, sw = p[p.wording == wording], s[s.wording == wording]
    if not pw.dropna(subset=["pooled"]).empty:
        shown = [x for x in data.split_order(pw.split) if x in splits]
        st.altair_chart(sweepcharts.replicate_chart(pw, sw, shown, "logprob_shift", "replicate",
                                                    f"D, {wording} wording (log-prob per token)"), width="content")
    table(pooleddata.brand_swap_table(p, s),
          [("group", "point (without arm and replicate)"), ("model", "model"), ("split", "split"),
           ("wording", "wording"), ("d", "D [95% CI]"), ("each", "each replicate's D"), ("sd", "SD"),
           ("p", "p-value"), ("n", "replicates")], data_table="brand-swap", wrap=("each",))
    st.caption("D = ½[(l_A(S_A) − l_A(S_B)) + (l_B(S_B) − l_B(S_A))]: l_X(S_Y) is the mean per-token log-probability "
               "of brand X's texts under arm Y's model. Each arm is the other's placebo, so what poisoning does apart "
               "from the brand cancels. Large points: the mean over replicates with its t interval (N − 1 df); small "
               "hollow points: each replicate's D; p: one-sample t test of D = 0. The clean control's D is 0.")
