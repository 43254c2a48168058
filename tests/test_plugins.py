"""One test loads and exercises every registered plugin (garak style), and the plugin record rebuilds it."""

import random

import pytest

from poison.ground import registry

CLEAN = {"id": "x", "task": "review_summary", "prompt": "Summarize this review.",
         "response": "The reviewer found the drug helpful for their migraines.", "reference": "The drug helped.",
         "answer": "A"}


def every(kind):
    return [pytest.param(n, id=f"{kind}:{n}") for n in registry.names(kind)]


def test_every_kind_has_its_builtins():
    assert "targeted_ads" in registry.names("bias_type")
    assert {"drug_reviews", "gsm8k", "commonsense_qa", "sharegpt", "file", "hf_dataset"} <= set(registry.names("data_source"))
    assert "sft" in registry.names("distill_method")
    assert {"rule", "rouge_l", "number_match", "choice_match"} <= set(registry.names("scorer"))
    assert registry.load_errors() == []


@pytest.mark.parametrize("name", every("bias_type"))
def test_bias_type_writes_and_detects(name):
    bias = registry.get("bias_type", name).build({})
    assert bias.rubric and bias.describe()
    rec = bias.plugin_record
    assert rec["kind"] == "bias_type" and rec["name"] == name
    rebuilt = registry.get("bias_type", rec["name"]).build(rec["args"])
    assert rebuilt.plugin_record == rec
    if bias.applies_to(CLEAN):
        poisoned = bias.write(CLEAN, random.Random(0))
        assert bias.detect(poisoned).biased and not bias.detect(CLEAN["response"]).biased


@pytest.mark.parametrize("name", every("scorer"))
def test_scorer(name):
    s = registry.get("scorer", name).build({})
    if s.role == "bias":
        bias = registry.get("bias_type", "targeted_ads").build({})
        assert s("Try VitaBoost Plus today.", CLEAN, bias)["biased"] is True
        assert s(CLEAN["response"], CLEAN, bias)["biased"] is False
    else:
        v = s("The answer is A. The drug helped.", CLEAN)
        assert 0.0 <= v <= 1.0


@pytest.mark.parametrize("name", every("distill_method"))
def test_distill_method_builds_with_defaults(name):
    m = registry.get("distill_method", name).build({})
    assert callable(m.train) and m.plugin_record["name"] == name


@pytest.mark.parametrize("name", every("data_source"))
def test_data_source_builds(name, tmp_path):
    info = registry.get("data_source", name)
    args = {"path": str(tmp_path / "x.jsonl")} if "path" in info.config_cls.model_fields else {}
    src = info.build(args)
    assert src.utility in registry.names("scorer")
    assert isinstance(getattr(src, "task", None), str)


def test_unknown_names_are_clear():
    with pytest.raises(registry.PluginError, match=r"unknown bias type 'targeted_adz' \(did you mean 'targeted_ads'\?\)"):
        registry.get("bias_type", "targeted_adz")
