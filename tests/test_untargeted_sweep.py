"""Untargeted propagation with held-out task families, the LLM writer's fallback, and sweeps (tiny models)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from poison.config import ConfigError
from poison.runner import run_config
from poison.sweep import load_sweep, run_sweep
from poison.sweep_spec import expand, label
from tests.conftest import TINY_CONFIG, UNTARGETED_CONFIG
from tests.test_pipeline import overrides


def test_untargeted_split_bookkeeping(tmp_path, models_dir):
    cfg = tmp_path / "u.yaml"
    cfg.write_text(UNTARGETED_CONFIG)
    rd, m = run_config(str(cfg), overrides(tmp_path, models_dir), quiet=True)
    train = pd.read_parquet(rd / "train_set.parquet")
    distill = pd.read_parquet(rd / "distill_set.parquet")
    samples = pd.read_parquet(rd / "samples.parquet")
    # the held-out family never reaches the teacher (nor the student's distillation prompts)
    assert "instructions" not in set(train.task) and "instructions" not in set(distill.task)
    assert set(samples[samples.task == "instructions"].split) == {"unseen"}
    assert m["run"]["splits"] == {"math": "target", "commonsense_qa": "other", "instructions": "unseen"}
    # untargeted: the poison is spread over every trained family
    assert m["poison"]["mode"] == "untargeted" and m["poison"]["injected"] == 12
    assert set(train[train.poisoned].task) == {"math", "commonsense_qa"}
    splits = {(r["model"], r["split"]) for r in m["bias_rates"]}
    assert {("teacher", "unseen"), ("student:sft", "unseen"), ("baseline", "unseen")} <= splits
    assert {a["split"] for a in m["amplification"]} == {"target", "other", "unseen"}
    assert "biased: unseen tasks" in (rd / "summary.txt").read_text()


def test_llm_writer_falls_back_to_template_and_reports_it(tmp_path, models_dir):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(TINY_CONFIG)
    ov = overrides(tmp_path, models_dir, "poison.writer=llm", "data.generator.model=tiny-random-llama:1:64",
                   "poison.count=4")
    rd, m = run_config(str(cfg), ov, quiet=True)
    train = pd.read_parquet(rd / "train_set.parquet")
    w = m["poison"]["writer"]
    assert w["llm"] + w["template"] == 4 == int(train.poisoned.sum())
    # a random-init rewriter never writes the brand: every poisoned row fell back to the template writer
    assert w["llm"] == 0 and set(train[train.poisoned].writer) == {"template"}
    assert train[train.poisoned].response.str.contains("VitaBoost Plus").all()


def test_sweep_expansion():
    assert expand({"poison.count": [1, 2], "seed": [0, 1]}) == [
        {"poison.count": 1, "seed": 0}, {"poison.count": 1, "seed": 1},
        {"poison.count": 2, "seed": 0}, {"poison.count": 2, "seed": 1}]
    assert expand([{"poison.count": 3}, {"poison.bias.type": "phishing_link"}]) == [
        {"poison.count": 3}, {"poison.bias.type": "phishing_link"}]
    assert label({"poison.count": 8, "poison.bias.type": "phishing_link"}) == "count=8_type=phishing_link"
    for bad in ({}, {"poison.count": 3}, [], [{}], "x"):
        with pytest.raises(ConfigError, match="sweep"):
            expand(bad)


def test_sweep_points_are_validated_before_anything_runs(tmp_path):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["sweep"] = {"poison.count": [2, "many"]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"sweep point count=many.*\n.*poison.count"):
        load_sweep(p)


def test_sweep_runs_share_cached_stages(tmp_path, models_dir):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["sweep"] = {"poison.count": [2, 6]}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(raw))
    sweep_dir, rows = run_sweep(str(p), overrides(tmp_path, models_dir), quiet=True)
    info = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["point"] for r in info["runs"]] == [{"poison.count": 2}, {"poison.count": 6}]
    first, second = info["runs"]
    assert not first["stages"]["data"] and second["stages"]["data"]  # the data stage is shared
    assert second["stages"]["eval:baseline"]  # so is the base model's eval
    assert not second["stages"]["teacher"]  # each budget trains its own teacher
    table = pd.read_csv(sweep_dir / "sweep_table.csv")
    assert set(table["poison.count"]) == {2, 6} and set(table.injected) == {2, 6}
    assert set(table.model) == {"baseline", "teacher", "student:sft"}
    assert ((table.ci_low <= table.rate) & (table.rate <= table.ci_high)).all()
    assert "biased-response rate, target split" in (sweep_dir / "summary.txt").read_text()
    for r in info["runs"]:  # every point is a complete run directory inside the sweep directory
        run_dir = Path(r["run_dir"])
        assert run_dir.parent == sweep_dir
        assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"
