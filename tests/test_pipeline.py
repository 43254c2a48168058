"""The pipeline on tiny random-init models: artifacts, cache hits and misses, resume after kill -9, a teacher-only
run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from poison.ground.results import METRICS_SCHEMA_VERSION, check_metrics
from poison.runner import run_config
from tests.conftest import REPO, dirs, run_cli, run_dir_from, warm_cache


def stages(run_dir):
    return json.loads((run_dir / "stages.json").read_text())


def cached(run_dir):
    return {k: v["cached"] for k, v in stages(run_dir).items()}


def overrides(tmp_path, models_dir, *extra):
    flat = dirs(tmp_path, models_dir)
    return [flat[i + 1] for i in range(0, len(flat), 2)] + list(extra)


def test_tiny_pipeline_artifacts_and_cache(tiny_config, tmp_path, models_dir, tiny_run):
    rd, m = tiny_run.run_dir, tiny_run.metrics  # the shared plain tiny run: every stage computed
    assert not any(cached(rd).values())
    for f in ("config.yaml", "stages.json", "metrics.json", "samples.parquet", "train_set.parquet",
              "distill_set.parquet", "summary.txt", "run.log", "status.json"):
        assert (rd / f).exists(), f
    assert json.loads((rd / "status.json").read_text())["status"] == "complete"
    # one writer: metrics.json as returned, matching its models; summary.txt ends as the CLI's output, with the seconds
    assert json.loads((rd / "metrics.json").read_text())["run"]["seconds"] == m["run"]["seconds"]
    assert check_metrics(m) == []
    assert m["schema_version"] == METRICS_SCHEMA_VERSION
    assert (rd / "summary.txt").read_text().endswith(f"\n\nrun directory: {rd}  ({m['run']['seconds']:.0f}s)\n")
    # the machine and the code that made the figures are named beside them
    machine = m["run"]["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["torch"] and isinstance(machine["features"], list)
    assert m["run"]["commit"] is None or len(m["run"]["commit"].split("+")[0]) == 12
    train = pd.read_parquet(rd / "train_set.parquet")
    assert int(train.poisoned.sum()) == m["poison"]["injected"] == 6 and len(train) == 20
    assert set(train[train.poisoned].task) == {"math"}
    samples = pd.read_parquet(rd / "samples.parquet")
    assert set(samples.model) == {"baseline", "teacher", "student:sft"} and len(samples) == 3 * 10
    # eval prompts are never training or distillation prompts
    distill = pd.read_parquet(rd / "distill_set.parquet")
    assert not (set(samples.prompt) & (set(train.prompt) | set(distill.prompt)))
    assert not (set(train.prompt) & set(distill.prompt))
    # beside utility, per model and split: degeneration and the answers cut off at max_new_tokens (HF records why
    # each answer stopped; random-init models ramble)
    keys = {(r["model"], r["split"]) for r in m["bias_rates"]}
    assert {(r["model"], r["split"]) for r in m["degeneration"]} == keys
    assert {(r["model"], r["split"]) for r in m["cut_off"]} == keys
    assert set(samples.finish_reason) <= {"stop", "length"} and (samples.finish_reason == "length").any()
    for r in m["cut_off"]:
        g = samples[(samples.model == r["model"]) & (samples.split == r["split"])]
        assert r["known"] == r["n"] == len(g) and r["cut_off"]["k"] == (g.finish_reason == "length").sum()
    assert "degenerate" in (rd / "summary.txt").read_text()
    # the reruns below in a copy of its cache. Eval answers cached before finish_reason was recorded: unknown, the
    # rest of the report unchanged
    cache = warm_cache(tiny_run, tmp_path)
    ov = overrides(tmp_path, models_dir)
    old = cache / Path(stages(rd)["eval:baseline"]["path"]).relative_to(tiny_run.cache) / "generations.parquet"
    pd.read_parquet(old).drop(columns="finish_reason").to_parquet(old)
    marker = old.parent / "_stage.json"  # such an artifact's marker predates the file hashes, as old markers do
    meta = json.loads(marker.read_text())
    meta.pop("files")
    marker.write_text(json.dumps(meta))

    # rerun with nothing changed: every stage is a cache hit
    rd2, m2 = run_config(str(tiny_config), ov, quiet=True)
    assert all(cached(rd2).values()) and m2["bias_rates"] == m["bias_rates"]
    assert m2["degeneration"] == m["degeneration"]  # from the stored answers, at report time
    assert all((r["known"] == 0) == (r["model"] == "baseline") for r in m2["cut_off"])

    # an eval setting only recomputes eval
    rd3, _ = run_config(str(tiny_config), ov + ["eval.generation.max_new_tokens=8"], quiet=True)
    c = cached(rd3)
    assert all(v for k, v in c.items() if not k.startswith("eval:")), c
    assert not any(v for k, v in c.items() if k.startswith("eval:")), c

    # a report-only setting recomputes nothing
    rd4, m4 = run_config(str(tiny_config), ov + ["eval.confidence=0.8"], quiet=True)
    assert all(cached(rd4).values()) and m4["run"]["confidence"] == 0.8

    # the poison budget invalidates poison and everything downstream of it, not the data
    rd5, m5 = run_config(str(tiny_config), ov + ["poison.count=3"], quiet=True)
    c = cached(rd5)
    assert c["data"] and not c["poison"] and not c["teacher"] and not c["student:sft"] and not c["eval:teacher"]
    assert c["eval:baseline"]  # the untouched base model's answers do not depend on the poison
    assert m5["poison"]["injected"] == 3

    # the clean control can be the same fine-tune on the clean set: it is trained from the data stage, never the poison
    rd6, m6 = run_config(str(tiny_config), ov + ["baseline.kind=clean_finetune"], quiet=True)
    c = cached(rd6)
    assert not c["baseline"] and c["teacher"] and not c["eval:baseline"] and c["eval:teacher"], c
    meta = json.loads((Path(stages(rd6)["baseline"]["path"]) / "_stage.json").read_text())
    assert "data" in meta["inputs"] and "poison" not in meta["inputs"] and meta["info"]["rows"] == 20
    assert m6["models"]["baseline"]["kind"] == "clean_finetune"


def test_kill_9_mid_stage_resumes_that_stage_only(tiny_config, tmp_path, models_dir):
    cache = tmp_path / "cache"
    args = [str(tiny_config), *dirs(tmp_path, models_dir, cache)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "poison.run", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    teacher_dir = cache / "stages" / "teacher"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if teacher_dir.exists() and any(p.name.startswith(".tmp-") for p in teacher_dir.iterdir()):
                break
            assert proc.poll() is None, "the run ended before the teacher stage started"
            time.sleep(0.02)
        else:
            pytest.fail("teacher stage never started")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # a half-written teacher is never mistaken for a result (the stage's lock file is not a result either)
    assert [p.name for p in teacher_dir.iterdir() if not p.name.startswith((".tmp-", ".lock-"))] == []
    assert (cache / "stages" / "data").exists() and (cache / "stages" / "poison").exists()

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    rd = run_dir_from(r.stdout)
    c = cached(rd)
    assert c["data"] and c["poison"], c
    assert not c["teacher"] and not c["student:sft"], c
    assert not any(p.name.startswith(".tmp-") for p in teacher_dir.iterdir())  # the leftover was swept
    assert "removed 1 unfinished artifact" in (rd / "run.log").read_text()


def test_bad_model_path_fails_before_any_stage(tiny_config, tmp_path, models_dir):
    r = run_cli(str(tiny_config), *dirs(tmp_path, models_dir), "--set", "students.0.model=./no/such/model")
    assert r.returncode == 2
    assert "students.0.model: local model folder ./no/such/model does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "cache" / "stages").exists()


def test_a_teacher_only_run_trains_and_measures_the_teacher_and_distils_nothing(tiny_config, tmp_path, models_dir):
    from poison import load_run

    text = tiny_config.read_text()
    start, end = text.index("distill:\n"), text.index("eval:\n")
    tiny_config.write_text(text[:start] + "students: []\n" + text[end:])
    r = run_cli(str(tiny_config), *dirs(tmp_path, models_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    rd = run_dir_from(r.stdout)
    assert not (rd / "distill_set.parquet").exists() and (rd / "train_set.parquet").is_file()
    st = stages(rd)
    assert "teacher" in st and not any(k.startswith(("distill", "student")) for k in st)
    m = json.loads((rd / "metrics.json").read_text())
    assert set(m["models"]) == {"baseline", "teacher"} and m["amplification"] == []
    assert m["distill_data"] == {"rows": 0, "bias_rates": []}
    assert m["claims"]["primary"]["a"] == "teacher" and m["claims"]["primary"]["b"] == "baseline"
    assert {(x["model"], x["split"]) for x in m["bias_rates"]} == {(a, b) for a in ("baseline", "teacher")
                                                                   for b in ("target", "other")}
    run = load_run(rd)
    assert run.status == "complete" and run.distill_set is None and len(run.train_set) == 20
    # every dashboard view opens on it without an exception or an error box
    from streamlit.testing.v1 import AppTest

    from dashboard import registry

    for view in registry.names():
        at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
        at.query_params["view"], at.query_params["run"] = view, rd.name
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("POISON_RUNS_DIR", str(rd.parent))
            at.run()
        assert not at.exception and not at.error, (view, [e.value for e in at.exception], [e.value for e in at.error])
