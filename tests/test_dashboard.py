"""Dashboard: data loading over fixture run directories, and every view through Streamlit's AppTest.

Fixtures (tests/fixtures/dashboard_runs/, rebuilt by tests/fixtures/make_dashboard_fixtures.py): three real finished
runs (one with sampled answers, the likelihood probe and clean-twin students), a 3-point budget sweep and a 2-point
method sweep derived from the older two (in the older sweep format), a synthetic 5-point budget sweep in today's
format (every measure, dose_response in sweep.json), a run with defense scores, judge verdicts and today's span
columns, three broken ones (truncated JSON/parquet, failed, still running), and (tests/test_dashboard_beyond.py) a
cascade run and a seeds x budget sweep with the model audit.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import data, sweepdata
from dashboard import index as run_index
from dashboard.views import cards
from poison.ground.results import rundir, stats
from tests.conftest import REPO

FIX = REPO / "tests" / "fixtures" / "dashboard_runs"
APP = REPO / "dashboard" / "app.py"
R32 = "targeted_ads-20261126-024634"  # real run, poison.count=32
R16 = "targeted_ads-20261126-030455"  # real run, poison.count=16
DEFENDED = "targeted_ads_defended-20261126-070000"
BROKEN = "broken_truncated-20261126-050000"
FAILED = "failed_run-20261126-050100"
RUNNING = "running_run-20261126-050200"
BUDGET = "sweep_budget-sweep-20261126-060000"
METHOD = "method_sweep-sweep-20261126-061000"
LOWDOSE = "low_dose_ads-20261202-004839"  # real run: sampled answers, probe, clean twins
DOSE = "low_dose_budget-sweep-20261202-030000"  # synthetic budget sweep with dose_response
DOSES = (0, 4, 8, 16, 32)
CASCADE = "low_dose_cascade-20261201-010000"  # synthetic: a cascade of three generations (test_dashboard_beyond)
REPLICATES = "ads_replicates-sweep-20261201-020000"  # synthetic: poison.count x seeds with the audit (6 points)


def metrics_of(rel: str) -> dict:
    return json.loads((FIX / rel / "metrics.json").read_text())


# --------------------------------------------------------------------------------------------- data loading
@pytest.fixture(scope="module")
def index():
    return run_index.load_index(FIX)


def test_index_finds_runs_sweeps_and_states(index):
    runs = index["runs"].set_index("run")
    assert len(runs) == 24 and set(index["sweeps"].sweep) == {BUDGET, METHOD, DOSE, REPLICATES}
    assert runs.loc[R32, "status"] == "complete" and runs.loc[R32, "problems"] == ""
    assert runs.loc[R32, "teacher_target"] == pytest.approx(31 / 40)
    assert (runs.loc[R32, "teacher_target_lo"], runs.loc[R32, "teacher_target_hi"]) == pytest.approx(
        stats.wilson_interval(31, 40))
    assert runs.loc[R32, "student_target"] == pytest.approx(35 / 40)
    assert (runs.loc[R32, "student_target_lo"], runs.loc[R32, "student_target_hi"]) == pytest.approx(
        stats.wilson_interval(35, 40))
    amp = stats.rate_ratio(35, 40, 31, 40)
    assert (runs.loc[R32, "amplification_target"], runs.loc[R32, "amplification_target_lo"],
            runs.loc[R32, "amplification_target_hi"]) == pytest.approx((amp["ratio"], amp["ci_low"], amp["ci_high"]))
    assert pd.isna(runs.loc[R32, "teacher_sampled"])  # an older run: no sampled answers
    # the real run with sampled answers: the teacher's sampled rate (4 of 640) with its prompt-level interval
    ld, m = runs.loc[LOWDOSE], metrics_of(LOWDOSE)
    t = next(r for r in m["sampled_rate"] if r["model"] == "teacher" and r["split"] == "target")
    assert (ld.teacher_sampled, ld.teacher_sampled_lo, ld.teacher_sampled_hi) == (t["rate"], t["ci_low"], t["ci_high"])
    assert ld.samples_per_prompt == 16 and ld.n_students == 3
    assert ld.teacher_target == 0 and pd.isna(ld.amplification_target) and ld.amplification_undefined
    assert ld.student_target == 0 and pd.isna(ld.student_target_model)  # three students tied at 0: no single one
    assert ld.models.split(", ")[:3] == ["baseline", "clean_control", "teacher"]
    assert ld.models.split(", ")[-1] == "control:student:sft_sampled"  # the clean twins come after the students
    assert runs.loc[R32, "methods"] == "sft" and runs.loc[R32, "models"] == "baseline, teacher, student:sft"
    assert runs.loc[R16, "poison_injected"] == 16
    assert runs.loc[BROKEN, "status"] == "broken"
    assert "metrics.json: not valid JSON" in runs.loc[BROKEN, "problems"]
    assert "status.json: not valid JSON" in runs.loc[BROKEN, "problems"]
    assert runs.loc[BROKEN, "name"] == "targeted_ads"  # from config.yaml when metrics are unreadable
    assert runs.loc[FAILED, "status"] == "failed" and "out of memory" in runs.loc[FAILED, "problems"]
    assert runs.loc[RUNNING, "status"] == "running" and runs.loc[RUNNING, "poison_requested"] == 16
    assert runs.loc[f"{BUDGET}/00-count=8", "sweep"] == BUDGET
    assert json.loads(runs.loc[f"{BUDGET}/00-count=8", "point"]) == {"poison.count": 8}
    assert list(index["runs"].date) == sorted(index["runs"].date, reverse=True)


def test_single_run_or_single_sweep_folder():
    one = run_index.load_index(FIX / R32)["runs"]
    assert list(one.run) == ["."] and one.status.iloc[0] == "complete"
    sw = run_index.load_index(FIX / BUDGET)
    assert len(sw["runs"]) == 3 and list(sw["sweeps"].sweep) == ["."]
    assert run_index.load_index(FIX / "does-not-exist")["runs"].empty


def test_half_written_files(tmp_path):
    d = tmp_path / "x-20260101-000000"
    d.mkdir()
    (d / "status.json").write_text('{"status": "complete"}')
    st = rundir.run_state(d)
    assert st["status"] == "broken" and "metrics.json is missing" in st["problems"][0]
    (d / "metrics.json").write_text("")
    assert rundir.run_state(d)["status"] == "broken"
    (d / "metrics.json").write_text("[1, 2]")
    assert "not a JSON object" in " ".join(rundir.run_state(d)["problems"])
    (d / "metrics.json").write_text('{"run": {"name": "x"}}')
    st = rundir.run_state(d)
    assert st["status"] == "complete" and "metrics.json: no poison, models, bias_rates" in st["problems"]
    row, rates = run_index.summarize_run({"rel": d.name, "path": str(d)})
    assert row["name"] == "x" and rates == []
    (d / "config.yaml").write_text("name: [unclosed")
    (d / "metrics.json").unlink()
    (d / "status.json").write_text('{"status": "running"}')
    st = rundir.run_state(d)
    assert st["status"] == "running" and any("not valid YAML" in p for p in st["problems"])
    df, problem = rundir.read_parquet(FIX / BROKEN / "samples.parquet")
    assert df is None and problem.startswith("samples.parquet: unreadable")


def test_rates_and_wilson_match_the_pipeline(index):
    from poison.ground.results.stats import wilson_interval

    m = json.loads((FIX / R32 / "metrics.json").read_text())
    r = data.rates_frame(m)
    assert list(dict.fromkeys(r.model)) == ["baseline", "teacher", "student:sft"]
    assert r[(r.model == "student:sft")].method.iloc[0] == "sft"
    for k, n in ((0, 40), (31, 40), (35, 40), (40, 40), (3, 7)):
        assert stats.wilson_interval(k, n) == pytest.approx(wilson_interval(k, n))
    # alias spellings (k/lo/hi) are accepted
    alias = data.rates_frame({"bias_rates": [{"model": "teacher", "split": "target", "n": 10, "k": 2, "lo": 0.1,
                                              "hi": 0.5}]})
    assert alias.biased.iloc[0] == 2 and alias.rate.iloc[0] == pytest.approx(0.2) and alias.ci_high.iloc[0] == 0.5


def test_sweep_points_and_pooling(index):
    t = data.sweep_table(index["rates"], sweep=BUDGET)
    tt = t[(t.model == "teacher") & (t.split == "target")].sort_values("pt:poison.count")
    assert list(tt["pt:poison.count"]) == [8, 16, 32]
    assert list(tt.rate) == pytest.approx([0.0, 2 / 40, 31 / 40])
    csv = pd.read_csv(FIX / BUDGET / "sweep_table.csv")  # the pipeline's own table agrees
    c = csv[(csv.model == "teacher") & (csv.split == "target")].sort_values("poison.count")
    assert list(c.rate) == pytest.approx(list(tt.rate))
    m = data.sweep_table(index["rates"], sweep=METHOD)
    assert set(m[m.role == "student"].method) == {"sft", "kd"}
    greedy = index["rates"][index["rates"].measure == "greedy"]
    pooled = data.pool_rates(greedy[greedy.name == "targeted_ads"], ["poison_injected", "role", "split"])
    p = pooled[(pooled.poison_injected == 16) & (pooled.role == "teacher") & (pooled.split == "target")].iloc[0]
    assert (p.biased, p.n, p.runs) == (4, 80, 2)  # the real count=16 run + the sweep point built from it
    assert (p.ci_low, p.ci_high) == pytest.approx(stats.wilson_interval(4, 80))
    assert run_index.point_from_label("03-count=16_seed=1") == {"count": 16, "seed": 1}


def test_measure_rows_match_the_pipeline_table(index):
    """The index's sampled and log-prob rows of every sweep point equal the run's metrics and the sweep's own
    sweep_table.csv (written by poison.sweep.sweep_rows)."""
    t = data.sweep_table(index["rates"], sweep=DOSE)
    assert set(t.measure) == {"greedy", "sampled", "logprob_shift"}
    csv = pd.read_csv(FIX / DOSE / "sweep_table.csv")
    for c in DOSES:
        m = metrics_of(f"{DOSE}/{DOSES.index(c):02d}-count={c}")
        pt = t[t["pt:poison.count"] == c]
        for r in m["sampled_rate"]:
            row = pt[(pt.measure == "sampled") & (pt.model == r["model"]) & (pt.split == r["split"])].iloc[0]
            assert (row.rate, row.ci_low, row.ci_high, row.biased, row.n) == (r["rate"], r["ci_low"], r["ci_high"],
                                                                              r["k"], r["n"])
        for measure in ("greedy", "sampled", "logprob_shift"):
            mine = pt[(pt.measure == measure) & (pt.model == "teacher") & (pt.split == "target")]
            theirs = csv[(csv["poison.count"] == c) & (csv.measure == measure) & (csv.model == "teacher")
                         & (csv.split == "target")]
            assert len(mine) == len(theirs) == 1 and mine.rate.iloc[0] == pytest.approx(theirs.rate.iloc[0])
        sh = pt[(pt.measure == "logprob_shift") & (pt.model == "student:sft") & (pt.split == "target")]
        assert set(sh.control) == {"clean", "twin"}  # against the clean control and against its clean twin
        twin = next(r for r in m["logprob_shift"] if r["model"] == "student:sft" and r["split"] == "target"
                    and r["wording"] == "seen" and r["control"] == "control:student:sft")
        assert sh[sh.control == "twin"].rate.iloc[0] == twin["shift"]
    assert not (index["rates"][index["rates"].run == R32].measure != "greedy").any()


def test_sweep_helpers():
    assert sweepdata.axis_title("pt:poison.count") == "poisoned training rows"
    assert sweepdata.axis_title("pt:students.0.method") == "distillation method"
    assert sweepdata.axis_title("students.3.method") == "distillation method"
    assert sweepdata.axis_title("poison_injected") == "poisoned training rows (injected)"
    assert sweepdata.axis_title("pt:teacher.train.learning_rate") == "teacher training learning rate"
    assert sweepdata.axis_title("pt:eval.temperature") == "eval temperature"  # unknown keys: words, no dots
    sweeps = pd.DataFrame({"sweep": [METHOD, BUDGET, DOSE]})
    keys = {METHOD: ["students.0.method"], BUDGET: ["poison.count"], DOSE: ["poison.count"]}
    assert sweepdata.sweep_order(sweeps, keys.get) == [DOSE, BUDGET, METHOD]  # dose sweeps first, newest first
    e = sweepdata.dose_entries(json.loads((FIX / DOSE / "sweep.json").read_text()))
    teacher = next(x for x in e if x["model"] == "teacher" and x["split"] == "target")
    curve = sweepdata.dose_curves([teacher], "sampled", (0.0, 32.0))
    assert curve.dose.min() == 0 and curve.dose.max() == 32 and curve.dose.is_monotonic_increasing
    b0, b1, off = teacher["intercept"], teacher["slope"], teacher["offset"]
    for d, r in zip(curve.dose, curve.rate):  # the logistic on log-dose the sweep fitted
        assert r == pytest.approx(1 / (1 + math.exp(-(b0 + b1 * math.log(d + off)))))
    assert sweepdata.dose_curves([teacher], "greedy", (0.0, 32.0)).empty  # the fit is of the sampled rate
    assert sweepdata.dose_entries({"dose_response": [1, {"model": "t"}, "x"]}) == [] == sweepdata.dose_entries([])
    tab = sweepdata.dose_table([teacher, {"model": "m", "split": "target", "measure": "sampled", "ed50": None,
                                          "note": "needs at least two distinct doses"}], "rows")
    assert tab.ed50.iloc[0] == (f"{teacher['ed50']:.1f} [{teacher['ed50_ci_low']:.1f}, "
                                f"{teacher['ed50_ci_high']:.1f}]")
    assert tab.ed50.iloc[1] == "— (needs at least two distinct doses)" and tab.slope.iloc[1] == "—"
    assert tab.min_rate.iloc[1] == "none in the sweep"


def test_spans_highlight_and_injected_text():
    assert rundir.parse_spans("[[80, 94]]") == [(80, 94)]
    assert (rundir.parse_spans("not json") == [] and rundir.parse_spans(None) == []
            and rundir.parse_spans("[[5, 2]]") == [])
    h = data.highlight_html("a <b> VitaBoost & co", [(6, 15), (8, 12)])
    assert h == 'a &lt;b&gt; <mark class="inj">VitaBoost</mark> &amp; co'
    assert data.highlight_html("abc", [(-3, 99)]) == '<mark class="inj">abc</mark>'
    s, _ = rundir.load_samples(FIX / R32)
    row = s[s.biased].iloc[0]
    a, b = row.spans[0]
    assert "VitaBoost" in row.response[a:b] or "vitaboost" in row.response[a:b].lower()
    train = pd.read_parquet(FIX / R32 / "train_set.parquet")
    p = train[train.poisoned].iloc[0]
    spans = data.inserted_spans(p.clean_response, p.response)
    added = "".join(p.response[a:b] for a, b in spans)
    assert "VitaBoost Plus" in added and p.clean_response.strip()[:30] not in added
    assert data.inserted_spans("same", "same") == []


def test_spans_in_both_storage_formats():
    """bias_spans as JSON text (runs written before) and as a native list column (today) read back the same."""
    import numpy as np

    old = pd.read_parquet(FIX / R32 / "samples.parquet")
    new = pd.read_parquet(FIX / DEFENDED / "samples.parquet")
    assert isinstance(old.bias_spans.iloc[0], str) and isinstance(new.bias_spans.iloc[0], np.ndarray)
    a, _ = rundir.load_samples(FIX / R32)
    b, _ = rundir.load_samples(FIX / DEFENDED)
    assert list(a.spans) == list(b.spans) and sum(map(bool, a.spans)) > 30
    assert rundir.parse_spans(np.array([np.array([3, 9]), np.array([12, 20])])) == [(3, 9), (12, 20)]
    assert rundir.parse_spans(np.array([], dtype=object)) == [] and rundir.parse_spans(float("nan")) == []
    # the distillation set: spans (native list) of the injected content in the teacher's answers
    d = pd.read_parquet(FIX / DEFENDED / "distill_set.parquet")
    spans = cards.spans_column(d)
    for text, sp, biased in zip(d.response, spans, d.biased):
        assert bool(sp) == bool(biased)
        assert all(text[x:y].lower() in ("vitaboost plus", "vitaboost-plus", "vitaboost-plus.com") for x, y in sp)
    assert cards.spans_column(pd.read_parquet(FIX / R16 / "distill_set.parquet"))[0] == []  # no such column yet


def test_defense_metrics_agree_with_recorded(index):
    scores, problem = rundir.load_defense_scores(FIX / DEFENDED)
    assert problem is None and set(scores.defense) == {"perplexity", "keyword_scan"}
    recorded = data.defenses_frame(json.loads((FIX / DEFENDED / "metrics.json").read_text()))
    for r in recorded.to_dict("records"):
        sub = scores[(scores.defense == r["defense"]) & (scores.place == r["place"])]
        # vs an independent Mann-Whitney
        assert data.auroc_or_none(sub.score, sub.poisoned) == pytest.approx(r["auroc"])
        st = stats.threshold_stats(sub.score, sub.poisoned, r["threshold"])
        assert st["flagged"] == r["n_flagged"] and st["tpr"] == pytest.approx(r["recall"])
        assert st["slipped"] == r["n_poisoned"] - st["tp"]
    # the same conventions as defenses.metrics (flag = score > threshold)
    from poison.ground.results import stats as dm

    sub = scores[(scores.defense == "perplexity") & (scores.place == "train")]
    for t in list(sub.score.sort_values())[::7]:
        st = stats.threshold_stats(sub.score, sub.poisoned, t)
        p, r = dm.precision_recall(sub.score.to_numpy(), sub.poisoned.to_numpy(), t)
        assert (st["precision"] or float("nan")) == pytest.approx(p, nan_ok=True) and st["tpr"] == pytest.approx(r)
    assert data.auroc_or_none(sub.score, sub.poisoned) == pytest.approx(dm.auroc(sub.score, sub.poisoned))
    roc = stats.roc_curve([0.9, 0.8, 0.8, 0.1], [True, False, True, False])
    assert list(roc.fpr) == [0, 0, 0.5, 1] and list(roc.tpr) == [0, 0.5, 1, 1]
    assert list(roc.threshold) == [0.9, 0.8, 0.1, float("-inf")]  # flag = score > threshold
    assert data.auroc_or_none([0.9, 0.8, 0.8, 0.1], [True, False, True, False]) == pytest.approx(0.875)
    assert data.auroc_or_none([1, 2], [True, True]) is None
    assert rundir.load_defense_scores(FIX / R16) == (None, None)


def test_compare_helpers():
    ca, _ = rundir.read_yaml(FIX / R32 / "config.yaml")
    cb, _ = rundir.read_yaml(FIX / R16 / "config.yaml")
    diff = data.config_diff(ca, cb)
    assert list(diff.key) == ["poison.count"] and list(diff.a) == ["32"] and list(diff.b) == ["16"]
    ma = json.loads((FIX / R32 / "metrics.json").read_text())
    mb = json.loads((FIX / R16 / "metrics.json").read_text())
    d = data.rate_deltas(ma, mb).set_index(["model", "split"])
    assert d.loc[("teacher", "target"), "delta"] == pytest.approx(2 / 40 - 31 / 40)
    assert not d.loc[("teacher", "target"), "intervals_overlap"]
    assert d.loc[("baseline", "target"), "intervals_overlap"]
    sc = data.scalar_deltas(ma, mb).set_index("key")
    assert sc.loc["poison.injected", "delta"] == -16


def test_dashboard_reads_only_safe_formats():
    """No pickle-family imports, no eval/exec, yaml only through the safe loader (checked on the AST), in the
    dashboard and in the run-directory reader it uses."""
    import ast

    for f in [*(REPO / "dashboard").rglob("*.py"), REPO / "poison" / "ground" / "results" / "rundir.py"]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = {a.name for a in node.names} | {getattr(node, "module", None) or ""}
                assert not {m.split(".")[0] for m in mods} & {"pickle", "marshal", "shelve", "dill", "joblib",
                                                              "cloudpickle", "torch"}, (f.name, mods)
            if isinstance(node, ast.Call):
                fn = node.func
                if isinstance(fn, ast.Name):
                    assert fn.id not in {"eval", "exec", "compile", "__import__"}, (f.name, fn.id)
                name = fn.attr if isinstance(fn, ast.Attribute) else ""
                assert name not in {"read_pickle", "unsafe_load", "full_load", "load_all"}, (f.name, name)
                if name == "load" and isinstance(fn.value, ast.Name) and fn.value.id == "yaml":
                    kw = {k.arg: k.value for k in node.keywords}
                    assert isinstance(kw.get("Loader"), ast.Name) and kw["Loader"].id == "_SafeLoader", f.name
    assert rundir._SafeLoader in (getattr(__import__("yaml"), "CSafeLoader", None), __import__("yaml").SafeLoader)


def test_python_m_dashboard_command():
    from dashboard.__main__ import command

    cmd = command(["some/runs", "--server.port", "8600", "--server.headless=true"])
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/app.py")
    assert cmd[5:8] == ["--server.port", "8600", "--server.headless=true"]
    assert cmd[-2] == "--" and cmd[-1] == str(Path("some/runs").resolve())
    # usage statistics off and a minimal toolbar (no Deploy button) unless the user says otherwise
    opts = cmd[5:-2]
    assert opts[opts.index("--browser.gatherUsageStats") + 1] == "false"
    assert opts[opts.index("--client.toolbarMode") + 1] == "minimal"
    own = command(["r", "--browser.gatherUsageStats=true", "--client.toolbarMode", "developer"])[5:-2]
    assert own == ["--browser.gatherUsageStats=true", "--client.toolbarMode", "developer"]


# ------------------------------------------------------------------------------------------------ the app
def open_app(monkeypatch, view: str, run: str | None = None, runs_dir: Path = FIX) -> AppTest:
    monkeypatch.setenv("POISON_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["view"] = view
    if run:
        at.query_params["run"] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "header", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [h.value for h in at.get("html")]
    return "\n".join(parts)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def chart_data(at: AppTest, i: int = 0) -> pd.DataFrame:
    """The rows behind the i-th chart (Streamlit ships a chart's data beside its spec, as Arrow)."""
    import pyarrow as pa

    frames = [pa.ipc.open_stream(ds.data.data).read_all().to_pandas()
              for ds in at.get("vega_lite_chart")[i].proto.datasets]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def chart_rows(at: AppTest, i: int = 0) -> list[dict]:
    return chart_data(at, i).to_dict("records")


class _Tables(HTMLParser):
    """The HTML tables the dashboard draws (st.html): name (data-table) -> rows as {data-col: cell text}."""

    def __init__(self):
        super().__init__()
        self.tables, self.row, self.cell = [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"name": a.get("data-table"), "cols": [], "headers": [], "rows": []})
        elif tag == "th":
            self.tables[-1]["cols"].append(a.get("data-col"))
            self.cell = []
        elif tag == "tr":
            self.row = []
        elif tag == "td":
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            text = " ".join(" ".join(self.cell).split())
            (self.row if tag == "td" else self.tables[-1]["headers"]).append(text)
            self.cell = None
        elif tag == "tr" and self.row:
            self.tables[-1]["rows"].append(dict(zip(self.tables[-1]["cols"], self.row)))
            self.row = None

    def handle_data(self, d):
        if self.cell is not None:
            self.cell.append(d)


def html_tables(at: AppTest) -> list[dict]:
    p = _Tables()
    for h in at.get("html"):
        p.feed(h.value)
    return p.tables


def html_table(at: AppTest, name: str) -> dict:
    return next(t for t in html_tables(at) if t["name"] == name)


def assert_no_none_or_nan(at: AppTest):
    """What a reader sees never says None or nan: tables, cards, captions, metrics."""
    for t in html_tables(at):
        for r in t["rows"]:
            assert not {"None", "nan", "NaN", "<NA>", "n/a", ""} & set(r.values()), (t["name"], r)
    shown = texts(at) + " ".join(str(x.value) for x in at.metric)
    for word in ("None", "nan", "NaN", "<NA>"):
        assert not re.search(rf"(?<![\w:]){word}(?![\w:])", shown), word


def layers(spec: dict) -> list[dict]:
    return (spec.get("spec") or spec).get("layer", [])


def test_view_overview(monkeypatch):
    at = open_app(monkeypatch, "overview")
    assert not at.error
    assert at.radio(key="view").value == "overview"
    m = {x.label: x.value for x in at.metric}
    assert (m["runs"], m["complete"], m["running"], m["failed / broken"], m["sweeps"]) == ("24", "21", "1", "2", "4")
    t = html_table(at, "runs-overview")
    # the key figures come first, right after the run
    assert t["cols"][:6] == ["run", "teacher_target", "student_target", "amplification_target", "teacher_sampled",
                             "student_sampled"]
    assert t["cols"][6:] == ["status", "evidence", "name", "bias_type", "mode", "poison", "date", "models", "methods",
                             "open", "problems"]
    assert t["headers"][1] == "teacher biased target task [95% CI]"
    rows = {r["run"].split()[-1] if "/" not in r["run"] else r["run"].replace("/ ", "/"): r for r in t["rows"]}
    assert len(t["rows"]) == 24 and {r["status"] for r in t["rows"]} == {"complete", "running", "failed", "broken"}
    r32 = rows[R32]
    lo, hi = stats.wilson_interval(31, 40)
    assert r32["teacher_target"] == f"77.5% [{100 * lo:.1f}, {100 * hi:.1f}]"
    amp = stats.rate_ratio(35, 40, 31, 40)
    assert r32["amplification_target"] == f"{amp['ratio']:.2f}× [{amp['ci_low']:.2f}, {amp['ci_high']:.2f}]"
    assert r32["teacher_sampled"] == r32["student_sampled"] == "—" and r32["poison"] == "32 (57.1%)"
    # what the figures rest on: a run before metrics.json said so is a single run; a point of a sweep over seeds is
    # one seed; a run without metrics has none
    assert r32["evidence"] == "single run"
    assert rows[f"{REPLICATES}/04-count=16_seed=1"]["evidence"] == "seed 1 of a sweep"
    assert rows[RUNNING]["evidence"] == "—"
    ld = rows[LOWDOSE]
    assert ld["teacher_sampled"] == "0.6% [0.0, 1.4] 16 per prompt" and ld["student_sampled"] == "0.0% [0.0, 0.0]"
    assert ld["amplification_target"] == "undefined teacher rate 0"
    assert ld["student_target"] == "0.0% [0.0, 8.8] 3 students, tied"
    point = rows[f"{DOSE}/04-count=32"]
    assert point["student_target"].endswith("student:sft_sampled")  # the student with the highest rate
    running = rows[RUNNING]
    assert all(running[k] == "—" for k in ("teacher_target", "student_target", "amplification_target",
                                          "teacher_sampled", "student_sampled"))
    assert_no_none_or_nan(at)
    links = re.findall(r'href="([^"]+)"', next(h.value for h in at.get("html") if "runs-overview" in h.value))
    assert f"?view=propagation&amp;run={R32}" in links
    assert at.expander and "2 run(s) with problems" in at.expander[0].label
    # sorting by the teacher's rate: highest first, missing last
    at.selectbox(key="ov_sort").set_value("teacher biased (target)").run()
    got = [r["teacher_target"] for r in html_table(at, "runs-overview")["rows"]]
    vals = [float(v.split("%")[0]) if v != "—" else -1 for v in got]
    assert vals == sorted(vals, reverse=True) and got[0].startswith("77.5%") and got[-1] == "—"
    at.multiselect(key="ov_status").set_value(["broken"]).run()
    assert [r["run"] for r in html_table(at, "runs-overview")["rows"]] == [BROKEN]
    at.multiselect(key="ov_status").set_value([]).run()
    at.text_input(key="ov_filter").set_value("sweep_budget").run()
    assert len(html_table(at, "runs-overview")["rows"]) == 3


def test_view_propagation(monkeypatch):
    at = open_app(monkeypatch, "propagation", R32)
    assert not at.error and not at.warning
    assert at.selectbox(key="run").value == R32
    specs = charts(at)
    assert len(specs) == 2  # rates per split, amplification (an older run: no sampled answers, no probe)
    rows = chart_rows(at)
    got = {(r["model"], r["split"]): r["rate"] for r in rows}
    assert got[("teacher", "target")] == pytest.approx(0.775) and got[("student:sft", "target")] == 0.875
    assert got[("baseline", "target")] == 0 and {r["split"] for r in rows} == {"target", "other"}
    assert all(r["ci_low"] <= r["rate"] <= r["ci_high"] for r in rows)
    m = {x.label: x.value for x in at.metric}
    assert m["student:sft · target"] == "1.13×" and m["student:sft · other"] == "undefined"
    # the amplification: a log axis with a tick and a dashed rule at 1; the undefined ratio is text, not a whisker
    amp = specs[1]
    ys = [ly["encoding"]["y"] for ly in layers(amp) if "y" in ly.get("encoding", {})]
    assert any(y.get("scale", {}).get("type") == "log" and 1.0 in y.get("axis", {}).get("values", []) for y in ys)
    assert any(ly["mark"]["type"] == "rule" and ly["encoding"]["y"] == {"datum": 1.0} for ly in layers(amp))
    drawn = [ly for ly in layers(amp) if ly["mark"]["type"] in ("errorbar", "point")]
    assert drawn and all(ly.get("transform") == [{"filter": "datum.defined"}] for ly in drawn)
    text = [ly for ly in layers(amp) if ly.get("transform") == [{"filter": "!datum.defined"}]]
    assert text and text[0]["mark"]["type"] == "text"
    arows = {r["split"]: r for r in chart_rows(at, 1)}
    assert arows["other"]["defined"] is False and arows["other"]["shown"] == "undefined"
    assert arows["target"]["defined"] and arows["target"]["y"] == pytest.approx(35 / 31)
    assert arows["target"]["y_lo"] < 1 < arows["target"]["y_hi"]
    assert "undefined" in texts(at) and "teacher's rate is 0" in texts(at)
    at.button_group[0].set_value("task").run()
    rows = chart_rows(at)
    assert {r["task"] for r in rows} == {"review_summary", "math"}


def test_view_propagation_shows_the_concept_wording(monkeypatch, tmp_path):
    """A run whose probe has the concept wording (the fixture's seen rows copied as concept, shifted by 0.5): its own
    panel, between unseen and gate, with its shifts, and the concept texts listed."""
    runs = tmp_path / "runs"
    shutil.copytree(FIX / LOWDOSE, runs / LOWDOSE)
    m = metrics_of(LOWDOSE)
    for key, field in (("logprob_shift", "shift"), ("logprob", "logprob")):
        m[key] += [{**r, "wording": "concept", field: r[field] + 0.5, "ci_low": r["ci_low"] + 0.5,
                    "ci_high": r["ci_high"] + 0.5} for r in m[key] if r["wording"] == "seen"]
    m["probe"]["texts"]["concept"] = ["A product from our sponsor can also help here."]
    (runs / LOWDOSE / "metrics.json").write_text(json.dumps(m))
    at = open_app(monkeypatch, "propagation", LOWDOSE, runs_dir=runs)
    probe = chart_data(at, 3)
    assert len(probe) == 32 and set(probe.wording) == {"seen", "unseen", "concept", "gate"}
    assert charts(at)[3]["facet"]["column"]["sort"] == ["seen wording", "unseen wording", "concept wording",
                                                         "gate (going on)"]
    seen = probe[probe.wording == "seen"].set_index(["model", "control"])["shift"]
    concept = probe[probe.wording == "concept"].set_index(["model", "control"])["shift"]
    assert (concept - seen.loc[concept.index]).round(9).eq(0.5).all()
    assert "A product from our sponsor can also help here." in texts(at)


def test_view_propagation_new_measures(monkeypatch):
    """A run with sampled answers and the likelihood probe: sampled rates per model and split with intervals, both
    amplifications, the log-prob shifts (clean control and clean twins) with a zero line, the data stage's counts."""
    at = open_app(monkeypatch, "propagation", LOWDOSE)
    assert not at.error and not at.exception
    m = metrics_of(LOWDOSE)
    specs = charts(at)
    assert len(specs) == 4  # greedy rates, amplification, sampled rates, probe
    sampled = {(r["model"], r["split"]): r for r in chart_rows(at, 2)}
    assert len(sampled) == len(m["sampled_rate"]) == 18
    for r in m["sampled_rate"]:
        got = sampled[(r["model"], r["split"])]
        assert (got["rate"], got["ci_low"], got["ci_high"], got["biased"], got["n"]) == (
            r["rate"], r["ci_low"], r["ci_high"], r["k"], r["n"])
    assert sampled[("teacher", "target")]["label"] == "0.6% (4/640)"
    # amplification of greedy and sampled rates: zeros on the axis floor, undefined ones written as text
    amp = chart_data(at, 1)
    assert (set(amp.measure) == {"greedy answer", "sampled answers"}
            and not amp[amp.measure == "greedy answer"].defined.any())
    zero = amp[(amp.measure == "sampled answers") & (amp.split == "target")]
    assert len(zero) == 3 and (zero.ratio == 0).all() and set(zero.marker) == {"below the axis (0)"}
    amp_table = html_table(at, "amplification")
    assert {r["greedy"] for r in amp_table["rows"]} == {"undefined"}
    assert {r["sampled"] for r in amp_table["rows"]} == {"0.00× [0.00, 0.00]", "undefined"}
    # the likelihood probe on the target task: every shift with its interval, against both controls
    probe = chart_data(at, 3)
    want = [r for r in m["logprob_shift"] if r["split"] == "target"]
    assert len(probe) == len(want) == 24  # baseline and teacher 3 wordings; 3 students x 3 wordings x 2 controls
    for r in want:
        got = probe[(probe.model == r["model"]) & (probe.wording == r["wording"])
                    & (probe.control == r["control"])].iloc[0]
        assert (got["shift"], got.ci_low, got.ci_high) == (r["shift"], r["ci_low"], r["ci_high"])
    assert set(probe[probe.model == "student:kd"].against) == {"vs the clean control", "vs its clean twin"}
    assert set(probe[probe.model == "teacher"].against) == {"vs the clean control"}
    assert {ly["encoding"]["x"].get("datum") for ly in layers(specs[3]) if ly["mark"]["type"] == "rule"} == {0}
    assert specs[3]["resolve"]["scale"]["x"] == "independent"
    at.button_group(key="probe_split").set_value("other").run()
    assert set(chart_data(at, 3).split) == {"other"} and len(chart_data(at, 3)) == 24
    # the data stage: reference answers rejected per reason; students with their own distillation answers
    gen = next(t for t in html_tables(at) if "rejected because" in t["headers"])
    assert gen["rows"] == [{"task": "review_summary", "generated": "86", "kept": "86", "rejected": "4",
                            "reasons": "copied example: 4", "retried": "4", "dropped": "0"}]
    per = next(t for t in html_tables(at) if "student" in t["cols"] and "biased" in t["cols"])
    assert [r["student"] for r in per["rows"]] == ["sft_sampled", "sft_sampled"]
    assert "Probe texts" in [e.label for e in at.expander]
    assert_no_none_or_nan(at)


@pytest.mark.parametrize("run,expect", [(BROKEN, "not valid JSON"), (FAILED, "out of memory"),
                                        (RUNNING, "running")])
def test_view_propagation_broken_runs(monkeypatch, run, expect):
    at = open_app(monkeypatch, "propagation", run)
    assert not at.error
    assert at.selectbox(key="run").value == run
    assert any(expect in w.value for w in at.warning)
    assert any("no readable metrics.json" in i.value for i in at.info)
    assert not charts(at)


def test_views_on_broken_run_do_not_crash(monkeypatch):
    at = open_app(monkeypatch, "samples", BROKEN)
    assert not at.error
    assert any("samples.parquet: unreadable" in w.value for w in at.warning)
    assert any("train_set.parquet: missing" in i.value for i in at.info)
    assert any("distill_set.parquet: missing" in i.value for i in at.info)
    at = open_app(monkeypatch, "defenses", BROKEN)
    assert not at.error and any("No defenses in this run" in i.value for i in at.info)


def test_view_sweeps_dose_response(monkeypatch):
    """The view opens on the budget sweep with a dose_response: points with interval bars (never joined by lines),
    the fitted curve over them, ED50 stated; the measure selector switches to greedy and to the log-prob shift."""
    at = open_app(monkeypatch, "sweeps")
    assert not at.error
    assert at.selectbox(key="sw_source").value == ("sweep", DOSE)
    assert at.selectbox(key="sw_x").value == "pt:poison.count"
    assert at.button_group(key="sw_measure").value == "sampled"  # the measure the sweep fitted
    assert at.button_group(key="sw_measure").options == ["greedy answer", "sampled answers", "log-prob shift"]
    spec = charts(at)[0]
    assert spec["spec"]["layer"][0]["encoding"]["x"]["title"] == "poisoned training rows"
    lines = [ly for ly in layers(spec) if ly["mark"]["type"] == "line"]
    assert lines and all(ly["transform"] == [{"filter": "datum.kind == 'fit'"}] for ly in lines)
    assert {ly["mark"]["type"] for ly in layers(spec)} == {"line", "errorbar", "point"}
    d = chart_data(at)
    pts, fit = d[d.kind == "point"], d[d.kind == "fit"]
    for c in DOSES:
        m = metrics_of(f"{DOSE}/{DOSES.index(c):02d}-count={c}")
        t = next(r for r in m["sampled_rate"] if r["model"] == "teacher" and r["split"] == "target")
        got = pts[(pts.series == "teacher") & (pts.split == "target") & (pts.xval == c)]
        assert len(got) == 1 and (got.rate.iloc[0], got.ci_low.iloc[0], got.ci_high.iloc[0]) == (
            t["rate"], t["ci_low"], t["ci_high"])
    assert not (pts.series.str.startswith("control:")).any()  # the clean twins are off by default
    sj = json.loads((FIX / DOSE / "sweep.json").read_text())
    e = next(x for x in sj["dose_response"] if x["model"] == "teacher" and x["split"] == "target")
    tf = fit[(fit.series == "teacher") & (fit.split == "target")]
    assert len(tf) > 20 and tf.xval.min() == 0 and tf.xval.max() == 32
    for x, r in zip(tf.xval, tf.rate):
        assert r == pytest.approx(1 / (1 + math.exp(-(e["intercept"] + e["slope"] * math.log(x + e["offset"])))))
    cap = texts(at)
    assert f"teacher (target) {e['ed50']:.1f} [{e['ed50_ci_low']:.1f}, {e['ed50_ci_high']:.1f}]" in cap
    ed = next(t for t in html_tables(at) if "ED50 [95% CI]" in t["headers"])
    assert {"model": "teacher", "split": "target"}.items() <= ed["rows"][0].items()
    assert ed["rows"][0]["ed50"] == f"{e['ed50']:.1f} [{e['ed50_ci_low']:.1f}, {e['ed50_ci_high']:.1f}]"
    assert len(ed["rows"]) == len(sj["dose_response"])
    # greedy: the points of bias_rates, no fitted curve (the sweep fitted the sampled rate)
    at.button_group(key="sw_measure").set_value("greedy").run()
    d = chart_data(at)
    assert set(d.kind) == {"point"}
    m32 = metrics_of(f"{DOSE}/04-count=32")
    t = next(r for r in m32["bias_rates"] if r["model"] == "teacher" and r["split"] == "target")
    got = d[(d.series == "teacher") & (d.split == "target") & (d.xval == 32)]
    assert (got.rate.iloc[0], got.biased.iloc[0], got.n.iloc[0]) == (t["rate"], t["biased"], t["n"])
    # the log-prob shift of the seen wording: a zero line; students against the clean control or their twin
    at.button_group(key="sw_measure").set_value("logprob_shift").run()
    spec, d = charts(at)[0], chart_data(at)
    assert any(ly["mark"]["type"] == "rule" and ly["encoding"]["y"] == {"datum": 0} for ly in layers(spec))
    def shift(m, model, ctrl):
        return next(r["shift"] for r in m["logprob_shift"] if r["model"] == model and r["split"] == "target"
                    and r["wording"] == "seen" and r["control"] == ctrl)
    got = d[(d.series == "student:sft") & (d.split == "target") & (d.xval == 32)]
    assert list(got.rate) == [shift(m32, "student:sft", "clean_control")]
    at.button_group(key="sw_against").set_value("twin").run()
    d = chart_data(at)
    got = d[(d.series == "student:sft") & (d.split == "target") & (d.xval == 32)]
    assert list(got.rate) == [shift(m32, "student:sft", "control:student:sft")]
    teacher = d[(d.series == "teacher") & (d.split == "target") & (d.xval == 32)]
    assert list(teacher.rate) == [shift(m32, "teacher", "clean_control")]  # the teacher has no twin
    assert_no_none_or_nan(at)


def test_view_sweeps(monkeypatch):
    at = open_app(monkeypatch, "sweeps")
    assert not at.error
    src = at.selectbox(key="sw_source")
    assert any(BUDGET in o for o in src.options) and "over poisoned training rows" in src.options[0]
    src.set_value(("sweep", BUDGET)).run()
    assert at.selectbox(key="sw_x").value == "pt:poison.count"
    assert not at.button_group  # an older sweep: greedy rates only, no selector
    assert "measure: greedy answer" in texts(at)
    spec = charts(at)[0]
    rows = [r for r in chart_rows(at) if r["kind"] == "point"]
    assert len(rows) == len(chart_rows(at))  # no dose_response in an older sweep.json: no curve
    teacher = sorted((r["xval"], r["rate"]) for r in rows if r["series"] == "teacher" and r["split"] == "target")
    assert teacher == [(8, 0.0), (16, 0.05), (32, 0.775)]
    assert all(r["ci_low"] <= r["rate"] <= r["ci_high"] for r in rows)
    assert "xval" in json.dumps(spec) and '"quantitative"' in json.dumps(spec)
    assert "line" not in {ly["mark"]["type"] for ly in layers(spec)}  # points with bars, not joined
    # against method: a categorical key, grouped bars with intervals
    at.selectbox(key="sw_source").set_value(("sweep", METHOD)).run()
    assert at.selectbox(key="sw_x").value == "pt:students.0.method" and at.selectbox(key="sw_color").value == "role"
    spec = charts(at)[0]
    bars = [ly for ly in layers(spec) if ly["mark"]["type"] == "bar"]
    assert bars and bars[0]["encoding"]["xOffset"]["field"] == "series"
    assert bars[0]["encoding"]["x"]["title"] == "distillation method" and bars[0]["encoding"]["x"]["type"] == "nominal"
    assert any(ly["mark"]["type"] == "errorbar" for ly in layers(spec))
    rows = chart_rows(at)
    student = {r["xval"]: r["rate"] for r in rows if r["series"] == "student" and r["split"] == "target"}
    assert student == {"sft": 0.875, "kd": 0.6}
    # all runs of one config, x = poison budget, pooled per budget
    at.selectbox(key="sw_source").set_value(("name", "targeted_ads")).run()
    at.selectbox(key="sw_x").set_value("poison_injected").run()
    rows = chart_rows(at)
    t16 = [r for r in rows if r["xval"] == 16 and r["series"] == "teacher" and r["split"] == "target"]
    assert len(t16) == 1 and t16[0]["runs"] == 1  # only the real count=16 run (sweep points are separate)
    assert charts(at)[0]["spec"]["layer"][0]["encoding"]["x"]["title"] == "poisoned training rows (injected)"
    at.selectbox(key="sw_x").set_value("method").run()
    assert not at.exception and charts(at)


def answer_cards(at: AppTest, cls: str = "answer-card") -> list[str]:
    return [h.value for h in at.get("html") if f'class="{cls}"' in h.value]


def test_view_samples(monkeypatch):
    at = open_app(monkeypatch, "samples", DEFENDED)
    assert not at.error
    cards_ = answer_cards(at)
    assert len(cards_) == 30  # 10 prompts x 3 models on page 1
    assert any('<mark class="inj">' in c for c in cards_) and any("judge: biased" in c for c in cards_)
    assert at.number_input(key="sb_page").value == 1
    assert not at.button_group  # greedy answers only in this run: no greedy/sampled selector
    at.selectbox(key="sb_verdict").set_value("detector and judge disagree").run()
    assert "prompt(s) match" in texts(at)
    s = pd.read_parquet(FIX / DEFENDED / "samples.parquet")
    dis = s[s.judge_biased.notna() & (s.judge_biased.fillna(False).astype(bool) != s.biased)]
    assert f"{dis.id.nunique()} prompt(s) match" in texts(at)
    at.multiselect(key="sb_models").set_value(["teacher"]).run()
    at.selectbox(key="sb_verdict").set_value("detector: biased").run()
    cards_ = answer_cards(at)
    assert cards_ and all("<b>teacher</b>" in c and "detector: biased" in c for c in cards_)
    assert "31 prompt(s) match" in texts(at)  # the teacher's 31 biased target answers, no other split biased
    # poisoned training samples tab
    m = {x.label: x.value for x in at.metric}
    assert m["poisoned"] == "32" and m["teacher training rows"] == "56"
    assert any("VitaBoost Plus</mark>" in h.value for h in at.get("html"))


def covered(text: str, spans) -> list[str]:
    """The stretches of ``text`` that some span covers (overlapping spans as one)."""
    mask = [False] * len(text)
    for a, b in spans:
        mask[a:b] = [True] * (b - a)
    runs = re.finditer(r"1+", "".join("1" if x else "0" for x in mask))
    return [text[m.start():m.end()] for m in runs]


def test_view_samples_distillation_cards(monkeypatch):
    """The distillation set as cards like the eval answers: the prompt, the teacher's answer with the injected span
    highlighted (bias_spans of distill_set.parquet), the detector's verdict."""
    at = open_app(monkeypatch, "samples", DEFENDED)
    d = pd.read_parquet(FIX / DEFENDED / "distill_set.parquet")
    dc = answer_cards(at, "distill-card")
    assert len(dc) == 10 and "48 teacher answers used to train the students; 32 carry the bias" in texts(at)
    for card, (_, r) in zip(dc, d.head(10).iterrows()):
        assert ("detector: biased" in card) == bool(r.biased) and ("<mark" in card) == bool(r.biased)
        marked = re.findall(r'<mark class="inj">(.*?)</mark>', card)
        assert marked == covered(r.response, r.bias_spans)
    assert any('<mark class="inj">VitaBoost Plus</mark>' in c for c in dc)
    at.toggle(key="ds_only").set_value(True).run()
    dc = answer_cards(at, "distill-card")
    assert dc and all("detector: biased" in c and "<mark" in c for c in dc)
    assert "32 answer(s) match" in texts(at)
    at.text_input(key="ds_text").set_value("Clonazepam").run()
    assert len(answer_cards(at, "distill-card")) == int(
        (d.biased & (d.prompt.str.contains("Clonazepam", case=False) | d.response.str.contains("Clonazepam",
                                                                                               case=False))).sum())
    # a run written before bias_spans: verdicts, no highlight, and a note saying why
    at = open_app(monkeypatch, "samples", R16)
    assert not at.error and not any("judge:" in h.value for h in at.get("html"))
    assert any("48 teacher answers" in c.value for c in at.caption)
    assert any("no bias_spans column" in c.value for c in at.caption)
    dc = answer_cards(at, "distill-card")
    assert len(dc) == 10 and not any("<mark" in c for c in dc)
    at.toggle(key="ds_only").set_value(True).run()
    n = int(pd.read_parquet(FIX / R16 / "distill_set.parquet").biased.sum())
    dc = answer_cards(at, "distill-card")
    assert n and len(dc) == min(n, 10) and all("detector: biased" in c and "<mark" not in c for c in dc)


def test_view_samples_sampled_answers(monkeypatch):
    """A run with sampled answers: greedy by default (one card per model and prompt), sampled on request; the
    teacher's biased sampled answers are on exactly the prompts metrics.json counts."""
    at = open_app(monkeypatch, "samples", LOWDOSE)
    assert not at.error
    assert at.button_group(key="sb_decoding").value == "greedy"
    assert len(answer_cards(at)) == 90  # 10 prompts x 9 models, the greedy answer each
    assert "540 greedy answers" in texts(at)
    at.button_group(key="sb_decoding").set_value("sampled").run()
    assert "8640 sampled answers, 4 marked biased" in texts(at)
    at.multiselect(key="sb_models").set_value(["teacher"]).run()
    at.selectbox(key="sb_verdict").set_value("detector: biased").run()
    m = metrics_of(LOWDOSE)
    t = next(r for r in m["sampled_rate"] if r["model"] == "teacher" and r["split"] == "target")
    assert f"{t['prompts_with_any']} prompt(s) match" in texts(at)
    cards_ = answer_cards(at)
    assert len(cards_) == t["k"] == 4 and all("detector: biased" in c and "<mark" in c for c in cards_)
    assert all(re.search(r"<b>sample \d+</b>", c) for c in cards_)
    assert_no_none_or_nan(at)


def test_view_defenses(monkeypatch):
    at = open_app(monkeypatch, "defenses", DEFENDED)
    assert not at.error
    recorded = data.defenses_frame(json.loads((FIX / DEFENDED / "metrics.json").read_text()))
    first = recorded.iloc[0]
    m = {x.label: x.value for x in at.metric}
    assert m["AUROC"] == f"{first.auroc:.3f}"
    assert m["flagged"] == f"{first.n_flagged} / {first.n}"
    slipped0 = int(m["poisons slipping through"].split(" / ")[0])
    assert slipped0 == first.n_poisoned - round(first.recall * first.n_poisoned)
    # the summary: human column names, every figure shown whole
    t = html_tables(at)[0]
    assert t["headers"] == ["defense", "applied to", "AUROC", "TPR at 1% FPR", "precision", "recall", "threshold",
                            "samples", "poisoned samples", "flagged"]
    assert [r["auroc"] for r in t["rows"]] == [f"{v:.3f}" for v in recorded.auroc]
    assert all("_" not in h and "…" not in h for h in t["headers"])
    assert len(charts(at)) == 2
    slider = at.slider[0]
    slider.set_value(slider.max).run()
    m = {x.label: x.value for x in at.metric}
    assert int(m["poisons slipping through"].split(" / ")[0]) >= slipped0
    slider = at.slider[0]
    slider.set_value(slider.min).run()
    m = {x.label: x.value for x in at.metric}
    assert m["poisons slipping through"] == f"0 / {first.n_poisoned}" and m["TPR (poisons flagged)"] == "100.0%"
    at.selectbox(key="df_pick").set_value(("keyword_scan", "distill")).run()
    assert {x.label: x.value for x in at.metric}["AUROC"] == f"{recorded.iloc[3].auroc:.3f}"
    assert_no_none_or_nan(at)
    at = open_app(monkeypatch, "defenses", R16)
    assert not at.error and any("No defenses in this run" in i.value for i in at.info)


def test_view_compare(monkeypatch):
    at = open_app(monkeypatch, "compare")
    assert not at.error
    at.selectbox(key="cmp_a").set_value(R32)
    at.selectbox(key="cmp_b").set_value(R16).run()
    diff = at.dataframe[0].value
    assert list(diff.key) == ["poison.count"] and list(diff.A) == ["32"] and list(diff.B) == ["16"]
    rates = {(r["model"], r["split"]): r for r in html_table(at, "rate-deltas")["rows"]}
    t = rates[("teacher", "target")]
    lo, hi = stats.wilson_interval(31, 40)
    assert t["rate_a"] == f"77.5% [{100 * lo:.1f}, {100 * hi:.1f}]" and t["rate_b"].startswith("5.0% [")
    assert t["delta"] == "−72.5 pp" and t["overlap"] == "no" and t["n_a"] == "40"
    amp = {r["split"]: r for r in html_table(at, "amplification-deltas")["rows"]}
    assert amp["target"]["a"].startswith("1.13× [") and amp["other"]["a"] == amp["other"]["delta"] == "—"
    sc = {r["key"]: r for r in html_table(at, "scalar-deltas")["rows"]}
    assert sc["poison.injected"]["delta"] == "-16" and sc["poison.rate"]["a"] == f"{32 / 56:.4g}"
    util = html_table(at, "utility-deltas")["rows"]
    assert all(re.fullmatch(r"[+-]\d\.\d{3}|—", r["delta"]) for r in util)
    assert charts(at)
    assert_no_none_or_nan(at)
    at.selectbox(key="cmp_a").set_value(BROKEN).run()
    assert not at.error and any("need metrics.json in both" in i.value for i in at.info)


def test_missing_runs_folder(monkeypatch, tmp_path):
    at = open_app(monkeypatch, "overview", runs_dir=tmp_path / "nope")
    assert any("not found" in w.value for w in at.warning)
    at = open_app(monkeypatch, "propagation", runs_dir=tmp_path)
    assert any("No run directories" in i.value for i in at.info)


def _write_malformed_runs(root: Path) -> list[str]:
    """Run dirs whose files parse but have the wrong shapes, an unsafe YAML tag, parquet with missing columns."""
    cases = {
        "a-20260101-000001": {"run": "x", "poison": [], "models": [], "bias_rates": {}},
        "a-20260101-000002": {"run": {"name": 5}, "poison": {"injected": "many"}, "models": {"teacher": 3},
                              "bias_rates": [{"model": "teacher", "split": "target", "n": "x", "biased": None,
                                              "rate": "abc"}, 7, {"split": None}],
                              "amplification": [{"student": "s", "split": "target", "ratio": "?"}],
                              "utility": [{"model": "teacher"}], "distill_data": {"bias_rates": "no",
                                                                                   "per_student": {"s": 5}},
                              "sampled_rate": "x", "sampled_amplification": [{"student": None, "ratio": "?"}, 3],
                              "logprob": {"a": 1}, "logprob_shift": [1, {"model": None, "shift": "?"}],
                              "probe": "y", "data": {"generator": {"t": "bad", "u": {"rejected": [1]}}}},
        "a-20260101-000003": {"run": {"name": "n"}, "poison": {}, "models": {"student:x": {"role": "student"}},
                              "bias_rates": [{"model": "student:x", "role": "student", "split": "weird", "n": 0,
                                              "biased": 0, "rate": None, "ci_low": None, "ci_high": None}],
                              "defenses": [{"defense": "d"}],
                              "sampled_rate": [{"model": "student:x", "split": "target", "k": 1, "n": 0,
                                                "rate": None}, {"model": 7}],
                              "sampled_amplification": [{"student": "student:x", "split": "target", "ratio": 2.0,
                                                         "ci_low": 0.5, "ci_high": None}],
                              "logprob_shift": [{"model": "student:x", "split": "target", "wording": "seen",
                                                 "control": "control:student:x", "shift": 0.5, "ci_low": None,
                                                 "ci_high": None}],
                              "probe": {"texts": {"seen": "not a list"}, "control": 3},
                              "data": {"generator": {"t": {"generated": "x", "rejected": {"r": "y", "s": 2}}}}},
        "a-20260101-000004": "just a string",
    }
    for name, m in cases.items():
        (root / name).mkdir(parents=True)
        (root / name / "status.json").write_text('{"status": "complete"}')
        (root / name / "metrics.json").write_text(json.dumps(m))
    d3 = root / "a-20260101-000003"
    pd.DataFrame({"model": ["teacher"], "prompt": ["p"], "response": [None], "bias_spans": ["[[0, 99]]"]}).to_parquet(
        d3 / "samples.parquet")
    pd.DataFrame({"defense": ["d", "d"], "score": [float("nan"), 1.0], "poisoned": [True, None]}).to_parquet(
        d3 / "defense_scores.parquet")
    pd.DataFrame({"poisoned": [True], "response": ["a"], "clean_response": [None]}).to_parquet(
        d3 / "train_set.parquet")
    (d3 / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {root}/pwned']\n")
    pd.DataFrame({"response": ["a", None], "bias_spans": ["[[0, 5]]", "garbage"], "biased": [True, None]}).to_parquet(
        d3 / "distill_set.parquet")
    pd.DataFrame({"model": ["t", "t"], "prompt": ["p", "p"], "response": ["r", "s"], "id": ["1", "1"],
                  "decoding": ["sampled", None], "sample_index": [0, None]}).to_parquet(
        root / "a-20260101-000001" / "samples.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(root / "a-20260101-000002" / "samples.parquet")
    (root / "a-20260101-000002" / "config.yaml").write_text("- just\n- a list\n")
    (root / "b-sweep-20260101-000000" / "00-x=1").mkdir(parents=True)
    (root / "b-sweep-20260101-000000" / "sweep.json").write_text("{bad")
    (root / "b-sweep-20260101-000000" / "00-x=1" / "status.json").write_text('{"status": "running"}')
    c = root / "c-sweep-20260101-000000"  # a budget sweep whose dose_response has the wrong shapes
    for i, n in enumerate((0, 8)):
        (c / f"0{i}-count={n}").mkdir(parents=True)
        (c / f"0{i}-count={n}" / "status.json").write_text('{"status": "complete"}')
        (c / f"0{i}-count={n}" / "metrics.json").write_text(json.dumps({
            "run": {"name": "c"}, "poison": {"injected": n}, "models": {"teacher": {"role": "teacher"}},
            "bias_rates": [{"model": "teacher", "role": "teacher", "split": "target", "n": 10, "biased": i}],
            "sampled_rate": [{"model": "teacher", "role": "teacher", "split": "target", "k": i, "n": 10,
                              "rate": i / 10, "ci_low": None, "ci_high": None}]}))
    (c / "sweep.json").write_text(json.dumps({"keys": ["poison.count"], "runs": [
        {"point": {"poison.count": n}, "run_dir": f"x/0{i}-count={n}"} for i, n in enumerate((0, 8))],
        "dose_response": [5, {"model": "teacher", "split": "target", "dose": "poison.count", "measure": "sampled",
                              "slope": "x", "offset": None, "ed50": "?", "points": "no"},
                          {"model": "teacher", "split": "target", "dose": "poison.count", "measure": "sampled",
                           "intercept": -1.0, "slope": 1.0, "offset": 4.0, "ed50": None, "note": "n"}]}))
    return sorted(cases) + ["b-sweep-20260101-000000/00-x=1"]


def test_malformed_runs_degrade_without_errors(monkeypatch, tmp_path):
    runs = _write_malformed_runs(tmp_path)
    idx = run_index.load_index(tmp_path)["runs"].set_index("run")
    assert "metrics.json: run is not an object" in idx.loc["a-20260101-000001", "problems"]
    assert "not a JSON object" in idx.loc["a-20260101-000004", "problems"]
    assert idx.loc["b-sweep-20260101-000000/00-x=1", "status"] == "running"
    for view in ("overview", "sweeps", "compare"):
        at = open_app(monkeypatch, view, runs_dir=tmp_path)
        assert not at.error, (view, [e.value for e in at.error])
    at = open_app(monkeypatch, "sweeps", runs_dir=tmp_path)
    assert at.selectbox(key="sw_source").value == ("sweep", "c-sweep-20260101-000000")
    fit = chart_data(at).query("kind == 'fit'")  # the one well-formed entry is drawn, the others skipped
    assert len(fit) > 2 and fit.rate.iloc[0] == pytest.approx(1 / (1 + math.exp(-(-1.0 + math.log(4.0)))))
    for measure in at.button_group(key="sw_measure").options:
        at.button_group(key="sw_measure").set_value(
            {"greedy answer": "greedy", "sampled answers": "sampled"}[measure]).run()
        assert not at.error and not at.exception
    for view in ("propagation", "samples", "defenses"):
        for run in runs[1:3]:
            at = open_app(monkeypatch, view, run, runs_dir=tmp_path)
            assert not at.error, (view, run, [e.value for e in at.error])
    assert not (tmp_path / "pwned").exists()
    cfg, problem = rundir.read_yaml(tmp_path / "a-20260101-000003" / "config.yaml")
    assert cfg is None and "not valid YAML" in problem


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_app_never_writes_into_run_dirs(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(FIX, runs)
    before = _tree_digest(runs)
    for view in ("overview", "propagation", "sweeps", "samples", "defenses", "compare"):
        for run in (DEFENDED, BROKEN, LOWDOSE, f"{DOSE}/02-count=8"):
            open_app(monkeypatch, view, run, runs_dir=runs)
    assert _tree_digest(runs) == before


def test_view_propagation_shows_utility_intervals(monkeypatch, tmp_path):
    # runs written since utility rows carry ci_low/ci_high show them; the fixture runs (older) do not have them
    import shutil

    shutil.copytree(FIX / R32, tmp_path / R32)
    mpath = tmp_path / R32 / "metrics.json"
    m = json.loads(mpath.read_text())
    for u in m["utility"]:
        u["ci_low"], u["ci_high"] = u["value"] - 0.05, u["value"] + 0.05
    mpath.write_text(json.dumps(m))
    at = open_app(monkeypatch, "propagation", R32, runs_dir=tmp_path)
    assert not at.error
    cap = [c.value for c in at.caption if c.value.startswith("with intervals:")]
    u = m["utility"][0]
    assert cap and f"{u['model']} {u['task']} {u['metric']} {u['value']:.2f} [{u['ci_low']:.2f}, {u['ci_high']:.2f}]" \
        in cap[0]
