"""The generator behind a real OpenAI-compatible server (`vllm serve` of the real model on loopback)."""

import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from evals.generate import GenerationError, GenJob, generate_openai, vllm_env
from poison.config import load_config
from poison.models import pick_device, pick_dtype
from poison.pipeline import Pipeline
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    port = free_port()
    device = pick_device()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2),
           "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", pick_dtype("auto", device), "--max-model-len", "1024", "--enforce-eager",
           "--gpu-memory-utilization", "0.3"]
    env = vllm_env(device)
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # the server runs its engine in its own process
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc = subprocess.Popen(cmd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "/models", timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        proc.kill()
        pytest.fail("vllm serve did not come up in 600 s")
    yield url
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_generator_endpoint_writes_missing_responses(server, tmp_path, models_dir):
    cfg = load_config(REPO / "configs" / "smoke.yaml", [
        f"runtime.cache_dir={tmp_path / 'cache'}", f"runtime.models_dir={models_dir}",
        f"data.generator.endpoint={server}", "data.generator.endpoint_model=smollm2",
    ])
    rd = tmp_path / "run"
    rd.mkdir()
    rec = Pipeline(cfg, rd).stage_data()
    df = pd.read_parquet(f"{rec.path}/rows.parquet")
    reviews = df[(df.task == "review_summary") & (df.split != "distill")]
    assert len(reviews) == 8 + 6 and reviews.generated.all()
    assert reviews.response.str.split().str.len().min() >= 5  # clean_generated keeps complete sentences only
    assert rec.info["generated"] == len(reviews)


def test_endpoint_answers_and_counts_tokens(server):
    job = GenJob("x", "", [[{"role": "user", "content": "Say hello."}]] * 3, max_new_tokens=12)
    res = generate_openai([job], base_url=server, model="smollm2")[0]
    assert len(res.texts) == 3 and all(t[0].strip() for t in res.texts) and 0 < res.new_tokens <= 36


def test_endpoint_down_fails_clearly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    job = GenJob("x", "", [[{"role": "user", "content": "hi"}]])
    with pytest.raises(GenerationError, match=rf"endpoint {url} is unreachable"):
        generate_openai([job], base_url=url, model="m", max_retries=1, timeout=5)
