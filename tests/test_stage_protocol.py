"""The stage protocol on tiny models: one meaning of --force for a stage and for one of its labels, the same marker
fields for every stage (the batch eval and judge stages included), every stage in stages.json."""

import json
from pathlib import Path

from poison.runner import run_config
from poison.stages.protocol import StageCache
from tests.test_pipeline import cached, overrides

MARKER_FIELDS = {"stage", "label", "key", "inputs", "seconds", "created", "code_version", "info", "files"}


def test_force_a_label_recomputes_only_that_artifact(tiny_config, tmp_path, models_dir):
    ov = overrides(tmp_path, models_dir)
    rd, m = run_config(str(tiny_config), ov, quiet=True)
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
    recs = cache.run_many("eval", entries, compute)
    assert calls == [["eval:a", "eval:b"]] and not any(r.cached for r in recs.values())
    assert (Path(recs["eval:a"].path) / "out.txt").read_text() == "eval:a"
    recs = cache.run_many("eval", {**entries, "eval:c": {"x": 3}}, compute)
    assert calls[-1] == ["eval:c"] and recs["eval:a"].cached and not recs["eval:c"].cached
    assert list(json.loads((tmp_path / "run" / "stages.json").read_text())) == ["eval:a", "eval:b", "eval:c"]
    forced = StageCache(tmp_path / "stages", None, force={"eval:b"})
    recs = forced.run_many("eval", entries, compute)
    assert calls[-1] == ["eval:b"] and recs["eval:a"].cached and not recs["eval:b"].cached
    assert not [p for p in (tmp_path / "stages" / "eval").iterdir() if p.name.startswith(".tmp-")]
    # two names of one model (a clean-dose teacher is the clean control): one artifact, computed once
    recs = cache.run_many("eval", {"eval:d": {"x": 4}, "eval:e": {"x": 4}}, compute)
    assert calls[-1] == ["eval:d"] and recs["eval:d"].path == recs["eval:e"].path and recs["eval:e"].cached
