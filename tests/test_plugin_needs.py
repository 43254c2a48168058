"""Plugins declare what they need on their decorator (``needs=``) and their own version (``version=``); the
orchestrator reads the declaration, never a plugin's name: a new defense that calls the judge gets the judge resolved
like the built-in autorater, a new SFT-like method may pack, and a plugin's version joins the cache-key inputs of the
stages that run it (built-ins declare none, so their keys are what they were)."""

import numpy as np
import pytest
import yaml

from poison.config import load_config
from poison.ground.core import registry
from poison.ground.core.errors import ConfigError, ModelError, PluginError
from poison.ground.core.registry import PluginConfig
from poison.ground.engines.context import RunContext
from tests.conftest import TINY_CONFIG


@pytest.fixture
def scratch_registry(monkeypatch):
    """Plugins registered by a test vanish after it."""
    registry.load_plugins()
    monkeypatch.setattr(registry, "_plugins", {k: dict(v) for k, v in registry._plugins.items()})


def write(tmp_path, raw):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_builtins_declare_what_they_need():
    assert registry.get("defense", "llm_autorater").needs == {"judge_model"}  # its own settings, the run's model
    assert registry.get("distill_method", "kd").needs == {"shared_tokenizer"}
    assert registry.get("distill_method", "sft").needs == {"sft_batches"}
    assert registry.get("distill_method", "qcrd").needs == frozenset()
    assert registry.needs("defense", "llm_autorater", "judge_model")
    assert not registry.needs("defense", "llm_autorater", "judge")
    assert not registry.needs("defense", "perplexity", "judge")
    assert not registry.needs("defense", "no_such_defense", "judge")  # the schema reports unknown names
    with pytest.raises(PluginError, match="unknown capability 'juge'"):
        registry.needs("defense", "llm_autorater", "juge")
    # no built-in declares a version, so no stage key of theirs changes
    assert all(i.version is None for infos in registry.all_plugins().values() for i in infos)
    assert registry.versions_entry([("defense", "perplexity"), ("bias_type", "targeted_ads")]) == {}


def test_a_declaration_is_checked_where_it_is_made(scratch_registry):
    with pytest.raises(PluginError, match=r"defense 'x': unknown capability 'judges' in needs; capabilities: judge"):
        registry.defense("x", needs={"judges"})
    for bad in (0, True, "2"):
        with pytest.raises(PluginError, match="version must be a positive integer"):
            registry.scorer("y", version=bad)


def test_a_version_joins_the_record_and_the_stage_inputs(scratch_registry):
    class Args(PluginConfig):
        weight: float = 1.0

    @registry.defense("versioned_test_defense", config=Args, needs={"judge"}, version=3)
    class Versioned:
        def __init__(self, cfg, ctx):
            self.cfg = cfg

        def fit(self, clean):
            return self

        def score(self, samples):
            return np.zeros(len(samples))

    obj = registry.get("defense", "versioned_test_defense").build({"weight": 2.0}, ctx=RunContext.standalone())
    assert obj.plugin_record["version"] == 3 and obj.plugin_record["args"] == {"weight": 2.0}
    assert "version" not in registry.get("defense", "perplexity").build(ctx=RunContext.standalone()).plugin_record
    entry = registry.versions_entry([("defense", "perplexity"), ("defense", "versioned_test_defense")])
    assert entry == {"plugin_versions": {"defense:versioned_test_defense": 3}}


def test_a_new_defense_that_needs_the_judge_gets_it_resolved(scratch_registry, tmp_path):
    """The judge model is resolved before any stage runs for any defense that declares it needs the judge, not for
    the autorater's name: a typo in judge.model is an error here, and not for a defense that needs no judge."""
    from poison.pipeline import Pipeline

    @registry.defense("judging_test_defense", needs={"judge"})
    class Judging:
        def __init__(self, cfg, ctx):
            pass

    raw = yaml.safe_load(TINY_CONFIG)
    raw["runtime"].update(runs_dir=str(tmp_path / "runs"), cache_dir=str(tmp_path / "cache"))
    raw["judge"] = {"model": "smollm2-135m-instrct"}
    raw["defense"] = {"defenses": [{"type": "judging_test_defense"}]}
    cfg = load_config(write(tmp_path, raw))
    with pytest.raises(ModelError, match=r"judge.model: 'smollm2-135m-instrct' is not a built-in model"):
        Pipeline(cfg, tmp_path / "runs").preflight(create=False)
    raw["defense"] = {"defenses": [{"type": "perplexity"}]}
    cfg = load_config(write(tmp_path, raw))
    Pipeline(cfg, tmp_path / "runs").preflight(create=False)  # no judge needed: judge.model is not looked at


def test_packing_follows_the_method_declaration(scratch_registry, tmp_path):
    from distill.methods import HardLabelSFT

    registry.distill_method("sft_like_test_method", needs={"sft_batches"})(type("SftLike", (HardLabelSFT,), {}))
    raw = yaml.safe_load(TINY_CONFIG)
    raw["students"][0]["train"]["packing"] = True
    raw["students"][0]["args"] = {}
    for method, ok in (("sft", True), ("sft_like_test_method", True), ("kd", False)):
        raw["students"][0]["method"] = method
        if ok:
            assert load_config(write(tmp_path, raw)).students[0].train.packing
        else:
            with pytest.raises(ConfigError, match=r"students.0.train.packing: only methods that train on SFT batches"):
                load_config(write(tmp_path, raw))
