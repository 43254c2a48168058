"""Streamlit dashboard over a runs folder (read-only).

    streamlit run dashboard/app.py -- RUNS_DIR        or        python -m dashboard RUNS_DIR

The folder comes from the command line, else $POISON_RUNS_DIR, else ./runs; the sidebar can change it. Views:
runs overview, propagation, sweeps, sample browser, defenses, cascade depth, model audit, compare two runs.
``?view=...&run=...`` in the URL opens a view on a run.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `streamlit run dashboard/app.py` puts dashboard/ first on sys.path, not the repo
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)

import streamlit as st  # noqa: E402

from dashboard import views  # noqa: E402

log = logging.getLogger("dashboard")


def runs_dir_default() -> str:
    argv = sys.argv
    if len(argv) > 1 and Path(argv[0]).name == "app.py" and argv[1].strip():  # streamlit run app.py -- DIR
        return argv[1]
    return os.environ.get("POISON_RUNS_DIR") or "runs"


def unknown_view(asked: str) -> str:
    """The message for a ``?view=`` that names no view (the overview opens instead)."""
    close = difflib.get_close_matches(asked, list(views.VIEWS), n=1)
    shown = asked.replace("`", "")[:60]  # the URL's text, shown as code: no backticks to break out of it, kept short
    return (f"Unknown view `{shown}` in the URL (`?view=`)" + (f"; did you mean `{close[0]}`?" if close else ".")
            + f" Valid views: {', '.join(views.VIEWS)}. Showing the runs overview.")


def main():
    st.set_page_config(page_title="cascade-poison runs", page_icon=":material/science:", layout="wide")
    sb = st.sidebar
    sb.title("cascade-poison")
    if "runs_dir" not in st.session_state:
        st.session_state["runs_dir"] = runs_dir_default()
    runs_dir = sb.text_input("runs folder", key="runs_dir").strip() or "runs"
    qp = st.query_params
    if st.session_state.get("view") not in views.VIEWS:  # first load: the URL's ?view=, else the overview
        asked = qp.get("view")
        st.session_state["view"] = asked if asked in views.VIEWS else "overview"
        if asked and asked not in views.VIEWS:
            st.warning(unknown_view(asked))
    view = sb.radio("view", list(views.VIEWS), format_func=views.VIEWS.get, key="view")
    qp["view"] = view
    if not Path(runs_dir).is_dir():
        st.warning(f"Runs folder `{runs_dir}` not found. Give a folder in the sidebar, as "
                   "`python -m dashboard RUNS_DIR`, or in $POISON_RUNS_DIR.")
        return
    index = views.load_index(runs_dir)
    runs = index["runs"]
    sb.caption(f"{len(runs)} run(s), {len(index['sweeps'])} sweep(s) in `{Path(runs_dir).resolve()}`")

    row = None
    if view in views.RUN_VIEWS:
        if runs.empty:
            st.info(f"No run directories found in `{runs_dir}`.")
            return
        rels = list(runs.run)
        if st.session_state.get("run") not in rels:  # first load or folder changed: ?run=, else the newest
            st.session_state["run"] = qp.get("run") if qp.get("run") in rels else views.default_run(runs)
        rel = sb.selectbox("run", rels, key="run", format_func=views.run_label(runs))
        qp["run"] = rel
        row = runs[runs.run == rel].iloc[0]
        if row["status"] != "complete":
            sb.caption(f"status: {row['status']}")

    try:
        if view == "overview":
            views.view_overview(index)
        elif view == "sweeps":
            views.view_sweeps(index)
        elif view == "compare":
            views.view_compare(index)
        elif view == "propagation":
            views.view_propagation(index, row)
        elif view == "samples":
            views.view_samples(index, row)
        elif view == "defenses":
            views.view_defenses(index, row)
        elif view == "cascade":
            views.view_cascade(index, row)
        elif view == "audit":
            views.view_audit(index, row)
    except Exception as e:  # a malformed run must not take the app down; say what failed and carry on
        log.exception("view %s failed", view)
        what = f" for run `{row['run']}`" if row is not None else ""
        st.error(f"The {views.VIEWS.get(view, view)} view could not be drawn{what}: {type(e).__name__}: {e}")


main()
