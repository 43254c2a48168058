"""Answer cards of the sample browser as HTML: a model's (or the teacher's distillation) answer with the injected
spans highlighted in <mark>, the detector's verdict (and the judge's, when the run has one) as badges; plus paging and
a grid of columns for several models."""

from __future__ import annotations

import html
import math

import pandas as pd
import streamlit as st

from dashboard import data, fmt

PROMPT_STYLE = "white-space:pre-wrap;background:#f7f7f9;padding:6px 8px;border-radius:4px;font-size:0.9em"


def badge(text: str, tone: str) -> str:
    bg = {"bad": "#fde2dd", "ok": "#e1f0e8", "na": "#eeeeee"}[tone]
    fg = {"bad": "#9b2c14", "ok": "#1d6b45", "na": "#555"}[tone]
    return (f'<span style="background:{bg};color:{fg};border-radius:4px;padding:1px 6px;font-size:0.8em;'
            f'margin-left:4px">{html.escape(text)}</span>')


def _judge(r: dict) -> str:
    if "judge_biased" not in r:
        return ""
    score = fmt.num(r.get("judge_score"))
    sc = "" if score is None else f" {score:.2f}"
    jb = r.get("judge_biased")
    if fmt.missing(jb):
        return badge("judge: n/a" + sc, "na")
    return badge(("judge: biased" if jb else "judge: clean") + sc, "bad" if jb else "ok")


def answer_card(r: dict, title: str | None = None, cls: str = "answer-card") -> str:
    """One answer: title (the model), detector (and judge) badges, the text with ``r['spans']`` highlighted."""
    b = r.get("biased")
    det = (badge("detector: not recorded", "na") if b is None else badge("detector: biased", "bad") if b
           else badge("detector: clean", "ok"))
    body = data.highlight_html(r.get("response"), r.get("spans") or [])
    util = fmt.num(r.get("utility_value"))
    u = "" if util is None else (f'<div style="color:#777;font-size:0.8em;margin-top:4px">'
                                 f'{html.escape(str(r.get("utility") or "utility"))} {util:.2f}</div>')
    title = html.escape(str(title if title is not None else r.get("model")))
    return (f'<div class="{cls}" style="border:1px solid #ddd;border-radius:6px;padding:8px;height:100%">'
            f'<div style="margin-bottom:6px"><b>{title}</b>{det}{_judge(r)}</div>'
            f'<div class="answer-text" style="white-space:pre-wrap;font-size:0.92em">{body}</div>{u}</div>')


def prompt_box(prompt) -> str:
    return f'<div style="{PROMPT_STYLE}">{html.escape(fmt.text(prompt))}</div>'


def paginate(n: int, key: str, page_size: int, where=None) -> int:
    """The page (0-based) a number input picks; ``where``: the container to put it in (a narrow column)."""
    pages = max(1, math.ceil(n / page_size))
    if pages == 1:
        return 0
    where = where if where is not None else st.columns([1, 3])[0]
    return int(where.number_input(f"page (of {pages})", 1, pages, 1, key=key)) - 1


def grid(items: list, per_row: int):
    """Streamlit columns for ``items``, at most ``per_row`` to a row: yields (column, item)."""
    for i in range(0, len(items), per_row):
        chunk = items[i:i + per_row]
        yield from zip(st.columns(min(per_row, len(items))), chunk)


def spans_column(df: pd.DataFrame) -> list[list[tuple[int, int]]]:
    """Parsed ``bias_spans`` (native list column or JSON text) per row; [] per row when the column is absent."""
    from poison.ground.results.rundir import parse_spans

    if "bias_spans" not in df:
        return [[] for _ in range(len(df))]
    return [parse_spans(v) for v in df["bias_spans"]]
