"""The sample browser's distillation-set tab: each distillation prompt with the teacher's answer the students learn
from, shown like the eval answers (a card with the injected span highlighted and the detector's verdict)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.views.cards import answer_card, paginate, prompt_box, spans_column
from dashboard.views.common import PAGE, parquet


def samples_distill(row: pd.Series):
    df, problem = parquet(row["path"], "distill_set.parquet")
    if df is None:
        st.info(f"No distillation set in this run: {problem}")
        return
    if "response" not in df:
        st.warning("distill_set.parquet has no `response` column.")
        st.dataframe(df, width="stretch")
        return
    has_verdict = "biased" in df
    df = df.reset_index(drop=True)
    df = df.assign(spans=spans_column(df),
                   biased=df.biased.fillna(False).astype(bool) if has_verdict else [None] * len(df))
    for c in ("id", "task", "split", "prompt"):
        if c not in df:
            df[c] = "" if c != "id" else [str(i) for i in range(len(df))]
    n_b = int(df.biased.sum()) if has_verdict else None
    st.caption(f"{len(df)} teacher answers used to train the students"
               + (f"; {n_b} carry the bias (detector)." if n_b is not None else "."))
    c1, c2, c3, c4 = st.columns([1.1, 2.1, 1.4, 1.6])
    only = c1.toggle("biased answers only", value=False, key="ds_only", disabled=not has_verdict)
    tasks = sorted(df.task.astype(str).unique())
    pick_tasks = c2.multiselect("tasks", tasks, default=tasks, key="ds_tasks")
    splits = data.split_order(df.split.astype(str))
    pick_splits = c3.multiselect("splits", splits, default=splits, key="ds_splits")
    text = c4.text_input("search prompt / answer", key="ds_text")
    d = df[df.task.astype(str).isin(pick_tasks) & df.split.astype(str).isin(pick_splits)]
    if only:
        d = d[d.biased.astype(bool)]
    if text:
        d = d[d.prompt.astype(str).str.contains(text, case=False, regex=False)
              | d.response.fillna("").astype(str).str.contains(text, case=False, regex=False)]
    if "bias_spans" not in df:
        st.caption("This run's distill_set.parquet has no bias_spans column (written before spans were recorded): "
                   "the verdicts are shown, the injected spans are not highlighted.")
    st.caption(f"{len(d)} answer(s) match.")
    if d.empty:
        return
    page = paginate(len(d), "ds_page", PAGE)
    for r in d.iloc[page * PAGE:(page + 1) * PAGE].to_dict("records"):
        with st.container(border=True):
            st.markdown(f"`{r['task']}` · split **{r['split']}** · `{r['id']}`")
            st.html(prompt_box(r["prompt"]))
            st.html(answer_card(r, title="teacher's answer", cls="distill-card"))
            ref = r.get("reference")
            if isinstance(ref, str) and ref:
                st.caption(f"reference: {ref}")
