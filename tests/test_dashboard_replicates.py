"""The sweeps view's replicates over seeds (sweep.json ``replicates``, written by poison.replicates.pool_rows): per
sweep point without its seed the mean over seeds with its interval, each seed's own value around it, grouped by the
point's group label; checked against sweep.json and pooled again from the points' own metrics.json. The fixture sweep
(poison.count 0/16 x seeds 0/1/2) comes from tests/fixtures/make_dashboard_beyond.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashboard import fmt, sweepdata
from poison.ground.results import stats
from tests.test_dashboard import (
    DOSE,
    FIX,
    assert_no_none_or_nan,
    chart_data,
    charts,
    html_table,
    layers,
    open_app,
)
from tests.test_dashboard_beyond import (
    REPL,
    assert_chart_reads_its_data,
    copy_fixture,
    edit_json,
    metrics_of,
    sweep_of,
)


# ---------------------------------------------------------------------------------------------- replicates
def test_replicate_frames_pool_the_points_over_seeds():
    """sweep.json's replicates read back, and pooled again here from the points' own metrics.json (the bias rates
    of the three seeds of each point, poison.ground.results.stats.pool_replicates): the same numbers."""
    sj = sweep_of()
    pooled, seeds, problems = sweepdata.replicate_frames(sj)
    assert problems == [] and len(pooled) == len(sj["replicates"]) == 12 and len(seeds) == 36
    assert set(pooled.group) == {"count=0", "count=16"} and set(seeds.seed) == {"0", "1", "2"}
    runs = {r["point"]["poison.count"]: [] for r in sj["runs"]}
    for r in sj["runs"]:
        runs[r["point"]["poison.count"]].append(metrics_of(f"{REPL}/{Path(r['run_dir']).name}"))
    for p in pooled.to_dict("records"):
        ms = runs[int(p["group"].split("=")[1])]
        rates = [next(x for x in m["bias_rates"] if x["model"] == p["model"] and x["split"] == p["split"])
                 for m in ms]
        want = stats.pool_replicates([x["rate"] for x in rates], [x["ci_low"] for x in rates],
                                     [x["ci_high"] for x in rates])
        assert (p["pooled"], p["ci_low"], p["ci_high"], p["n"]) == pytest.approx(
            (want["pooled"], want["ci_low"], want["ci_high"], 3))
        mine = seeds[(seeds.group == p["group"]) & (seeds.model == p["model"]) & (seeds.split == p["split"])]
        assert list(mine.rate) == [x["rate"] for x in rates]
    assert sweepdata.has_seeds(sj) and not sweepdata.has_seeds(json.loads((FIX / DOSE / "sweep.json").read_text()))
    assert sweepdata.replicate_frames({"replicates": "x"})[2] == ["replicates is not a list"]


def test_view_sweeps_replicates(monkeypatch):
    sj = sweep_of()
    at = open_app(monkeypatch, "sweeps")
    assert "Replicates over seeds" not in [s.value for s in at.subheader]  # the dose sweep has no seeds
    at.selectbox(key="sw_source").set_value(("sweep", REPL)).run()
    assert not at.error and not at.exception and not at.warning
    assert "Replicates over seeds" in [s.value for s in at.subheader]
    spec, d = charts(at)[1], chart_data(at, 1)
    assert_chart_reads_its_data(at, 1)
    marks = [(ly["mark"]["type"], ly["mark"].get("filled")) for ly in layers(spec)]
    assert ("errorbar", None) in marks and ("point", True) in marks and ("point", False) in marks
    pooled, seeds = d[d.kind == "pooled over seeds"], d[d.kind == "one seed"]
    assert len(pooled) == 12 and len(seeds) == 36
    for r in sj["replicates"]:
        got = pooled[(pooled.group == r["group"]) & (pooled.model == r["model"]) & (pooled.split == r["split"])]
        assert (got.value.iloc[0], got.ci_low.iloc[0], got.ci_high.iloc[0]) == (r["pooled"], r["ci_low"],
                                                                                 r["ci_high"])
        mine = seeds[(seeds.group == r["group"]) & (seeds.model == r["model"]) & (seeds.split == r["split"])]
        assert sorted(mine.value) == sorted(p["rate"] for p in r["per_seed"])
    t = html_table(at, "replicates")
    r = next(x for x in sj["replicates"] if x["group"] == "count=16" and x["model"] == "teacher"
             and x["split"] == "target")
    cell = next(x for x in t["rows"] if x["group"] == "count=16" and x["model"] == "teacher" and x["split"] == "target")
    assert cell["pooled"] == fmt.pct_ci(r["pooled"], r["ci_low"], r["ci_high"])
    assert cell["seeds"] == ", ".join(f"seed {p['seed']}: {100 * p['rate']:.1f}%" for p in r["per_seed"])
    assert cell["sd"] == f"{100 * r['between_sd']:.1f}%" and cell["n"] == "3"
    assert_no_none_or_nan(at)
    at.multiselect(key="sw_models").set_value(["teacher"]).run()
    assert {x["model"] for x in html_table(at, "replicates")["rows"]} == {"teacher"}
    at.multiselect(key="sw_splits").set_value(["target"]).run()
    assert set(chart_data(at, 1).split) == {"target"}


def test_view_sweeps_replicates_malformed(monkeypatch, tmp_path):
    sd = copy_fixture(REPL, tmp_path)

    def edit(s):
        s["replicates"][0]["pooled"] = "abc"
        s["replicates"][1] = "x"
        s["replicates"][2]["per_seed"][0]["rate"] = "?"
    edit_json(sd / "sweep.json", edit)
    at = open_app(monkeypatch, "sweeps", runs_dir=tmp_path)
    assert at.selectbox(key="sw_source").value == ("sweep", REPL)
    assert not at.error and not at.exception
    w = [x.value for x in at.warning]
    assert len(w) == 1 and f"{REPL}/sweep.json" in w[0]
    assert 'replicates[0] (count=0, baseline, target): pooled: "abc" is not a number' in w[0]
    assert "replicates[1] is not an object (skipped)" in w[0]
    assert 'per_seed[0].rate: "?" is not a number' in w[0]
    assert len(html_table(at, "replicates")["rows"]) == 11
