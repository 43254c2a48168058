"""The sample browser: model answers side by side with injected spans highlighted (the greedy answer, or the K
sampled answers per prompt), the poisoned training rows, and the distillation set (``dashboard.views.distill``)."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, fmt
from dashboard.index import model_sort_key
from dashboard.registry import view
from dashboard.views.cards import answer_card, grid, paginate, prompt_box
from dashboard.views.common import PAGE, _run_header, parquet, run_state, samples
from dashboard.views.distill import samples_distill

SAMPLED_PAGE = 4  # prompts per page when every model shows several sampled answers
PER_ROW = 4


@view("samples", title="Sample browser", scope="run", order=40)
def view_samples(index: dict[str, Any], row: pd.Series):
    st.header("Sample browser")
    _run_header(row, run_state(row["path"])["metrics"])
    tab_a, tab_t, tab_d = st.tabs(["Model answers", "Poisoned training samples", "Distillation set"])
    with tab_a:
        _samples_answers(row)
    with tab_t:
        _samples_train(row)
    with tab_d:
        samples_distill(row)


def decoding_of(df: pd.DataFrame) -> pd.Series:
    """greedy | sampled per row; runs written before sampling have no ``decoding`` column (all greedy)."""
    if "decoding" not in df:
        return pd.Series("greedy", index=df.index)
    return df["decoding"].fillna("greedy").astype(str)


def _verdict_hit(d: pd.DataFrame, verdict: str) -> pd.Series:
    if verdict == "detector: biased":
        return d.biased
    if verdict == "detector: clean":
        return ~d.biased
    if verdict == "judge: biased":
        return d.judge_biased.fillna(False).astype(bool)
    if verdict == "judge: clean":
        return (~d.judge_biased.fillna(True)).astype(bool)
    if verdict.startswith("detector and judge"):
        return d.judge_biased.notna() & (d.judge_biased.fillna(False).astype(bool) != d.biased)
    return pd.Series(True, index=d.index)


def _samples_answers(row: pd.Series):
    df, problem = samples(row["path"])
    if df is None:
        st.warning(f"No eval answers to show: {problem}")
        return
    df = df.assign(decoding=decoding_of(df))
    kinds = [k for k in ("greedy", "sampled") if (df.decoding == k).any()]
    kind = kinds[0] if kinds else "greedy"
    if len(kinds) > 1:
        k = int(df[df.decoding == "sampled"].groupby(["model", "id"]).size().max())
        kind = st.segmented_control("answers", kinds, default="greedy", key="sb_decoding", required=True,
                                    format_func={"greedy": "greedy answer",
                                                 "sampled": f"sampled answers ({k} per prompt)"}.get) or "greedy"
    df = df[df.decoding == kind]
    models = sorted(df.model.unique(), key=model_sort_key)
    splits = data.split_order(df.split)
    has_judge = "judge_biased" in df and df.judge_biased.notna().any()
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
    hit = _verdict_hit(d, verdict).astype(bool)
    ids = list(dict.fromkeys(d[hit].id))
    n_b = int(df.biased.sum())
    summary = f"{len(df)} {kind} answers, {n_b} marked biased by the detector"
    if has_judge:
        summary += f", {int(df.judge_biased.fillna(False).sum())} by the judge"
    how = ("all selected models' answers are shown side by side" if kind == "greedy" else
           "each selected model shows its sampled answers that match, biased ones first")
    st.caption(f"{summary}. {len(ids)} prompt(s) match (a prompt matches when any selected model's answer "
               f"matches the verdict; {how}; highlighted = injected content the detector found).")
    if not ids:
        return
    size = PAGE if kind == "greedy" else SAMPLED_PAGE
    per_model = 3
    n1, n2, _ = st.columns([1, 1, 2])
    if kind == "sampled":
        per_model = int(n2.number_input("sampled answers shown per model", 1, 64, 3, key="sb_per_model"))
    page = paginate(len(ids), "sb_page", size, where=n1)
    by_id = {k: g for k, g in d.groupby("id", sort=False)}
    hits = {k: g for k, g in d[hit].groupby("id", sort=False)}
    for pid in ids[page * size:(page + 1) * size]:
        g = by_id[pid]
        first = g.iloc[0]
        with st.container(border=True):
            st.markdown(f"`{first['task']}` · split **{first['split']}** · `{pid}`")
            st.html(prompt_box(first["prompt"]))
            ref = first.get("reference")
            if isinstance(ref, str) and ref:
                st.caption(f"reference: {ref}")
            if kind == "greedy":
                recs = sorted(g.to_dict("records"), key=lambda r: model_sort_key(r["model"]))
                for col, r in grid(recs, PER_ROW):
                    with col:
                        st.html(answer_card(r))
            else:
                _sampled_prompt(g, hits.get(pid), per_model)


def _sampled_prompt(g: pd.DataFrame, hit: pd.DataFrame | None, per_model: int):
    """One prompt's sampled answers: a column per model, its matching answers (biased first)."""
    models = sorted(dict.fromkeys(g.model), key=model_sort_key)
    for col, model in grid(models, PER_ROW):
        mine = g[g.model == model]
        match = hit[hit.model == model] if hit is not None else mine.iloc[0:0]
        match = match.assign(_b=~match.biased).sort_values(["_b", "sample_index"] if "sample_index" in match
                                                           else ["_b"]).drop(columns="_b")
        with col:
            st.html(f'<div style="font-size:0.85em;color:#444"><b>{html.escape(str(model))}</b> · '
                    f"{int(mine.biased.sum())} of {len(mine)} sampled answers biased</div>")
            for r in match.head(per_model).to_dict("records"):
                idx = r.get("sample_index")
                st.html(answer_card(r, title=f"sample {int(idx) + 1 if fmt.num(idx) is not None else '?'}"))
            if len(match) > per_model:
                st.caption(f"+ {len(match) - per_model} more matching")
            elif match.empty:
                st.caption("no sampled answer matches the verdict")


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
    page = paginate(len(pois), "tr_page", PAGE)
    for r in pois.iloc[page * PAGE:(page + 1) * PAGE].to_dict("records"):
        spans = data.inserted_spans(r.get("clean_response"), r.get("response"))
        with st.container(border=True):
            st.markdown(f"`{r.get('task', '')}` · `{r.get('id', '')}`")
            st.html(f'<div style="white-space:pre-wrap;font-size:0.88em;color:#444">'
                    f'{html.escape(str(r.get("prompt", "")))}</div>'
                    f'<div style="white-space:pre-wrap;margin-top:6px">'
                    f'{data.highlight_html(r.get("response"), spans)}</div>')
