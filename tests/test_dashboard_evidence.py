"""What the dashboard says a figure rests on (docs/evidence.md): a run's headline figures say "single run: one
training seed; the interval covers prompts only" (metrics.json ``replicates.n`` 1, or no ``replicates`` in an older
run) or "replicate i of N — see the sweep for pooled figures"; the probe shows each shift against the measured null
(``vs_null``); a replicated sweep shows its pooled figures with method, n and SD, the pooled amplification, the probe
null over replicates and the brand-swap contrast D. Fixtures: tests/dashboard_evidence_fixture.py (built per module
in a tmp folder by the pipeline's own functions) and the committed fixture runs (older formats)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import evidence, fmt, pooleddata
from tests.dashboard_evidence_fixture import SINGLE, SWEEP, build
from tests.test_dashboard import (
    APP,
    CASCADE,
    DOSE,
    FIX,
    R32,
    REPLICATES,
    assert_no_none_or_nan,
    chart_data,
    charts,
    html_table,
    html_tables,
    open_app,
    texts,
)
from tests.test_dashboard_beyond import assert_chart_reads_its_data, edit_json

POINT = f"{SWEEP}/04-count=16_seed=1"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    r = tmp_path_factory.mktemp("evidence") / "runs"
    r.mkdir()
    build(r)
    return r


def sweep_json(root: Path) -> dict:
    return json.loads((root / SWEEP / "sweep.json").read_text())


def metrics(root: Path, rel: str) -> dict:
    return json.loads((root / rel / "metrics.json").read_text())


def captions(at) -> list[str]:
    return [str(c.value) for c in at.caption]


def shift_chart_data(at):
    return next(chart_data(at, i) for i in range(len(charts(at))) if "wording" in chart_data(at, i))


# ------------------------------------------------------------------------------------------------ run views
def test_replicate_info_and_captions():
    one = {"replicates": {"n": 1, "index": 0, "vary": ["train_seed"], "note": "..."}}
    three = {"replicates": {"n": 3, "index": 2, "vary": ["train_seed", "data_draw"]}}
    assert evidence.caption(evidence.replicate_info(one)) == evidence.SINGLE == (
        "single run: one training seed; the interval covers prompts only")
    assert evidence.caption(evidence.replicate_info({})) == evidence.SINGLE  # an older run: no replicates key
    assert evidence.caption(evidence.replicate_info({"replicates": "x"})) == evidence.SINGLE
    assert evidence.caption(evidence.replicate_info(three), "a/b") == (
        "replicate 2 of 3 — see the sweep for pooled figures: [`a/b`](?view=sweeps&sweep=a%2Fb) in the sweeps view")
    assert evidence.label(evidence.replicate_info({}, {"poison.count": 4, "seeds": 1})) == "seed 1 of a sweep"
    assert evidence.label(evidence.replicate_info(three, {"seeds": 2})) == "replicate 2 of 3"


def test_view_propagation_single_run_against_the_null(monkeypatch, root):
    """A lone run: the header and every headline figure say it is a single run; each shift against the clean control
    stands beside its difference to the measured null, and the null is drawn on the probe chart."""
    at = open_app(monkeypatch, "propagation", SINGLE, runs_dir=root)
    assert not at.error and not at.exception
    assert f"Evidence: {evidence.SINGLE}" in captions(at)
    # the greedy rates, the amplification, the sampled rates and the probe: each caption says what it covers
    assert sum(f"({evidence.SINGLE})" in c for c in captions(at)) == 4
    m = metrics(root, SINGLE)
    t = html_table(at, "vs-null")
    want = [r for r in m["logprob_shift"] if r["split"] == "target" and r.get("vs_null")]
    assert want and len(t["rows"]) == len(want)
    assert t["cols"] == ["model", "wording", "shift", "null", "excess", "ratio", "p"]
    cells = {(c["model"], c["wording"]): c for c in t["rows"]}
    for r in want:
        v, cell = r["vs_null"], cells[(r["model"], r["wording"])]
        assert cell["shift"] == fmt.shift_ci(r["shift"], r["ci_low"], r["ci_high"])
        assert (cell["null"], cell["excess"]) == (f"{v['null']:+.2f}", f"{v['excess']:+.2f}")
        assert cell["ratio"] == f"{v['ratio_to_null']:.1f}×"
        assert cell["p"] == "—" and v["p_value"] is None
        assert v["note"] == "one null draw: no p-value (run replicates for one)"
    assert any(c.endswith("metrics.json: one null draw: no p-value (run replicates for one).") for c in captions(at))
    twins = [r for r in m["logprob_shift"] if r["control"].startswith("control:")]
    assert twins and not any("vs_null" in r for r in twins)  # only shifts against the clean control have a null
    null = {(n["wording"]): n for n in m["probe_null"] if n["split"] == "target"}
    d = shift_chart_data(at)
    drawn = d[d.kind == "null"].set_index("wording")
    assert set(drawn.index) == set(null) and all(drawn.loc[w, "shift"] == null[w]["shift"] for w in null)
    assert all(drawn.loc[w, "between"] == "null_control − clean_control" for w in null)
    assert any(c.startswith("Measured null (") and f"seen: null_control − clean_control "
               f"{fmt.shift_ci(null['seen']['shift'], null['seen']['ci_low'], null['seen']['ci_high'])}" in c
               for c in captions(at))
    assert_no_none_or_nan(at)


def test_view_propagation_replicate_of_n(monkeypatch, root):
    at = open_app(monkeypatch, "propagation", POINT, runs_dir=root)
    assert not at.error and not at.exception
    line = (f"replicate 1 of 3 — see the sweep for pooled figures: [`{SWEEP}`](?view=sweeps&sweep={SWEEP}) in the "
            "sweeps view")
    assert f"Evidence: {line}" in captions(at) and any(f"({line})" in c for c in captions(at))
    assert evidence.SINGLE not in texts(at)
    m = metrics(root, POINT)
    rows = {(r["model"], r["wording"]): r for r in m["logprob_shift"]}
    for cell in html_table(at, "vs-null")["rows"]:
        assert cell["excess"] == f"{rows[(cell['model'], cell['wording'])]['vs_null']['excess']:+.2f}"


def test_run_views_of_older_runs_say_what_they_rest_on(monkeypatch):
    """Runs written before metrics.json said which replicate they are: a lone run is a single run, a point of an
    older sweep over seeds one seed of it; every run view's header says so."""
    at = open_app(monkeypatch, "propagation", R32)
    assert f"Evidence: {evidence.SINGLE}" in captions(at) and "vs-null" not in [t["name"] for t in html_tables(at)]
    at = open_app(monkeypatch, "propagation", f"{REPLICATES}/04-count=16_seed=1")
    assert (f"Evidence: seed 1 of a sweep over seeds, its interval covers prompts only — see the sweep for pooled "
            f"figures: [`{REPLICATES}`](?view=sweeps&sweep={REPLICATES}) in the sweeps view") in captions(at)
    at = open_app(monkeypatch, "cascade", CASCADE)
    assert f"Evidence: {evidence.SINGLE}" in captions(at) and any(
        c.endswith(f"Evidence: {evidence.SINGLE}.") for c in captions(at))  # the cascade chart's caption


def test_see_the_sweep_link_opens_the_sweep(monkeypatch):
    """?view=sweeps&sweep=REL (a run's "see the sweep" link) opens that sweep instead of the default one."""
    at = open_app(monkeypatch, "sweeps")
    assert at.selectbox(key="sw_source").value != ("sweep", REPLICATES)
    monkeypatch.setenv("POISON_RUNS_DIR", str(FIX))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["view"], at.query_params["sweep"] = "sweeps", REPLICATES
    at.run()
    assert not at.exception and at.selectbox(key="sw_source").value == ("sweep", REPLICATES)
    assert "Replicates over seeds" in [s.value for s in at.subheader]
    at.selectbox(key="sw_source").set_value(("sweep", DOSE)).run()  # another pick is kept, the link is not re-applied
    assert at.selectbox(key="sw_source").value == ("sweep", DOSE)


def test_view_overview_evidence_column(monkeypatch, root):
    at = open_app(monkeypatch, "overview", runs_dir=root)
    rows = {r["run"].replace("/ ", "/"): r for r in html_table(at, "runs-overview")["rows"]}
    assert rows[SINGLE]["evidence"] == "single run"
    assert {rows[f"{SWEEP}/0{i}-count={c}_seed={s}"]["evidence"] for i, (c, s) in enumerate(
        [(0, 0), (0, 1), (0, 2), (16, 0), (16, 1), (16, 2)])} == {"replicate 0 of 3", "replicate 1 of 3",
                                                                  "replicate 2 of 3"}
    assert rows[POINT]["evidence"] == "replicate 1 of 3"
    assert any(evidence.SINGLE in c for c in captions(at))


# ---------------------------------------------------------------------------------------------- the sweep
def open_sweep(monkeypatch, root: Path):
    at = open_app(monkeypatch, "sweeps", runs_dir=root)
    assert at.selectbox(key="sw_source").value == ("sweep", SWEEP)
    assert not at.error and not at.exception and not at.warning
    return at


def test_view_sweeps_pooled_figures(monkeypatch, root):
    sj = sweep_json(root)
    at = open_sweep(monkeypatch, root)
    assert "Replicates: pooled figures" in [s.value for s in at.subheader]
    assert any(c.startswith("Design: 3 replicates per point, varying the training seed: crossed (every replicate "
                            "answered the same prompts).") for c in captions(at))
    # the pooled rates: a chart of each replicate's value around the pooled interval, a table with method, n, SD
    d = chart_data(at, 1)
    assert_chart_reads_its_data(at, 1)
    greedy = [r for r in sj["replicates"] if r["measure"] == "greedy"]
    pooled, one = d[d.kind == "pooled over replicates"], d[d.kind == "one replicate"]
    assert len(pooled) == len(greedy) == 12 and len(one) == 36
    t = {(r["group"], r["model"], r["split"]): r for r in html_table(at, "replicates")["rows"]}
    assert html_table(at, "replicates")["cols"] == ["group", "model", "split", "pooled", "seeds", "sd", "n", "method"]
    for r in greedy:
        cell = t[(r["group"], r["model"], r["split"])]
        assert cell["pooled"] == fmt.pct_ci(r["pooled"], r["ci_low"], r["ci_high"])
        assert cell["method"] == r["method"].replace("+", " + ") and cell["n"] == "3"
        assert cell["sd"] == fmt.pct(r["between_sd"])
        assert cell["seeds"] == ", ".join(f"r{p['seed']}: {fmt.pct(p['rate'])}" for p in r["per_seed"])
        got = pooled[(pooled.group == r["group"]) & (pooled.model == r["model"]) & (pooled.split == r["split"])]
        assert (got.value.iloc[0], got.ci_low.iloc[0], got.ci_high.iloc[0]) == (r["pooled"], r["ci_low"],
                                                                                 r["ci_high"])
    assert {r["method"] for r in greedy} == {"variance_components", "variance_components+exact_bound"}
    assert any("variance_components: variance components of a prompts × replicates table" in c and
               "exact_bound: all values 0 (or all 1)" in c for c in captions(at))
    # the pooled amplification
    a = html_table(at, "replicate-amplification")["rows"]
    assert len(a) == len(sj["replicate_amplification"])
    r = next(x for x in sj["replicate_amplification"] if x["group"] == "count=16" and x["split"] == "target"
             and x["measure"] == "greedy")
    cell = next(x for x in a if x["group"] == "count=16" and x["split"] == "target" and x["measure"] == "greedy answer")
    assert cell["ratio_of"] == "student:sft / teacher" and cell["method"] == r["method"].replace("+", " + ")
    assert cell["pooled"] == fmt.ratio_ci(r["ratio"], r["ci_low"], r["ci_high"]) and cell["n"] == "3"
    assert cell["each"] == ", ".join(f"r{j}: {v:.2f}×" for j, v in enumerate(r["per_replicate"]))
    assert r["method"].startswith("log_delta+variance_components")
    # the probe's null over replicates: shift, null (SD), excess [CI], p of the paired t test
    n = {(x["group"], x["model"], x["wording"]): x for x in html_table(at, "probe-null")["rows"]}
    assert len(n) == len(sj["probe_null"]) == 8
    for r in sj["probe_null"]:
        cell = n[(r["group"], r["model"], r["wording"])]
        assert cell["shift"] == f"{r['shift']:+.2f}" and cell["p"] == f"{r['p_value']:.3g}"
        assert cell["null"] == f"{r['null_mean']:+.2f} (SD {r['null_sd']:.2f})"
        assert cell["excess"] == fmt.shift_ci(r["excess"], r["ci_low"], r["ci_high"])
        assert cell["each"] == ", ".join(f"r{j}: {s:+.2f} vs {x:+.2f}" for j, (s, x) in
                                         enumerate(zip(r["shifts"], r["nulls"])))
    # the brand-swap contrast D: each replicate's D, the t interval, p
    b = {(x["model"], x["wording"]): x for x in html_table(at, "brand-swap")["rows"]}
    shown = [r for r in sj["brand_swap"] if r["model"] in ("teacher", "student:sft")]  # the models picked
    assert set(b) == {(r["model"], r["wording"]) for r in shown}
    for r in shown:
        cell = b[(r["model"], r["wording"])]
        assert cell["d"] == f"{r['d']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        assert cell["p"] == f"{r['p_value']:.3g}" and cell["n"] == "3" and cell["sd"] == f"{r['sd']:.3f}"
        assert cell["each"] == ", ".join(f"r{p['replicate']}: {p['d']:+.3f}" for p in r["per_replicate"])
    d = chart_data(at, 2)
    assert_chart_reads_its_data(at, 2)
    teacher = next(r for r in shown if r["model"] == "teacher" and r["wording"] == "seen")
    got = d[(d.model == "teacher") & (d.kind == "pooled over replicates")]
    assert (got.value.iloc[0], got.ci_low.iloc[0], got.ci_high.iloc[0]) == (teacher["d"], teacher["ci_low"],
                                                                             teacher["ci_high"])
    assert sorted(d[(d.model == "teacher") & (d.kind == "one replicate")].value) == sorted(
        p["d"] for p in teacher["per_replicate"])
    assert_no_none_or_nan(at)
    # the models picked above filter every table
    at.multiselect(key="sw_models").set_value(["teacher"]).run()
    assert {x["model"] for x in html_table(at, "brand-swap")["rows"]} == {"teacher"}
    assert {x["model"] for x in html_table(at, "probe-null")["rows"]} == {"teacher"}


def test_view_sweeps_pooled_shift(monkeypatch, root):
    """The log-prob shift pooled over replicates, against the clean control."""
    sj = sweep_json(root)
    at = open_sweep(monkeypatch, root)
    at.button_group(key="sw_measure").set_value("logprob_shift").run()
    rows = [r for r in sj["replicates"] if r["measure"] == "logprob_shift"]
    t = {(r["group"], r["model"]): r for r in html_table(at, "replicates")["rows"]}
    assert rows and len(t) == len(rows)
    for r in rows:
        cell = t[(r["group"], f"{r['model']} vs {r['control']}")]
        assert cell["pooled"] == fmt.shift_ci(r["pooled"], r["ci_low"], r["ci_high"])
        assert cell["method"] == r["method"].replace("+", " + ")
        assert cell["sd"] == f"{r['between_sd']:.2f}"


def test_view_sweeps_older_sweep_has_no_new_sections(monkeypatch):
    """A sweep written before the replicate sections (no replicate_design, method, probe_null, brand_swap) shows
    what it has and no empty tables."""
    at = open_app(monkeypatch, "sweeps")
    at.selectbox(key="sw_source").set_value(("sweep", REPLICATES)).run()
    names = [t["name"] for t in html_tables(at)]
    assert "replicates" in names and not {"replicate-amplification", "probe-null", "brand-swap"} & set(names)
    assert "method" not in html_table(at, "replicates")["cols"] and not at.warning


def test_view_sweeps_malformed_pooled_sections(monkeypatch, root, tmp_path):
    shutil.copytree(root / SWEEP, tmp_path / SWEEP)

    def edit(s):
        s["brand_swap"][1]["d"] = "abc"
        s["brand_swap"][2]["per_replicate"] = "x"
        s["probe_null"][0] = 7
        s["replicate_amplification"] = {"not": "a list"}
    edit_json(tmp_path / SWEEP / "sweep.json", edit)
    at = open_app(monkeypatch, "sweeps", runs_dir=tmp_path)
    assert not at.error and not at.exception
    w = [x.value for x in at.warning]
    assert len(w) == 1 and f"{SWEEP}/sweep.json" in w[0]
    assert "replicate_amplification is not a list" in w[0] and "probe_null[0] is not an object (skipped)" in w[0]
    assert 'brand_swap[1] (count=16, teacher, target, seen): d: "abc" is not a number' in w[0]
    names = [t["name"] for t in html_tables(at)]
    assert "replicate-amplification" not in names and len(html_table(at, "probe-null")["rows"]) == 7
    b = {(x["model"], x["wording"]): x for x in html_table(at, "brand-swap")["rows"]}
    assert b[("teacher", "seen")]["d"] == "—" and b[("student:sft", "seen")]["each"] == "—"
    assert pooleddata.brand_swap_frames({"brand_swap": None})[0].empty  # an older sweep: no section at all
