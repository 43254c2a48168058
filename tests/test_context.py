"""The run context reaches every plugin the same way: a defense configured with ``device: auto`` runs on the run's
``runtime.device``, not on what it would pick on its own; its models and cache are the run's."""

import json
from pathlib import Path

import yaml

from poison.config import config_from_dict
from poison.ground.engines.models import pick_device
from poison.pipeline import Pipeline
from poison.stages.data import stage_data, stage_trusted
from poison.stages.defense import stage_defense
from poison.stages.training import stage_poison
from tests.conftest import TINY_CONFIG, dirs


def test_defense_device_auto_follows_runtime_device(tmp_path, models_dir, monkeypatch):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["defense"] = {"defenses": [
        {"type": "perplexity", "args": {"model": "tiny-random-llama:2:64", "device": "auto"}, "fpr": 0.25},
        {"type": "bias_classifier", "args": {"builtin_clean": 0, "device": "auto"}, "threshold": 0.5}],
        "places": ["train"], "filter": "none"}
    sets = [s for s in dirs(tmp_path, models_dir) if s != "--set"] + ["runtime.device=cpu"]
    pipe = Pipeline(config_from_dict(raw, sets), tmp_path / "run")
    (tmp_path / "run").mkdir()
    import torch

    # a machine where CUDA looks available: a defense left to choose by itself would pick it (and fail here)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda" and pipe.ctx.device == "cpu"
    run = pipe.stages
    data = stage_data(run)
    rec = stage_defense(run, "train", stage_trusted(run, data), stage_poison(run, data), None)
    reports = json.loads((Path(rec.path) / "reports.json").read_text())
    assert {r["defense"]: r["info"]["device"] for r in reports} == {"perplexity": "cpu", "bias_classifier": "cpu"}
    ppl = next(r for r in reports if r["defense"] == "perplexity")
    assert Path(ppl["info"]["model"]).parent == Path(models_dir)  # the run's models folder, not a default one
    assert list((tmp_path / "cache" / "defenses" / "bias_classifier").glob("*.json"))  # the run's cache


def test_log_path_makes_the_run_directory(tmp_path):
    """A vLLM worker or server opens its log before any stage has written into the run directory (a script that
    builds a Pipeline and runs the data stage, as bench_train_throughput does): the context makes the directory."""
    from poison.ground.engines.context import RunContext

    run_dir = tmp_path / "runs" / "fresh"
    ctx = RunContext(cache_dir=tmp_path / "cache", models_dir=tmp_path / "models", device="cpu", dtype="float32",
                     run_dir=run_dir)
    log = ctx.log_path("generation.log")
    assert log == run_dir / "generation.log" and run_dir.is_dir() and not log.exists()
    with open(log, "ab") as f:  # what the worker does with it
        f.write(b"ok")
    assert log.read_bytes() == b"ok"
    assert RunContext(cache_dir=tmp_path, models_dir=tmp_path, device="cpu", dtype="float32").log_path("x.log") is None
