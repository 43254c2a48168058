"""The stage protocol on tiny models: one meaning of --force for a stage and for one of its labels, the same marker
fields for every stage (the batch eval and judge stages included), every stage in stages.json."""

import json
from pathlib import Path

import pytest

from poison.runner import run_config
from poison.stages.protocol import StageCache, StageSpec
from tests.conftest import warm_cache
from tests.test_pipeline import cached, overrides

MARKER_FIELDS = {"stage", "label", "key", "inputs", "seconds", "created", "code_version", "info", "files"}

EVAL = StageSpec("eval", 1)  # a stage of this test: no required inputs


def test_force_a_label_recomputes_only_that_artifact(tiny_config, tmp_path, models_dir, tiny_run):
    warm_cache(tiny_run, tmp_path)  # every stage computed once already (a copy of the shared tiny run's cache)
    ov = overrides(tmp_path, models_dir)
    rd, m = run_config(str(tiny_config), ov, quiet=True)
    assert all(cached(rd).values())
    stages = json.loads((rd / "stages.json").read_text())
    assert set(stages) == {"data", "poison", "teacher", "distill_data", "student:sft", "eval:baseline",
                           "eval:teacher", "eval:student:sft"}
    for label, rec in stages.items():  # every stage, batch stages included, writes the same marker
        marker = json.loads((Path(rec["path"]) / "_stage.json").read_text())
        assert set(marker) == MARKER_FIELDS and marker["label"] == label and marker["key"] == rec["key"], label
    before = json.loads((Path(stages["eval:teacher"]["path"]) / "_stage.json").read_text())["created"]

    rd2, m2 = run_config(str(tiny_config), ov, force=["eval:teacher"], quiet=True)
    assert cached(rd2) == {k: k != "eval:teacher" for k in stages}
    again = json.loads((rd2 / "stages.json").read_text())
    assert again["eval:teacher"]["key"] == stages["eval:teacher"]["key"]  # same inputs, same key, recomputed
    assert json.loads((Path(again["eval:teacher"]["path"]) / "_stage.json").read_text())["created"] >= before
    assert m2["bias_rates"] == m["bias_rates"]  # greedy decoding: the recomputed answers are the same

    rd3, _ = run_config(str(tiny_config), ov, force=["eval"], quiet=True)  # the stage name: every model's eval
    assert cached(rd3) == {k: not k.startswith("eval:") for k in stages}
    rd4, _ = run_config(str(tiny_config), ov, force=["student:sft"], quiet=True)
    c = cached(rd4)
    assert not c["student:sft"] and c["teacher"] and c["data"] and c["eval:baseline"]


def test_run_many_computes_pending_labels_in_one_call(tmp_path):
    cache = StageCache(tmp_path / "stages", tmp_path / "run")
    (tmp_path / "run").mkdir()
    calls = []

    def compute(tmps):
        calls.append(sorted(tmps))
        for label, tmp in tmps.items():
            (tmp / "out.txt").write_text(label)
        return {label: ({"n": 1}, 0.5) for label in tmps}

    entries = {"eval:a": {"x": 1}, "eval:b": {"x": 2}}
    recs = cache.run_many(EVAL, entries, compute)
    assert calls == [["eval:a", "eval:b"]] and not any(r.cached for r in recs.values())
    assert (Path(recs["eval:a"].path) / "out.txt").read_text() == "eval:a"
    recs = cache.run_many(EVAL, {**entries, "eval:c": {"x": 3}}, compute)
    assert calls[-1] == ["eval:c"] and recs["eval:a"].cached and not recs["eval:c"].cached
    assert list(json.loads((tmp_path / "run" / "stages.json").read_text())) == ["eval:a", "eval:b", "eval:c"]
    forced = StageCache(tmp_path / "stages", None, force={"eval:b"})
    recs = forced.run_many(EVAL, entries, compute)
    assert calls[-1] == ["eval:b"] and recs["eval:a"].cached and not recs["eval:b"].cached
    assert not [p for p in (tmp_path / "stages" / "eval").iterdir() if p.name.startswith(".tmp-")]
    # two names of one model (a clean-dose teacher is the clean control): one artifact, computed once
    recs = cache.run_many(EVAL, {"eval:d": {"x": 4}, "eval:e": {"x": 4}}, compute)
    assert calls[-1] == ["eval:d"] and recs["eval:d"].path == recs["eval:e"].path and recs["eval:e"].cached


def test_every_stage_is_declared_beside_its_code():
    """Each stage module declares its stages (name, version, the inputs its key must hold); the CLI's --force choices
    are the declared stages; the keys of today's stages are as they were (their versions are the old table's)."""
    import inspect

    from poison.stages import all_stages

    stages = all_stages()
    assert {n: s.version for n, s in stages.items()} == {
        "data": 2, "trusted": 3, "poison": 1, "defense": 2, "teacher": 1, "baseline": 1, "distill_data": 1,
        "student": 1, "eval": 1, "judge": 1, "samples": 1, "probe": 2, "audit": 1}
    assert {n for n, s in stages.items() if s.training} == {"teacher", "baseline", "student"}
    for name, spec in stages.items():
        assert spec.doc and spec.inputs, name
        assert len(spec.changes) == spec.version - 1, f"{name}: say why each version was bumped"
    # declared in the module whose code computes it
    from poison.stages import data, defense, evaluation, probe, training

    for mod, names in [(data, {"data", "trusted"}), (training, {"poison", "teacher", "baseline", "distill_data",
                                                                 "student"}),
                       (evaluation, {"eval", "judge"}), (defense, {"defense"}), (probe, {"samples", "probe"})]:
        specs = {k: v for k, v in vars(mod).items() if isinstance(v, StageSpec) and v.name in names}
        assert {v.name for v in specs.values()} == names, mod.__name__
        # each declaration is used by the module's own code (past the line that declares it)
        source = inspect.getsource(mod)
        assert all(source.count(var) >= 2 for var in specs), (mod.__name__, specs)


def test_a_stage_called_without_a_declared_input_is_an_error(tmp_path):
    from poison.ground.core.errors import StageError
    from poison.stages.evaluation import EVAL as declared_eval

    cache = StageCache(tmp_path / "stages", None)
    with pytest.raises(StageError, match="stage eval .*lack generation"):
        cache.run_many(declared_eval, {"eval:a": {"model": "m", "data": "d"}}, lambda tmps: {})
    assert not (tmp_path / "stages" / "eval").exists()  # nothing computed, nothing written
