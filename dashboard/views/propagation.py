"""Propagation: one run's biased-response rates per model and split, the amplification (greedy and sampled, log axis),
the sampled rates and the likelihood probe (``dashboard.views.probe``), the distillation set's bias, utility, and the
data stage's rejected reference answers. The headline figures' captions say what their intervals cover: a single run
(one training seed, prompts only) or one replicate of N (``dashboard.evidence``)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data, evidence, fmt, measures
from dashboard.registry import view
from dashboard.views.common import _run_header, _show_problems, run_state, table
from dashboard.views.probe import data_stage_section, probe_section, sampled_section


@view("propagation", title="Propagation", scope="run", order=20)
def view_propagation(index: dict[str, Any], row: pd.Series):
    st.header("Propagation")
    state = run_state(row["path"])
    m = state["metrics"]
    _run_header(row, m)
    if m is None:
        _show_problems(row)
        st.info("This run has no readable metrics.json yet, so there is nothing to plot.")
        return
    rates = data.rates_frame(m)
    if rates.empty:
        st.warning("metrics.json has no bias_rates.")
        return
    models = list(dict.fromkeys(rates.model))
    conf = fmt.num((m.get("run") or {}).get("confidence")) or 0.95
    ev = evidence.note(evidence.of_row(m, row))
    st.subheader("Biased-response rate (greedy answers)")
    group = st.segmented_control("panels", ["split", "task"], default="split", key="prop_group",
                                 format_func=lambda v: {"split": "per task split", "task": "per task"}[v])
    if group == "task":
        by_task = data.rates_frame(m, "bias_rates_by_task")
        if by_task.empty:
            st.info("metrics.json has no bias_rates_by_task.")
        else:
            tasks = list(dict.fromkeys(by_task.task))
            st.altair_chart(charts.rate_bars(by_task, "task", tasks, models), width="content")
    else:
        splits = data.split_order(rates.split)
        st.altair_chart(charts.rate_bars(rates, "split", splits, models), width="content")
    controls = " Clean control / twins: the same training on clean data." if (rates.role == "control").any() else ""
    st.caption(f"Bars: share of the model's eval answers the detector marks biased; whiskers: {conf:.0%} Wilson "
               f"intervals{ev}. Baseline = the untrained base model; students never saw a poisoned sample.{controls}")

    amplification_section(m, conf, ev)
    sampled_section(m, models, conf, ev)
    probe_section(m, row, ev)

    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Teacher answers used for distillation")
        dd = data.rates_frame(m, "distill_data")
        if dd.empty:
            st.caption("not recorded")
        else:
            table(dd.assign(ci=[fmt.pct_ci(r, a, b) for r, a, b in zip(dd.rate, dd.ci_low, dd.ci_high)]),
                  [("split", "split"), ("biased", "biased answers"), ("n", "answers"), ("ci", "biased rate [95% CI]")])
        per = measures.distill_per_student(m)
        if not per.empty:
            st.markdown("**Students with their own distillation answers**")
            table(per.assign(ci=[fmt.pct_ci(r, a, b) for r, a, b in zip(per.rate, per.ci_low, per.ci_high)]),
                  [("student", "student"), ("split", "split"), ("biased", "biased answers"), ("n", "answers"),
                   ("ci", "biased rate [95% CI]")])
    with c2:
        st.subheader("Utility")
        u = data.utility_frame(m)
        if u.empty:
            st.caption("not recorded")
        else:
            piv = u.assign(col=[f"{fmt.words(t)}\n{fmt.words(x)}" for t, x in zip(u.task, u.metric)]).pivot_table(
                index="model", columns="col", values="value", aggfunc="first")
            piv = piv.reindex([x for x in models if x in piv.index] + [x for x in piv.index if x not in models])
            table([{"model": k, **{c: fmt.decimal(v) for c, v in r.items()}} for k, r in piv.iterrows()],
                  [("model", "model")] + [(c, c) for c in piv.columns])
            ci = u[u.ci_low.notna() & u.ci_high.notna()]
            if not ci.empty:
                st.caption("with intervals: " + "; ".join(
                    f"{r['model']} {r['task']} {r['metric']} {r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                    for r in ci.to_dict("records")))
    data_stage_section(m)
    with st.expander("Rates table"):
        table(rates.assign(ci=[fmt.pct_ci(r, a, b) for r, a, b in zip(rates.rate, rates.ci_low, rates.ci_high)]),
              [("model", "model"), ("role", "role"), ("method", "method"), ("split", "split"),
               ("biased", "biased"), ("n", "answers"), ("ci", "biased rate [95% CI]")])


def _greedy_method(r) -> str:
    """How a greedy amplification interval was made: paired over prompts (runs since the paired interval), Katz
    (older runs)."""
    m = r.get("method") if hasattr(r, "get") else None
    return {"paired_bootstrap": "paired bootstrap", "exact_bounds": "exact-bound"}.get(m, "Katz") \
        if isinstance(m, str) else "Katz"


def amplification_section(m: dict, conf: float, ev: str = ""):
    st.subheader("Amplification (student rate / teacher rate)")
    amp = measures.amplification_both(m)
    greedy = amp[amp.measure == "greedy answer"]
    if amp.empty:
        st.info("No students in this run, so no amplification ratio.")
        return
    sampled = amp[amp.measure != "greedy answer"]
    if not greedy.empty and sampled.empty and len(greedy) <= 4:
        cols = st.columns(min(4, len(greedy)))
        for i, r in enumerate(greedy.to_dict("records")):
            val = "undefined" if fmt.num(r["ratio"]) is None else fmt.ratio(r["ratio"])
            ci = fmt.ratio_ci(r["ratio"], r["ci_low"], r["ci_high"]).removeprefix(fmt.ratio(r["ratio"])).strip()
            if val == "undefined":
                ci = f"upper limit {fmt.decimal(r['ci_high'])} (teacher rate 0)"
            cols[i % len(cols)].metric(f"{r['student']} · {r['split']}", val,
                                       help=f"{conf:.0%} {_greedy_method(r)} interval {ci}")
            cols[i % len(cols)].caption(f"{conf:.0%} CI {ci or fmt.DASH}")
    else:
        by = {}
        for r in amp.to_dict("records"):
            by.setdefault((r["student"], r["split"]), {})[r["measure"]] = fmt.ratio_ci(
                r["ratio"], r["ci_low"], r["ci_high"], undefined=True)
        table([{"student": k[0], "split": k[1], "greedy": v.get("greedy answer", fmt.DASH),
                "sampled": v.get("sampled answers", fmt.DASH)} for k, v in by.items()],
              [("student", "student"), ("split", "split"), ("greedy", "greedy answer\nratio [95% CI]"),
               ("sampled", "sampled answers\nratio [95% CI]")], data_table="amplification")
    st.altair_chart(charts.amplification_chart(amp), width="content")
    undefined = amp[[fmt.num(r) is None for r in amp.ratio]]
    note = ""
    if not undefined.empty:
        which = ("; ".join(f"{r['student']} on {r['split']} ({r['measure']})" for r in undefined.to_dict("records"))
                 if len(undefined) <= 4 else f"{len(undefined)} of {len(amp)} ratios")
        note = (f" Written as \"undefined\", not drawn: {which} — the teacher's rate is 0 there, so the ratio has "
                "no value.")
    st.caption(f"Log axis; the dashed rule at 1 is no amplification. Whiskers: {conf:.0%} intervals{ev} (greedy: "
               f"{_greedy_method(greedy.iloc[0]) if not greedy.empty else 'paired'}; sampled: paired bootstrap over "
               "prompts, an open upper end reaches the top). A ratio of 0 sits on "
               f"the axis floor.{note}")
