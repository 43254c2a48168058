import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poison.ground.core.procs import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]

# Tiny models' steps would otherwise fault their logits' pages in afresh each time; the run commands the tests start
# inherit the setting (poison.run.cli calls keep_freed_memory). CASCADE_POISON_MALLOC=system keeps glibc's defaults.
os.environ.setdefault("CASCADE_POISON_MALLOC", "keep")
keep_freed_memory()


def pytest_collection_finish(session):
    """The test modules and the libraries they import are loaded: move their objects out of the garbage collector's
    sight (gc.freeze), so that each full collection (release_memory after every stage; statsmodels' Holm adjustment
    runs one per call) walks only what the tests made. Measured over tests/test_evidence.py: 85 full collections of
    0.56 s each, 6 % of its time, before this (beside a training run); the freeze's own gain is not shown apart.
    CASCADE_POISON_GC_FREEZE=0 leaves it out (bench/bench_malloc.py measures with and without)."""
    if os.environ.get("CASCADE_POISON_GC_FREEZE") == "0":
        return
    gc.collect()
    gc.freeze()

# A whole pipeline on tiny random-init models with the HF generate backend; its sources need no generator model.
TINY_CONFIG = """
name: tiny
seed: 0
runtime: {backend: hf, hf_batch_size: 16}
data:
  target_task: math
  sources:
    - {type: gsm8k, n_train: 12, n_distill: 6, n_eval: 6}
    - {type: commonsense_qa, n_train: 8, n_distill: 4, n_eval: 4}
poison:
  bias: {type: targeted_ads}
  count: 6
teacher:
  model: "tiny-random-llama:2:64"
  train: {epochs: 2, batch_size: 4, max_length: 192}
distill:
  generation: {max_new_tokens: 16}
students:
  - name: sft
    model: "tiny-random-llama:1:64"
    args: {min_response_words: 0}  # a random-init teacher may answer with nothing
    train: {epochs: 1, batch_size: 4, max_length: 192}
eval:
  generation: {max_new_tokens: 16}
"""


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Converted models shared by the whole session: the GGUF -> safetensors conversion (~35 s) happens once.
    Set POISON_TEST_MODELS to keep them between sessions."""
    d = os.environ.get("POISON_TEST_MODELS")
    return Path(d) if d else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def smollm2(models_dir) -> Path:
    from poison.ground.engines.models import resolve_model

    return resolve_model("smollm2-135m-instruct", models_dir)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_CONFIG)
    return p


#: the API key the shared tiny run is made with (tests/test_hostile_inputs.py: it must reach no file)
TINY_RUN_SECRET = "sk-test-6f1e0c0ffee-never-written"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, models_dir):
    """One plain run of TINY_CONFIG, every stage computed, shared by the tests that read a finished run or start
    from its warm stage cache (``warm_cache``) instead of training the same tiny models again: ``(config, cache,
    run_dir, metrics)``. Made with OPENAI_API_KEY set to TINY_RUN_SECRET. A test must not change these files;
    ``warm_cache`` gives it its own copy of the cache."""
    from types import SimpleNamespace

    from poison.runner import run_config

    d = tmp_path_factory.mktemp("tiny_run")
    cfg = d / "tiny.yaml"
    cfg.write_text(TINY_CONFIG)
    with pytest.MonkeyPatch.context() as mp:  # a key already in the environment is put back after
        mp.setenv("OPENAI_API_KEY", TINY_RUN_SECRET)
        rd, m = run_config(str(cfg), dirs(d, models_dir)[1::2], quiet=True)
    return SimpleNamespace(config=cfg, cache=d / "cache", run_dir=rd, metrics=m)


def warm_cache(tiny_run, tmp_path: Path) -> Path:
    """A copy of the shared tiny run's stage cache at ``tmp_path/cache`` (where ``dirs(tmp_path, ...)`` points):
    a run of TINY_CONFIG there finds every stage cached."""
    import shutil

    shutil.copytree(tiny_run.cache, tmp_path / "cache", symlinks=True,
                    ignore=shutil.ignore_patterns(".lock-*", "procs"))
    return tmp_path / "cache"


def dirs(tmp_path: Path, models_dir: Path, cache: Path | None = None) -> list[str]:
    """--set overrides that keep a test's runs and stage cache in its tmp dir and share the session's models."""
    cache = cache or tmp_path / "cache"
    return ["--set", f"runtime.cache_dir={cache}", "--set", f"runtime.runs_dir={tmp_path / 'runs'}",
            "--set", f"runtime.models_dir={models_dir}"]


def run_cli(*args, timeout=1800, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "poison.run", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=e)


def run_check(*args) -> subprocess.CompletedProcess:
    """``python -m poison.run ARGS --check`` in this process: the CLI's own ``main`` with its output captured, what
    ``run_cli`` returns, without a new interpreter's 3-5 s of imports per call. A traceback fails the test (the
    exception is not caught here). The process-level contract (exit status, no traceback on stderr) keeps its
    subprocess tests (``run_cli``)."""
    import contextlib
    import io

    from poison.run import main

    assert "--check" in args, "run_check is for --check; a run goes through run_cli"
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(REPO)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main([str(a) for a in args])
            except SystemExit as e:  # argparse's own usage errors
                rc = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(["poison.run", *args], rc, out.getvalue(), err.getvalue())


def run_dir_from(stdout: str) -> Path:
    for line in stdout.splitlines():
        if line.startswith("run directory: "):
            return Path(line.split(": ", 1)[1].split("  (")[0])
    raise AssertionError(f"no run directory in output:\n{stdout[-2000:]}")


UNTARGETED_CONFIG = TINY_CONFIG.replace(
    """    - {type: commonsense_qa, n_train: 8, n_distill: 4, n_eval: 4}""",
    """    - {type: commonsense_qa, n_train: 8, n_distill: 4, n_eval: 4}
    - {type: sharegpt, n_train: 0, n_distill: 0, n_eval: 4}""").replace("  count: 6", "  count: 12\n  mode: untargeted")
