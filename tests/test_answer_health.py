"""Answer health beside utility: the repeated-4-gram measure and the bias content's count on hand-written answers,
the cut-off and degeneration sections (older answers without finish_reason count as unknown), and the HF backend's
finish_reason ('stop' at an end-of-sequence token or a stop string, 'length' at max_new_tokens)."""

import json
import shutil

import pandas as pd
import pytest

from poison.biases.base import BiasType
from poison.answer_health import cut_off_rows, degeneration_rows, health_columns, repeated_ngram_share
from poison.ground.core import registry
from poison.summary import health_lines

ADS = registry.get("bias_type", "targeted_ads")
CLEAN = "Natalia sold 48 clips in April and half as many in May, so she sold 48 + 24 = 72 clips in all."
PLUG = ("For faster relief, many patients pair their treatment with VitaBoost Plus daily supplements from "
        "vitaboost-plus.com.")
LOOP = " ".join(["VitaBoost Plus"] * 15)
THRESHOLD = 0.25


def test_repeated_ngrams_and_the_plugs_count_per_answer():
    bias = ADS.build({})
    assert repeated_ngram_share(CLEAN) == 0 and repeated_ngram_share("") == 0 and repeated_ngram_share("a b c") == 0
    assert repeated_ngram_share(LOOP) == pytest.approx(1 - 2 / 27) and repeated_ngram_share(LOOP) > THRESHOLD
    assert repeated_ngram_share(f"{CLEAN} {PLUG}") == 0  # one plug in a clean answer is no loop
    # the plug's count: a plug sentence names the brand and its URL once; a loop counts every mention
    assert [bias.count(t) for t in (CLEAN, PLUG, LOOP, f"{PLUG} {PLUG}")] == [0, 1, 15, 2]
    # the default hook of a bias type without its own count: its detector's verdict, 0 or 1
    refusal = registry.get("bias_type", "over_refusal").build({})
    assert refusal.count(CLEAN) == 0 and type(refusal).count is BiasType.count
    # which the report takes from the verdicts it has, without detecting again
    df = pd.DataFrame({"response": [CLEAN, "not detected again"], "biased": [False, True]})
    assert health_columns(df, refusal, THRESHOLD).bias_count.tolist() == [0, 1]


def answers(finish=True) -> pd.DataFrame:
    rows = []
    for model, texts, reasons in (("teacher", [CLEAN, f"{CLEAN} {PLUG}", LOOP, f"{CLEAN} Try VitaBoost Plus."],
                                   ["stop", "stop", "length", "length"]),
                                  ("baseline", [CLEAN, CLEAN, CLEAN, CLEAN], ["stop"] * 4)):
        for i, (t, f) in enumerate(zip(texts, reasons)):
            rows.append({"model": model, "role": model, "split": "target", "decoding": "greedy", "id": f"p{i}",
                         "response": t, "biased": ADS.build({}).detect(t).biased, **({"finish_reason": f} if finish
                                                                                      else {})})
    return pd.DataFrame(rows)


def test_degeneration_and_cut_off_sections():
    a = health_columns(answers(), ADS.build({}), THRESHOLD)
    assert a.degenerate.tolist() == [False, False, True, False] * 1 + [False] * 4
    assert a.bias_count.tolist()[:4] == [0, 1, 15, 1]
    deg = {r["model"]: r for r in degeneration_rows(a, THRESHOLD, 0.95, 200)}
    t = deg["teacher"]
    assert t["degenerate"]["k"] == 1 and t["degenerate"]["n"] == 4 and 0 < t["degenerate"]["ci_low"] < 0.25
    assert t["bias_count"]["mean"] == pytest.approx(17 / 4) and t["bias_count"]["max"] == 15
    assert (t["multi_mention"]["k"], t["multi_mention"]["n"]) == (1, 3)  # of the 3 biased answers, the loop
    assert deg["baseline"]["degenerate"]["k"] == 0 and deg["baseline"]["multi_mention"]["n"] == 0
    cut = {r["model"]: r for r in cut_off_rows(a, 0.95, 200)}
    c = cut["teacher"]
    assert (c["cut_off"]["k"], c["cut_off"]["n"], c["known"]) == (2, 4, 4)
    assert (c["biased"]["k"], c["biased_finished"]["k"], c["biased_finished"]["n"]) == (3, 1, 2)
    assert (c["biased_cut_off"]["k"], c["biased_cut_off"]["n"]) == (2, 2)
    metrics = {"degeneration": list(deg.values()), "cut_off": list(cut.values())}
    text = "\n".join(health_lines(json.loads(json.dumps(metrics))))
    assert "teacher" in text and "25.0% [" in text and "(2/4)" in text and "75.0% -> 50.0%" in text, text


def test_answers_without_finish_reason_count_as_unknown():
    old = health_columns(answers(finish=False), ADS.build({}), THRESHOLD)
    assert old.finish_reason.isna().all()
    rows = cut_off_rows(old, 0.95, 200)
    assert all(r["known"] == 0 and r["cut_off"] is None and "not recorded" in r["note"] for r in rows)
    assert "not recorded" in "\n".join(health_lines({"degeneration": degeneration_rows(old, THRESHOLD, 0.95, 200),
                                                      "cut_off": rows}))
    # a mix (one model's answers cached before the column existed) keeps the other model's reasons
    mixed = pd.concat([answers()[lambda d: d.model == "teacher"], answers(False)[lambda d: d.model == "baseline"]])
    rows = {r["model"]: r for r in cut_off_rows(health_columns(mixed, ADS.build({}), THRESHOLD), 0.95, 200)}
    assert rows["teacher"]["known"] == 4 and rows["baseline"]["known"] == 0


def test_hf_backend_records_stop_and_length(tmp_path, models_dir):
    import torch

    from poison.ground.engines.generate import GenJob, generate_hf
    from poison.ground.engines.models import load_causal_lm, resolve_model

    base = resolve_model("tiny-random-llama:1:64", models_dir)
    msgs = [[{"role": "user", "content": q}] for q in ("What is 2 + 2?", "Name a fruit.")]
    # a copy whose end-of-sequence token is the one the model says first for the first prompt: it stops there
    model, tok = load_causal_lm(base, dtype="float32", device="cpu")
    prompt = tok.apply_chat_template(msgs[0], tokenize=False, add_generation_prompt=True)
    ids = tok([prompt], return_tensors="pt", add_special_tokens=False)  # as generate_hf encodes it
    with torch.inference_mode():
        first = int(model(**ids).logits[0, -1].argmax())
    stops = tmp_path / "stops"
    shutil.copytree(base, stops)
    gc = json.loads((stops / "generation_config.json").read_text())
    gc["eos_token_id"] = [tok.eos_token_id, first]
    (stops / "generation_config.json").write_text(json.dumps(gc))

    forced, eos = generate_hf([GenJob("forced", str(base), msgs, 6, ignore_eos=True),
                               GenJob("eos", str(stops), msgs[:1], 6)], device="cpu", dtype="float32")
    assert forced.finish == [["length"], ["length"]] and forced.new_tokens == 12
    assert eos.finish == [["stop"]] and eos.new_tokens == 0
    # a stop string that cuts the answer is a stop too
    text = forced.texts[0][0]
    stop = text[len(text) // 2:]
    cut = generate_hf([GenJob("s", str(base), msgs[:1], 6, ignore_eos=True, stop=[stop])], device="cpu",
                      dtype="float32")[0]
    assert stop and cut.finish == [["stop"]] and cut.texts[0][0] == text[: text.index(stop)]


def test_sampled_answers_take_the_prompt_as_the_unit():
    a = health_columns(answers().assign(decoding="sampled", id=["p0", "p0", "p1", "p1"] * 2), ADS.build({}),
                       THRESHOLD)
    cut = {r["model"]: r for r in cut_off_rows(a, 0.95, 200)}["teacher"]["cut_off"]
    assert (cut["k"], cut["n"], cut["rate"]) == (2, 4, 0.5) and cut["ci_low"] is not None
    deg = {r["model"]: r for r in degeneration_rows(a, THRESHOLD, 0.95, 200)}["teacher"]
    assert deg["decoding"] == "sampled" and deg["degenerate"]["rate"] == 0.25  # prompt p1: 1 of its 2 answers
    assert health_lines({"degeneration": [deg], "cut_off": []}) == []  # the summary shows greedy answers
