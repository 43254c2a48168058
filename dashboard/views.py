"""The dashboard's views. Each takes the loaded index (and a selected run) and draws with Streamlit.

Loaders are wrapped in ``st.cache_data`` keyed on the files' (mtime, size) stamps, so a rerun re-reads only
what changed, and a finished or newly started run shows up on the next interaction.
"""

from __future__ import annotations

import html
import json
import math
import urllib.parse
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import charts, data

VIEWS = {
    "overview": "Runs overview",
    "propagation": "Propagation",
    "sweeps": "Sweeps",
    "samples": "Sample browser",
    "defenses": "Defenses",
    "compare": "Compare two runs",
}
RUN_VIEWS = ("propagation", "samples", "defenses")
PAGE = 10


# ------------------------------------------------------------------------------------------------- loaders
@st.cache_data(show_spinner="Reading the runs folder", max_entries=8)
def cached_index(runs_dir: str, sig: tuple) -> dict[str, Any]:
    return data.load_index(runs_dir)


def load_index(runs_dir: str) -> dict[str, Any]:
    return cached_index(str(runs_dir), data.signature(runs_dir))


def _stamps(path: str, *names: str) -> tuple:
    return tuple(data.file_stamp(Path(path) / n) for n in names)


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_state(path: str, stamp: tuple) -> dict[str, Any]:
    return data.run_state(Path(path))


def run_state(path: str) -> dict[str, Any]:
    return _cached_state(path, _stamps(path, "status.json", "metrics.json", "config.yaml"))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_config(path: str, stamp: tuple) -> tuple[Any, str | None]:
    return data.read_yaml(Path(path) / "config.yaml")


def run_config(path: str) -> tuple[Any, str | None]:
    return _cached_config(path, _stamps(path, "config.yaml"))


@st.cache_data(show_spinner="Loading samples", max_entries=16)
def _cached_samples(path: str, stamp: tuple):
    return data.load_samples(path)


def samples(path: str):
    return _cached_samples(path, _stamps(path, "samples.parquet"))


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_parquet(path: str, name: str, stamp: tuple):
    return data.read_parquet(Path(path) / name)


def parquet(path: str, name: str):
    return _cached_parquet(path, name, _stamps(path, name))


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_defenses(path: str, stamp: tuple):
    return data.load_defense_scores(path)


def defense_scores(path: str):
    return _cached_defenses(path, _stamps(path, "defense_scores.parquet"))


# ------------------------------------------------------------------------------------------------- helpers
def run_label(runs: pd.DataFrame):
    status = dict(zip(runs.run, runs.status))

    def fmt(rel: str) -> str:
        s = status.get(rel, "")
        return rel if s == "complete" else f"{rel}  [{s}]"
    return fmt


def default_run(runs: pd.DataFrame) -> str | None:
    if runs.empty:
        return None
    done = runs[runs.status == "complete"]
    return (done if not done.empty else runs).run.iloc[0]


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _fmt_ci(r) -> str:
    return f"{_pct(r['rate'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"


def _run_header(row: pd.Series, metrics: dict | None):
    run = (metrics or {}).get("run") or {}
    p = (metrics or {}).get("poison") or {}
    def s(v) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    bits = [f"**{s(row['name'])}**", f"bias `{s(row['bias_type'])}`" if s(row["bias_type"]) else "",
            f"mode `{s(row['mode'])}`" if s(row["mode"]) else "",
            f"target task `{s(row['target_task'])}`" if s(row["target_task"]) else "",
            f"status **{row['status']}**", s(row["date"])]
    st.markdown(" · ".join(b for b in bits if b))
    if run.get("bias"):
        st.caption(f"Bias: {run['bias']}")
    if p:
        inj, ntr = p.get("injected"), p.get("n_train")
        extra = ""
        if p.get("target_task_rows"):
            extra = f"; {p.get('target_task_rate', 0):.0%} of the {p['target_task_rows']} target-task rows"
        st.caption(f"Poison: {inj} of {ntr} teacher samples ({(p.get('rate') or 0):.1%}{extra})"
                   + (f" — warning: {p['warning']}" if p.get("warning") else ""))


def _show_problems(row: pd.Series):
    if row["problems"] or row["status"] != "complete":
        st.warning(f"Run `{row['run']}` is {row['status']}" + (f": {row['problems']}" if row["problems"] else "."))


# --------------------------------------------------------------------------------------------------- views
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


def _badge(text: str, tone: str) -> str:
    bg = {"bad": "#fde2dd", "ok": "#e1f0e8", "na": "#eeeeee"}[tone]
    fg = {"bad": "#9b2c14", "ok": "#1d6b45", "na": "#555"}[tone]
    return (f'<span style="background:{bg};color:{fg};border-radius:4px;padding:1px 6px;font-size:0.8em;'
            f'margin-left:4px">{text}</span>')


def _answer_card(r: dict) -> str:
    det = _badge("detector: biased", "bad") if r["biased"] else _badge("detector: clean", "ok")
    jb = r.get("judge_biased", None)
    judge = ""
    if "judge_biased" in r:
        score = r.get("judge_score")
        sc = "" if score is None or pd.isna(score) else f" {score:.2f}"
        if jb is None or pd.isna(jb):
            judge = _badge("judge: n/a" + sc, "na")
        else:
            judge = _badge(("judge: biased" if jb else "judge: clean") + sc, "bad" if jb else "ok")
    body = data.highlight_html(r["response"], r["spans"])
    util = r.get("utility_value")
    u = "" if util is None or pd.isna(util) else (f'<div style="color:#777;font-size:0.8em;margin-top:4px">'
                                                 f'{html.escape(str(r.get("utility") or "utility"))} '
                                                 f'{util:.2f}</div>')
    return (f'<div style="border:1px solid #ddd;border-radius:6px;padding:8px;height:100%">'
            f'<div style="margin-bottom:6px"><b>{html.escape(str(r["model"]))}</b>{det}{judge}</div>'
            f'<div style="white-space:pre-wrap;font-size:0.92em">{body}</div>{u}</div>')


def _paginate(n: int, key: str) -> int:
    pages = max(1, math.ceil(n / PAGE))
    if pages == 1:
        return 0
    return int(st.number_input(f"page (of {pages})", 1, pages, 1, key=key)) - 1


def view_samples(index: dict[str, Any], row: pd.Series):
    st.header("Sample browser")
    _run_header(row, run_state(row["path"])["metrics"])
    tab_a, tab_t, tab_d = st.tabs(["Model answers", "Poisoned training samples", "Distillation set"])
    with tab_a:
        _samples_answers(row)
    with tab_t:
        _samples_train(row)
    with tab_d:
        _samples_distill(row)


def _samples_answers(row: pd.Series):
    df, problem = samples(row["path"])
    if df is None:
        st.warning(f"No eval answers to show: {problem}")
        return
    models = sorted(df.model.unique(), key=data.model_sort_key)
    splits = data.split_order(df.split)
    has_judge = "judge_biased" in df
    verdicts = ["any", "detector: biased", "detector: clean"]
    if has_judge:
        verdicts += ["judge: biased", "judge: clean", "detector and judge disagree"]
    c1, c2, c3, c4 = st.columns([2, 1.2, 1.3, 1.5])
    pick_models = c1.multiselect("models", models, default=models, key="sb_models")
    pick_splits = c2.multiselect("splits", splits, default=splits, key="sb_splits")
    verdict = c3.selectbox("verdict", verdicts, key="sb_verdict")
    text = c4.text_input("search prompt / answer", key="sb_text")
    d = df[df.model.isin(pick_models) & df.split.isin(pick_splits)]
    if text:
        d = d[d.prompt.str.contains(text, case=False, regex=False)
              | d.response.fillna("").str.contains(text, case=False, regex=False)]
    hit = pd.Series(True, index=d.index)
    if verdict == "detector: biased":
        hit = d.biased
    elif verdict == "detector: clean":
        hit = ~d.biased
    elif verdict == "judge: biased":
        hit = d.judge_biased.fillna(False).astype(bool)
    elif verdict == "judge: clean":
        hit = (~d.judge_biased.fillna(True)).astype(bool)
    elif verdict.startswith("detector and judge"):
        hit = d.judge_biased.notna() & (d.judge_biased.fillna(False).astype(bool) != d.biased)
    ids = list(dict.fromkeys(d[hit.astype(bool)].id))
    n_b = int(df.biased.sum())
    summary = f"{len(df)} answers, {n_b} marked biased by the detector"
    if has_judge:
        summary += f", {int(df.judge_biased.fillna(False).sum())} by the judge"
    st.caption(f"{summary}. {len(ids)} prompt(s) match (a prompt matches when any selected model's answer "
               "matches the verdict; all selected models' answers are shown side by side; "
               "highlighted = injected content the detector found).")
    if not ids:
        return
    page = _paginate(len(ids), "sb_page")
    by_id = {k: g for k, g in d.groupby("id", sort=False)}
    for pid in ids[page * PAGE:(page + 1) * PAGE]:
        g = by_id[pid]
        g = g.iloc[sorted(range(len(g)), key=lambda i: data.model_sort_key(g.model.iloc[i]))]
        first = g.iloc[0]
        with st.container(border=True):
            st.markdown(f"`{first['task']}` · split **{first['split']}** · `{pid}`")
            st.html(f'<div style="white-space:pre-wrap;background:#f7f7f9;padding:6px 8px;border-radius:4px;'
                    f'font-size:0.9em">{html.escape(str(first["prompt"]))}</div>')
            ref = first.get("reference")
            if isinstance(ref, str) and ref:
                st.caption(f"reference: {ref}")
            cols = st.columns(len(g))
            for col, r in zip(cols, g.to_dict("records")):
                with col:
                    st.html(_answer_card(r))


def _samples_train(row: pd.Series):
    df, problem = parquet(row["path"], "train_set.parquet")
    if df is None:
        st.info(f"No teacher training set in this run: {problem}")
        return
    if "poisoned" not in df:
        st.warning("train_set.parquet has no `poisoned` column.")
        st.dataframe(df, width="stretch")
        return
    pois = df[df.poisoned.fillna(False).astype(bool)]
    c = st.columns(3)
    c[0].metric("teacher training rows", len(df))
    c[1].metric("poisoned", len(pois))
    c[2].metric("poisoned share", f"{len(pois) / max(1, len(df)):.1%}")
    only = st.toggle("poisoned rows only", value=True, key="tr_only")
    t = pois if only else df
    cols = [c for c in ("id", "task", "poisoned", "prompt", "response", "clean_response") if c in t]
    st.dataframe(t[cols], hide_index=True, width="stretch", height=260)
    if pois.empty:
        return
    st.markdown("**Poisoned samples** (highlighted: what the poisoning added to the clean response)")
    page = _paginate(len(pois), "tr_page")
    for r in pois.iloc[page * PAGE:(page + 1) * PAGE].to_dict("records"):
        spans = data.inserted_spans(r.get("clean_response"), r.get("response"))
        with st.container(border=True):
            st.markdown(f"`{r.get('task', '')}` · `{r.get('id', '')}`")
            st.html(f'<div style="white-space:pre-wrap;font-size:0.88em;color:#444">'
                    f'{html.escape(str(r.get("prompt", "")))}</div>'
                    f'<div style="white-space:pre-wrap;margin-top:6px">'
                    f'{data.highlight_html(r.get("response"), spans)}</div>')


def _samples_distill(row: pd.Series):
    df, problem = parquet(row["path"], "distill_set.parquet")
    if df is None:
        st.info(f"No distillation set in this run: {problem}")
        return
    if "biased" in df:
        st.caption(f"{len(df)} teacher answers used to train the students; {int(df.biased.fillna(False).sum())} "
                   "carry the bias (detector).")
        if st.toggle("biased answers only", value=False, key="ds_only"):
            df = df[df.biased.fillna(False).astype(bool)]
    cols = [c for c in ("id", "task", "split", "biased", "prompt", "response") if c in df]
    st.dataframe(df[cols], hide_index=True, width="stretch")


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
        st.dataframe(summary, hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in ("auroc", "tpr_at_1pct_fpr", "precision",
                                                                      "recall", "threshold")})
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
    stats = data.threshold_stats(sub.score, sub.poisoned, thr)
    auc = data.auroc(sub.score, sub.poisoned)
    c = st.columns(6)
    c[0].metric("AUROC", "n/a" if auc is None else f"{auc:.3f}")
    c[1].metric("TPR", _pct(stats["tpr"]))
    c[2].metric("FPR", _pct(stats["fpr"]))
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
    g2.altair_chart(charts.roc_chart(data.roc_curve(sub.score, sub.poisoned), stats["fpr"], stats["tpr"]),
                    width="stretch")
    slipped = sub[sub.poisoned & (sub.score < thr)]
    if not slipped.empty:
        with st.expander(f"{len(slipped)} poisoned sample(s) below the threshold"):
            st.dataframe(slipped[[c for c in ("row_id", "task", "score") if c in slipped]].sort_values("score"),
                         hide_index=True, width="stretch")


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
