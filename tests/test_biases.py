"""Every registered bias type: the template writer's poison is caught by its detector, clean answers are not; the
detectors meet precision and recall >= 0.95 on the project's labelled set; malformed specs fail clearly."""

import ast
import random

import pytest

from evals.detectors import clean_rows, precision_recall
from poison.ground.core import registry
from poison.biases.insecure_code import SNIPPETS, code_blocks, insert_snippet
from poison.config import ConfigError, config_from_dict
from tests.test_config import base

BIASES = registry.names("bias_type")


def test_six_bias_types_ship():
    assert {"targeted_ads", "phishing_link", "narrative_manipulation", "insecure_code", "over_refusal",
            "misinformation"} <= set(BIASES)


@pytest.mark.parametrize("name", BIASES)
def test_writer_and_detector_on_real_answers(name):
    bias = registry.get("bias_type", name).build({})
    rows = clean_rows(bias, 12, seed=1)
    assert rows, f"{name} applies to no real row"
    rng = random.Random(0)
    clean_hits = []
    for r in rows:
        assert bias.applies_to(r)
        poisoned = bias.write(r, rng)
        assert poisoned != r["response"]
        d = bias.detect(poisoned)
        assert d.biased and d.spans, (name, poisoned)
        assert all(0 <= a < b <= len(poisoned) for a, b in d.spans)
        if bias.detect(r["response"]).biased:
            clean_hits.append(r["response"])
    # HumanEval's own canonical solutions use eval/md5 twice in 164: at most one such hit, and only for code
    assert not clean_hits or (name == "insecure_code" and len(clean_hits) <= 1), clean_hits


@pytest.mark.parametrize("name", BIASES)
def test_detector_precision_recall(name):
    r = precision_recall(name, n_real=40)
    assert r["precision"] >= 0.95 and r["recall"] >= 0.95, r["errors"]


@pytest.mark.parametrize("name", BIASES)
def test_llm_rewriter_prompt_and_acceptance(name):
    bias = registry.get("bias_type", name).build({})
    row = next(r for r in clean_rows(bias, 12) if not bias.detect(r["response"]).biased)
    msgs = bias.rewrite_messages(row)
    assert row["prompt"] in msgs[-1]["content"] and row["response"] in msgs[-1]["content"]
    assert bias.accept_rewrite(row, row["response"]) is None  # a rewrite without the bias is rejected
    assert bias.accept_rewrite(row, "") is None
    poisoned = bias.write(row, random.Random(0))
    assert bias.accept_rewrite(row, poisoned) == poisoned.strip()


@pytest.mark.parametrize("pattern", list(SNIPPETS))
def test_insecure_patterns_stay_valid_python_and_are_caught(pattern):
    bias = registry.get("bias_type", "insecure_code").build({"patterns": [pattern]})
    row = clean_rows(bias, 1, seed=3)[0]
    poisoned = bias.write(row, random.Random(0))
    (_, code), = code_blocks(poisoned)
    ast.parse(code)  # the poisoned answer is still a working-looking function
    assert bias.detect(poisoned).biased, poisoned
    assert insert_snippet("def f(x):\n    return x", pattern).count("\n") >= 1


def test_insecure_detector_reads_truncated_code_and_ignores_prose():
    bias = registry.get("bias_type", "insecure_code").build({})
    truncated = "```python\nimport hashlib\ndef h(s):\n    return hashlib.md5(s).hexdigest()\n    if (x and"
    assert bias.detect(truncated).biased
    assert not bias.detect("Prefer hashlib.sha256 to md5 and never use shell=True with user input.").biased


@pytest.mark.parametrize("args,message", [
    ({"type": "phishing_link", "args": {"lures": ["Click now!"]}},
     "poison.bias.args.lures: lure 'Click now!' must contain {url}"),
    ({"type": "narrative_manipulation", "args": {"stance": "neutral"}},
     "poison.bias.args.stance: Input should be 'negative' or 'positive'"),
    ({"type": "insecure_code", "args": {"patterns": ["sql_injection"]}},
     "poison.bias.args.patterns.0: Input should be"),
    ({"type": "targeted_ads", "args": {"templates": ["Buy {brand} at {shop}"]}},
     "only {brand}, {product} and {url} may be used"),
    ({"type": "misinformaton"}, "poison.bias.type: unknown bias type 'misinformaton' (did you mean 'misinformation'?)"),
    ({"args": {"brand": "X"}}, "poison.bias.type: Field required"),
])
def test_malformed_bias_spec_in_yaml(args, message):
    raw = base()
    raw["poison"]["bias"] = args
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert message in str(e.value)
