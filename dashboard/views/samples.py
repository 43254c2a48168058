"""The sample browser: model answers side by side with injected spans highlighted, the poisoned training rows, the
distillation set."""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.index import model_sort_key
from dashboard.views.common import PAGE, _run_header, parquet, run_state, samples

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
    models = sorted(df.model.unique(), key=model_sort_key)
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
        g = g.iloc[sorted(range(len(g)), key=lambda i: model_sort_key(g.model.iloc[i]))]
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
