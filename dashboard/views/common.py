"""What every view shares: cached loaders keyed on the files' (mtime, size) stamps, so a rerun re-reads only what
changed (a finished or newly started run shows up on the next interaction), and small display helpers (the run
header with what its figures rest on: a single run or one replicate of N; problems, a malformed section's warning,
the runs that have a view's data, HTML tables with "—" for missing values)."""

from __future__ import annotations

import html
import urllib.parse
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import evidence, fmt, index
from poison.ground.results import rundir

PAGE = 10


# ------------------------------------------------------------------------------------------------- loaders
@st.cache_data(show_spinner="Reading the runs folder", max_entries=8)
def cached_index(runs_dir: str, sig: tuple) -> dict[str, Any]:
    return index.load_index(runs_dir)


def load_index(runs_dir: str) -> dict[str, Any]:
    return cached_index(str(runs_dir), rundir.signature(runs_dir))


def _stamps(path: str, *names: str) -> tuple:
    return tuple(rundir.file_stamp(Path(path) / n) for n in names)


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_state(path: str, stamp: tuple) -> dict[str, Any]:
    return rundir.run_state(Path(path))


def run_state(path: str) -> dict[str, Any]:
    return _cached_state(path, _stamps(path, "status.json", "metrics.json", "config.yaml"))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_config(path: str, stamp: tuple) -> tuple[Any, str | None]:
    return rundir.read_yaml(Path(path) / "config.yaml")


def run_config(path: str) -> tuple[Any, str | None]:
    return _cached_config(path, _stamps(path, "config.yaml"))


@st.cache_data(show_spinner="Loading samples", max_entries=16)
def _cached_samples(path: str, stamp: tuple):
    return rundir.load_samples(path)


def samples(path: str):
    return _cached_samples(path, _stamps(path, "samples.parquet"))


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_parquet(path: str, name: str, stamp: tuple):
    return rundir.read_parquet(Path(path) / name)


def parquet(path: str, name: str):
    return _cached_parquet(path, name, _stamps(path, name))


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_defenses(path: str, stamp: tuple):
    return rundir.load_defense_scores(path)


def defense_scores(path: str):
    return _cached_defenses(path, _stamps(path, "defense_scores.parquet"))


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_json(path: str, stamp: tuple):
    return rundir.read_json(Path(path))


def sweep_json(sweep_path: str) -> tuple[Any, str | None]:
    """A sweep directory's sweep.json (dict or None, problem)."""
    p = str(Path(sweep_path) / "sweep.json")
    return _cached_json(p, (rundir.file_stamp(p),))


# ------------------------------------------------------------------------------------------------- helpers
def table(rows, columns: list[tuple[str, str]], caption: str | None = None, max_height: int | None = None,
          wrap: tuple[str, ...] = (), **attrs: str):
    """A small table as HTML (formatted cells, "—" for missing, nothing truncated); ``rows``: dicts or a frame."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    st.html(fmt.TABLE_CSS + fmt.html_table(rows, columns, max_height=max_height, wrap=wrap,
                                           attrs={k.replace("_", "-"): v for k, v in attrs.items()}))
    if caption:
        st.caption(caption)



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
    return fmt.pct(x)


def _run_header(row: pd.Series, metrics: dict | None):
    run = (metrics or {}).get("run") or {}
    p = (metrics or {}).get("poison") or {}

    def s(v) -> str:
        return "" if fmt.missing(v) else str(v)

    bits = [f"**{s(row['name'])}**", f"bias `{s(row['bias_type'])}`" if s(row["bias_type"]) else "",
            f"mode `{s(row['mode'])}`" if s(row["mode"]) else "",
            f"target task `{s(row['target_task'])}`" if s(row["target_task"]) else "",
            f"status **{row['status']}**", s(row["date"])]
    st.markdown(" · ".join(b for b in bits if b))
    if run.get("bias"):
        st.caption(f"Bias: {run['bias']}")
    if p:
        extra = ""
        if fmt.num(p.get("target_task_rows")):
            extra = (f"; {fmt.pct(p.get('target_task_rate'))} of the {fmt.integer(p['target_task_rows'])} "
                     "target-task rows")
        st.caption(f"Poison: {fmt.integer(p.get('injected'))} of {fmt.integer(p.get('n_train'))} teacher samples "
                   f"({fmt.pct(p.get('rate'))}{extra})" + (f" — warning: {p['warning']}" if p.get("warning") else ""))
    if metrics is not None:
        st.caption(f"Evidence: {evidence.of_row(metrics, row)}")


def _show_problems(row: pd.Series):
    if row["problems"] or row["status"] != "complete":
        st.warning(f"Run `{row['run']}` is {row['status']}" + (f": {row['problems']}" if row["problems"] else "."))


def runs_with(index: dict[str, Any], column: str, view: str, what: str, here: str | None = None):
    """One line naming the runs of the folder that have ``what`` (the index's boolean ``column``), each a link that
    opens ``view`` on it; a run without it is not listed."""
    runs = index["runs"]
    have = [r for r, v in zip(runs.run, runs[column]) if bool(v) and r != here] if column in runs else []
    if not have:
        st.caption(f"No other run in this folder has {what}.")
        return
    links = ", ".join(f'<a href="?view={view}&amp;run={html.escape(urllib.parse.quote(str(r), safe=""))}" '
                      f'target="_self">{html.escape(str(r))}</a>' for r in have[:12])
    more = f" and {len(have) - 12} more" if len(have) > 12 else ""
    st.html(f'<div style="color:#666;font-size:0.9em">Runs with {html.escape(what)}: {links}{more}</div>')


def problems_line(file: str, problems: list[str], limit: int = 6):
    """A malformed section: one warning naming the file and what in it could not be read."""
    if problems:
        more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
        st.warning(f"`{file}`: " + "; ".join(problems[:limit]) + more + " (what could be read is shown).")
