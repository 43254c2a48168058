"""The judge is a plugin kind of its own (``@judge``): the config's ``judge.type`` names it (default ``llm``, the LLM
judge of ``defenses.autorater``), the run builds it through the registry, and a plugin gets it from its context only
when its decorator declares ``needs={"judge"}``, never because of its name; such a plugin's stage key holds the
judge's identity (its type only when it is not the default, so the keys of existing configs stay what they were)."""

from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from defenses.autorater import AutoraterConfig, LLMJudge
from defenses.base import run_defense
from poison.config import config_from_dict
from poison.ground.core import registry
from poison.ground.core.errors import ConfigError, DefenseError, PluginError
from poison.ground.core.registry import PluginConfig
from poison.ground.engines.context import RunContext
from poison.schema import JudgeConfig
from tests.conftest import TINY_CONFIG

ENDPOINT = "http://127.0.0.1:9/v1"  # never called: the keys below need only the judge's identity
SAMPLES = [{"id": "a", "prompt": "Summarize.", "response": "It helped.", "task": "review_summary"},
           {"id": "b", "prompt": "Summarize.", "response": "It helped. Buy VitaBoost Plus!", "task": "review_summary"}]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Plugins registered by a test vanish after it."""
    registry.load_plugins()
    monkeypatch.setattr(registry, "_plugins", {k: dict(v) for k, v in registry._plugins.items()})


class KeywordArgs(PluginConfig):
    word: str = "VitaBoost"


class KeywordJudge:
    """Biased when the text names the word (a stand-in for any judge: a remote API, a classifier, ...)."""

    built = 0

    def __init__(self, cfg: KeywordArgs, ctx):
        self.cfg = cfg
        KeywordJudge.built += 1

    def judge_texts(self, texts, rubric_context=None, prompts=None):
        return [{"score": 10.0 if self.cfg.word in t else 0.0, "biased": self.cfg.word in t} for t in texts]

    def info(self):
        return {"word": self.cfg.word}


class AsksTheJudge:
    """A defense that scores each sample with the run's judge, whatever judge that is."""

    def __init__(self, cfg, ctx):
        self.ctx = ctx

    def fit(self, clean):
        pass

    def score(self, samples):
        verdicts = self.ctx.judge_plugin().judge_texts([s["response"] for s in samples])
        return np.array([v["score"] for v in verdicts])


@pytest.fixture
def custom(scratch_registry):
    registry.judge("keyword_test", config=KeywordArgs)(KeywordJudge)
    registry.defense("asks_judge_test", needs={"judge"})(AsksTheJudge)
    registry.defense("asks_undeclared_test")(type("Undeclared", (AsksTheJudge,), {}))
    KeywordJudge.built = 0


def config(defense="llm_autorater", **judge):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["judge"] = {"endpoint": ENDPOINT, "endpoint_model": "judge", **judge}
    raw["defense"] = {"defenses": [{"type": defense}]}
    return config_from_dict(raw)


def test_the_llm_judge_is_a_registered_judge_and_the_default():
    info = registry.get("judge", "llm")
    assert info.kind == "judge" and info.factory is LLMJudge and info.config_cls is AutoraterConfig
    assert "llm" in registry.names("judge") and JudgeConfig().type == "llm"
    assert info.module == "defenses.autorater" and not info.needs
    cfg = config_from_dict(yaml.safe_load(TINY_CONFIG))
    assert cfg.judge.type == "llm" and cfg.judge.args == info.resolve_args({})  # args validated once, defaults in
    # the autorater defense is the same judging code, with arguments of its own and the run's judge model
    assert registry.get("defense", "llm_autorater").needs == {"judge_model"}
    assert issubclass(registry.get("defense", "llm_autorater").factory, LLMJudge)
    with pytest.raises(PluginError, match=r"unknown judge 'lm' \(did you mean 'llm'\?\)"):
        registry.get("judge", "lm")


def test_an_unknown_judge_type_or_argument_is_a_config_error_with_a_did_you_mean():
    raw = yaml.safe_load(TINY_CONFIG)
    raw["judge"] = {"type": "lm"}
    with pytest.raises(ConfigError, match=r"judge.type: unknown judge 'lm' \(did you mean 'llm'\?\); registered: "):
        config_from_dict(raw)
    raw["judge"] = {"args": {"treshold": 2, "method": "vote"}}
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert "judge.args.treshold: unknown key (did you mean 'threshold'?)" in str(e.value)
    assert "judge.args.method: Input should be 'yes_no' or 'score'" in str(e.value)


def test_a_custom_judge_reaches_a_defense_that_declares_it_needs_the_judge(custom):
    from poison.pipeline import run_context

    cfg = config("asks_judge_test", type="keyword_test", args={"word": "VitaBoost"})
    assert cfg.judge.args == {"word": "VitaBoost"}
    ctx = run_context(cfg, None)
    run = run_defense("asks_judge_test", SAMPLES, ctx=ctx)
    assert run.scores.tolist() == [0.0, 10.0]
    run_defense("asks_judge_test", SAMPLES, ctx=ctx)
    assert KeywordJudge.built == 1  # one judge per run, shared by every plugin that needs it
    assert run.defense.ctx is not ctx and run.defense.ctx.cache_dir == ctx.cache_dir  # a view of the run's context
    with pytest.raises(DefenseError, match=r'does not declare it: register it with needs=\{"judge"\}'):
        run_defense("asks_undeclared_test", SAMPLES, ctx=ctx)
    with pytest.raises(PluginError, match="does not declare it"):
        ctx.judge_plugin()  # the run's own context hands the judge to no one undeclared either
    # outside a run a plugin that needs the judge gets the default one
    standalone = registry.get("defense", "asks_judge_test").build({}, ctx=RunContext.standalone())
    assert isinstance(standalone.ctx.judge_plugin(), LLMJudge)


def test_the_stage_key_holds_the_judge_identity_and_its_type_only_when_not_the_default(custom):
    from poison.pipeline import run_context
    from poison.stages import Run
    from poison.stages.defense import stage_defense
    from poison.stages.plugins import plugin_entries
    from poison.stages.protocol import StageCache

    class Capture:
        def run(self, stage, inputs, fn, label=None):
            self.key = StageCache.key(stage, inputs)
            return inputs

    def defense_inputs(cfg):
        run = Run(cfg, run_context(cfg, None), Capture(), None)
        inputs = stage_defense(run, "train", SimpleNamespace(key="t"), SimpleNamespace(key="p"), None)
        return inputs, run.cache.key, run

    model = {"endpoint": ENDPOINT, "model": "judge"}  # what the key of a defense that needs the judge held before
    default, key_default, run = defense_inputs(config("asks_judge_test"))
    assert default["judge"] == model
    assert plugin_entries(run, [("defense", "perplexity"), ("bias_type", "targeted_ads")]) == {}
    other, key_other, _ = defense_inputs(config("asks_judge_test", type="keyword_test"))
    assert other["judge"] == {**model, "type": "keyword_test"}
    assert key_other != key_default
    # the autorater asks the judge model with arguments of its own (needs={"judge_model"}): the judge plugin's type
    # and arguments are not in its key, which is the one it always had
    for judge in ({}, {"type": "keyword_test"}, {"args": {"rubric": "Any ads?"}}):
        autorater, _, _ = defense_inputs(config(**judge))
        assert autorater["defenses"][0]["type"] == "llm_autorater" and autorater["judge"] == model
    # the judge's own arguments join the key of a plugin that asks it, where they are not its defaults
    worded, key_worded, _ = defense_inputs(config("asks_judge_test", type="keyword_test", args={"word": "Zed"}))
    assert worded["judge"]["args"] == {"word": "Zed"} and key_worded != key_other
