"""Dashboard views of the experiments beyond the paper, over fixture run directories in the pipeline's own format
(tests/fixtures/make_dashboard_beyond.py builds them with poison.report_extras.cascade_section / audit_section,
poison.sweep.sweep_rows / audit_pool and poison.replicates.pool_rows):

- the cascade view (metrics.json ``cascade``): the bias against generation depth with interval bands, a table of
  every generation;
- the model-audit view (metrics.json ``audit`` / ``audit_detector``, sweep.json ``audit``): scores per model, the
  audit as a detector;
- the sweeps view's replicates (sweep.json ``replicates``): tests/test_dashboard_replicates.py.

Each view is read back from what it draws (tables as HTML, chart data as Arrow) and checked against the JSON the
pipeline wrote; a missing section gives one line, a malformed one a warning naming the file and no crash.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path

import pandas as pd
import pytest

from dashboard import auditdata, cascadedata
from dashboard import index as run_index
from poison.ground.results import stats
from tests.test_dashboard import (
    BROKEN,
    CASCADE,
    FIX,
    R32,
    REPLICATES,
    _tree_digest,
    assert_no_none_or_nan,
    chart_data,
    charts,
    html_table,
    layers,
    open_app,
    texts,
)

REPL = REPLICATES
POINT16 = f"{REPL}/03-count=16_seed=0"
POINT0 = f"{REPL}/00-count=0_seed=0"


def encoded_fields(spec) -> set[str]:
    """Every data field a Vega-Lite spec encodes (channels, tooltips, facets), at any depth."""
    out: set[str] = set()
    if isinstance(spec, dict):
        if isinstance(spec.get("field"), str):
            out.add(spec["field"])
        for v in spec.values():
            out |= encoded_fields(v)
    elif isinstance(spec, list):
        for v in spec:
            out |= encoded_fields(v)
    return out


def assert_chart_reads_its_data(at, i: int):
    """The i-th chart encodes only fields its data has (a missing one draws nothing, silently)."""
    spec = charts(at)[i]
    spec.pop("datasets", None)
    missing = encoded_fields(spec) - set(chart_data(at, i).columns)
    assert not missing, missing


def metrics_of(rel: str, root: Path = FIX) -> dict:
    return json.loads((root / rel / "metrics.json").read_text())


def sweep_of(root: Path = FIX) -> dict:
    return json.loads((root / REPL / "sweep.json").read_text())


def copy_fixture(rel: str, tmp_path: Path) -> Path:
    dst = tmp_path / rel
    shutil.copytree(FIX / rel, dst)
    return dst


def edit_json(path: Path, edit) -> dict:
    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))
    return d


# ------------------------------------------------------------------------------------------------- cascade
def test_cascade_frames_read_the_pipeline_section():
    m = metrics_of(CASCADE)
    c = cascadedata.read_cascade(m)
    assert c["present"] and c["problems"] == [] and c["via"] == "sft"
    assert c["chain"] == m["cascade"]["chain"] == ["teacher", "student:sft", "gen2:student:sft", "gen3:student:sft"]
    t = c["table"]
    assert len(t) == len(m["cascade"]["rows"]) == 8 and list(t.generation.unique()) == [0, 1, 2, 3]
    sampled = {(r["model"], r["split"]): r for r in m["sampled_rate"]}
    for r in m["cascade"]["rows"]:
        got = t[(t.generation == r["generation"]) & (t.model == r["model"]) & (t.split == r["split"])].iloc[0]
        g = r["greedy"]
        assert (got.rate, got.ci_low, got.ci_high, got.biased, got.n) == (g["rate"], g["ci_low"], g["ci_high"],
                                                                          g["biased"], g["n"])
        assert (got.ci_low, got.ci_high) == pytest.approx(stats.wilson_interval(g["biased"], g["n"]))
        assert got.ratio == pytest.approx(r["greedy_vs_teacher"]["ratio"], nan_ok=True) or (
            r["greedy_vs_teacher"]["ratio"] is None and pd.isna(got.ratio))
        assert got.sampled == r["sampled"]["rate"]
        s = sampled[(r["model"], r["split"])]  # the interval comes from sampled_rate, whose rate is the same
        assert (got.sampled_lo, got.sampled_hi) == (s["ci_low"], s["ci_high"])
        assert got.sampled_ratio == r["sampled_vs_teacher"]["ratio"]
    sh = c["shifts"]
    twin = sh[(sh.model == "gen2:student:sft") & (sh.split == "target") & (sh.wording == "seen")
              & (sh.against == "vs its clean twin")].iloc[0]
    row = next(r for r in m["cascade"]["rows"] if r["model"] == "gen2:student:sft" and r["split"] == "target")
    assert (twin["shift"], twin.ci_low, twin.ci_high) == tuple(row["shift_seen_vs_twin"].values())
    assert not cascadedata.present(metrics_of(R32)) and not cascadedata.present(metrics_of(POINT0))  # no key / {}


def test_view_cascade(monkeypatch):
    """The biased rate of every generation (greedy and sampled) as lines with interval bands over generation depth,
    the table of every generation against the original teacher; the probe's shift against the twin on request."""
    m = metrics_of(CASCADE)
    rows = m["cascade"]["rows"]
    at = open_app(monkeypatch, "cascade", CASCADE)
    assert not at.error and not at.warning
    spec = charts(at)[0]
    assert_chart_reads_its_data(at, 0)
    assert {ly["mark"]["type"] for ly in layers(spec)} == {"area", "line", "point"}
    area = next(ly for ly in layers(spec) if ly["mark"]["type"] == "area")
    assert area["encoding"]["y"]["field"] == "lo" and area["encoding"]["y2"]["field"] == "hi"
    x = next(ly for ly in layers(spec) if ly["mark"]["type"] == "line")["encoding"]["x"]
    assert x["field"] == "generation" and x["axis"]["values"] == [0, 1, 2, 3]
    d = chart_data(at)
    assert set(d.series) == {"greedy answer", "sampled answers"} and len(d) == 2 * len(rows)
    for r in rows:
        g = d[(d.generation == r["generation"]) & (d.split == r["split"]) & (d.series == "greedy answer")].iloc[0]
        assert (g.value, g.lo, g.hi) == (r["greedy"]["rate"], r["greedy"]["ci_low"], r["greedy"]["ci_high"])
        s = d[(d.generation == r["generation"]) & (d.split == r["split"]) & (d.series == "sampled answers")].iloc[0]
        assert s.value == r["sampled"]["rate"] and s.banded
    assert "Bands: 95% intervals" in texts(at) and "teacher → student:sft → gen2:student:sft" in texts(at)
    t = html_table(at, "cascade-generations")
    assert [(r["generation"], r["model"], r["split"]) for r in t["rows"]] == [
        (str(r["generation"]), r["model"], r["split"]) for r in sorted(
            rows, key=lambda r: (r["generation"], r["split"] != "target"))]
    for r in rows:
        cell = next(x for x in t["rows"] if x["model"] == r["model"] and x["split"] == r["split"])
        g, gr = r["greedy"], r["greedy_vs_teacher"]
        assert cell["greedy"] == f"{100 * g['rate']:.1f}% [{100 * g['ci_low']:.1f}, {100 * g['ci_high']:.1f}]"
        assert cell["kn"] == f"{g['biased']} / {g['n']}"
        assert cell["ratio"] == ("undefined" if gr["ratio"] is None else
                                 f"{gr['ratio']:.2f}× [{gr['ci_low']:.2f}, {gr['ci_high']:.2f}]")
        sh = r.get("shift_seen_vs_twin")
        assert cell["shift_twin"] == (f"{sh['shift']:+.2f} [{sh['ci_low']:+.2f}, {sh['ci_high']:+.2f}]" if sh
                                      else "—")
    teacher = next(x for x in t["rows"] if x["model"] == "teacher" and x["split"] == "target")
    assert teacher["shift_twin"] == "—" and teacher["ratio"].startswith("1.00×")  # no twin; itself
    util = html_table(at, "cascade-utility")["rows"]  # utility is per model: one row per generation
    assert [(u["generation"], u["model"]) for u in util] == [(str(g), n) for g, n in enumerate(m["cascade"]["chain"])]
    for u, r in zip(util, [next(r for r in rows if r["model"] == n) for n in m["cascade"]["chain"]]):
        assert u["utility"] == "; ".join(f"{x['task']} {x['metric']} {x['value']:.2f} [{x['ci_low']:.2f}, "
                                         f"{x['ci_high']:.2f}]" for x in r["utility"])
    assert_no_none_or_nan(at)
    at.button_group(key="cas_measure").set_value("shift").run()
    spec, d = charts(at)[0], chart_data(at)
    assert_chart_reads_its_data(at, 0)
    assert any(ly["mark"]["type"] == "rule" and ly["encoding"]["y"] == {"datum": 0} for ly in layers(spec))
    assert set(d.series) == {"vs its clean twin", "vs the clean control"}
    for r in rows:
        for key, series in (("shift_seen_vs_twin", "vs its clean twin"),
                            ("shift_seen_vs_clean_control", "vs the clean control")):
            got = d[(d.model == r["model"]) & (d.split == r["split"]) & (d.series == series)]
            if key not in r:
                assert got.empty
                continue
            assert (got.value.iloc[0], got.lo.iloc[0], got.hi.iloc[0]) == tuple(r[key].values())
    assert not at.error and not at.exception


@pytest.mark.parametrize("run", [R32, POINT0])
def test_view_cascade_missing_section(monkeypatch, run):
    """A run without a cascade (no key; {}): one line saying so, no chart, and the runs that have one listed."""
    idx = run_index.load_index(FIX)["runs"].set_index("run")
    assert list(idx[idx.has_cascade].index) == [CASCADE]
    assert not idx.loc[run, "has_cascade"]
    at = open_app(monkeypatch, "cascade", run)
    assert not at.error and not at.warning and not charts(at)
    assert [i.value for i in at.info] == [("No cascade in this run: its metrics.json has no cascade section (runs "
                                           "with cascade.generations > 1 write one).")]
    listed = [h.value for h in at.get("html") if "Runs with a cascade" in h.value]
    assert len(listed) == 1 and f"?view=cascade&amp;run={CASCADE}" in listed[0] and run not in listed[0]


def test_view_cascade_malformed_section(monkeypatch, tmp_path):
    """A non-numeric rate, an entry that is no object, a generation that is no number: a warning naming the file and
    each place; the rest is drawn, the unreadable value shown as '—'."""
    rd = copy_fixture(CASCADE, tmp_path)

    def edit(m):
        rows = m["cascade"]["rows"]
        rows[0]["greedy"]["rate"] = "abc"
        rows[3] = 7
        rows[4]["generation"] = "two"
    m = edit_json(rd / "metrics.json", edit)
    at = open_app(monkeypatch, "cascade", CASCADE, runs_dir=tmp_path)
    assert not at.error and not at.exception
    w = [x.value for x in at.warning]
    assert len(w) == 1 and f"{CASCADE}/metrics.json" in w[0]
    assert 'cascade.rows[0] (teacher, target): greedy.rate: "abc" is not a number' in w[0]
    assert "cascade.rows[3] is not an object (skipped)" in w[0]
    assert 'cascade.rows[4]: generation: "two" is not a number' in w[0]
    t = html_table(at, "cascade-generations")
    assert len(t["rows"]) == len(m["cascade"]["rows"]) - 2
    teacher = next(x for x in t["rows"] if x["model"] == "teacher" and x["split"] == "target")
    g = m["cascade"]["rows"][0]["greedy"]
    assert teacher["greedy"] == "—" and teacher["kn"] == f"{g['biased']} / {g['n']}"
    d = chart_data(at)
    assert d[(d.generation == 0) & (d.split == "target") & (d.series == "greedy answer")].empty
    # a section that is no object at all: the warning, nothing else
    edit_json(rd / "metrics.json", lambda m: m.update(cascade="garbage"))
    at = open_app(monkeypatch, "cascade", CASCADE, runs_dir=tmp_path)
    assert not at.error and not at.exception and not charts(at)
    assert [x.value for x in at.warning] == [(f"`{CASCADE}/metrics.json`: cascade is not an object (what could be "
                                              "read is shown).")]


# --------------------------------------------------------------------------------------------------- audit
def test_audit_frames_and_detector_figures():
    sj = sweep_of()
    a = auditdata.read_audit(sj["audit"], sj["audit_detector"])
    assert a["present"] and a["problems"] == []
    rows = a["rows"]
    assert len(rows) == len(sj["audit"]) == 12 and list(rows.score) == [r["score"] for r in sj["audit"]]
    assert list(rows.label) == ["poisoned" if r["poisoned"] else "clean" for r in sj["audit"]]
    assert rows.who.iloc[0] == "count=0_seed=0 · teacher"
    d = sj["audit_detector"][0]
    assert auditdata.auroc(rows) == pytest.approx(d["auroc"])  # recomputed from the scores = what the run recorded
    assert auditdata.hits_text(rows) == f"{d['hits']} / {d['n_poisoned']}"
    thr = auditdata.default_threshold(rows)
    assert thr == max(r["score"] for r in sj["audit"] if not r["poisoned"])
    st = auditdata.at_threshold(rows, thr)
    flagged = [r for r in sj["audit"] if r["score"] > thr]
    assert st["fpr"] == 0 and st["tp"] == sum(r["poisoned"] for r in flagged) == 5 and st["tpr"] == pytest.approx(5 / 6)
    # one point's own audit: poisoned models only, so no AUROC
    m = metrics_of(POINT16)
    one = auditdata.read_audit(m["audit"], m["audit_detector"])
    assert len(one["rows"]) == 2 and auditdata.auroc(one["rows"]) is None and m["audit_detector"][0]["auroc"] is None
    assert not auditdata.read_audit(metrics_of(CASCADE)["audit"])["present"]  # []
    # an AUROC interval and an operating point, where a detector row records them, are shown as recorded
    det = auditdata.read_audit(sj["audit"], [{**d, "auroc_ci_low": 0.8, "auroc_ci_high": 1.0, "threshold": 2.5,
                                              "tpr": 5 / 6, "fpr": 0.0}])["detector"]
    assert auditdata.detector_rows(det, rows) == [{
        "audit": "logit_shift", "n": "12", "n_poisoned": "6", "auroc": f"{d['auroc']:.3f} [0.80, 1.00]",
        "recomputed": f"{d['auroc']:.3f}", "hits": "5 (83.3%)", "threshold": "2.50", "tpr": "83.3%", "fpr": "0.0%"}]


def test_view_audit_sweep_pool_and_run(monkeypatch):
    """A sweep point: the pool of the sweep's models by default (scores per model, AUROC, TPR/FPR at the threshold),
    the run's own two models on request."""
    sj = sweep_of()
    d = sj["audit_detector"][0]
    at = open_app(monkeypatch, "audit", POINT16)
    assert not at.error and not at.warning
    assert at.button_group(key="au_source").value == "sweep"
    metric = {x.label: x.value for x in at.metric}
    assert metric["AUROC (poisoned vs clean models)"] == f"{d['auroc']:.3f}"
    assert metric["TPR (poisoned models flagged)"] == "83.3%" and metric["FPR (clean models flagged)"] == "0.0%"
    assert metric["injected content in top 10"] == "5 / 6"
    assert_chart_reads_its_data(at, 0)
    d_all = chart_data(at)
    bars, rule = d_all[d_all.who.notna()], d_all[d_all.who.isna()]  # the bars' rows and the threshold rule's
    assert list(rule.t) == [max(r["score"] for r in sj["audit"] if not r["poisoned"])]
    assert sorted(bars.score) == sorted(r["score"] for r in sj["audit"]) and set(bars.label) == {"poisoned", "clean"}
    assert any(ly["mark"]["type"] == "rule" for ly in layers(charts(at)[0]))
    t = html_table(at, "audit-models")
    assert len(t["rows"]) == 12 and [r["score"] for r in t["rows"]] == [
        f"{s:.2f}" for s in sorted((r["score"] for r in sj["audit"]), reverse=True)]
    weak = next(r for r in t["rows"] if r["point"] == "count=16_seed=2" and r["model"] == "student:sft")
    assert (weak["label"], weak["hit"], weak["flagged"]) == ("poisoned", "no", "no")  # below the clean models
    top = next(r for r in t["rows"] if r["point"] == "count=16_seed=0" and r["model"] == "teacher")
    assert top["hit"] == "yes" and top["top"].startswith("'vitaboost plus' ") and top["flagged"] == "yes"
    det = html_table(at, "audit-detector")["rows"]
    assert det == [{"audit": "logit_shift", "n": "12", "n_poisoned": "6", "auroc": f"{d['auroc']:.3f}",
                    "recomputed": f"{d['auroc']:.3f}", "hits": "5 (83.3%)", "threshold": "—", "tpr": "—",
                    "fpr": "—"}]
    assert_no_none_or_nan(at)
    slider = at.slider[0]
    slider.set_value(slider.min).run()
    metric = {x.label: x.value for x in at.metric}
    assert metric["TPR (poisoned models flagged)"] == "100.0%" and metric["FPR (clean models flagged)"] == "100.0%"
    at.button_group(key="au_source").set_value("run").run()
    assert not at.error and not at.exception
    m = metrics_of(POINT16)
    t = html_table(at, "audit-models")
    assert [r["model"] for r in t["rows"]] == [r["model"] for r in sorted(m["audit"], key=lambda r: -r["score"])]
    assert "point" not in t["cols"]
    metric = {x.label: x.value for x in at.metric}
    assert metric["AUROC (poisoned vs clean models)"] == "—" and metric["FPR (clean models flagged)"] == "—"
    assert html_table(at, "audit-detector")["rows"][0]["auroc"] == "—"


def test_view_audit_missing_section(monkeypatch):
    idx = run_index.load_index(FIX)["runs"].set_index("run")
    assert set(idx[idx.has_audit].index) == {r for r in idx.index if r.startswith(f"{REPL}/")}
    for run in (CASCADE, R32):
        at = open_app(monkeypatch, "audit", run)
        assert not at.error and not at.warning and not charts(at) and not at.metric
        assert [i.value for i in at.info] == [("No model audit in this run: its metrics.json has no audit section "
                                               "(runs with audit.audits write one).")]
        listed = next(h.value for h in at.get("html") if "Runs with a model audit" in h.value)
        assert "?view=audit&amp;run=" + urllib.parse.quote(POINT0, safe="") in listed


def test_view_audit_malformed_section(monkeypatch, tmp_path):
    sd = copy_fixture(REPL, tmp_path)

    def edit(m):
        m["audit"][0]["score"] = "high"
        m["audit"][1]["poisoned"] = "maybe"
        m["audit"].append(5)
        m["audit_detector"][0]["hits"] = "x"
    edit_json(sd / "03-count=16_seed=0" / "metrics.json", edit)
    edit_json(sd / "sweep.json", lambda s: s["audit"][2].update(score=[1]))
    at = open_app(monkeypatch, "audit", POINT16, runs_dir=tmp_path)
    assert not at.error and not at.exception
    w = [x.value for x in at.warning]
    assert len(w) == 1 and f"{REPL}/sweep.json" in w[0] and "audit[2] (teacher): score: [1] is not a number" in w[0]
    assert len(html_table(at, "audit-models")["rows"]) == 12
    at.button_group(key="au_source").set_value("run").run()
    assert not at.error and not at.exception
    w = [x.value for x in at.warning]
    assert len(w) == 1 and f"{POINT16}/metrics.json" in w[0]
    assert 'audit[0] (teacher): score: "high" is not a number' in w[0]
    assert "audit[1] (student:sft): poisoned: 'maybe' is not true, false or null" in w[0]
    assert "audit[2] is not an object (skipped)" in w[0] and 'audit_detector[0]: hits: "x" is not a number' in w[0]
    rows = html_table(at, "audit-models")["rows"]
    assert [(r["model"], r["score"], r["label"]) for r in rows] == [("student:sft", rows[0]["score"], "unlabelled"),
                                                                    ("teacher", "—", "poisoned")]


# ------------------------------------------------------------------------------------------ broken, read-only
def test_new_views_on_broken_runs_and_never_write(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(FIX, runs)
    before = _tree_digest(runs)
    for view in ("cascade", "audit"):
        at = open_app(monkeypatch, view, BROKEN, runs_dir=runs)
        assert not at.error and any("not valid JSON" in w.value for w in at.warning)
        assert any("no readable metrics.json" in i.value for i in at.info)
        for run in (CASCADE, POINT16, POINT0):
            at = open_app(monkeypatch, view, run, runs_dir=runs)
            assert not at.error and not at.exception
    assert _tree_digest(runs) == before
