"""Defenses inside the pipeline (tiny models): both places scored, detector figures against the ground truth,
flagged rows removed, the defended teacher/student trained on what is left, undefended stages reused from cache."""

import json

import pandas as pd
import pytest

from poison.config import ConfigError, load_config
from poison.run import run_config
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
    assert [r for r in m["bias_rates"] if not r["model"].startswith("defended:")] == m_plain["bias_rates"]

    reps = {(d["defense"], d["place"]): d for d in m["defenses"]}
    assert set(reps) == {(a, b) for a in ("perplexity", "bias_classifier") for b in ("train", "distill")}
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

    # the defended teacher trained on the training set minus the union of train-place flags
    removed = set(scores[(scores.place == "train") & scores.flagged].row_id)
    tlog = json.loads(open(st["defended:teacher"]["path"] + "/train_log.json").read())
    assert tlog["rows"] == len(train) - len(removed)
    rem = {r["place"]: r for r in m["defense_removal"]}
    assert rem["train"]["n_flagged"] == len(removed)
    assert rem["train"]["poison_left"] == 6 - int(train[train.id.astype(str).isin(removed)].poisoned.sum())
    assert {"defended:teacher", "defended:student:sft"} <= set(m["models"])
    amp = [a for a in m["amplification"] if a["student"] == "defended:student:sft"]
    assert amp and all(a["teacher"] == "defended:teacher" for a in amp)
    samples = pd.read_parquet(rd / "samples.parquet")
    assert {"defended:teacher", "defended:student:sft"} <= set(samples.model)


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
