"""Dashboard: what a newcomer tripped over. The Compare view never compares a run with itself (it used to pick the one
complete run as both A and B and report identical configs and every delta +0.0), and an unknown ``?view=`` says so,
naming the valid views, before the overview opens."""

from __future__ import annotations

import shutil

from tests.test_dashboard import FIX, R16, R32, RUNNING, open_app, texts


def _runs(tmp_path, *rels):
    root = tmp_path / "runs"
    for rel in rels:
        shutil.copytree(FIX / rel, root / rel)
    return root


def test_compare_with_one_complete_run_says_so_and_never_picks_it_twice(monkeypatch, tmp_path):
    at = open_app(monkeypatch, "compare", runs_dir=_runs(tmp_path, R32, RUNNING))
    a, b = at.selectbox(key="cmp_a").value, at.selectbox(key="cmp_b").value
    assert a != b and b == R32 and a == RUNNING
    shown = texts(at)
    assert f"Only one run is complete (`{R32}`): metric deltas need two complete runs" in shown
    assert "configs are identical" not in shown and not at.error


def test_compare_refuses_the_same_run_as_a_and_b(monkeypatch, tmp_path):
    at = open_app(monkeypatch, "compare", runs_dir=_runs(tmp_path, R32, R16))
    assert at.selectbox(key="cmp_a").value != at.selectbox(key="cmp_b").value
    assert "Only one run is complete" not in texts(at)  # two complete runs: compared as before
    at.selectbox(key="cmp_a").set_value(R32)
    at.selectbox(key="cmp_b").set_value(R32).run()
    shown = texts(at)
    assert f"Run A and run B are the same run (`{R32}`): pick two different runs" in shown
    assert "configs are identical" not in shown and "Metric deltas" not in shown


def test_compare_with_a_single_run(monkeypatch, tmp_path):
    at = open_app(monkeypatch, "compare", runs_dir=_runs(tmp_path, R32))
    assert f"Only one run in this folder (`{R32}`): comparing needs two." in texts(at)
    assert not at.selectbox


def test_unknown_view_in_the_url_names_the_valid_views(monkeypatch):
    at = open_app(monkeypatch, "compar")
    assert at.radio(key="view").value == "overview"
    warning = " ".join(w.value for w in at.warning)
    assert "Unknown view `compar` in the URL (`?view=`); did you mean `compare`?" in warning
    assert ("Valid views: overview, propagation, sweeps, samples, defenses, defense_tradeoff, cascade, audit, "
            "compare.") in warning
    at = open_app(monkeypatch, "samples", R32)
    assert not any("Unknown view" in w.value for w in at.warning)
