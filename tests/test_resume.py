"""Resuming a replicated run in its own sweep directory (poison.resume): completed points are kept as they are,
the others run, the pooled tables cover both, and a point made from another config is an error, not pooled."""

import json

import pytest
import yaml

from poison.ground.core.errors import ConfigError
from poison.sweep import run_sweep
from poison.sweep_spec import REPLICATE
from tests.conftest import TINY_CONFIG, dirs, run_cli
from tests.test_pipeline import overrides


def test_resume_keeps_completed_points_and_runs_the_rest(tmp_path, models_dir):
    raw = yaml.safe_load(TINY_CONFIG)
    raw["replicates"] = {"n": 2, "vary": ["train_seed"]}
    p = tmp_path / "rep.yaml"
    p.write_text(yaml.safe_dump(raw))
    sets = overrides(tmp_path, models_dir)
    # run in pieces (--replicate): replicate 0 alone, pooled alone, then replicate 1 into the same directory
    sweep_dir, rows = run_sweep(str(p), sets, quiet=True, only_replicates=[0])
    assert [d.name for d in sweep_dir.iterdir() if d.is_dir()] == ["00-seed=0"]
    assert [r["point"] for r in json.loads((sweep_dir / "sweep.json").read_text())["runs"]] == [{REPLICATE: 0}]
    _, rows = run_sweep(str(p), sets, quiet=True, resume=sweep_dir, only_replicates=[1])
    first, second = sorted(d for d in sweep_dir.iterdir() if d.is_dir())
    kept_status = (first / "status.json").read_text()
    kept_metrics = (first / "metrics.json").read_text()
    # the second replicate was cut off: its run directory says running and has no metrics
    (second / "metrics.json").unlink()
    (second / "status.json").write_text(json.dumps({"status": "running"}))
    (sweep_dir / "sweep.json").unlink()

    # --repool: the completed point is pooled again with this code, the cut-off one is left as it is
    run_sweep(str(p), sets, quiet=True, resume=sweep_dir, pool_only=True)
    assert json.loads((second / "status.json").read_text()) == {"status": "running"}
    assert (first / "metrics.json").read_text() == kept_metrics
    pooled_one = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["point"] for r in pooled_one["runs"]] == [{REPLICATE: 0}]
    assert {r["n"] for r in pooled_one["replicates"]} == {1}

    again, rows_again = run_sweep(str(p), sets, quiet=True, resume=sweep_dir)
    assert again == sweep_dir.resolve()
    assert (first / "status.json").read_text() == kept_status  # not run again
    assert (first / "metrics.json").read_text() == kept_metrics
    assert json.loads((second / "status.json").read_text())["status"] == "complete"
    info = json.loads((sweep_dir / "sweep.json").read_text())
    assert [r["point"] for r in info["runs"]] == [{REPLICATE: 0}, {REPLICATE: 1}]
    assert len(rows_again) == len(rows)
    assert info["replicates"]  # pooled over both replicates, the kept one included

    # another config in the same directory is an error naming the field, and nothing is run or pooled
    with pytest.raises(ConfigError, match=r"point 1 .*teacher\.train\.learning_rate"):
        run_sweep(str(p), sets + ["teacher.train.learning_rate=0.5"], quiet=True, resume=sweep_dir)
    with pytest.raises(ConfigError, match=r"--replicate 2: .* has replicates 0, 1"):
        run_sweep(str(p), sets, quiet=True, resume=sweep_dir, only_replicates=[2])
    r = run_cli(str(p), *dirs(tmp_path, models_dir), "--resume", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --resume:")
    assert "Traceback" not in r.stderr
    single = tmp_path / "single.yaml"
    single.write_text(TINY_CONFIG)
    r = run_cli(str(single), *dirs(tmp_path, models_dir), "--replicate", "0")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --replicate: ")
    r = run_cli(str(p), *dirs(tmp_path, models_dir), "--repool")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: --repool needs --resume")


def test_a_field_added_to_the_schema_since_is_not_a_difference():
    from poison.resume import _diff

    old = {"teacher": {"train": {"epochs": 3}}, "runtime": {"cache_dir": ".cache"}}
    now = {"teacher": {"train": {"epochs": 3, "compile": "auto"}}, "runtime": {"cache_dir": ".cache", "verify": 1}}
    assert list(_diff(old, now)) == []
    assert list(_diff(old, {**now, "runtime": {"cache_dir": "/elsewhere"}})) == []  # where, not what
    assert list(_diff(old, {"teacher": {"train": {"epochs": 2}}, "runtime": {"cache_dir": ".cache"}})) == [
        "teacher.train.epochs (3 there, 2 now)"]
