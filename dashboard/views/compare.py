"""Compare two runs: config differences and metric deltas, rounded for reading (rates as percent with one decimal,
ratios with two, "—" where a run lacks the value)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data, fmt
from dashboard.registry import view
from dashboard.views.common import (
    _show_problems,
    run_config,
    run_label,
    run_state,
    table,
)


@view("compare", title="Compare two runs", scope="runs", order=80)
def view_compare(index: dict[str, Any]):
    st.header("Compare two runs")
    runs: pd.DataFrame = index["runs"]
    label = run_label(runs)
    if len(runs) < 2:
        st.info(f"Only one run in this folder (`{label(runs.run.iloc[0])}`): comparing needs two." if len(runs)
                else "No runs in this folder to compare.")
        return
    rels = list(runs.run)
    done = list(runs[runs.status == "complete"].run)
    if len(done) < 2:
        st.info((f"Only one run is complete (`{done[0]}`)" if done else "No run is complete yet")
                + ": metric deltas need two complete runs; the configs of any two runs compare below.")
    b_default = done[0] if done else rels[0]  # two different runs by default: complete ones first
    a_default = next(r for r in done[1:] + rels if r != b_default)
    c1, c2 = st.columns(2)
    a = c1.selectbox("run A", rels, index=rels.index(a_default), key="cmp_a", format_func=label)
    b = c2.selectbox("run B", rels, index=rels.index(b_default), key="cmp_b", format_func=label)
    if a == b:
        st.warning(f"Run A and run B are the same run (`{a}`): pick two different runs to compare.")
        return
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
        table([{"key": r["key"], "a": _val(r["a"]), "b": _val(r["b"]), "delta": _num_text(r["delta"])}
               for r in sc.to_dict("records")],
              [("key", "metric"), ("a", "A"), ("b", "B"), ("delta", "Δ (B − A)")], data_table="scalar-deltas")
    rd = data.rate_deltas(ma, mb)
    if not rd.empty:
        models = list(dict.fromkeys(rd.model))
        st.altair_chart(charts.compare_bars(rd, "A", "B", models, data.split_order(rd.split)), width="content")
        table([{"model": r["model"], "split": r["split"],
                "rate_a": fmt.pct_ci(r["rate_a"], r["ci_low_a"], r["ci_high_a"]),
                "rate_b": fmt.pct_ci(r["rate_b"], r["ci_low_b"], r["ci_high_b"]), "delta": fmt.pp(r["delta"]),
                "overlap": fmt.text(r["intervals_overlap"]), "n_a": fmt.integer(r["n_a"]),
                "n_b": fmt.integer(r["n_b"])} for r in rd.to_dict("records")],
              [("model", "model"), ("split", "split"), ("rate_a", "biased rate A [95% CI]"),
               ("rate_b", "biased rate B [95% CI]"), ("delta", "Δ (B − A)"), ("overlap", "95% intervals overlap"),
               ("n_a", "answers A"), ("n_b", "answers B")], data_table="rate-deltas")
    amp = data.amplification_deltas(ma, mb)
    if not amp.empty:
        st.markdown("**Amplification** (student rate / teacher rate)")
        table([{"student": r["student"], "split": r["split"],
                "a": fmt.ratio_ci(r["ratio_a"], r["ci_low_a"], r["ci_high_a"]),
                "b": fmt.ratio_ci(r["ratio_b"], r["ci_low_b"], r["ci_high_b"]), "delta": fmt.signed(r["delta"])}
               for r in amp.to_dict("records")],
              [("student", "student"), ("split", "split"), ("a", "A [95% CI]"), ("b", "B [95% CI]"),
               ("delta", "Δ (B − A)")], data_table="amplification-deltas")
    ut = data.utility_deltas(ma, mb)
    if not ut.empty:
        st.markdown("**Utility**")
        table([{"model": r["model"], "task": r["task"], "metric": r["metric"], "a": fmt.decimal(r["value_a"], 3),
                "b": fmt.decimal(r["value_b"], 3), "delta": fmt.signed(r["delta"], 3)} for r in ut.to_dict("records")],
              [("model", "model"), ("task", "task"), ("metric", "metric"), ("a", "A"), ("b", "B"),
               ("delta", "Δ (B − A)")], data_table="utility-deltas")
    st.caption("Rates in percent with their 95% intervals; Δ of rates in percentage points (pp); ratios to two "
               "decimals; — where a run lacks the value.")


def _val(v: str) -> str:
    """A scalar from metrics.json (JSON text) rounded for reading."""
    try:
        x = json.loads(v)
    except (TypeError, ValueError):
        return fmt.text(v)
    return _num_text(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else fmt.text(v)


def _num_text(x) -> str:
    f = fmt.num(x)
    if f is None:
        return fmt.DASH
    return f"{f:.0f}" if f == int(f) and abs(f) < 1e15 else f"{f:.4g}"
