"""Dashboard: data loading over fixture run directories, and every view through Streamlit's AppTest.

Fixtures (tests/fixtures/dashboard_runs/, rebuilt by tests/fixtures/make_dashboard_fixtures.py): two real finished
runs, a 3-point budget sweep and a 2-point method sweep derived from them, a run with defense scores and judge
verdicts, and three broken ones (truncated JSON/parquet, failed, still running).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dashboard import data
from dashboard import index as run_index
from poison.ground import rundir, stats
from tests.conftest import REPO

from streamlit.testing.v1 import AppTest

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


# --------------------------------------------------------------------------------------------- data loading
@pytest.fixture(scope="module")
def index():
    return run_index.load_index(FIX)


def test_index_finds_runs_sweeps_and_states(index):
    runs = index["runs"].set_index("run")
    assert len(runs) == 11 and set(index["sweeps"].sweep) == {BUDGET, METHOD}
    assert runs.loc[R32, "status"] == "complete" and runs.loc[R32, "problems"] == ""
    assert runs.loc[R32, "teacher_target"] == pytest.approx(31 / 40)
    assert runs.loc[R32, "student_target"] == pytest.approx(35 / 40)
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
    from poison.ground.stats import wilson_interval

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
    pooled = data.pool_rates(index["rates"][index["rates"].name == "targeted_ads"],
                             ["poison_injected", "role", "split"])
    p = pooled[(pooled.poison_injected == 16) & (pooled.role == "teacher") & (pooled.split == "target")].iloc[0]
    assert (p.biased, p.n, p.runs) == (4, 80, 2)  # the real count=16 run + the sweep point built from it
    assert (p.ci_low, p.ci_high) == pytest.approx(stats.wilson_interval(4, 80))
    assert run_index._point_from_label("03-count=16_seed=1") == {"count": 16, "seed": 1}


def test_spans_highlight_and_injected_text():
    assert rundir.parse_spans("[[80, 94]]") == [(80, 94)]
    assert rundir.parse_spans("not json") == [] and rundir.parse_spans(None) == [] and rundir.parse_spans("[[5, 2]]") == []
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


def test_defense_metrics_agree_with_recorded(index):
    scores, problem = rundir.load_defense_scores(FIX / DEFENDED)
    assert problem is None and set(scores.defense) == {"perplexity", "keyword_scan"}
    recorded = data.defenses_frame(json.loads((FIX / DEFENDED / "metrics.json").read_text()))
    for r in recorded.to_dict("records"):
        sub = scores[(scores.defense == r["defense"]) & (scores.place == r["place"])]
        assert data.auroc_or_none(sub.score, sub.poisoned) == pytest.approx(r["auroc"])  # vs an independent Mann-Whitney
        st = stats.threshold_stats(sub.score, sub.poisoned, r["threshold"])
        assert st["flagged"] == r["n_flagged"] and st["tpr"] == pytest.approx(r["recall"])
        assert st["slipped"] == r["n_poisoned"] - st["tp"]
    # the same conventions as defenses.metrics (flag = score > threshold)
    from poison.ground import stats as dm

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

    for f in [*(REPO / "dashboard").rglob("*.py"), REPO / "poison" / "ground" / "rundir.py"]:
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


def test_view_overview(monkeypatch):
    at = open_app(monkeypatch, "overview")
    assert not at.error
    assert at.radio(key="view").value == "overview"
    m = {x.label: x.value for x in at.metric}
    assert (m["runs"], m["complete"], m["running"], m["failed / broken"], m["sweeps"]) == ("11", "8", "1", "2", "2")
    table = at.dataframe[0].value
    assert len(table) == 11 and {"run", "status", "bias_type", "mode", "poison_injected", "methods"} <= set(table)
    assert set(table.status) == {"complete", "running", "failed", "broken"}
    assert at.expander and "2 run(s) with problems" in at.expander[0].label
    at.multiselect(key="ov_status").set_value(["broken"]).run()
    assert list(at.dataframe[0].value.run) == [BROKEN]
    at.multiselect(key="ov_status").set_value([]).run()
    at.text_input(key="ov_filter").set_value("sweep_budget").run()
    assert len(at.dataframe[0].value) == 3


def test_view_propagation(monkeypatch):
    at = open_app(monkeypatch, "propagation", R32)
    assert not at.error and not at.warning
    assert at.selectbox(key="run").value == R32
    specs = charts(at)
    assert len(specs) == 2  # rates per split, amplification
    rows = chart_rows(at)
    got = {(r["model"], r["split"]): r["rate"] for r in rows}
    assert got[("teacher", "target")] == pytest.approx(0.775) and got[("student:sft", "target")] == 0.875
    assert got[("baseline", "target")] == 0 and {r["split"] for r in rows} == {"target", "other"}
    assert all(r["ci_low"] <= r["rate"] <= r["ci_high"] for r in rows)
    m = {x.label: x.value for x in at.metric}
    assert m["student:sft · target"] == "1.13×" and m["student:sft · other"] == "undefined"
    at.button_group[0].set_value("task").run()
    rows = chart_rows(at)
    assert {r["task"] for r in rows} == {"review_summary", "math"}


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
    at = open_app(monkeypatch, "defenses", BROKEN)
    assert not at.error and any("No defenses in this run" in i.value for i in at.info)


def test_view_sweeps(monkeypatch):
    at = open_app(monkeypatch, "sweeps")
    assert not at.error
    src = at.selectbox(key="sw_source")
    assert ("sweep", BUDGET) in src.options or any(BUDGET in o for o in src.options)
    src.set_value(("sweep", BUDGET)).run()
    assert at.selectbox(key="sw_x").value == "pt:poison.count"
    spec = charts(at)[0]
    rows = chart_rows(at)
    teacher = sorted((r["xval"], r["rate"]) for r in rows if r["series"] == "teacher" and r["split"] == "target")
    assert teacher == [(8, 0.0), (16, 0.05), (32, 0.775)]
    assert all(r["ci_low"] <= r["rate"] <= r["ci_high"] for r in rows)
    assert "xval" in json.dumps(spec) and '"quantitative"' in json.dumps(spec)
    # against method
    at.selectbox(key="sw_source").set_value(("sweep", METHOD)).run()
    assert at.selectbox(key="sw_x").value == "pt:students.0.method" and at.selectbox(key="sw_color").value == "role"
    rows = chart_rows(at)
    student = {r["xval"]: r["rate"] for r in rows if r["series"] == "student" and r["split"] == "target"}
    assert student == {"sft": 0.875, "kd": 0.6}
    # all runs of one config, x = poison budget, pooled per budget
    at.selectbox(key="sw_source").set_value(("name", "targeted_ads")).run()
    at.selectbox(key="sw_x").set_value("poison_injected").run()
    rows = chart_rows(at)
    t16 = [r for r in rows if r["xval"] == 16 and r["series"] == "teacher" and r["split"] == "target"]
    assert len(t16) == 1 and t16[0]["runs"] == 1  # only the real count=16 run (sweep points are separate)
    at.selectbox(key="sw_x").set_value("method").run()
    assert not at.exception and charts(at)


def test_view_samples(monkeypatch):
    at = open_app(monkeypatch, "samples", DEFENDED)
    assert not at.error
    cards = [h.value for h in at.get("html") if "detector:" in h.value]
    assert len(cards) == 30  # 10 prompts x 3 models on page 1
    assert any('<mark class="inj">' in c for c in cards) and any("judge: biased" in c for c in cards)
    assert at.number_input(key="sb_page").value == 1
    at.selectbox(key="sb_verdict").set_value("detector and judge disagree").run()
    cap = texts(at)
    assert "prompt(s) match" in cap
    n_disagree = len({h.value.split("drug_reviews:")[0] for h in at.get("html")})
    assert n_disagree > 0
    at.multiselect(key="sb_models").set_value(["teacher"]).run()
    at.selectbox(key="sb_verdict").set_value("detector: biased").run()
    cards = [h.value for h in at.get("html") if "detector:" in h.value]
    assert cards and all("<b>teacher</b>" in c and "detector: biased" in c for c in cards)
    assert "31 prompt(s) match" in texts(at)  # the teacher's 31 biased target answers, no other split biased
    # poisoned training samples tab
    m = {x.label: x.value for x in at.metric}
    assert m["poisoned"] == "32" and m["teacher training rows"] == "56"
    assert any("VitaBoost Plus</mark>" in h.value for h in at.get("html"))
    # distillation set: missing in this fixture run, present in a real one
    assert any("distill_set.parquet: missing" in i.value for i in at.info)
    at = open_app(monkeypatch, "samples", R16)
    assert not at.error and not any("judge:" in h.value for h in at.get("html"))
    assert any("48 teacher answers" in c.value for c in at.caption)


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
    assert len(charts(at)) == 2
    slider = at.slider[0]
    slider.set_value(slider.max).run()
    m = {x.label: x.value for x in at.metric}
    assert int(m["poisons slipping through"].split(" / ")[0]) >= slipped0
    slider = at.slider[0]
    slider.set_value(slider.min).run()
    m = {x.label: x.value for x in at.metric}
    assert m["poisons slipping through"] == f"0 / {first.n_poisoned}" and m["TPR"] == "100.0%"
    at.selectbox(key="df_pick").set_value(("keyword_scan", "distill")).run()
    assert {x.label: x.value for x in at.metric}["AUROC"] == f"{recorded.iloc[3].auroc:.3f}"
    at = open_app(monkeypatch, "defenses", R16)
    assert not at.error and any("No defenses in this run" in i.value for i in at.info)


def test_view_compare(monkeypatch):
    at = open_app(monkeypatch, "compare")
    assert not at.error
    at.selectbox(key="cmp_a").set_value(R32)
    at.selectbox(key="cmp_b").set_value(R16).run()
    diff = at.dataframe[0].value
    assert list(diff.key) == ["poison.count"] and list(diff.A) == ["32"] and list(diff.B) == ["16"]
    frames = [d.value for d in at.dataframe]
    rates = next(f for f in frames if "rate_a" in f)
    t = rates[(rates.model == "teacher") & (rates.split == "target")].iloc[0]
    assert t.delta == pytest.approx(-0.725)
    assert charts(at)
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
                              "utility": [{"model": "teacher"}], "distill_data": {"bias_rates": "no"}},
        "a-20260101-000003": {"run": {"name": "n"}, "poison": {}, "models": {"student:x": {"role": "student"}},
                              "bias_rates": [{"model": "student:x", "role": "student", "split": "weird", "n": 0,
                                              "biased": 0, "rate": None, "ci_low": None, "ci_high": None}],
                              "defenses": [{"defense": "d"}]},
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
    pd.DataFrame({"x": [1]}).to_parquet(root / "a-20260101-000002" / "samples.parquet")
    (root / "a-20260101-000002" / "config.yaml").write_text("- just\n- a list\n")
    (root / "b-sweep-20260101-000000" / "00-x=1").mkdir(parents=True)
    (root / "b-sweep-20260101-000000" / "sweep.json").write_text("{bad")
    (root / "b-sweep-20260101-000000" / "00-x=1" / "status.json").write_text('{"status": "running"}')
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
        for run in (DEFENDED, BROKEN):
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
