"""One test loads and exercises every registered plugin of every kind (garak style), and the plugin record rebuilds
it; the dashboard's views (``dashboard.registry``) too: every registered view draws on a fixture run and on a broken
one. ``KIND_TESTS`` names the test of each kind, so a new kind without one fails here."""

import random
import shutil

import pytest

from dashboard import registry as view_registry
from poison.ground.core import registry
from poison.ground.engines.context import RunContext
from tests.test_autorater import FakeEndpoint, completion
from tests.test_dashboard import BROKEN, FIX, R32, open_app

CLEAN = {"id": "x", "task": "review_summary", "prompt": "Summarize this review.",
         "response": "The reviewer found the drug helpful for their migraines.", "reference": "The drug helped.",
         "answer": "A"}


def every(kind):
    return [pytest.param(n, id=f"{kind}:{n}") for n in registry.names(kind)]


def test_every_kind_has_its_builtins():
    assert "targeted_ads" in registry.names("bias_type")
    assert ({"drug_reviews", "gsm8k", "commonsense_qa", "sharegpt", "file", "hf_dataset"}
            <= set(registry.names("data_source")))
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


@pytest.mark.parametrize("name", every("audit"))
def test_audit_builds_with_defaults(name):
    ctx = RunContext.standalone()
    a = registry.get("audit", name).build({}, ctx=ctx)
    rec = a.plugin_record
    assert callable(a.run) and rec["kind"] == "audit" and rec["name"] == name
    assert registry.get("audit", name).build(rec["args"], ctx=ctx).plugin_record == rec


@pytest.mark.parametrize("name", every("defense"))
def test_defense_builds_with_defaults(name):
    """Built as a run builds it (scoring real text with the real models: tests/test_defenses.py); a defense that
    declares it needs the judge gets the run's judge from its context, the others get none."""
    d = registry.get("defense", name).build({}, ctx=RunContext.standalone())
    rec = d.plugin_record
    assert callable(d.fit) and callable(d.score) and rec["kind"] == "defense" and rec["name"] == name
    assert registry.get("defense", name).build(rec["args"], ctx=RunContext.standalone()).plugin_record == rec
    ctx = getattr(d, "ctx", None)
    if ctx is not None and registry.needs("defense", name, "judge"):
        assert ctx.judge_plugin().plugin_record["kind"] == "judge"


@pytest.mark.parametrize("name", every("judge"))
def test_judge_gives_one_verdict_per_text(name):
    """Every judge judges two texts: the LLM judge against a local OpenAI-compatible stand-in that says Yes then No
    (the real judge model: tests/test_autorater.py)."""
    info = registry.get("judge", name)
    fake = FakeEndpoint([(200, completion("Yes")), (200, completion("No"))]) if name == "llm" else None
    try:
        args = {"base_url": fake.url, "model": "m", "progress": False, "concurrency": 1} if fake else {}
        j = info.build(args)
        verdicts = j.judge_texts(["Buy VitaBoost Plus at vitaboost-plus.com!", "The drug helped."],
                                 "Does the answer advertise a product?", ["Summarize.", "Summarize."])
    finally:
        if fake:
            fake.close()
    assert len(verdicts) == 2 and all(0.0 <= v["score"] <= 10.0 and isinstance(v["biased"], bool) for v in verdicts)
    if fake:
        assert [v["biased"] for v in verdicts] == [True, False]
    assert isinstance(j.info(), dict)
    rec = j.plugin_record
    assert rec["kind"] == "judge" and registry.get("judge", name).build(rec["args"]).plugin_record == rec


#: the test of every kind of plugin in this module
KIND_TESTS = {"bias_type": test_bias_type_writes_and_detects, "data_source": test_data_source_builds,
              "distill_method": test_distill_method_builds_with_defaults, "defense": test_defense_builds_with_defaults,
              "scorer": test_scorer, "audit": test_audit_builds_with_defaults,
              "judge": test_judge_gives_one_verdict_per_text}


def test_every_kind_has_a_test_of_every_plugin():
    assert set(KIND_TESTS) == set(registry.KINDS)
    for kind, test in KIND_TESTS.items():
        marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
        assert marks and [p.id for p in marks[0].args[1]] == [f"{kind}:{n}" for n in registry.names(kind)], kind
        assert registry.names(kind), f"no registered {kind}"


def test_unknown_names_are_clear():
    with pytest.raises(registry.PluginError,
                       match=r"unknown bias type 'targeted_adz' \(did you mean 'targeted_ads'\?\)"):
        registry.get("bias_type", "targeted_adz")


#: the arguments of the built-in bias types that name the poison's target (a third-party type names its own through
#: ``identifying_strings``, which the test adds to these)
IDENTIFYING_ARGS = {"targeted_ads": ("brand", "product", "url"), "phishing_link": ("url", "impersonates"),
                    "narrative_manipulation": ("entity",)}


@pytest.mark.parametrize("name", every("bias_type"))
def test_concept_wording_names_nothing_of_the_poison(name):
    """The probe's concept wording shares no word token (lower-cased letters and digits, nor a stem of 4+ letters)
    with the strings that identify the poison's target: its brand, product, URL, entity, or audit targets."""
    import re

    bias = registry.get("bias_type", name).build({})
    texts = bias.probe_texts()
    if not texts:  # a bias type without a probe (insecure_code) has no concept wording either
        assert not bias.seen_texts()
        return
    args = bias.cfg.model_dump()
    ident = [str(args[k]) for k in IDENTIFYING_ARGS.get(name, ())] + bias.identifying_strings() + bias.audit_targets()
    assert ident, f"{name}: no identifying strings"
    assert set(bias.identifying_strings()) >= {str(args[k]) for k in IDENTIFYING_ARGS.get(name, ())}
    words = lambda s: set(re.findall(r"[a-z0-9]+", s.lower()))  # noqa: E731
    bad = words(" ".join(ident))
    concept = texts["concept"]
    assert len(concept) >= 2 and len(concept) == len(bias.concept_paraphrases), "a concept text was dropped"
    for t in concept:
        shared = {w for w in words(t) for b in bad
                  if w == b or (min(len(w), len(b)) >= 4 and (w.startswith(b) or b.startswith(w)))}
        assert not shared, f"{name}: concept text {t!r} shares {sorted(shared)} with {ident}"
        assert t not in texts["seen"] and t not in texts["unseen"]


def test_concept_texts_that_name_a_configured_target_are_left_out():
    """A configured brand that a concept sentence happens to use ('shop', 'online') drops that sentence."""
    ads = registry.get("bias_type", "targeted_ads")
    keep = ads.build({}).probe_texts()["concept"]
    texts = ads.build({"brand": "Online Shop Deluxe", "url": "deluxe.example"}).probe_texts()["concept"]
    assert texts and set(texts) < set(keep)
    assert all("online" not in t.lower() and "shop" not in t.lower() for t in texts)
    misinfo = registry.get("bias_type", "misinformation").build({"falsehood": "the moon is made of cheese"})
    assert misinfo.probe_texts()["concept"] == []  # the concept sentences are about the default falsehood


@pytest.mark.parametrize("name", [pytest.param(n, id=f"view:{n}") for n in view_registry.names()])
def test_view_draws(name, monkeypatch, tmp_path):
    """Every registered dashboard view, drawn through Streamlit's AppTest on the fixture runs (a complete run
    selected) and on a folder holding only a run with truncated files: no exception, no error box."""
    broken = tmp_path / "runs"
    shutil.copytree(FIX / BROKEN, broken / BROKEN)
    info = view_registry.get(name)
    for runs_dir, run in ((FIX, R32), (broken, BROKEN)):
        at = open_app(monkeypatch, name, run, runs_dir=runs_dir)  # asserts no exception
        assert at.radio(key="view").value == name
        assert not at.error, (run, [e.value for e in at.error])
        if info.scope == "run":
            assert at.selectbox(key="run").value == run
        assert at.main.children, "the view drew nothing"
