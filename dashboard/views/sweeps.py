"""Sweeps: a measure (greedy rate, sampled rate, log-prob shift) against a swept key. Opens on a poison-budget sweep
when there is one (``?sweep=REL`` opens that sweep); a numeric key shows points with interval bars and the sweep's
fitted dose-response curve (ED50 stated), a categorical key grouped bars. A sweep over seeds or with replicates also
shows its pooled figures (``dashboard.views.replicates``): the pooled value with its interval and each replicate's
value around it, per point, the pooled amplification, the shift against the measured null and the brand-swap
contrast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, fmt, sweepcharts, sweepdata
from dashboard.index import model_sort_key
from dashboard.registry import view
from dashboard.views.common import sweep_json, table
from dashboard.views.replicates import replicates_section
from poison.ground.results.model_id import is_twin_name

EXTRA_X = ["poison_injected", "poison_rate", "poison_requested", "method"]


@view("sweeps", title="Sweeps", scope="runs", order=30)
def view_sweeps(index: dict[str, Any]):
    st.header("Sweeps")
    rates: pd.DataFrame = index["rates"]
    sweeps: pd.DataFrame = index["sweeps"]
    keys_of = {s: json.loads(k or "[]") for s, k in zip(sweeps.sweep, sweeps["keys"])}
    options = [("sweep", s) for s in sweepdata.sweep_order(sweeps, lambda r: keys_of.get(r, []))]
    names = sorted(rates[rates.status == "complete"].name.dropna().unique())
    options += [("name", n) for n in names]
    if not options:
        st.info("No sweep directories and no complete runs to plot.")
        return

    def label(o):
        if o[0] != "sweep":
            return f"all runs of config '{o[1]}' (outside sweeps)"
        keys = ", ".join(sweepdata.axis_title(k) for k in keys_of.get(o[1], [])) or "?"
        return f"sweep {o[1] if o[1] != '.' else Path(index['runs_dir']).name} — over {keys}"
    asked = ("sweep", st.query_params.get("sweep"))  # ?sweep=REL: a run's "see the sweep" link
    if asked in options and st.session_state.get("sw_asked") != asked[1]:
        st.session_state["sw_asked"], st.session_state["sw_source"] = asked[1], asked
    src = st.selectbox("source", options, key="sw_source", format_func=label)
    entries: list[dict] = []
    sj = None
    if src[0] == "sweep":
        srow = sweeps[sweeps.sweep == src[1]].iloc[0]
        t = data.sweep_table(rates, sweep=src[1])
        keys = [f"pt:{k}" for k in keys_of.get(src[1], []) if f"pt:{k}" in t]
        sj, _ = sweep_json(srow["path"])  # a problem with it is among the sweep's problems above
        entries = sweepdata.dose_entries(sj)
        st.caption(f"{srow['points']} point(s), {srow['complete']} complete"
                   + (f" — {srow['problems']}" if srow["problems"] else ""))
    else:
        t = data.sweep_table(rates[rates.sweep == ""], name=src[1])
        keys = []
    t = t[t.status == "complete"]
    if t.empty:
        st.info("No complete runs with metrics in this selection yet.")
        return
    measures = sweepdata.measures_in(t)
    default_measure = next((e.get("measure") for e in entries if e.get("measure") in measures), measures[0])
    c0, c_log = st.columns([3, 1], vertical_alignment="bottom")
    if len(measures) > 1:
        measure = c0.segmented_control("measure", measures, default=default_measure, key="sw_measure",
                                       required=True, format_func=sweepdata.MEASURE_LABELS.get) or default_measure
    else:
        measure = measures[0]
        c0.caption(f"measure: {sweepdata.MEASURE_LABELS[measure]}")
    t = t[t.measure == measure] if "measure" in t else t
    c1, c2, c3 = st.columns([1.4, 0.8, 1.4])
    x = c1.selectbox("x axis", keys + EXTRA_X, key="sw_x", format_func=sweepdata.axis_title)
    methodish = x == "method" or "method" in x or "student" in x
    if st.session_state.get("sw_color_x") != x:  # a new x axis: the series it reads best with (roles for methods)
        st.session_state["sw_color_x"] = x
        st.session_state["sw_color"] = "role" if methodish else "model"
    color = c2.selectbox("series", ["model", "role"], key="sw_color")
    splits_all = data.split_order(t.split)
    splits = c3.multiselect("splits", splits_all, default=splits_all, key="sw_splits")
    models_all = sorted(t.model.dropna().unique(), key=model_sort_key)
    twins = [m for m in models_all if is_twin_name(str(m))]
    if st.session_state.get("sw_models_of") != models_all:  # another sweep: every model again but the clean twins
        st.session_state["sw_models_of"] = models_all
        st.session_state["sw_models"] = [m for m in models_all if m not in twins]
    pick = st.multiselect("models", models_all, key="sw_models")
    d = t[t.split.isin(splits) & t.model.isin(pick)]
    if measure == "logprob_shift" and (d.control == "twin").any():
        against = st.segmented_control("students measured against", ["clean", "twin"], default="clean",
                                       key="sw_against", required=True,
                                       format_func={"clean": "the clean control", "twin": "their clean twin"}.get)
        twin = (d.role == "student") & (d.control == "twin")
        d = d[twin | ((d.role != "student") & (d.control == "clean"))] if against == "twin" else d[d.control == "clean"]
    elif measure == "logprob_shift":
        d = d[d.control != "twin"]
    if x == "method":
        d = d[d.method.notna()]
    d = d[d[x].notna()]
    if d.empty:
        st.info("Nothing to plot for this choice.")
        return
    quantitative = pd.to_numeric(d[x], errors="coerce").notna().all() and x != "method"
    pts = sweepdata.points(d, x, color, measure)
    if quantitative:
        pts = pts.assign(_x=pd.to_numeric(pts[x])).sort_values("_x").drop(columns="_x")
    drawn = [e for e in entries if x in sweepdata.DOSE_X.get(str(e.get("dose")), ()) and e["split"] in splits
             and e["model"] in pick]
    curve = None
    if quantitative and drawn:
        xs = pd.to_numeric(pts[x])
        curve = sweepdata.dose_curves(drawn, measure, (float(xs.min()), float(xs.max())))
        roles = dict(zip(t.model, t.role))
        curve = curve.assign(series=[m if color == "model" else roles.get(m, m) for m in curve.model])
    log_x = c_log.toggle("log x axis", value=False, key="sw_logx", disabled=not quantitative) and quantitative
    st.altair_chart(sweepcharts.sweep_chart(pts, x, sweepdata.axis_title(x), quantitative, color,
                                            [s for s in splits_all if s in splits], measure, curve, log_x),
                    width="content")
    caption(measure, quantitative, curve, drawn, splits, pick)
    if drawn:
        dose_table(drawn, x)
    if src[0] == "sweep":
        replicates_section(sj, f"{src[1]}/sweep.json", measure, splits, pick)
    with st.expander("Data"):
        shown = pts.rename(columns={x: sweepdata.axis_title(x), color: color})
        show = fmt.pct_ci if measure != "logprob_shift" else fmt.shift_ci
        table([{**{c: fmt.text(r[c]) for c in shown.columns if c not in ("rate", "ci_low", "ci_high")},
                "value": show(r["rate"], r["ci_low"], r["ci_high"])} for r in shown.to_dict("records")],
              [(c, fmt.words(c)) for c in shown.columns if c not in ("rate", "ci_low", "ci_high")]
              + [("value", "value [95% CI]")])
    if src[0] == "sweep":
        summary_text(Path(sweeps[sweeps.sweep == src[1]].iloc[0]["path"]) / "summary.txt")


def caption(measure: str, quantitative: bool, curve, drawn: list[dict], splits: list[str], models: list[str]):
    what = {"greedy": "biased share of greedy answers; whiskers: 95% Wilson intervals, runs at one point pooled "
                      "(summed counts, e.g. several seeds)",
            "sampled": "biased share of sampled answers; whiskers: 95% bootstrap intervals over prompts (runs at one "
                       "point are not pooled)",
            "logprob_shift": "log-prob shift of the seen wording against the clean control; whiskers: 95% paired "
                             "bootstrap intervals; dashed: no shift"}[measure]
    text = ("Points: " if quantitative else "Bars: ") + what + "."
    if curve is not None and not curve.empty:
        ed = sweepdata.ed50_caption(drawn, measure, splits, models)
        text += (" Lines: the dose-response the sweep fitted (binomial GLM on log-dose). ED50, the dose of a fitted "
                 f"50% rate: {ed}.")
    elif drawn and measure == "logprob_shift":
        text += " The dose-response fit is of the rate; pick the sampled or greedy measure to see it."
    st.caption(text)


def dose_table(entries: list[dict], x: str):
    unit = "rows" if "count" in x or "injected" in x or "requested" in x else "(share)"
    table(sweepdata.dose_table(entries, unit),
          [("model", "model"), ("split", "split"), ("measure", "fitted on"), ("ed50", "ED50 [95% CI]"),
           ("slope", "slope on log-dose [95% CI]"), ("min_rate", "smallest dose with rate above the clean control"),
           ("min_shift", "smallest dose with log-prob shift above 0"), ("points", "points")],
          caption="From sweep.json's dose_response: the fit includes the clean dose (the clean control at 0 poisoned "
                  "rows) when the sweep has no zero point.")


def summary_text(path: Path):
    if path.exists():
        with st.expander("summary.txt"):
            try:
                st.code(path.read_text(encoding="utf-8", errors="replace"), language=None)
            except OSError as e:
                st.caption(f"unreadable: {e}")
