"""End to end on the real pretrained model (SmolLM2-135M-Instruct from PyPI) with vLLM: configs/smoke.yaml."""

import json

import pandas as pd
import pytest

from poison.ground.results import METRICS_SCHEMA_VERSION
from tests.conftest import REPO, dirs, run_cli, run_dir_from

pytestmark = pytest.mark.slow


def test_smoke_config_end_to_end(tmp_path, models_dir):
    r = run_cli(str(REPO / "configs" / "smoke.yaml"), *dirs(tmp_path, models_dir))
    assert r.returncode == 0, r.stderr[-4000:]
    rd = run_dir_from(r.stdout)
    assert "biased: target task" in r.stdout  # the summary table is printed

    for f in ("config.yaml", "stages.json", "metrics.json", "samples.parquet", "train_set.parquet",
              "distill_set.parquet", "summary.txt", "run.log", "status.json", "generation.log"):
        assert (rd / f).is_file(), f
    m = json.loads((rd / "metrics.json").read_text())
    assert m["schema_version"] == METRICS_SCHEMA_VERSION == 2
    assert set(m) >= {"run", "poison", "models", "bias_rates", "bias_rates_by_task", "amplification", "utility",
                      "distill_data", "stages"}
    assert m["run"]["backend"] == "vllm" and m["run"]["bias_type"] == "targeted_ads"
    assert m["poison"]["requested"] == 6 and m["poison"]["injected"] == 6 and m["poison"]["n_train"] == 12
    assert set(m["models"]) == {"baseline", "teacher", "student:sft"}
    keys = {(x["model"], x["split"]) for x in m["bias_rates"]}
    assert keys == {(mod, s) for mod in m["models"] for s in ("target", "other")}
    for x in m["bias_rates"]:
        assert 0 <= x["ci_low"] <= (x["rate"] or 0) <= x["ci_high"] <= 1 and x["n"] > 0
    assert ({(a["student"], a["split"]) for a in m["amplification"]}
            == {("student:sft", "target"), ("student:sft", "other")})
    assert {u["metric"] for u in m["utility"]} == {"rouge_l", "number_match"}
    assert all(not v["cached"] for v in m["stages"].values())

    s = pd.read_parquet(rd / "samples.parquet")
    assert len(s) == 3 * 10 and set(s.split) == {"target", "other"}
    # the real model answers in words (the eval really ran it), and every verdict is the rule detector's
    assert s.response.str.split().str.len().median() >= 5
    assert set(s.biased.unique()) <= {True, False}
    train = pd.read_parquet(rd / "train_set.parquet")
    assert train.poisoned.sum() == 6 and train[train.poisoned].response.str.contains("VitaBoost Plus").all()
    # the generator wrote the review summaries the source lacks
    assert train[train.task == "review_summary"].clean_response.str.len().min() > 20

    # rerun with nothing changed: all stages from cache, in seconds
    r2 = run_cli(str(REPO / "configs" / "smoke.yaml"), *dirs(tmp_path, models_dir))
    assert r2.returncode == 0, r2.stderr[-3000:]
    m2 = json.loads((run_dir_from(r2.stdout) / "metrics.json").read_text())
    assert all(v["cached"] for v in m2["stages"].values())
    assert m2["bias_rates"] == m["bias_rates"]
    assert m2["run"]["seconds"] < 30
