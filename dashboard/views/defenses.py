"""Defenses: detector figures per defense and place (a table with human column names), a threshold slider with what
it flags and lets slip through, score histogram and ROC."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data, fmt
from dashboard.registry import view
from dashboard.views.common import _pct, _run_header, defense_scores, run_state, table
from poison.ground.results.stats import roc_curve, threshold_stats


@view("defenses", title="Defenses", scope="run", order=50)
def view_defenses(index: dict[str, Any], row: pd.Series):
    st.header("Defenses")
    m = run_state(row["path"])["metrics"]
    _run_header(row, m)
    scores, problem = defense_scores(row["path"])
    summary = data.defenses_frame(m)
    if problem:
        st.warning(problem)
    if scores is None and summary.empty:
        st.info("No defenses in this run.")
        return
    if not summary.empty:
        summary_table(summary)
    detection = data.detection_records(m)
    if detection:
        st.subheader("Unconfounded figures")
        table(detection, [(c, c) for c in detection[0]],
              caption="Thresholds set on the calibration split (trusted clean samples never scored); 'task' rows "
                      "compare poisoned and clean rows of one task only; intervals: "
                      + str((m.get("defense_detection") or [{}])[0].get("method")))
    for w in m.get("defense_warnings") or []:
        st.warning(w)
    if scores is None:
        st.info("defense_scores.parquet is not in the run directory: per-sample scores unavailable.")
        return
    combos = list(dict.fromkeys(zip(scores.defense, scores.place)))
    pick = st.selectbox("defense", combos, key="df_pick", format_func=lambda c: f"{c[0]} on the {c[1]} set")
    sub = scores[(scores.defense == pick[0]) & (scores.place == pick[1])].dropna(subset=["score"])
    if sub.empty:
        st.info("No scores for this defense.")
        return
    lo, hi = float(sub.score.min()), float(sub.score.max())
    recorded = None
    if "threshold" in sub and sub.threshold.notna().any():
        recorded = float(sub.threshold.dropna().iloc[0])
    elif not summary.empty:
        s = summary[(summary.defense == pick[0]) & (summary.place == pick[1])]
        recorded = float(s.threshold.iloc[0]) if not s.empty and pd.notna(s.threshold.iloc[0]) else None
    if hi <= lo:
        hi = lo + 1.0
    step = (hi - lo) / 200
    lo -= step  # so that the lowest setting flags every sample (flag = score > threshold)
    default = min(max(recorded if recorded is not None else (lo + hi) / 2, lo), hi)
    thr = st.slider("threshold (flag score > threshold)", lo, hi, default, step=step, format="%.3f",
                    key=f"df_thr:{row['run']}:{pick[0]}:{pick[1]}")
    stats = threshold_stats(sub.score, sub.poisoned, thr)
    auc = data.auroc_or_none(sub.score, sub.poisoned)
    c = st.columns(3) + st.columns(3)  # two rows of three: no label is cut short
    c[0].metric("AUROC", fmt.DASH if auc is None else f"{auc:.3f}")
    c[1].metric("TPR (poisons flagged)", _pct(stats["tpr"]))
    c[2].metric("FPR (clean flagged)", _pct(stats["fpr"]))
    c[3].metric("precision", _pct(stats["precision"]))
    c[4].metric("flagged", f"{stats['flagged']} / {stats['n']}")
    c[5].metric("poisons slipping through", f"{stats['slipped']} / {stats['n_poisoned']}")
    if recorded is not None:
        note = f"threshold used in the run: {recorded:.3f}"
        if "flagged" in sub:
            mism = int((sub.flagged.fillna(False).astype(bool) != (sub.score > recorded)).sum())
            if mism:
                note += f" ({mism} row(s) whose recorded `flagged` differs from score > threshold)"
        st.caption(note)
    g1, g2 = st.columns(2)
    g1.altair_chart(charts.score_histogram(sub, thr), width="stretch")
    g2.altair_chart(charts.roc_chart(roc_curve(sub.score, sub.poisoned), stats["fpr"], stats["tpr"]),
                    width="stretch")
    slipped = sub[sub.poisoned & (sub.score < thr)]
    if not slipped.empty:
        with st.expander(f"{len(slipped)} poisoned sample(s) below the threshold"):
            st.dataframe(slipped[[c for c in ("row_id", "task", "score") if c in slipped]].sort_values("score"),
                         hide_index=True, width="stretch")


FIGURES = ("auroc", "tpr_at_1pct_fpr", "precision", "recall", "threshold")
COUNTS = ("n", "n_poisoned", "n_flagged")


def summary_table(summary: pd.DataFrame):
    """metrics.json ``defenses`` with human column names, figures to 3 decimals, "—" where undefined."""
    cols = [c for c in summary.columns if summary[c].notna().any() or c in ("defense", "place")]
    rows = []
    for r in summary.to_dict("records"):
        rows.append({c: fmt.decimal(r[c], 3) if c in FIGURES else fmt.integer(r[c]) if c in COUNTS
                     else fmt.text(r[c]) for c in cols})
    table(rows, [(c, fmt.words(c)) for c in cols])
