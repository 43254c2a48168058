"""The runs overview: every run of the folder with its status and key figures."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pandas as pd
import streamlit as st


def view_overview(index: dict[str, Any]):
    runs: pd.DataFrame = index["runs"]
    st.header("Runs")
    if runs.empty:
        st.info(f"No run directories found in `{index['runs_dir']}`.")
        return
    counts = runs.status.value_counts()
    cols = st.columns(5)
    cols[0].metric("runs", len(runs))
    cols[1].metric("complete", int(counts.get("complete", 0)))
    cols[2].metric("running", int(counts.get("running", 0)))
    cols[3].metric("failed / broken", int(counts.get("failed", 0) + counts.get("broken", 0)
                                         + counts.get("incomplete", 0)))
    cols[4].metric("sweeps", len(index["sweeps"]))

    f1, f2, f3 = st.columns([2, 1, 1])
    text = f1.text_input("filter (run folder or config name contains)", key="ov_filter")
    statuses = sorted(runs.status.unique())
    pick_status = f2.multiselect("status", statuses, key="ov_status")
    biases = sorted(b for b in runs.bias_type.dropna().unique())
    pick_bias = f3.multiselect("bias type", biases, key="ov_bias")
    t = runs
    if text:
        t = t[t.run.str.contains(text, case=False, regex=False) | t.name.astype(str).str.contains(
            text, case=False, regex=False)]
    if pick_status:
        t = t[t.status.isin(pick_status)]
    if pick_bias:
        t = t[t.bias_type.isin(pick_bias)]
    show = t.assign(open=["?view=propagation&run=" + urllib.parse.quote(r, safe="") for r in t.run])
    st.dataframe(
        show, hide_index=True, width="stretch", height=min(640, 35 * (len(show) + 1) + 3),
        column_order=["run", "status", "date", "name", "bias_type", "mode", "poison_requested", "poison_injected",
                      "teacher_target", "student_target", "amplification_target", "models", "methods", "open",
                      "problems"],
        column_config={
            "run": st.column_config.TextColumn("run folder"),
            "name": st.column_config.TextColumn("config name"),
            "bias_type": "bias type",
            "poison_requested": st.column_config.NumberColumn("poison requested", format="%d"),
            "poison_injected": st.column_config.NumberColumn("poison injected", format="%d"),
            "teacher_target": st.column_config.NumberColumn("teacher biased (target)", format="percent"),
            "student_target": st.column_config.NumberColumn("student biased (target, max)", format="percent"),
            "amplification_target": st.column_config.NumberColumn("amplification (target)", format="%.2f"),
            "open": st.column_config.LinkColumn("propagation", display_text="open"),
        })
    st.caption(f"{len(t)} of {len(runs)} runs shown; click a column header to sort.")
    bad = runs[runs.problems != ""]
    if not bad.empty:
        with st.expander(f"{len(bad)} run(s) with problems (half-written, failed or unreadable files)"):
            st.dataframe(bad[["run", "status", "problems"]], hide_index=True, width="stretch")
