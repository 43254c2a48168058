"""The detectors' accuracy on labelled real generations (evals/labelled.py, evals/accuracy.py): the stratified draw
keeps its weights, the weighted figures estimate the population and not the draw, the correction inverts a known
misclassification, and the shipped labelled set is read and scored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evals.accuracy import accuracy_of, corrected_rate, rogan_gladen, rule_verdicts
from evals.labelled import merge_labels, stratify


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


