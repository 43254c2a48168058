"""Defenses inside the pipeline (tiny models): both places scored, detector figures against the ground truth,
flagged rows removed, the defended teacher/student trained on what is left, the distill-only arm (the poisoned
teacher's filtered answers) trained beside the full chain, undefended stages reused from cache."""

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from poison.config import ConfigError, load_config
from poison.ground.core import registry
from poison.ground.results.stats import threshold_for_fpr
from poison.runner import run_config
from tests.conftest import TINY_CONFIG, dirs

DEFENDED = TINY_CONFIG + """
defense:
  defenses:
    - {type: perplexity, args: {model: "tiny-random-llama:1:64", batch_size: 8}, fpr: 0.25}
    - {type: bias_classifier, args: {builtin_clean: 40}, threshold: 0.5}
  places: [train, distill]
  filter: union
"""  # the perplexity reference is not the teacher's base (tiny-random-llama:2:64), which wrote the distill answers


def _sets(tmp_path, models_dir):
    flat = dirs(tmp_path, models_dir)
    return [flat[i + 1] for i in range(0, len(flat), 2)]


def test_defended_run(tmp_path, models_dir):
    plain, defended = tmp_path / "plain.yaml", tmp_path / "defended.yaml"
    plain.write_text(TINY_CONFIG)
    defended.write_text(DEFENDED)
    sets = _sets(tmp_path, models_dir)
    rd, m = run_config(str(defended), sets, quiet=True)
    st = json.loads((rd / "stages.json").read_text())
    assert not st["defense:train"]["cached"] and not st["defended:teacher"]["cached"]
    # the undefended chain of a defended run is the plain run's: the plain config afterwards is all cache hits
    rd_plain, m_plain = run_config(str(plain), sets, quiet=True)
    assert all(v["cached"] for v in json.loads((rd_plain / "stages.json").read_text()).values())
    defended_models = {n for n, v in m["models"].items() if v.get("defended")}
    assert defended_models == {"defended:teacher", "defended:student:sft", "distill-defended:student:sft"}
    assert [r for r in m["bias_rates"] if r["model"] not in defended_models] == m_plain["bias_rates"]

    reps = {(d["defense"], d["place"]): d for d in m["defenses"]}
    assert set(reps) == {(a, b) for a in ("perplexity", "bias_classifier")
                         for b in ("train", "distill", "distill_after_train")}
    scores = pd.read_parquet(rd / "defense_scores.parquet")
    assert list(scores.columns) == ["defense", "place", "row_id", "task", "poisoned", "score", "flagged", "threshold",
                                    "instance"]
    train = pd.read_parquet(rd / "train_set.parquet")
    for (name, place), r in reps.items():
        sub = scores[(scores.defense == name) & (scores.place == place)]
        assert r["n"] == len(sub) and r["n_flagged"] == int(sub.flagged.sum())
        assert (sub.flagged == (sub.score > r["threshold"])).all()
        if place == "train":
            assert r["n_poisoned"] == int(train.poisoned.sum()) == 6
            assert r["auroc"] is not None and 0.0 <= r["auroc"] <= 1.0
    assert reps[("bias_classifier", "train")]["threshold"] == 0.5  # fixed threshold kept
    assert reps[("perplexity", "train")]["threshold_source"].startswith("fpr 0.25")
    # the defender's trusted clean samples: held-out prompts (as many per source as its n_distill) in no split, so
    # never scored at any place, each with a clean answer
    trusted = pd.read_parquet(st["trusted"]["path"] + "/trusted.parquet")
    rows = pd.read_parquet(st["data"]["path"] + "/rows.parquet")
    assert trusted.task.value_counts().to_dict() == {"math": 6, "commonsense_qa": 4}
    assert not set(trusted.prompt) & set(rows.prompt) and not set(trusted.id) & set(rows.id)
    assert not set(trusted.id) & set(scores.row_id)
    assert trusted.reference.str.strip().str.len().gt(0).all() and (trusted.reference != "nan").all()
    n_calib = int(reps[("perplexity", "train")]["threshold_source"].split(" on ")[1].split()[0])
    assert 0 < n_calib < len(trusted)
    # the run's realized FPR on the scored clean rows, beside its budget
    for (name, place), r in reps.items():
        sub = scores[(scores.defense == name) & (scores.place == place) & ~scores.poisoned]
        assert r["fpr"] == pytest.approx(float((sub.score > r["threshold"]).mean()))
        assert r["fpr_budget"] == (0.25 if name == "perplexity" else None)

    # unconfounded figures: thresholds at 1 % / 5 % FPR set on the calibration split (never scored), overall and
    # within the target task (poisoned vs clean math rows), with bootstrap intervals
    det = {(d["defense"], d["place"], d["scope"], d["task"]): d for d in m["defense_detection"]}
    assert {k[:2] for k in det} == set(reps)
    within = det[("perplexity", "train", "task", "math")]
    assert within["target"] and within["n_poisoned"] == 6 and within["n_clean"] == 6  # 12 math rows, 6 poisoned
    sub = scores[(scores.defense == "perplexity") & (scores.place == "train") & (scores.task == "math")]
    assert within["auroc"] == pytest.approx(roc_auc_score(sub.poisoned, sub.score))
    calib = pd.read_parquet(st["defense:train"]["path"] + "/calib.parquet")
    cal = calib[calib.defense == "perplexity"].score
    assert len(cal) == n_calib and not set(calib.row_id) & set(scores.row_id)
    thr = threshold_for_fpr(cal, 0.05)
    assert within["threshold_5pct"] == pytest.approx(thr)
    assert within["tpr_5pct"] == pytest.approx(float((sub[sub.poisoned].score > thr).mean()))
    assert within["fpr_5pct"] == pytest.approx(float((sub[~sub.poisoned].score > thr).mean()))
    assert within["auroc_low"] <= within["auroc"] <= within["auroc_high"]
    overall = det[("perplexity", "train", "all", None)]
    assert overall["n"] == len(train) and overall["auroc"] == pytest.approx(reps[("perplexity", "train")]["auroc"])
    summary = (rd / "summary.txt").read_text()
    assert "task math (target)" in summary and "calibration split" in summary

    # the defended teacher trained on the training set minus the union of train-place flags
    removed = set(scores[(scores.place == "train") & scores.flagged].row_id)
    tlog = json.loads(open(st["defended:teacher"]["path"] + "/train_log.json").read())
    assert tlog["rows"] == len(train) - len(removed)
    rem = {r["place"]: r for r in m["defense_removal"]}
    assert rem["train"]["n_flagged"] == len(removed)
    assert rem["train"]["poison_left"] == 6 - int(train[train.id.astype(str).isin(removed)].poisoned.sum())
    amp = [a for a in m["amplification"] if a["student"] == "defended:student:sft"]
    assert amp and all(a["teacher"] == "defended:teacher" for a in amp)
    samples = pd.read_parquet(rd / "samples.parquet")
    assert defended_models <= set(samples.model)

    # distill place: the poisoned teacher's answers (the plain run's distillation set), ground truth = rule detector;
    # the distill-only student learns from them minus the distill-place flags, the chain's student from the defended
    # teacher's answers minus the distill_after_train flags
    plain_distill = pd.read_parquet(st["distill_data"]["path"] + "/distill.parquet")
    for place, stage, student in (("distill", "distill_data", "distill-defended:student:sft"),
                                  ("distill_after_train", "defended:distill_data", "defended:student:sft")):
        answers = pd.read_parquet(st[stage]["path"] + "/distill.parquet")
        flagged = set(scores[(scores.place == place) & scores.flagged].row_id)
        assert set(scores[scores.place == place].row_id) == set(answers.id.astype(str))
        assert rem[place]["n_flagged"] == len(flagged)
        slog = json.loads(open(st[student]["path"] + "/train_log.json").read())
        assert slog["rows"] == len(answers) - len(flagged)
    assert m["models"]["distill-defended:student:sft"]["teacher"] == "teacher"
    assert len(plain_distill) == reps[("perplexity", "distill")]["n"]


def test_defense_config_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(DEFENDED.replace("filter: union", "filter: perplex"))
    with pytest.raises(ConfigError, match="defense.filter"):
        load_config(p)
    p.write_text(DEFENDED.replace("batch_size: 8", "batch_sise: 8"))
    with pytest.raises(ConfigError, match=r"defense.defenses.0.args.batch_sise"):
        load_config(p)
    p.write_text(DEFENDED.replace("type: bias_classifier", "type: bias_clasifier"))
    with pytest.raises(ConfigError, match=r"defense.defenses.1.type"):
        load_config(p)


def test_two_defenses_of_one_type_keep_their_own_flags(tmp_path, models_dir):
    """Two bias classifiers with different thresholds: without names the config is refused; named, each keeps its
    own scores and flags, the union removes what either flagged, and a name alone changes no stage key."""
    two = TINY_CONFIG + """
defense:
  defenses:
    - {type: bias_classifier, args: {builtin_clean: 40}, threshold: 0.2}
    - {type: bias_classifier, args: {builtin_clean: 40}, threshold: 0.9}
  places: [train]
  filter: union
"""
    p = tmp_path / "c.yaml"
    p.write_text(two)
    with pytest.raises(ConfigError, match=r"2 defenses are called 'bias_classifier'; give each a distinct `name`"):
        load_config(p)
    p.write_text(two.replace("threshold: 0.2}", "threshold: 0.2, name: loose}")
                 .replace("threshold: 0.9}", "threshold: 0.9, name: strict}"))
    rd, m = run_config(str(p), _sets(tmp_path, models_dir), quiet=True)
    st = json.loads((rd / "stages.json").read_text())
    folder = Path(st["defense:train"]["path"])
    scores = pd.read_parquet(folder / "scores.parquet")
    assert set(scores.defense) == {"loose", "strict"}
    flagged = {d: set(g.row_id[g.flagged]) for d, g in scores.groupby("defense")}
    assert flagged["strict"] <= flagged["loose"] and flagged["loose"]  # the lower threshold flags more
    removal = json.loads((folder / "removal.json").read_text())
    assert removal["n_flagged"] == len(flagged["loose"] | flagged["strict"])
    reports = json.loads((folder / "reports.json").read_text())
    assert [(r["defense"], r["type"]) for r in reports] == [("loose", "bias_classifier"), ("strict", "bias_classifier")]
    # an unnamed defense keeps the stage key it had before names existed
    from poison.schema import DefenseSpec
    from poison.stages.defense import defense_key

    plain = DefenseSpec(type="bias_classifier", threshold=0.5)  # its args resolved by the schema, as in a run
    args = registry.get("defense", "bias_classifier").resolve_args({})
    assert defense_key(plain) == {"type": "bias_classifier", "args": args, "threshold": 0.5, "fpr": 0.05}
    assert defense_key(DefenseSpec(type="bias_classifier", threshold=0.5, name="clf"))["name"] == "clf"


PER_DEFENSE = TINY_CONFIG + """
defense:
  defenses:
    - {type: bias_classifier, args: {builtin_clean: 40}, threshold: 0.2, name: loose}
    - {type: bias_classifier, args: {builtin_clean: 40}, threshold: 0.9, name: strict}
  places: [train]
  filter: none
  per_defense: true
"""


def test_per_defense_arms_train_and_report_what_each_defense_buys(tmp_path, models_dir):
    """defense.per_defense with filter none: each defense's own teacher (trained without what it alone flagged) and
    students are trained, evaluated and reported in defense_downstream beside the undefended arm."""
    p = tmp_path / "c.yaml"
    p.write_text(PER_DEFENSE)
    rd, m = run_config(str(p), _sets(tmp_path, models_dir), quiet=True)
    st = json.loads((rd / "stages.json").read_text())
    students = [s["name"] for s in load_config(p).model_dump()["students"]]
    scores = pd.read_parquet(Path(st["defense:train"]["path"]) / "scores.parquet")
    flagged = {d: set(g.row_id[g.flagged].astype(str)) for d, g in scores.groupby("defense")}
    truth = dict(zip(scores.row_id[scores.defense == "loose"].astype(str), scores.poisoned[scores.defense == "loose"]))
    assert flagged["strict"] <= flagged["loose"] and flagged["loose"]
    assert "defended:teacher" not in st  # filter none: no filter arm
    rows = {}
    for label in ("loose", "strict"):
        teacher = st[f"per-defense:{label}:teacher"]
        rows[label] = teacher["info"]["rows"]
        assert rows[label] == len(truth) - len(flagged[label])
        assert f"per-defense:{label}:teacher" in m["models"]
        assert m["models"][f"per-defense:{label}:teacher"]["defense"] == label
        for s in students:
            assert f"per-defense:{label}:student:{s}" in st
            entry = m["models"][f"per-defense:{label}:student:{s}"]
            assert entry["defense"] == label and entry["teacher"] == f"per-defense:{label}:teacher"
            assert any(r["model"] == f"per-defense:{label}:student:{s}" for r in m["bias_rates"])
    assert rows["strict"] >= rows["loose"]  # the strict threshold flags a subset: its teacher keeps more rows
    down = {r["defense"]: r for r in m["defense_downstream"]}
    assert set(down) == {"none", "loose", "strict"}
    n_poisoned = sum(truth.values())
    assert down["none"]["poison_removed"] == down["none"]["clean_removed"] == 0
    assert down["none"]["teacher"]["model"] == "teacher"
    for label in ("loose", "strict"):
        r = down[label]
        poison = sum(1 for i in flagged[label] if truth[i])
        assert r["poison_removed"] == poison and r["clean_removed"] == len(flagged[label]) - poison
        assert r["poison_recall"] == pytest.approx(poison / n_poisoned)
        assert r["clean_lost"] == pytest.approx((len(flagged[label]) - poison) / (len(truth) - n_poisoned))
        rate = next(x for x in m["bias_rates"]
                    if x["model"] == f"per-defense:{label}:teacher" and x["split"] == "target")
        assert r["teacher"]["rate"] == rate["rate"] and r["teacher"]["ci_high"] == rate["ci_high"]
        assert set(r["students"]) == set(students)
    assert "What each defense buys downstream" in (rd / "summary.txt").read_text()


def test_per_defense_needs_the_train_place(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(PER_DEFENSE.replace("places: [train]", "places: [distill]"))
    with pytest.raises(ConfigError, match=r"defense.per_defense needs 'train' in defense.places"):
        load_config(p)


def test_trusted_stage_draws_held_out_prompts(tmp_path, models_dir, monkeypatch):
    """The defender's trusted clean set: prompts of the source that are in no split of the data stage (so never
    scored), as many per source as asked; a prompt without a response gets the data generator's answer, post-processed
    by its source, and one the source rejects is replaced by the next held-out prompt; too few held-out prompts is a
    DataError naming defense.trusted_per_source."""
    import yaml

    from poison.config import config_from_dict
    from poison.ground.core.errors import DataError
    from poison.pipeline import Pipeline
    from poison.stages import data as data_stages
    from poison.stages.protocol import StageRecord

    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}?"}) + "\n" for i in range(8)))
    raw = yaml.safe_load(TINY_CONFIG)
    raw["data"] = {"target_task": "custom", "sources": [
        {"type": "file", "args": {"path": str(src), "response_field": None}, "n_train": 2, "n_distill": 1,
         "n_eval": 1}], "generator": {"model": "tiny-random-llama:2:64"}}
    raw["defense"] = {"trusted_per_source": 2}
    sets = [s for s in dirs(tmp_path, models_dir) if s != "--set"]
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(4)], "task": "custom", "source": "file",
                         "split": ["train", "train", "distill", "eval"], "prompt": [f"p{i}?" for i in range(4)]})
    (tmp_path / "data").mkdir()
    rows.to_parquet(tmp_path / "data" / "rows.parquet")
    data = StageRecord("data", "k0", str(tmp_path / "data"), True, 0.0)
    asked = []

    def fake_generate(run, gen, messages, key):
        asked.extend(m[-1]["content"] for m in messages)
        return ["   " if m[-1]["content"] == "p5?" else f"Answer to {m[-1]['content']}" for m in messages]

    monkeypatch.setattr(data_stages, "generate_with", fake_generate)
    rec = data_stages.stage_trusted(Pipeline(config_from_dict(raw, sets), tmp_path / "run").stages, data)
    t = pd.read_parquet(Path(rec.path) / "trusted.parquet")
    assert set(asked) <= {"p4?", "p5?", "p6?", "p7?"}  # the data splits' prompts are never drawn
    assert len(t) == 2 and set(t.prompt) <= {"p4?", "p6?", "p7?"} and t.reference_generated.all()
    assert t.reference.tolist() == [f"Answer to {p}" for p in t.prompt]
    assert all(i.startswith("trusted:") for i in t.id) and rec.info["per_task"] == {"custom": 2}
    raw["defense"] = {"trusted_per_source": 4}  # 4 held-out prompts, one rejected: 3 usable
    with pytest.raises(DataError, match=r"defense.trusted_per_source: data.sources.0 \(file\) has 3 usable"):
        data_stages.stage_trusted(Pipeline(config_from_dict(raw, sets), tmp_path / "run").stages, data)
