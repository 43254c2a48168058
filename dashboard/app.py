"""Streamlit dashboard over a runs folder (read-only).

    streamlit run dashboard/app.py -- RUNS_DIR        or        python -m dashboard RUNS_DIR

The folder comes from the command line, else $POISON_RUNS_DIR, else ./runs; the sidebar can change it. The views
are those registered with ``dashboard.registry.view`` (one module each in ``dashboard/views/``, and any a package
adds through the ``cascade_poison.views`` entry points), in their sidebar order; the app looks the chosen one up and
draws it. ``?view=...&run=...`` in the URL opens a view on a run.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # `streamlit run dashboard/app.py` puts dashboard/ first on sys.path, not the repo
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)

import streamlit as st  # noqa: E402

from dashboard import registry, views  # noqa: E402

log = logging.getLogger("dashboard")


def runs_dir_default() -> str:
    argv = sys.argv
    if len(argv) > 1 and Path(argv[0]).name == "app.py" and argv[1].strip():  # streamlit run app.py -- DIR
        return argv[1]
    return os.environ.get("POISON_RUNS_DIR") or "runs"


def unknown_view(asked: str) -> str:
    """The message for a ``?view=`` that names no view (the overview opens instead)."""
    close = registry.closest(asked)
    shown = asked.replace("`", "")[:60]  # the URL's text, shown as code: no backticks to break out of it, kept short
    return (f"Unknown view `{shown}` in the URL (`?view=`)" + (f"; did you mean `{close}`?" if close else ".")
            + f" Valid views: {', '.join(registry.names())}. Showing the runs overview.")


def main():
    st.set_page_config(page_title="cascade-poison runs", page_icon=":material/science:", layout="wide")
    sb = st.sidebar
    sb.title("cascade-poison")
    if "runs_dir" not in st.session_state:
        st.session_state["runs_dir"] = runs_dir_default()
    runs_dir = sb.text_input("runs folder", key="runs_dir").strip() or "runs"
    qp = st.query_params
    known = registry.views()
    for problem in registry.load_errors():
        st.warning(f"A view package failed to load: {problem}")
    if st.session_state.get("view") not in known:  # first load: the URL's ?view=, else the overview
        asked = qp.get("view")
        st.session_state["view"] = asked if asked in known else "overview"
        if asked and asked not in known:
            st.warning(unknown_view(asked))
    name = sb.radio("view", list(known), format_func=lambda n: known[n].title, key="view")
    qp["view"] = name
    view = known[name]
    if not Path(runs_dir).is_dir():
        st.warning(f"Runs folder `{runs_dir}` not found. Give a folder in the sidebar, as "
                   "`python -m dashboard RUNS_DIR`, or in $POISON_RUNS_DIR.")
        return
    index = views.load_index(runs_dir)
    runs = index["runs"]
    sb.caption(f"{len(runs)} run(s), {len(index['sweeps'])} sweep(s) in `{Path(runs_dir).resolve()}`")

    row = None
    if view.scope == "run":
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
        view.draw(index, row)
    except Exception as e:  # a malformed run must not take the app down; say what failed and carry on
        log.exception("view %s failed", view.name)
        what = f" for run `{row['run']}`" if row is not None else ""
        st.error(f"The {view.title} view could not be drawn{what}: {type(e).__name__}: {e}")


main()
