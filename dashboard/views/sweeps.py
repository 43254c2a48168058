"""Sweeps: bias rate against a sweep key (poison budget, method, ...), runs at one point pooled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data

def view_sweeps(index: dict[str, Any]):
    st.header("Sweeps")
    rates: pd.DataFrame = index["rates"]
    sweeps: pd.DataFrame = index["sweeps"]
    options = [("sweep", s) for s in sweeps.sweep]
    names = sorted(rates[rates.status == "complete"].name.dropna().unique())
    options += [("name", n) for n in names]
    if not options:
        st.info("No sweep directories and no complete runs to plot.")
        return
    src = st.selectbox("source", options, key="sw_source",
                       format_func=lambda o: f"sweep {o[1] if o[1] != '.' else Path(index['runs_dir']).name}"
                       if o[0] == "sweep" else f"all runs of config '{o[1]}' (outside sweeps)")
    if src[0] == "sweep":
        srow = sweeps[sweeps.sweep == src[1]].iloc[0]
        t = data.sweep_table(rates, sweep=src[1])
        keys = [f"pt:{k}" for k in json.loads(srow["keys"] or "[]") if f"pt:{k}" in t]
        st.caption(f"{srow['points']} point(s), {srow['complete']} complete"
                   + (f" — {srow['problems']}" if srow["problems"] else ""))
    else:
        t = data.sweep_table(rates[rates.sweep == ""], name=src[1])
        keys = []
    t = t[t.status == "complete"]
    if t.empty:
        st.info("No complete runs with metrics in this selection yet.")
        return
    xopts = keys + ["poison_injected", "poison_rate", "poison_requested", "method"]
    xlabel = {"poison_injected": "poisoned samples injected", "poison_rate": "poison rate (of teacher set)",
              "poison_requested": "poison budget requested", "method": "distillation method (students)"}
    c1, c2, c3 = st.columns(3)
    x = c1.selectbox("x axis", xopts, key="sw_x", format_func=lambda k: xlabel.get(k, k.removeprefix("pt:")))
    methodish = x == "method" or "method" in x or "student" in x
    color = c2.selectbox("lines", ["model", "role"], index=1 if methodish else 0, key="sw_color")
    splits_all = data.split_order(t.split)
    splits = c3.multiselect("splits", splits_all, default=splits_all, key="sw_splits")
    d = t[t.split.isin(splits)]
    if x == "method":
        d = d[d.method.notna()]
    d = d[d[x].notna()]
    if d.empty:
        st.info("Nothing to plot for this choice.")
        return
    quantitative = pd.to_numeric(d[x], errors="coerce").notna().all() and x != "method"
    pooled = data.pool_rates(d, [x, color, "split"])
    if quantitative:
        pooled = pooled.assign(_x=pd.to_numeric(pooled[x])).sort_values("_x").drop(columns="_x")
    st.altair_chart(charts.sweep_chart(pooled, x, xlabel.get(x, x.removeprefix("pt:")), quantitative, color,
                                       [s for s in splits_all if s in splits]), width="content")
    st.caption("Lines: biased-response rate; bands: 95% Wilson intervals. Runs at the same x are pooled "
               "(summed counts), e.g. several seeds.")
    with st.expander("Data"):
        st.dataframe(pooled, hide_index=True, width="stretch")
    if src[0] == "sweep":
        summ = Path(sweeps[sweeps.sweep == src[1]].iloc[0]["path"]) / "summary.txt"
        if summ.exists():
            with st.expander("summary.txt"):
                try:
                    st.code(summ.read_text(encoding="utf-8", errors="replace"), language=None)
                except OSError as e:
                    st.caption(f"unreadable: {e}")
