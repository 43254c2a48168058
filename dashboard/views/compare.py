"""Compare two runs: config differences and metric deltas."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data
from dashboard.views.common import _show_problems, run_config, run_label, run_state

def view_compare(index: dict[str, Any]):
    st.header("Compare two runs")
    runs: pd.DataFrame = index["runs"]
    if len(runs) < 2:
        st.info("Need at least two runs to compare.")
        return
    rels = list(runs.run)
    done = list(runs[runs.status == "complete"].run) or rels
    fmt = run_label(runs)
    c1, c2 = st.columns(2)
    a = c1.selectbox("run A", rels, index=rels.index(done[1] if len(done) > 1 else rels[1]), key="cmp_a",
                     format_func=fmt)
    b = c2.selectbox("run B", rels, index=rels.index(done[0]), key="cmp_b", format_func=fmt)
    ra, rb = runs[runs.run == a].iloc[0], runs[runs.run == b].iloc[0]
    sa, sb = run_state(ra["path"]), run_state(rb["path"])
    for r in (ra, rb):
        _show_problems(r)
    ca, pa = run_config(ra["path"])
    cb, pb = run_config(rb["path"])
    st.subheader("Config differences")
    if pa or pb:
        st.caption("; ".join(p for p in (pa and f"A: {pa}", pb and f"B: {pb}") if p))
    diff = data.config_diff(ca if isinstance(ca, dict) else {}, cb if isinstance(cb, dict) else {})
    if diff.empty:
        st.info("The resolved configs are identical." if ca and cb else "No config to compare.")
    else:
        st.dataframe(diff.rename(columns={"a": "A", "b": "B"}), hide_index=True, width="stretch")
    ma, mb = sa["metrics"], sb["metrics"]
    st.subheader("Metric deltas (B − A)")
    if ma is None or mb is None:
        st.info("Metric deltas need metrics.json in both runs.")
        return
    sc = data.scalar_deltas(ma, mb)
    if not sc.empty:
        st.dataframe(sc.rename(columns={"a": "A", "b": "B"}), hide_index=True, width="stretch")
    rd = data.rate_deltas(ma, mb)
    if not rd.empty:
        models = list(dict.fromkeys(rd.model))
        st.altair_chart(charts.compare_bars(rd, "A", "B", models, data.split_order(rd.split)), width="content")
        st.dataframe(rd[["model", "split", "rate_a", "rate_b", "delta", "intervals_overlap", "n_a", "n_b"]],
                     hide_index=True, width="stretch", column_config={
                         "rate_a": st.column_config.NumberColumn("rate A", format="percent"),
                         "rate_b": st.column_config.NumberColumn("rate B", format="percent"),
                         "delta": st.column_config.NumberColumn("Δ (B−A)", format="percent"),
                         "intervals_overlap": st.column_config.CheckboxColumn("95% intervals overlap")})
    amp = data.amplification_deltas(ma, mb)
    if not amp.empty:
        st.markdown("**Amplification**")
        st.dataframe(amp, hide_index=True, width="stretch")
    ut = data.utility_deltas(ma, mb)
    if not ut.empty:
        st.markdown("**Utility**")
        st.dataframe(ut, hide_index=True, width="stretch")
