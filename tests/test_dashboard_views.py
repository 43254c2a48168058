"""The dashboard's view registry (``dashboard.registry``): a view registered from anywhere (a test module here, a
package through the ``cascade_poison.views`` entry points) is in the sidebar in its order and draws; a view that
raises gets the error box and the others still draw; bad registrations are refused naming what is wrong. Every
registered view is drawn on fixture runs by tests/test_plugins.py (``test_view_draws``)."""

from __future__ import annotations

import sys

import pytest
import streamlit as st

from dashboard import registry
from poison.ground.core.errors import PluginError
from tests.conftest import REPO
from tests.test_dashboard import BROKEN, R32, open_app, texts

FIXTURE = REPO / "tests" / "fixtures" / "oot_view"
BUILTIN_ORDER = ["overview", "propagation", "sweeps", "samples", "defenses", "defense_tradeoff", "cascade",
                 "audit", "compare"]


@pytest.fixture
def own_views(monkeypatch):
    """Views a test registers live in a copy of the registry that is dropped after the test."""
    registry.load_views()
    monkeypatch.setattr(registry, "_views", dict(registry._views))
    monkeypatch.setattr(registry, "_load_errors", [])
    monkeypatch.setattr(registry, "_loaded", True)


def sidebar_views(at) -> list[str]:
    """The sidebar's views, by name (the radio shows their titles)."""
    by_title = {v.title: n for n, v in registry.views().items()}
    return [by_title[t] for t in at.radio(key="view").options]


def test_the_builtin_views_in_their_sidebar_order():
    assert registry.names()[:len(BUILTIN_ORDER)] == BUILTIN_ORDER
    assert registry.load_errors() == []
    assert {n: v.scope for n, v in registry.views().items() if v.scope == "runs"} == {
        "overview": "runs", "sweeps": "runs", "compare": "runs"}
    assert registry.get("samples").title == "Sample browser"
    with pytest.raises(PluginError, match=r"unknown view 'sampels' \(did you mean 'samples'\?\)"):
        registry.get("sampels")


def test_a_view_registered_in_a_test_module_is_in_the_sidebar_and_draws(own_views, monkeypatch):
    @registry.view("models_seen", title="Models seen", scope="run", order=45)
    def view_models_seen(index, row):
        """The models of the selected run's metrics.json."""
        st.header("Models seen")
        st.markdown(f"run `{row['run']}` of {len(index['runs'])}: {row['models']}")

    assert view_models_seen.view_info.description == "The models of the selected run's metrics.json."
    at = open_app(monkeypatch, "models_seen", R32)
    assert at.radio(key="view").value == "models_seen" and not at.error
    assert sidebar_views(at) == BUILTIN_ORDER[:4] + ["models_seen"] + BUILTIN_ORDER[4:]  # order 45: after samples
    assert at.selectbox(key="run").value == R32  # a view of one run gets the run picker
    assert f"run `{R32}` of" in texts(at) and "teacher" in texts(at)
    assert at.query_params["view"] == "models_seen"

    at = open_app(monkeypatch, "overview")  # and chosen in the sidebar, as a reader would
    at.radio(key="view").set_value("models_seen").run()
    assert not at.exception and "Models seen" in [h.value for h in at.header]


def test_a_view_of_the_folder_gets_no_run_picker(own_views, monkeypatch):
    @registry.view("folder_size", title="Folder size", scope="runs")
    def view_folder_size(index):
        st.markdown(f"{len(index['runs'])} runs, {len(index['sweeps'])} sweeps")

    at = open_app(monkeypatch, "folder_size", R32)
    assert sidebar_views(at)[-1] == "folder_size"  # no order: after the built-ins
    assert not at.selectbox and not at.error
    assert "runs, " in texts(at) and " sweeps" in texts(at)


def test_a_view_that_raises_gets_the_error_box_and_the_others_draw(own_views, monkeypatch):
    @registry.view("broken_view", title="Broken view", scope="run")
    def view_broken(index, row):
        raise RuntimeError("boom")

    at = open_app(monkeypatch, "broken_view", R32)
    shown = [e.value for e in at.error]
    assert shown == [f"The Broken view view could not be drawn for run `{R32}`: RuntimeError: boom"]
    at.radio(key="view").set_value("propagation").run()
    assert not at.error and not at.exception


def test_a_view_package_is_found_through_its_entry_point(own_views, monkeypatch):
    """An out-of-tree package (a ``*.dist-info/entry_points.txt`` in ``cascade_poison.views``, as pip installs it)
    adds its view when the registry re-reads the entry points."""
    monkeypatch.syspath_prepend(str(FIXTURE))  # also invalidates importlib's caches, so metadata sees the dist-info
    monkeypatch.delitem(sys.modules, "oot_run_files", raising=False)
    assert "run_files" not in registry.names()
    monkeypatch.setattr(registry, "_loaded", False)
    assert "run_files" in registry.names() and registry.load_errors() == []
    assert registry.get("run_files").module == "oot_run_files"
    at = open_app(monkeypatch, "run_files", BROKEN)
    assert not at.error and "Run files" in [h.value for h in at.header]
    files = at.dataframe[0].value
    assert "metrics.json" in set(files.file) and (files.bytes > 0).all()
    sys.modules.pop("oot_run_files", None)


def test_a_broken_view_package_is_named_and_the_others_draw(own_views, monkeypatch, tmp_path):
    dist = tmp_path / "bad_views-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-views\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[cascade_poison.views]\nbad_views = bad_views_missing_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_loaded", False)
    assert registry.names()[:len(BUILTIN_ORDER)] == BUILTIN_ORDER
    assert registry.load_errors() == [
        "bad_views (bad_views_missing_module): ModuleNotFoundError: No module named 'bad_views_missing_module'"]
    at = open_app(monkeypatch, "overview")
    assert any("A view package failed to load: bad_views" in w.value for w in at.warning)
    assert not at.error and at.radio(key="view").value == "overview"


@pytest.mark.parametrize("kwargs,message", [
    ({"name": "Bad Name"}, r"view name 'Bad Name': lower-case letters"),
    ({"name": "x", "scope": "sweep"}, r"view 'x': scope must be one of run, runs, not 'sweep'"),
    ({"name": "x", "order": "1"}, r"view 'x': order must be an integer, not '1'"),
])
def test_bad_registrations_are_refused(own_views, kwargs, message):
    with pytest.raises(PluginError, match=message):
        registry.view(**kwargs)


def test_a_name_taken_by_another_module_is_refused(own_views):
    def draw(index):
        pass

    draw.__module__ = "someone_else"
    with pytest.raises(PluginError, match=r"view 'overview' is registered twice: by dashboard.views.overview and by "
                                          r"someone_else"):
        registry.view("overview", scope="runs")(draw)
    assert registry.get("overview").module == "dashboard.views.overview"
