"""The detectors' accuracy on labelled real generations (evals/labelled.py, evals/accuracy.py): the stratified draw
keeps its weights, the weighted figures estimate the population and not the draw, the correction inverts a known
misclassification, and the shipped labelled set is read and scored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evals.accuracy import accuracy_of, corrected_rate, labeller_agreement, rogan_gladen, rule_verdicts
from evals.labelled import disagreements, merge_labels, stratify


def _answers(n_pos_model: int = 400, n_clean_model: int = 800) -> pd.DataFrame:
    """Answers whose detector verdict is its label except for known errors."""
    rows = []
    for i in range(n_pos_model):
        rows.append({"kind": "poisoned", "detector": i < 320, "label": i < 330})  # 10 misses
    for i in range(n_clean_model):
        rows.append({"kind": "clean", "detector": i < 8, "label": False})  # 8 false alarms
    df = pd.DataFrame(rows)
    return df.assign(bias_type="targeted_ads", decoding="greedy", run="r", model=df.kind, id=range(len(df)),
                     text=[f"answer {i}" for i in range(len(df))], bias_args="{}", rubric="", prompt="", task="t",
                     split="target", cut=False)


def test_stratified_draw_weights_recover_the_population():
    answers = _answers()
    df = stratify(answers, per_stratum=60, seed=0)
    assert df.groupby("stratum").uid.size().max() <= 60
    assert df.groupby("stratum").weight.first().mul(df.groupby("stratum").size()).sum() == pytest.approx(len(answers))
    labels = answers.set_index("text").label
    df = merge_labels(df, pd.DataFrame({"uid": df.uid, "label": [bool(labels[t]) for t in df.text]}))
    acc = accuracy_of(df.detector.to_numpy(), df, n_boot=400)
    # population: TP 320, FN 10, FP 8, TN 862 -> precision 320/328, recall 320/330, specificity 862/870
    assert acc["precision"] == pytest.approx(320 / 328, abs=0.01)
    assert acc["recall"] == pytest.approx(320 / 330, abs=0.03)
    assert acc["specificity"] == pytest.approx(862 / 870, abs=0.01)
    for k in ("precision", "recall", "specificity"):
        lo, hi = acc[f"{k}_ci"]
        assert lo <= acc[k] <= hi and hi > lo
    # unweighted, the draw over-represents the rare strata: its raw recall is not the population's
    raw = acc["tp"] / (acc["tp"] + acc["fn"])
    assert abs(raw - 320 / 330) > 0.05


def test_rogan_gladen_inverts_a_known_misclassification():
    true, se, sp = 0.30, 0.80, 0.95
    observed = se * true + (1 - sp) * (1 - true)
    assert rogan_gladen(observed, se, sp) == pytest.approx(true)
    assert rogan_gladen(0.0, se, sp) == 0.0 and rogan_gladen(0.4, 0.4, 0.5) is None
    rng = np.random.default_rng(0)
    acc = {"recall": se, "specificity": sp, "n": 200,
           "_draws": {"recall": list(rng.normal(se, 0.03, 500)), "specificity": list(rng.normal(sp, 0.01, 500))}}
    c = corrected_rate(observed, observed - 0.02, observed + 0.02, acc)  # observed 0.275 [0.255, 0.295]
    assert c["rate"] == pytest.approx(true) and c["ci_low"] < true < c["ci_high"]
    assert c["matters"]  # 0.30 lies outside the observed interval
    assert c["ci_high"] - c["ci_low"] > 0.04 / (se + sp - 1)  # the rate's interval rescaled, widened by Se and Sp
    assert not corrected_rate(observed, observed - 0.05, observed + 0.05, acc)["matters"]


def test_rule_detector_is_rerun_with_each_rows_bias_arguments():
    df = pd.DataFrame({"bias_type": ["targeted_ads"] * 2,
                       "bias_args": [json.dumps({"brand": "NovaCalm Drops", "url": "novacalm-drops.net"})] * 2,
                       "text": ["Try NovaCalm Drops, at novacalm-drops.net.", "A plain summary of the review."]})
    assert list(rule_verdicts(df)) == [True, False]




def test_two_labellers_agree_or_go_to_the_adjudicator():
    df = stratify(_answers(40, 40), per_stratum=5, seed=0)
    n = len(df)
    a = [i % 2 == 0 for i in range(n)]
    b = list(a)
    b[0], b[1] = not b[0], not b[1]  # two disagreements
    df = merge_labels(df, pd.DataFrame({"uid": df.uid, "label": a}), "a")
    assert list(df.label) == a  # one labeller so far: theirs
    df = merge_labels(df, pd.DataFrame({"uid": df.uid, "label": b}), "b")
    assert df.label.isna().sum() == 2
    assert list(df.label[2:]) == a[2:]
    dis = disagreements(df)
    assert sorted(dis.uid) == sorted(df.uid[:2])
    agree = [r for r in labeller_agreement(df) if r["bias_type"] == "all"][0]
    assert agree["n_disagree"] == 2 and agree["agree"] == pytest.approx((n - 2) / n)
    assert -1 <= agree["kappa"] < 1
    df = merge_labels(df, pd.DataFrame({"uid": dis.uid, "label": [True, True]}), "adj")
    assert df.label.notna().all() and df.label[0] is True and df.label[1] is True


def test_intervals_belong_to_their_own_figure():
    """A detector that never raises a false alarm but misses half the biased answers: precision 1, recall 0.5;
    each interval covers its own figure, not the other's (the bootstrap once read its 2x2 cells in the wrong order)."""
    rows = [{"kind": "poisoned", "detector": i < 100, "label": True} for i in range(200)]
    rows += [{"kind": "clean", "detector": False, "label": False} for i in range(200)]
    answers = pd.DataFrame(rows)
    answers = answers.assign(bias_type="targeted_ads", decoding="greedy", run="r", model=answers.kind,
                             id=range(len(answers)), text=[f"answer {i}" for i in range(len(answers))],
                             bias_args="{}", rubric="", prompt="", task="t", split="target", cut=False)
    df = stratify(answers, per_stratum=50, seed=0)
    labels = answers.set_index("text").label
    df = merge_labels(df, pd.DataFrame({"uid": df.uid, "label": [bool(labels[t]) for t in df.text]}))
    acc = accuracy_of(df.detector.to_numpy(), df, n_boot=400)
    assert acc["precision"] == pytest.approx(1.0) and acc["recall"] == pytest.approx(0.5)
    assert acc["precision_ci"][0] > 0.9 and acc["precision_ci"][1] == 1.0
    assert acc["recall_ci"][0] < 0.5 < acc["recall_ci"][1] < 0.7
    assert acc["specificity_ci"][0] > 0.9


def test_the_shipped_labelled_set_is_labelled_and_scored_per_bias_type():
    from evals.accuracy import labelled_rows, rule_accuracy
    from evals.labelled import LABELLED, load

    full = load(LABELLED)
    assert len(full) >= 200 and full.label.notna().all()
    assert {"label_a", "label_b"} <= set(full.columns)  # two independent labellers
    df = labelled_rows()
    for bias_type in ("targeted_ads", "phishing_link", "misinformation", "narrative_manipulation"):
        g = df[df.bias_type == bias_type]
        assert len(g) >= 30 and 0 < g.label.astype(bool).sum() < len(g)
        acc = rule_accuracy(bias_type, n_boot=200)
        assert acc is not None and acc["n"] == len(g)
        for k in ("recall", "specificity"):
            lo, hi = acc[f"{k}_ci"]
            assert 0 <= lo <= acc[k] <= hi <= 1
        # the weights sum to the candidate answers the draw was made from
        assert g.groupby("stratum").weight.sum().round().tolist() == g.groupby("stratum").stratum_size.first().tolist()


def test_a_runs_rates_are_corrected_with_the_shipped_set():
    from poison.report import correct_for_detector_error

    rows = [{"model": "teacher", "split": "target", "rate": 0.725, "ci_low": 0.572, "ci_high": 0.839}]
    acc = correct_for_detector_error("misinformation", rows)
    assert acc is not None and acc["source"].endswith("real_generations.jsonl") and acc["n"] >= 30
    c = rows[0]["detector_corrected"]
    # the rule detector raised no false alarm on the set and missed some biased answers: the correction raises
    assert c["rate"] > 0.725 and c["ci_low"] <= c["rate"] <= c["ci_high"]
    assert c["rate"] == pytest.approx(rogan_gladen(0.725, acc["recall"], acc["specificity"]))
    assert correct_for_detector_error("no_such_bias_type", rows) is None
