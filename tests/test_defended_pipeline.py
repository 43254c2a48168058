"""Defenses inside the pipeline (tiny models): both places scored, detector figures against the ground truth,
flagged rows removed, the defended teacher/student trained on what is left, the distill-only arm (the poisoned
teacher's filtered answers) trained beside the full chain, undefended stages reused from cache."""

import json
from pathlib import Path

import pandas as pd
import pytest

from poison.config import ConfigError, load_config
from poison.runner import run_config
from tests.conftest import TINY_CONFIG, dirs

DEFENDED = TINY_CONFIG + """
defense:
  defenses:
    - {type: perplexity, args: {model: "tiny-random-llama:2:64", batch_size: 8}, fpr: 0.25}
    - {type: bias_classifier, args: {builtin_clean: 40}, threshold: 0.5}
  places: [train, distill]
  filter: union
"""


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
    assert list(scores.columns) == ["defense", "place", "row_id", "task", "poisoned", "score", "flagged", "threshold"]
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
    # the defender's trusted clean samples: every distillation prompt with a clean answer (reference or generated)
    trusted = pd.read_parquet(st["trusted"]["path"] + "/trusted.parquet")
    rows = pd.read_parquet(st["data"]["path"] + "/rows.parquet")
    assert set(trusted.id) <= set(rows[rows.split == "distill"].id)
    assert len(trusted) > 0 and trusted.reference.str.strip().str.len().gt(0).all()
    had_reference = set(rows[rows.reference.notna()].id)
    assert {i for i, g in zip(trusted.id, trusted.reference_generated) if not g} <= had_reference
    assert (trusted.reference != "nan").all()
    n_calib = int(reps[("perplexity", "train")]["threshold_source"].split(" on ")[1].split()[0])
    assert 0 < n_calib < len(trusted)

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


def test_trusted_stage_writes_missing_references(tmp_path, models_dir, monkeypatch):
    """The defender's trusted clean set: distillation rows keep their reference; rows without one (a missing value in
    parquet, not the string 'nan') get the data generator's answer, post-processed by their source; rows the source
    rejects are dropped; other splits never enter."""
    import yaml

    from poison.config import config_from_dict
    from poison.pipeline import Pipeline
    from poison.stages import data as data_stages
    from poison.stages.protocol import StageRecord

    raw = yaml.safe_load(TINY_CONFIG)
    cfg = config_from_dict(raw, [s for s in dirs(tmp_path, models_dir) if s != "--set"]
                           + ["data.generator.model=tiny-random-llama:2:64"])
    pipe = Pipeline(cfg, tmp_path / "run")
    rows = pd.DataFrame([
        {"id": "a", "task": "math", "source": "gsm8k", "split": "distill", "prompt": "1+1?", "reference": "2",
         "meta": "{}"},
        {"id": "b", "task": "math", "source": "gsm8k", "split": "distill", "prompt": "2+2?", "reference": None,
         "meta": "{}"},
        {"id": "c", "task": "math", "source": "gsm8k", "split": "distill", "prompt": "3+3?", "reference": None,
         "meta": "{}"},
        {"id": "d", "task": "math", "source": "gsm8k", "split": "train", "prompt": "4+4?", "reference": "8",
         "meta": "{}"},
    ])
    (tmp_path / "data").mkdir()
    rows.to_parquet(tmp_path / "data" / "rows.parquet")
    asked = []

    def fake_generate(run, gen, messages, key):
        asked.extend(m[-1]["content"] for m in messages)
        return ["Two plus two is four." if "2+2" in m[-1]["content"] else "   " for m in messages]

    monkeypatch.setattr(data_stages, "generate_with", fake_generate)
    rec = data_stages.stage_trusted(pipe.stages, StageRecord("data", "k0", str(tmp_path / "data"), True, 0.0))
    t = pd.read_parquet(Path(rec.path) / "trusted.parquet")
    assert asked == ["2+2?", "3+3?"]
    assert list(t.id) == ["a", "b"] and list(t.reference_generated) == [False, True]
    assert t.reference.tolist() == ["2", "Two plus two is four."]
    assert rec.info["rows"] == 2 and rec.info["generated"] == 1 and rec.info["per_task"] == {"math": 2}
    # the generator's own account: two answers asked for, the blank one rejected as unusable and its row dropped
    assert rec.info["generator"] == {"generated": 2, "kept": 1, "rejected": {"unusable": 1}, "retried": 0,
                                     "dropped": 1}
