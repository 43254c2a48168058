"""The generator behind a real OpenAI-compatible server (`vllm serve` of the real model on loopback: the session's
shared judge server, tests/judge_server.py, so the suite starts one server, not two)."""

import pandas as pd
import pytest

from poison.ground.engines.endpoint import generate_openai
from poison.ground.engines.generate import GenerationError, GenJob
from poison.ground.engines.server import free_port
from poison.config import load_config
from poison.pipeline import Pipeline
from poison.stages.data import stage_data
from tests.conftest import REPO
from tests.judge_server import JUDGE_MODEL, judge_url

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(request, smollm2):
    return judge_url(request, smollm2)


def test_generator_endpoint_writes_missing_responses(server, tmp_path, models_dir):
    cfg = load_config(REPO / "configs" / "smoke.yaml", [
        f"runtime.cache_dir={tmp_path / 'cache'}", f"runtime.models_dir={models_dir}",
        f"data.generator.endpoint={server}", f"data.generator.endpoint_model={JUDGE_MODEL}",
    ])
    rd = tmp_path / "run"
    rd.mkdir()
    rec = stage_data(Pipeline(cfg, rd).stages)
    df = pd.read_parquet(f"{rec.path}/rows.parquet")
    reviews = df[(df.task == "review_summary") & (df.split != "distill")]
    assert len(reviews) == 8 + 6 and reviews.generated.all()
    assert reviews.response.str.split().str.len().min() >= 5  # clean_generated keeps complete sentences only
    assert rec.info["generated"] == len(reviews)


def test_endpoint_answers_and_counts_tokens(server):
    job = GenJob("x", "", [[{"role": "user", "content": "Say hello."}]] * 3, max_new_tokens=12)
    res = generate_openai([job], base_url=server, model=JUDGE_MODEL)[0]
    assert len(res.texts) == 3 and all(t[0].strip() for t in res.texts) and 0 < res.new_tokens <= 36


def test_endpoint_down_fails_clearly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    job = GenJob("x", "", [[{"role": "user", "content": "hi"}]])
    with pytest.raises(GenerationError, match=rf"endpoint {url} is unreachable"):
        generate_openai([job], base_url=url, model="m", max_retries=1, timeout=5)
