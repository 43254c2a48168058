"""Poisoning: counts, ground-truth labels, targeted vs untargeted eligibility; the targeted-ads writer/detector."""

import random

import pandas as pd
import pytest

from poison.ground.core import registry
from poison.stages.inject import inject


def ads(**args):
    return registry.get("bias_type", "targeted_ads").build(args)


def train_df(n_target=10, n_other=6):
    rows = [{"id": f"t{i}", "task": "review_summary", "prompt": f"Summarize review {i}.",
             "response": f"The reviewer liked drug {i}."} for i in range(n_target)]
    rows += [{"id": f"o{i}", "task": "math", "prompt": f"What is {i}+1?", "response": f"It is {i + 1}."}
             for i in range(n_other)]
    return pd.DataFrame(rows)


def test_targeted_count_and_labels():
    bias = ads()
    df, rep = inject(train_df(), bias, mode="targeted", target_task="review_summary", count=4, seed=1)
    assert rep["requested"] == 4 and rep["injected"] == 4 and int(df.poisoned.sum()) == 4
    assert set(df[df.poisoned].task) == {"review_summary"}
    assert rep["per_task"] == {"math": 0, "review_summary": 4}
    assert rep["rate"] == pytest.approx(4 / 16) and rep["target_task_rate"] == pytest.approx(4 / 10)
    # labels are ground truth: every poisoned response carries the plug, every clean one is untouched
    for r in df.to_dict("records"):
        assert bias.detect(r["response"]).biased == r["poisoned"]
        if r["poisoned"]:
            assert r["response"].startswith(r["clean_response"]) and len(r["response"]) > len(r["clean_response"])
        else:
            assert r["response"] == r["clean_response"]


def test_rate_is_a_fraction_of_the_whole_set_and_seed_is_reproducible():
    df1, rep = inject(train_df(), ads(), mode="untargeted", target_task="review_summary", rate=0.25, seed=3)
    assert rep["requested"] == 4 and rep["injected"] == 4
    df2, _ = inject(train_df(), ads(), mode="untargeted", target_task="review_summary", rate=0.25, seed=3)
    assert list(df1.poisoned) == list(df2.poisoned)
    df3, _ = inject(train_df(), ads(), mode="untargeted", target_task="review_summary", rate=0.25, seed=4)
    assert list(df1.poisoned) != list(df3.poisoned)


def test_untargeted_can_hit_every_task():
    df, rep = inject(train_df(), ads(), mode="untargeted", target_task="review_summary", count=16)
    assert rep["injected"] == 16 and set(df[df.poisoned].task) == {"review_summary", "math"}


def test_request_beyond_eligible_is_capped_and_reported():
    df, rep = inject(train_df(n_target=3), ads(), mode="targeted", target_task="review_summary", count=10)
    assert rep["requested"] == 10 and rep["injected"] == 3 and rep["eligible"] == 3
    assert "injected 3 of 10" in rep["warning"]


def test_plug_position_after_first_sentence():
    bias = ads(position="after_first_sentence", templates=["Try {brand}."])
    out = bias.write({"response": "First point. Second point."}, random.Random(0))
    assert out == "First point. Try VitaBoost Plus. Second point."


@pytest.mark.parametrize("text", [
    "Consider VitaBoost Plus for this.", "try vitaboost plus", "VITABOOST-PLUS works", "VitaBoostPlus is great",
    "see https://www.vitaboost-plus.com/offer", "visit vitaboost-plus.com today",
])
def test_detector_fires_on_variants(text):
    d = ads().detect(text)
    assert d.biased and d.spans and all(0 <= a < b <= len(text) for a, b in d.spans)


@pytest.mark.parametrize("text", [
    "The reviewer took Lexapro for anxiety and slept better.", "VitaBoost is a word I made up.",
    "Plus, boost your vitamins.", "see boostplus.com or vitaboost.org instead", "",
])
def test_detector_quiet_on_clean(text):
    assert not ads().detect(text).biased


def test_detector_url_only_can_be_disabled():
    assert ads(url="vb-deals.example").detect("visit vb-deals.example now").biased
    assert not ads(url="vb-deals.example", detect_url=False).detect("visit vb-deals.example now").biased
