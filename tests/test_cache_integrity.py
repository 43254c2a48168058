"""A cache that survives its own corruption (no models needed): each kind of artifact file (parquet, JSON, safetensors,
an adapter's config) truncated or garbled is set aside and recomputed with one warning, and is an error naming the
stage and --force under --check; full hashes catch a same-size change; old markers still hit; reads of damaged files
and a failing vLLM worker give one line naming the cause; ``cache verify`` finds damage and ``cache gc`` keeps what a
live run holds or a run directory references."""

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from poison.ground.core.artifacts import CacheMiss, read_json, read_parquet
from poison.ground.core.errors import ArtifactError, StageError
from poison.stages.data import DATA as declared_data
from poison.stages.protocol import StageCache, StageSpec
from tests.conftest import REPO

DATA = StageSpec("data", 1)  # a stage of this test: no required inputs
DEFENSE = StageSpec("defense", 1)  # a stage of this test: no required inputs
EVAL = StageSpec("eval", 1)  # a stage of this test: no required inputs
TEACHER = StageSpec("teacher", 1, training=True)  # a stage of this test: no required inputs


class Lines(logging.Handler):
    """The poison logger's lines (the suite runs with ``-p no:logging``, so no caplog)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("poison").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("poison").removeHandler(self)


def write_artifact(out: Path) -> dict:
    from safetensors.numpy import save_file

    pd.DataFrame({"id": [f"r{i}" for i in range(50)], "x": range(50)}).to_parquet(out / "rows.parquet")
    (out / "report.json").write_text(json.dumps({"rows": 50, "note": "x" * 200}))
    (out / "model").mkdir()
    save_file({"w": np.ones((64, 64), dtype=np.float32)}, str(out / "model" / "model.safetensors"))
    (out / "model" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (out / "adapter").mkdir()
    (out / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    return {"rows": 50}


def truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def garble(p: Path) -> None:  # same size, other bytes: only a load (or the full hash) notices
    p.write_bytes(b"\x00garbage!" * (p.stat().st_size // 9) + b"!" * (p.stat().st_size % 9))


FILES = ["rows.parquet", "report.json", "model/model.safetensors", "adapter/adapter_config.json"]


@pytest.mark.parametrize("damage", [truncate, garble], ids=["truncated", "garbled"])
@pytest.mark.parametrize("name", FILES)
def test_damaged_artifact_is_set_aside_and_recomputed(tmp_path, name, damage):
    calls = []

    def fn(out):
        calls.append(1)
        return write_artifact(out)

    (tmp_path / "run").mkdir()
    cache = StageCache(tmp_path / "stages", tmp_path / "run")
    rec = cache.run(TEACHER, {"x": 1}, fn)
    marker = json.loads((Path(rec.path) / "_stage.json").read_text())
    assert set(marker["files"]) == {*FILES, "model/config.json"}
    assert all(len(m["blake2b"]) == 32 for m in marker["files"].values())
    assert cache.run(TEACHER, {"x": 1}, fn).cached and len(calls) == 1
    damage(Path(rec.path) / name)

    checking = StageCache(tmp_path / "stages", None, checking=True)
    with pytest.raises(StageError) as e:
        checking.run(TEACHER, {"x": 1}, fn)
    assert "stage teacher" in str(e.value) and name in str(e.value) and "--force teacher" in str(e.value)

    with Lines() as log:
        again = StageCache(tmp_path / "stages", tmp_path / "run").run(TEACHER, {"x": 1}, fn)
    assert not again.cached and len(calls) == 2 and again.key == rec.key
    assert len(log.lines) == 1 and rec.key in log.lines[0] and "stage teacher" in log.lines[0] and name in log.lines[0]
    aside = [p for p in (tmp_path / "stages" / "teacher").iterdir() if p.name.startswith(".corrupt-")]
    assert len(aside) == 1 and (aside[0] / name).exists()  # kept for inspection
    assert StageCache(tmp_path / "stages", None, checking=True).run(TEACHER, {"x": 1}, fn).cached


def test_run_many_sets_aside_a_damaged_label_only(tmp_path):
    cache = StageCache(tmp_path / "stages", None)
    calls = []

    def compute(tmps):
        calls.append(sorted(tmps))
        for label, tmp in tmps.items():
            pd.DataFrame({"a": [label] * 20}).to_parquet(tmp / "generations.parquet")
        return {label: ({}, 0.1) for label in tmps}

    entries = {"eval:a": {"x": 1}, "eval:b": {"x": 2}}
    recs = cache.run_many(EVAL, entries, compute)
    truncate(Path(recs["eval:b"].path) / "generations.parquet")
    with Lines() as log:
        recs = cache.run_many(EVAL, entries, compute)
    assert calls[-1] == ["eval:b"] and recs["eval:a"].cached and not recs["eval:b"].cached
    assert len(log.lines) == 1 and "generations.parquet" in log.lines[0]


def test_full_verification_catches_a_same_size_change_and_old_markers_still_hit(tmp_path):
    def fn(out):
        (out / "removed.json").write_text('["a", "b"]')

    rec = StageCache(tmp_path / "stages", None).run(DEFENSE, {"x": 1}, fn)
    (Path(rec.path) / "removed.json").write_text('["a", "c"]')  # same size, still JSON
    assert StageCache(tmp_path / "stages", None, verify="size").run(DEFENSE, {"x": 1}, fn).cached
    with pytest.raises(StageError, match="removed.json: content differs"):
        StageCache(tmp_path / "stages", None, verify="full", checking=True).run(DEFENSE, {"x": 1}, fn)
    assert not StageCache(tmp_path / "stages", None, verify="full").run(DEFENSE, {"x": 1}, fn).cached

    marker = Path(rec.path) / "_stage.json"  # a marker written before manifests: a hit, checked as far as it can be
    old = json.loads(marker.read_text())
    del old["files"]
    marker.write_text(json.dumps(old))
    assert StageCache(tmp_path / "stages", None, verify="full").run(DEFENSE, {"x": 1}, fn).cached
    (Path(rec.path) / "removed.json").write_text("[not json")
    assert not StageCache(tmp_path / "stages", None).run(DEFENSE, {"x": 1}, fn).cached
    with pytest.raises(CacheMiss):
        StageCache(tmp_path / "stages", None, checking=True).run(DEFENSE, {"x": 2}, fn)


def test_stage_keys_did_not_change():
    # a cache filled before markers listed their files must still be all hits: keys are as they were
    assert StageCache.key(declared_data, {"seed": 0}) == "bdd52a9fcfdc0519"


def test_damaged_reads_are_one_error_naming_the_file(tmp_path):
    art = tmp_path / "cache" / "stages" / "data" / "0123456789abcdef"
    art.mkdir(parents=True)
    (art / "rows.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ArtifactError) as e:
        read_parquet(art / "rows.parquet")
    assert str(art / "rows.parquet") in str(e.value) and "--force data" in str(e.value)
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text('{"a": ')
    with pytest.raises(ArtifactError, match=r"metrics.json: not valid JSON"):
        read_json(run / "metrics.json")


def test_damaged_model_folder_fails_before_the_worker_starts(tmp_path):
    from poison.ground.engines.generate import GenJob, generate_vllm

    write_artifact(tmp_path)
    truncate(tmp_path / "model" / "model.safetensors")
    with pytest.raises(ArtifactError) as e:
        generate_vllm([GenJob("k", str(tmp_path / "model"), [[{"role": "user", "content": "hi"}]], 4, 0.0, 1.0, 1,
                              0)], device="cpu", dtype="float32", vllm_settings={})
    assert "model.safetensors" in str(e.value) and "truncated" in str(e.value)


def test_worker_failure_is_one_line_and_its_traceback_goes_to_the_log(tmp_path):
    req, out = tmp_path / "jobs.json", tmp_path / "results.json"
    req.write_text("{not json")
    r = subprocess.run([sys.executable, "-m", "poison.ground.engines.vllm_worker", str(req), str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stdout and "Traceback" not in r.stderr
    cause = Path(f"{out}.error").read_text()
    assert cause.startswith("JSONDecodeError: ") and "\n" not in cause


# --------------------------------------------------------------------------------------------------- cache CLI
def cache_cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "poison.run", "cache", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def filled_cache(tmp_path: Path) -> tuple[Path, dict]:
    """Three data artifacts, each ~20 KiB, used by a finished run directory for one of them."""
    run = tmp_path / "runs" / "kept-run"
    run.mkdir(parents=True)
    recs = {}
    for i in range(3):
        cache = StageCache(tmp_path / "cache" / "stages", run if i == 0 else None)
        recs[i] = cache.run(DATA, {"i": i}, lambda out: pd.DataFrame(
            {"t": [str(np.random.rand()) for _ in range(1000)]}).to_parquet(out / "rows.parquet"))
    (run / "status.json").write_text(json.dumps({"status": "complete"}))
    return tmp_path / "cache", recs


def test_cache_ls_du_verify(tmp_path):
    cache, recs = filled_cache(tmp_path)
    r = cache_cli("ls", "--cache-dir", str(cache))
    assert r.returncode == 0 and all(rec.key in r.stdout for rec in recs.values()) and "kept-run" in r.stdout
    r = cache_cli("--cache-dir", str(cache), "du")
    assert r.returncode == 0 and "data" in r.stdout and "3 artifact(s)" in r.stdout
    assert cache_cli("verify", "--cache-dir", str(cache)).returncode == 0
    truncate(Path(recs[1].path) / "rows.parquet")
    r = cache_cli("verify", "--cache-dir", str(cache))
    assert r.returncode == 1 and f"stage data, key {recs[1].key}: rows.parquet" in r.stdout
    assert "--force data" in r.stdout and "1 damaged" in r.stdout


def test_cache_gc_keeps_locked_and_referenced_entries(tmp_path):
    cache, recs = filled_cache(tmp_path)
    lock = cache / "stages" / "data" / f".lock-{recs[2].key}"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               f"l = FileLock({str(lock)!r}); l.acquire(); print('held', flush=True); "
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cache_cli("gc", "--cache-dir", str(cache), "--max-size", "0", "--runs-dir", str(tmp_path / "runs"))
        assert r.returncode == 0, r.stderr
        assert Path(recs[2].path).exists() and "its lock is held by a live run" in r.stdout  # a live run's
        assert Path(recs[0].path).exists() and "referenced by the run directory" in r.stdout  # a kept run's
        assert not Path(recs[1].path).exists()
    finally:
        holder.kill()
        holder.wait()
    old = time.time() - 3 * 86400
    import os

    os.utime(Path(recs[2].path) / "_stage.json", (old, old))
    r = cache_cli("gc", "--cache-dir", str(cache), "--older-than", "1d")
    assert r.returncode == 0 and not Path(recs[2].path).exists() and Path(recs[0].path).exists()
    r = cache_cli("gc", "--cache-dir", str(cache), "--max-size", "0", "--force")
    assert r.returncode == 0 and not Path(recs[0].path).exists()
    assert not [p for p in (cache / "stages" / "data").iterdir() if p.name.startswith(".tmp-")]
    r = cache_cli("gc", "--cache-dir", str(cache), "--max-size", "lots")
    assert r.returncode == 2 and r.stderr.startswith("error: --max-size") and "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------------- interrupts, full disks
STAGE_SCRIPT = """
import subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd
from poison.ground.core.errors import PoisonError
from poison.ground.core.procs import signals_interrupt
from poison.stages.protocol import StageCache, StageSpec

def fn(out):
    pd.DataFrame({"t": [str(x) for x in np.random.rand(int(sys.argv[2]))]}).to_parquet(out / "rows.parquet")
    if sys.argv[3] == "sleep":
        subprocess.run(["sleep", "300"])  # a child process, as a vLLM worker is

with signals_interrupt():
    try:
        StageCache(Path(sys.argv[1]), None).run(StageSpec("data", 1), {"x": 1}, fn)
    except PoisonError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(f"interrupted ({e})", file=sys.stderr)
        sys.exit(130)
"""


def test_a_write_past_the_space_leaves_nothing_and_names_the_folder(tmp_path):
    import resource

    def limit():  # EFBIG under a 1 MiB file-size limit stands in for a full disk (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    r = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, str(tmp_path / "stages"), "200000", "-"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip()
    assert err.startswith(f"error: {tmp_path / 'stages' / 'data'}: writing ") and "\n" not in err
    assert "file-size limit" in err and "needs more than the" in err
    assert [p.name for p in (tmp_path / "stages" / "data").iterdir() if not p.name.startswith(".lock-")] == []


def test_sigterm_during_a_stage_cleans_up_and_the_next_run_resumes(tmp_path):
    from filelock import FileLock

    stages = tmp_path / "stages"
    p = subprocess.Popen([sys.executable, "-c", STAGE_SCRIPT, str(stages), "100", "sleep"], cwd=REPO,
                         stderr=subprocess.PIPE, text=True)
    deadline, child = time.time() + 120, None
    while time.time() < deadline and child is None:
        kids = Path(f"/proc/{p.pid}/task/{p.pid}/children")
        child = int(kids.read_text().split()[0]) if kids.exists() and kids.read_text().split() else None
        time.sleep(0.1)
    assert child is not None and list((stages / "data").glob(".tmp-*"))
    t0 = time.time()
    p.send_signal(15)
    assert p.wait(timeout=10) == 130 and time.time() - t0 < 10
    assert "interrupted (signal SIGTERM)" in p.stderr.read()
    assert not list((stages / "data").glob(".tmp-*")) and not list((stages / "data").glob("[0-9a-f]*"))
    state = Path(f"/proc/{child}/stat")
    assert not state.exists() or state.read_text().split(") ")[1][0] == "Z"  # the child is gone (at most a zombie)
    lock = next((stages / "data").glob(".lock-*"))
    FileLock(str(lock)).acquire(timeout=0)  # released
    r = subprocess.run([sys.executable, "-c", STAGE_SCRIPT, str(stages), "100", "-"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and len(list((stages / "data").glob("[0-9a-f]*/_stage.json"))) == 1
