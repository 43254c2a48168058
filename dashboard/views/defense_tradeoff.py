"""Defense trade-off: what each defense buys downstream (``defense.per_defense``; metrics.json ``defense_downstream``):
a table of each arm's removal at the train place and its teacher's and students' bias and utility, and a scatter of
the clean rows a defense loses against the student bias it leaves (one point per defense and student)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.registry import view
from dashboard.views.common import _run_header, run_state, table


def tradeoff_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per arm and student: the arm's removal figures, its teacher's and that student's bias and utility."""
    out = []
    for r in rows:
        teacher = r.get("teacher") or {}
        for name, s in (r.get("students") or {"": {}}).items():
            s = s or {}
            out.append({"defense": r.get("defense"), "kind": r.get("kind"), "student": name,
                        "poison recall": r.get("poison_recall"), "poison removed": r.get("poison_removed"),
                        "clean lost": r.get("clean_lost"), "clean removed": r.get("clean_removed"),
                        "teacher bias": teacher.get("rate"), "student bias": s.get("rate"),
                        "student bias low": s.get("ci_low"), "student bias high": s.get("ci_high"),
                        "teacher utility": teacher.get("utility"), "student utility": s.get("utility")})
    return pd.DataFrame(out)


def tradeoff_chart(df: pd.DataFrame) -> alt.Chart:
    d = df.dropna(subset=["clean lost", "student bias"])
    return alt.Chart(d).mark_point(filled=True, size=90).encode(
        x=alt.X("clean lost:Q", title="clean rows lost (share)", axis=alt.Axis(format="%")),
        y=alt.Y("student bias:Q", title="student bias left (greedy, target split)", axis=alt.Axis(format="%")),
        color=alt.Color("defense:N"), shape=alt.Shape("student:N"),
        tooltip=["defense", "student", alt.Tooltip("poison recall:Q", format=".1%"),
                 alt.Tooltip("clean lost:Q", format=".1%"), alt.Tooltip("student bias:Q", format=".1%"),
                 alt.Tooltip("teacher bias:Q", format=".1%")]).properties(width=520, height=340)


@view("defense_tradeoff", title="Defense trade-off", scope="run", order=55)
def view_defense_tradeoff(index: dict[str, Any], row: pd.Series):
    """What each defense buys downstream: clean rows lost against the bias its teacher and students keep."""
    st.header("Defense trade-off")
    m = run_state(row["path"])["metrics"]
    _run_header(row, m)
    rows = (m or {}).get("defense_downstream") or []
    if not rows:
        st.info("No per-defense arms in this run (set defense.per_defense: true with 'train' in defense.places).")
        return
    df = tradeoff_frame(rows)
    table(df, [(c, c) for c in df.columns if c not in ("student bias low", "student bias high")],
          caption="Per arm: 'none' is the undefended teacher and students, 'defended' the filter's arm, every other "
                  "row one defense alone (the teacher trained without what it flagged at the train place). Bias: "
                  "greedy biased rate on the target split; utility: mean over tasks.")
    if df[["clean lost", "student bias"]].notna().all(axis=1).any():
        st.altair_chart(tradeoff_chart(df), width="content")
