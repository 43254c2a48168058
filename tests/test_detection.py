"""Unconfounded defense scoring on hand-made score arrays: bootstrap intervals of the AUROC and of the rates at
thresholds set on a calibration split, figures within a task (where telling tasks apart cannot help), the
disjointness check of fitted / calibration / scored samples, the reference-model check, and pooling over
replicates."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from poison.defense_report import detection_lines, detection_rows
from poison.ground.core.errors import ConfigError, DataError
from poison.ground.results.detection import auroc_interval, calibrated_rate, detection_figures, thresholds
from poison.ground.results.stats import threshold_for_fpr
from poison.replicate_defenses import defense_lines, pool_defenses
from poison.stages.defense_checks import check_disjoint_scoring


def test_thresholds_vectorised_match_threshold_for_fpr():
    c = np.random.default_rng(1).normal(size=(7, 23))
    c[0, :5] = 0.5  # ties
    for fpr in (0.0, 0.01, 0.05, 0.2, 0.5, 0.99, 1.0):
        assert thresholds(c, fpr) == pytest.approx([threshold_for_fpr(row, fpr) for row in c])


def test_figures_on_hand_made_scores():
    pos = [3.0, 2.5, 2.0, 0.2]
    neg = [0.1, 0.4, 1.0, 2.2, 0.3, 0.0]
    calib = [0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.9, 1.5, 1.9, 2.1]  # 10 samples: 5 % budget -> the largest, 2.1
    f = detection_figures(pos + neg, [1] * 4 + [0] * 6, calib, n_boot=500)
    assert f["auroc"] == pytest.approx(roc_auc_score([1] * 4 + [0] * 6, pos + neg))
    assert (f["n"], f["n_poisoned"], f["n_clean"], f["n_calib"]) == (10, 4, 6, 10)
    assert f["threshold_5pct"] == 2.1 and f["threshold_1pct"] == 2.1
    assert f["tpr_5pct"] == pytest.approx(2 / 4)  # 3.0 and 2.5 exceed 2.1
    assert f["fpr_5pct"] == pytest.approx(1 / 6)  # 2.2: the calibrated threshold does not carry over exactly
    for k in ("auroc", "tpr_5pct", "fpr_5pct", "tpr_1pct", "fpr_1pct"):
        assert 0.0 <= f[f"{k}_low"] <= f[k] <= f[f"{k}_high"] <= 1.0


def test_interval_shrinks_with_more_samples_and_is_none_below_two():
    rng = np.random.default_rng(0)
    small = auroc_interval(rng.normal(1, 1, 10), rng.normal(0, 1, 10), n_boot=500)
    big = auroc_interval(rng.normal(1, 1, 400), rng.normal(0, 1, 400), n_boot=500)
    assert big["ci_high"] - big["ci_low"] < small["ci_high"] - small["ci_low"]
    assert big["ci_low"] < 0.76 < big["ci_high"]  # the true AUROC of N(1,1) vs N(0,1): Phi(1/sqrt 2) = 0.760
    one = auroc_interval([2.0], [0.0, 1.0], n_boot=200)
    assert one == {"value": 1.0, "ci_low": None, "ci_high": None}
    assert auroc_interval([], [0.0, 1.0])["value"] is None
    assert calibrated_rate([1.0, 2.0], [], 0.05)["value"] is None


def test_calibration_resampling_widens_the_rate_interval():
    """The calibrated TPR's interval covers which calibration samples set the threshold: with the same scored rows,
    a small calibration split gives a wider interval than a large one."""
    rng = np.random.default_rng(3)
    pos = rng.normal(1.5, 1, 200)
    few = calibrated_rate(pos, rng.normal(0, 1, 20), 0.05, n_boot=1000)
    many = calibrated_rate(pos, rng.normal(0, 1, 2000), 0.05, n_boot=1000)
    assert few["ci_high"] - few["ci_low"] > many["ci_high"] - many["ci_low"]


def _stage(tmp_path, scores: pd.DataFrame, calib: pd.DataFrame) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    scores.to_parquet(tmp_path / "scores.parquet")
    calib.to_parquet(tmp_path / "calib.parquet")
    return str(tmp_path)


def test_within_task_figure_is_not_fooled_by_task_differences(tmp_path):
    """A 'defense' that only tells tasks apart: every poisoned row is of the target task, whose rows all score high.
    Over all rows its AUROC is high; within the target task it is 0.5 (poisoned and clean rows score alike)."""
    rng = np.random.default_rng(0)
    n_t, n_o = 20, 60
    task = ["ads"] * n_t + ["math"] * n_o
    poisoned = [True] * 10 + [False] * 10 + [False] * n_o
    score = np.r_[np.full(n_t, 5.0), rng.normal(0, 1, n_o)]
    scores = pd.DataFrame({"defense": "ppl", "place": "train", "row_id": [f"r{i}" for i in range(n_t + n_o)],
                           "task": task, "poisoned": poisoned, "score": score, "flagged": False, "threshold": 0.0,
                           "instance": 0})
    calib = pd.DataFrame({"defense": "ppl", "place": "train", "instance": 0, "row_id": [f"c{i}" for i in range(40)],
                          "task": "math", "score": rng.normal(0, 1, 40)})
    rows = detection_rows({"train": _stage(tmp_path / "s", scores, calib)}, "ads", n_boot=300)
    by = {(r["scope"], r["task"]): r for r in rows}
    assert set(by) == {("all", None), ("task", "ads")}
    assert by[("all", None)]["auroc"] > 0.8
    assert by[("task", "ads")]["auroc"] == pytest.approx(0.5) and by[("task", "ads")]["target"]
    assert by[("task", "ads")]["n_poisoned"] == 10 and by[("task", "ads")]["n_clean"] == 10
    # the calibrated threshold is set on calib.parquet alone, whatever the scored rows
    assert by[("all", None)]["threshold_5pct"] == threshold_for_fpr(calib.score, 0.05)
    assert by[("task", "ads")]["fpr_5pct"] == 1.0  # every clean ads row is flagged: the threshold does not carry over
    text = "\n".join(detection_lines(rows, ["defense.defenses.0: the perplexity reference model ..."]))
    assert "task ads (target)" in text and "warning: defense.defenses.0" in text


def test_within_task_without_clean_rows_says_so(tmp_path):
    scores = pd.DataFrame({"defense": "ppl", "place": "train", "row_id": ["a", "b", "c"], "task": ["ads", "ads", "x"],
                           "poisoned": [True, True, False], "score": [1.0, 2.0, 0.0], "flagged": False,
                           "threshold": 0.0, "instance": 0})
    calib = pd.DataFrame({"defense": "ppl", "place": "train", "instance": 0, "row_id": ["c0", "c1"], "task": "x",
                          "score": [0.0, 0.5]})
    rows = detection_rows({"train": _stage(tmp_path, scores, calib)}, "ads", n_boot=200)
    within = next(r for r in rows if r["scope"] == "task")
    assert within["auroc"] is None and within["fpr_5pct"] is None and within["tpr_5pct"] == 1.0
    assert "no clean rows of task 'ads'" in within["note"]


def test_fitted_calibration_and_scored_sets_must_be_disjoint():
    s = lambda i, p: {"id": i, "prompt": p}  # noqa: E731
    check_disjoint_scoring("train", [s("a", "p1")], [s("f", "p2")], [s("c", "p3")])  # disjoint: passes
    with pytest.raises(DataError, match=r"prompt\(s\) in both the calibration .* and the scored \(distill place\)"):
        check_disjoint_scoring("distill", [s("a", "p1")], [s("f", "p2")], [s("c", "p1")])
    with pytest.raises(DataError, match=r"id\(s\) in both the fitted"):
        check_disjoint_scoring("train", [s("a", "p1")], [s("a", "p2")], [s("c", "p3")])


def _detection(auroc_ads: float, tpr: float) -> list[dict]:
    base = {"defense": "ppl", "place": "distill", "instance": 2, "fpr_1pct": 0.0, "tpr_1pct": tpr, "fpr_5pct": 0.1,
            "tpr_5pct": tpr}
    return [{**base, "scope": "all", "task": None, "auroc": 0.9},
            {**base, "scope": "task", "task": "ads", "auroc": auroc_ads}]


def test_within_task_figures_pool_over_replicates():
    runs = [("g", r, {"defense_detection": _detection(a, t)}) for r, (a, t) in enumerate([(0.6, 0.2), (0.7, 0.4),
                                                                                        (0.5, 0.3)])]
    rows = pool_defenses(runs)
    by = {(r["scope"], r["metric"]): r for r in rows}
    assert ("all", "auroc") not in by  # the overall AUROC is pooled from the ``defenses`` rows
    r = by[("task ads", "auroc")]
    assert r["mean"] == pytest.approx(0.6) and r["n"] == 3 and r["instance"] == 0 and r["df"] == 2
    assert r["ci_low"] < 0.6 < r["ci_high"]
    assert by[("all", "tpr_5pct")]["mean"] == pytest.approx(0.3)
    assert "distill task ads" in "\n".join(defense_lines(rows))


def test_writer_reference_error_and_warning(tmp_path, models_dir):
    """The perplexity reference model is the teacher's base model (which wrote the distill place's clean answers)
    or the data generator (which wrote training responses): an error naming both, unless allowed (a warning)."""
    import yaml

    from poison.config import config_from_dict
    from poison.pipeline import Pipeline
    from poison.stages.defense_checks import writer_reference_checks
    from poison.stages.protocol import StageRecord
    from tests.conftest import TINY_CONFIG

    raw = yaml.safe_load(TINY_CONFIG)
    raw["data"]["generator"] = {"model": "tiny-random-llama:1:64"}
    raw["defense"] = {"defenses": [{"type": "perplexity", "args": {"model": "tiny-random-llama:2:64"}},
                                   {"type": "bias_classifier"}], "places": ["train", "distill"]}
    rows = pd.DataFrame({"split": ["train", "train"], "generated": [False, False], "prompt": ["a", "b"]})
    (tmp_path / "data").mkdir()
    rows.to_parquet(tmp_path / "data" / "rows.parquet")
    data = StageRecord("data", "k", str(tmp_path / "data"), True, 0.0)
    sets = [f"runtime.cache_dir={tmp_path / 'c'}", f"runtime.runs_dir={tmp_path / 'r'}",
            f"runtime.models_dir={models_dir}"]

    def run_of(raw):
        return Pipeline(config_from_dict(raw, sets), tmp_path / "run").stages

    with pytest.raises(ConfigError,
                       match=r"defense.defenses.0: the perplexity reference model 'tiny-random-llama:2:64' "
                             r"is the teacher's base model .*teacher.model.* distill place.*"
                             r"allow_writer_reference"):
        writer_reference_checks(run_of(raw), data, ["train", "distill"])
    assert writer_reference_checks(run_of(raw), data, ["train"]) == []  # no generated training response
    raw["defense"]["defenses"][0]["allow_writer_reference"] = True
    warned = writer_reference_checks(run_of(raw), data, ["train", "distill"])
    assert len(warned) == 1 and "'tiny-random-llama:2:64'" in warned[0] and "confounded" in warned[0]
    # the generator wrote a training response and is the reference model: the train place is confounded too
    rows.assign(generated=[True, False]).to_parquet(tmp_path / "data" / "rows.parquet")
    raw["defense"]["defenses"][0]["args"]["model"] = "tiny-random-llama:1:64"
    raw["defense"]["defenses"][0]["allow_writer_reference"] = False
    with pytest.raises(ConfigError, match=r"is the data generator 'tiny-random-llama:1:64' \(data.generator.model\)"):
        writer_reference_checks(run_of(raw), data, ["train", "distill"])


def test_dashboard_shows_detection_rows_with_intervals():
    from dashboard.data import detection_records

    row = {"defense": "ppl", "place": "train", "scope": "task", "task": "ads", "target": True, "n_poisoned": 8,
           "n_clean": 24, "auroc": 0.81, "auroc_low": 0.64, "auroc_high": 0.94, "tpr_1pct": 0.125,
           "tpr_1pct_low": None, "tpr_1pct_high": None, "fpr_5pct": None, "note": "n"}
    rec = detection_records({"defense_detection": [row, {**row, "scope": "all", "task": None, "target": False}]})
    assert rec[0]["scope"] == "task ads (target)" and rec[1]["scope"] == "all rows"
    assert rec[0]["AUROC"] == "0.810 [0.640, 0.940]" and rec[0]["TPR at 1 % FPR budget"] == "0.125"
    assert rec[0]["FPR at 5 % FPR budget"] is None and rec[0]["poisoned / clean"] == "8 / 24"
    assert detection_records({}) == []
