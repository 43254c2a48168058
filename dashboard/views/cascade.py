"""Cascade depth: how a run's bias carries through students distilled from students (metrics.json ``cascade``, a run
with ``cascade.generations`` > 1). A line chart of the biased rate (greedy and sampled) or of the likelihood probe's
shift against generation depth, with interval bands where recorded, and a table of every generation's figures against
the original teacher. A run without the section gets one line saying so and the runs that have one."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import cascadedata, charts, data, evidence
from dashboard.registry import view
from dashboard.views.common import (
    _run_header,
    _show_problems,
    problems_line,
    run_state,
    runs_with,
    table,
)

MEASURES = {"rate": "biased rate", "shift": "log-prob shift (probe)"}
COLUMNS = [("generation", "generation"), ("model", "model"), ("split", "split"),
           ("greedy", "biased, greedy\n[95% Wilson CI]"), ("kn", "biased / answers"),
           ("ratio", "× the teacher, greedy\n[95% CI]"), ("sampled", "biased, sampled\n[95% CI, prompts]"),
           ("sampled_ratio", "× the teacher, sampled\n[95% CI]"),
           ("shift_twin", "log-prob shift, seen\nvs its clean twin"),
           ("shift_clean", "log-prob shift, seen\nvs the clean control")]


@view("cascade", title="Cascade depth", scope="run", order=60)
def view_cascade(index: dict[str, Any], row: pd.Series):
    st.header("Cascade depth")
    m = run_state(row["path"])["metrics"]
    _run_header(row, m)
    if m is None:
        _show_problems(row)
        st.info("This run has no readable metrics.json yet, so there is no cascade to show.")
        return
    c = cascadedata.read_cascade(m)
    if not c["present"]:
        st.info("No cascade in this run: its metrics.json has no cascade section (runs with cascade.generations > 1 "
                "write one).")
        runs_with(index, "has_cascade", "cascade", "a cascade", here=row["run"])
        return
    problems_line(f"{row['run']}/metrics.json", c["problems"])
    t = c["table"]
    if t.empty:
        st.info("The cascade section has no readable generation rows.")
        return
    chain = c["chain"] or list(dict.fromkeys(t.model))
    st.caption(f"Chain{' of ' + c['via'] if c['via'] else ''}: " + " → ".join(chain) + ". Generation 0 is the "
               "poisoned teacher; generation k+1 is distilled from generation k's answers to the distillation "
               "prompts. Every generation is measured on the same eval prompts.")
    measures = cascadedata.measures_of(c)
    measure = measures[0]
    if len(measures) > 1:
        measure = st.segmented_control("measure", measures, default=measures[0], key="cas_measure", required=True,
                                       format_func=MEASURES.get) or measures[0]
    d = cascadedata.series(c, measure)
    splits = data.split_order(t.split)
    if d.empty:
        st.info("Nothing to plot: the cascade rows have no numeric values for this measure.")
    else:
        st.altair_chart(charts.cascade_chart(d, [s for s in splits if s in set(d.split)], measure), width="content")
        st.caption(caption(measure, d) + f" Evidence: {evidence.of_row(m, row)}.")
    st.subheader("Each generation against the original teacher")
    rows = cascadedata.generation_rows(c)
    table(rows, COLUMNS, data_table="cascade-generations")
    st.caption("× the teacher: the generation's rate divided by the original teacher's on the same split (Katz "
               "interval for greedy answers, paired bootstrap over prompts for sampled ones); \"undefined\" where the "
               "teacher's rate is 0. Log-prob shift: the seen wording's mean per-token log-probability minus that of "
               "the generation's clean twin (the same chain distilled from the clean control), or of the clean "
               "control; 95% paired bootstrap intervals over prompts.")
    with st.expander("Utility per generation"):
        once = {(r["generation"], r["model"]): r for r in reversed(rows)}  # utility is per model, not per split
        table([once[k] for k in dict.fromkeys((r["generation"], r["model"]) for r in rows)],
              [("generation", "generation"), ("model", "model"), ("utility", "utility per task [95% CI]")],
              data_table="cascade-utility", wrap=("utility",))


def caption(measure: str, d: pd.DataFrame) -> str:
    banded = d.lo.notna() & d.hi.notna()
    if measure == "rate":
        text = ("Lines: the share of each generation's answers the detector marks biased, greedy answers and, "
                "where the run sampled, K answers per prompt.")
        band = " Bands: 95% intervals (Wilson for greedy answers; bootstrap over prompts for sampled ones)."
    else:
        text = ("Lines: the likelihood probe's shift of the seen wording, against each generation's clean twin and "
                "against the clean control; dashed: no shift.")
        band = " Bands: 95% paired bootstrap intervals over prompts."
    if banded.all():
        return text + band
    if banded.any():
        return text + band + " Points without a band have no recorded interval."
    return text + " No intervals recorded."
