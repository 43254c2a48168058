"""Propagation: one run's biased-response rates per model and split, amplification, the distillation set's bias,
utility."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.views.common import _fmt_ci, _run_header, _show_problems, run_state

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
    conf = (m.get("run") or {}).get("confidence", 0.95)
    st.caption(f"Bars: share of the model's eval answers the detector marks biased; whiskers: {conf:.0%} "
               "Wilson intervals. Baseline = clean control; students never saw a poisoned sample.")

    st.subheader("Amplification (student rate / teacher rate)")
    amp = data.amplification_frame(m)
    if amp.empty:
        st.info("No students in this run, so no amplification ratio.")
    else:
        cols = st.columns(min(4, len(amp)))
        for i, r in enumerate(amp.to_dict("records")):
            val = "undefined" if pd.isna(r["ratio"]) else f"{r['ratio']:.2f}×"
            ci = ("" if pd.isna(r["ci_low"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]")
            cols[i % len(cols)].metric(f"{r['student']} · {r['split']}", val, help=f"{conf:.0%} Katz interval {ci}"
                                       + (" (teacher rate 0)" if val == "undefined" else ""))
            cols[i % len(cols)].caption(f"{conf:.0%} CI {ci}")
        st.altair_chart(charts.amplification_chart(amp), width="content")

    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Teacher answers used for distillation")
        dd = data.rates_frame(m, "distill_data")
        if dd.empty:
            st.caption("not recorded")
        else:
            st.dataframe(dd.assign(rate_ci=[_fmt_ci(r) for r in dd.to_dict("records")])[
                ["split", "biased", "n", "rate_ci"]], hide_index=True, width="stretch",
                column_config={"rate_ci": "biased rate [CI]"})
    with c2:
        st.subheader("Utility")
        u = data.utility_frame(m)
        if u.empty:
            st.caption("not recorded")
        else:
            piv = u.assign(col=u.task.astype(str) + " " + u.metric.astype(str)).pivot_table(
                index="model", columns="col", values="value", aggfunc="first")
            piv = piv.reindex([x for x in models if x in piv.index] + [x for x in piv.index if x not in models])
            st.dataframe(piv, width="stretch", column_config={c: st.column_config.NumberColumn(format="%.2f")
                                                              for c in piv.columns})
            ci = u[u.ci_low.notna() & u.ci_high.notna()]
            if not ci.empty:
                st.caption("with intervals: " + "; ".join(
                    f"{r['model']} {r['task']} {r['metric']} {r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                    for r in ci.to_dict("records")))
    with st.expander("Rates table"):
        st.dataframe(rates.assign(rate_ci=[_fmt_ci(r) for r in rates.to_dict("records")])[
            ["model", "role", "method", "split", "biased", "n", "rate_ci"]], hide_index=True, width="stretch")
