"""The runs overview: every run of the folder, the key figures first (teacher and student biased rate on the target
task with their intervals, the amplification with its interval, the sampled rates where the run has them), then the
run's description (config, bias, poison, date, models, problems) and its evidence: a single run's figures (one
training seed: the intervals cover prompts only) or one replicate of N. Drawn as an HTML table so that nothing is cut
off and a missing value reads "—"."""

from __future__ import annotations

import html
import urllib.parse
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import evidence, fmt
from dashboard.registry import view
from dashboard.views.common import table

KEY_COLUMNS = [("teacher_target", "teacher biased\ntarget task [95% CI]"),
               ("student_target", "student biased\ntarget task [95% CI]"),
               ("amplification_target", "amplification\nstudent / teacher, target"),
               ("teacher_sampled", "teacher biased\nsampled answers, target"),
               ("student_sampled", "student biased\nsampled answers, target")]
OTHER_COLUMNS = [("status:html", "status"), ("evidence", "evidence"), ("name", "config name"),
                 ("bias_type", "bias type"), ("mode", "mode"), ("poison", "poisoned rows (share)"), ("date", "date"),
                 ("models", "models"), ("methods", "methods"), ("open:html", "link"), ("problems:html", "problems")]
SORTS = {"newest first": ("date", False), "teacher biased (target)": ("teacher_target", False),
         "student biased (target)": ("student_target", False),
         "amplification (target)": ("amplification_target", False),
         "run folder": ("run", True)}
_TONE = {"complete": ("#e1f0e8", "#1d6b45"), "running": ("#e3eefb", "#1f5fa8"), "failed": ("#fde2dd", "#9b2c14"),
         "broken": ("#fde2dd", "#9b2c14")}


def link(rel: str, view: str = "propagation") -> str:
    return f"?view={view}&run=" + urllib.parse.quote(str(rel), safe="")


def _badge(status: str) -> str:
    bg, fg = _TONE.get(status, ("#eeeeee", "#555"))
    return (f'<span style="background:{bg};color:{fg};border-radius:4px;padding:0 6px;font-size:0.9em">'
            f"{html.escape(status)}</span>")


def _sub(cell: str, note: str | None) -> str:
    if not note:
        return html.escape(cell)
    return f'{html.escape(cell)}<div style="color:#777;font-size:0.85em">{html.escape(note)}</div>'


def _problems(text: str | None) -> str:
    """The first problem of a run (the whole list in the tooltip and in the problems table below the overview)."""
    if not text:
        return fmt.DASH
    items = str(text).split("; ")
    first = items[0] if len(items[0]) <= 90 else items[0][:90].rsplit(" ", 1)[0] + " …"
    more = f" (+{len(items) - 1} more)" if len(items) > 1 else ""
    return f'<span title="{html.escape(str(text))}">{html.escape(first + more)}</span>'


def _run_cell(rel: str) -> str:
    """The run folder as a link to its propagation view; a sweep point shows its sweep above its own name."""
    sweep, _, point = rel.rpartition("/")
    a = (f'<a href="{html.escape(link(rel))}" target="_self" title="open the propagation view of {html.escape(rel)}">'
         f"{html.escape(point)}</a>")
    up = (f'<div style="color:#777;font-size:0.85em;overflow-wrap:anywhere">{html.escape(sweep)}/</div>'
          if sweep else "")
    return f'<div style="min-width:230px;max-width:270px;white-space:normal;overflow-wrap:anywhere">{up}{a}</div>'


def overview_rows(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """The overview table's cells, formatted ("—" for anything missing)."""
    out = []
    for r in runs.to_dict("records"):
        def g(k: str, r: dict = r):
            return None if fmt.missing(r.get(k)) else r.get(k)
        many = (fmt.num(g("n_students")) or 0) > 1
        amp = fmt.ratio_ci(g("amplification_target"), g("amplification_target_lo"), g("amplification_target_hi"),
                           undefined=bool(g("amplification_undefined")))
        k = fmt.num(g("samples_per_prompt"))
        inj = g("poison_injected") if g("poison_injected") is not None else g("poison_requested")
        out.append({
            "run": r["run"],
            "run:html": _run_cell(str(r["run"])),
            "teacher_target": fmt.pct_ci(g("teacher_target"), g("teacher_target_lo"), g("teacher_target_hi")),
            "student_target:html": _sub(fmt.pct_ci(g("student_target"), g("student_target_lo"),
                                                   g("student_target_hi")),
                                        (g("student_target_model") or f"{int(g('n_students'))} students, tied")
                                        if many and g("student_target") is not None else None),
            "amplification_target:html": _sub(amp, "teacher rate 0" if amp == "undefined" else
                                              (f"{g('amplification_student')}" if many and g("amplification_student")
                                               and amp != fmt.DASH else None)),
            "teacher_sampled:html": _sub(fmt.pct_ci(g("teacher_sampled"), g("teacher_sampled_lo"),
                                                    g("teacher_sampled_hi")), f"{int(k)} per prompt" if k else None),
            "student_sampled": fmt.pct_ci(g("student_sampled"), g("student_sampled_lo"), g("student_sampled_hi")),
            "status:html": _badge(str(r["status"])),
            "status": str(r["status"]),
            "evidence": fmt.text(g("evidence")),
            "name": fmt.text(g("name")), "bias_type": fmt.text(g("bias_type")), "mode": fmt.text(g("mode")),
            "poison": fmt.DASH if inj is None else (f"{fmt.integer(inj)} ({fmt.pct(g('poison_rate'))})"
                                                    if g("poison_rate") is not None else fmt.integer(inj)),
            "date": fmt.text(g("date")).replace("T", " "), "models": fmt.text(g("models")),
            "methods": fmt.text(g("methods")),
            "open:html": f'<a href="{html.escape(link(r["run"]))}" target="_self">propagation</a>',
            "problems:html": _problems(g("problems")),
        })
    return out


def columns() -> list[tuple[str, str]]:
    keys = [(k if k in ("teacher_target", "student_sampled") else f"{k}:html", h) for k, h in KEY_COLUMNS]
    return [("run:html", "run")] + keys + OTHER_COLUMNS


@view("overview", title="Runs overview", scope="runs", order=10)
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

    f1, f2, f3, f4 = st.columns([2, 1, 1, 1.2])
    text = f1.text_input("filter (run folder or config name contains)", key="ov_filter")
    statuses = sorted(runs.status.unique())
    pick_status = f2.multiselect("status", statuses, key="ov_status")
    biases = sorted(b for b in runs.bias_type.dropna().unique())
    pick_bias = f3.multiselect("bias type", biases, key="ov_bias")
    sort = f4.selectbox("sort by", list(SORTS), key="ov_sort")
    t = runs
    if text:
        t = t[t.run.str.contains(text, case=False, regex=False) | t.name.astype(str).str.contains(
            text, case=False, regex=False)]
    if pick_status:
        t = t[t.status.isin(pick_status)]
    if pick_bias:
        t = t[t.bias_type.isin(pick_bias)]
    col, asc = SORTS[sort]
    if col != "date":
        t = t.sort_values(col, ascending=asc, na_position="last", kind="stable")
    table(overview_rows(t), columns(), max_height=640, data_table="runs-overview")
    st.caption(f"{len(t)} of {len(runs)} runs shown. Rates: share of the model's eval answers the detector marks "
               "biased, with 95% intervals (Wilson for greedy answers; sampled: K answers per prompt, the prompt as "
               "the unit). Student: the highest-rate student; amplification: student rate / teacher rate "
               "(\"undefined\" when the teacher's rate is 0). Evidence: \"single run\" — "
               f"{evidence.SINGLE}; \"replicate i of N\" — one replicate, pooled with the others in its sweep (the "
               "sweeps view). Click a run to open its propagation view.")
    bad = runs[runs.problems != ""]
    if not bad.empty:
        with st.expander(f"{len(bad)} run(s) with problems (half-written, failed or unreadable files)"):
            table(bad, [("run", "run"), ("status", "status"), ("problems", "problems")], wrap=("problems",))
