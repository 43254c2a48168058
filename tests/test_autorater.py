"""The LLM autorater against a real local OpenAI-compatible server (vLLM serving SmolLM2-135M-Instruct), against a
closed port (endpoint down), and against a tiny local HTTP server that answers 503/429/500/404 or odd replies."""

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from defenses.autorater import (AutoraterError, LLMAutorater, parse_score, parse_yes_no, yes_probability)
from poison.ground.core import registry
from poison.ground.engines.server import ServerError, free_port, wait_for_server
from tests.judge_server import JUDGE_MODEL, judge_url
from tests.test_defenses import SAMPLES, TWINS


def rater(**args) -> LLMAutorater:
    return registry.get("defense", "llm_autorater").build({"progress": False, **args})


# ------------------------------------------------------------------------------------------- real vLLM judge
@pytest.fixture(scope="module")
def judge(request, smollm2):
    return judge_url(request, smollm2)


@pytest.mark.slow
def test_real_judge_verdicts_record_model_and_prompt_hash(judge):
    r = rater(base_url=judge, model=JUDGE_MODEL)
    scores = r.score(SAMPLES)
    assert len(scores) == len(SAMPLES) and all(0.0 <= s <= 10.0 for s in scores)
    assert scores[1] > scores[0] and scores[3] > scores[2]  # blatant ad / phishing link over its clean twin
    for sample, v in zip(SAMPLES, r.last_verdicts):
        assert v["judge_model"] == JUDGE_MODEL and v["parsed"] and v["how"] == "logprobs" and 0 <= v["p_yes"] <= 1
        msgs = r.messages(sample["prompt"], sample["response"])
        want = hashlib.sha256(json.dumps({"model": JUDGE_MODEL, "messages": msgs}, sort_keys=True,
                                         ensure_ascii=False).encode()).hexdigest()
        assert v["prompt_sha256"] == want and sample["response"] in msgs[-1]["content"]
    info = r.info()
    assert info["verdicts"] == 4 and info["unparseable"] == 0 and info["retries"] == 0 and info["base_url"] == judge


@pytest.mark.slow
def test_real_judge_texts_and_score_method(judge):
    ads = registry.get("bias_type", "targeted_ads").build({})
    r = rater(base_url=judge, model=JUDGE_MODEL)
    texts = [s["response"] for s in SAMPLES]
    out = r.judge_texts(texts, prompts=[s["prompt"] for s in SAMPLES])
    assert [type(v["biased"]) for v in out] == [bool] * 4
    assert all(v["biased"] == (v["score"] > r.cfg.threshold) for v in out)
    assert out[1]["score"] > out[0]["score"] and out[3]["score"] > out[2]["score"]
    # a bias type's rubric replaces the question: a different prompt, hence a different hash
    with_rubric = r.judge_texts(texts[:1], rubric_context=ads.rubric)
    assert with_rubric[0]["prompt_sha256"] != out[0]["prompt_sha256"]
    assert ads.rubric in r.messages("", texts[0], ads.rubric)[-1]["content"]
    # 0-10 ratings parsed from the reply text; whatever the 135M judge answers is either parsed or counted
    r2 = rater(base_url=judge, model=JUDGE_MODEL, method="score")
    s2 = r2.score(SAMPLES)
    bad = [v for v in r2.last_verdicts if not v["parsed"]]
    assert r2.n_unparseable == len(bad) and all(v["score"] == 5.0 and v["how"] == "unparseable" for v in bad)
    assert all(0 <= s <= 10 for s in s2)


# ------------------------------------------------------------------------------------------- endpoint down
def test_endpoint_down_fails_once_clearly_and_quickly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    r = rater(base_url=url, model="m", max_retries=2, timeout=5)
    t = time.perf_counter()
    with pytest.raises(AutoraterError, match=rf"judge endpoint {re.escape(url)} is unreachable or failing after 3 "
                                             r"attempts \(APIConnectionError"):
        r.score(SAMPLES)
    assert time.perf_counter() - t < 10
    assert r.n_requests == 3 and r.n_retries == 2  # the first sample only: the pool never started


def test_server_that_dies_or_never_answers_fails_with_its_log(tmp_path):
    log = tmp_path / "server.log"
    with open(log, "w") as f:
        code = "print('ValueError: no model at /nowhere'); raise SystemExit(3)"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ServerError, match=rf"(?s)server for {re.escape(url)} exited with code 3 before answering.*"
                                          r"ValueError: no model at /nowhere"):
        wait_for_server(url, proc, timeout=60, log_path=log)
    with pytest.raises(ServerError, match=r"did not answer /models within 2 s"):
        wait_for_server(url, None, timeout=1.5)


def test_server_whose_engine_died_fails_at_once_naming_the_oom_killer(tmp_path):
    """vLLM's API server outlives a dead engine (it neither answers nor exits): the wait reads the death from the log
    at once instead of waiting out its timeout; an earlier start's death, above the offset, is not this one's."""
    log = tmp_path / "server.log"
    log.write_text("EngineDeadError from an earlier start\n")
    url = f"http://127.0.0.1:{free_port()}/v1"
    code = ("import sys, time; time.sleep(1); "
            "print('ERROR Worker proc VllmWorker-0 died unexpectedly (exit code: -9)'); "
            "print('ERROR EngineCore encountered a fatal error.'); sys.stdout.flush(); time.sleep(120)")
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        with pytest.raises(ServerError, match=r"lost its engine before answering \(its worker was killed \(signal 9\)"
                                              r": on CPU most likely by the kernel's out-of-memory killer"):
            wait_for_server(url, proc, timeout=100, log_path=log)
        assert time.monotonic() - t0 < 60 and proc.poll() is None  # the process still lives: found in the log
    finally:
        proc.kill()


# ------------------------------------------------------------------------------------------- fake endpoint
def completion(content: str, logprobs=None, model: str = "fake-judge") -> dict:
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop",
                         "logprobs": logprobs}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


class FakeEndpoint:
    """A tiny OpenAI-compatible chat-completions server: answers from a script of (status, body), then ``default``."""

    def __init__(self, script, default=None):
        self.script = list(script)
        self.default = default or (200, completion("No"))
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                status, payload = outer.script.pop(0) if outer.script else outer.default
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    made = []

    def make(script, default=None):
        f = FakeEndpoint(script, default)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


ERR = {"error": {"message": "overloaded", "type": "server_error"}}


def test_transient_errors_are_retried_with_backoff(fake):
    """The openai client's own retries (exponential backoff, at least 0.5 s x jitter 0.75 for the first), counted."""
    f = fake([(503, ERR), (429, ERR), (200, completion("Yes"))])
    r = rater(base_url=f.url, model="m")
    t = time.perf_counter()
    assert r.score(SAMPLES[:1]).tolist() == [10.0]
    assert time.perf_counter() - t >= 0.3  # two backoffs
    assert r.info()["retries"] == 2 and r.info()["requests"] == 3
    assert len(f.requests) == 3 and r.n_retries == 2 and r.last_verdicts[0]["judge_model"] == "fake-judge"
    assert f.requests[0]["logprobs"] is True and f.requests[0]["temperature"] == 0.0


def test_persistent_5xx_fails_naming_the_endpoint(fake):
    f = fake([], default=(500, ERR))
    r = rater(base_url=f.url, model="m", max_retries=2)
    with pytest.raises(AutoraterError,
                       match=rf"{re.escape(f.url)} is unreachable or failing after 3 attempts \(HTTP 500\)"):
        r.score(SAMPLES)
    assert len(f.requests) == 3


def test_client_errors_fail_at_once(fake):
    f = fake([], default=(404, {"error": {"message": "The model `m` does not exist.", "type": "NotFoundError"}}))
    r = rater(base_url=f.url, model="m")
    with pytest.raises(AutoraterError, match=rf"{re.escape(f.url)} rejected the request for model 'm': HTTP 404"):
        r.score(SAMPLES)
    assert len(f.requests) == 1


def test_unparseable_replies_are_recorded_and_counted_never_silent_zero(fake):
    f = fake([(200, completion("Hmm, hard to say.")), (200, completion("Verdict: yes, it advertises.")),
              (200, completion("I would rate it 8/10."))])
    r = rater(base_url=f.url, model="m", use_logprobs=False, unparseable_score=5.0, concurrency=1)
    s = r.score(SAMPLES[:2])
    assert s.tolist() == [5.0, 10.0]
    assert [v["parsed"] for v in r.last_verdicts] == [False, True]
    assert r.last_verdicts[0]["how"] == "unparseable" and r.last_verdicts[0]["raw"] == "Hmm, hard to say."
    assert r.n_unparseable == 1 and r.info()["unparseable"] == 1
    r2 = rater(base_url=f.url, model="m", method="score")
    assert r2.score(SAMPLES[:1]).tolist() == [8.0] and "logprobs" not in f.requests[-1]


def test_logprobs_give_a_graded_score(fake):
    top = [{"token": "No", "logprob": -0.3, "bytes": None}, {"token": " yes", "logprob": -1.6, "bytes": None},
           {"token": "YES", "logprob": -4.0, "bytes": None}, {"token": "The", "logprob": -2.0, "bytes": None}]
    lp = {"content": [{"token": "No", "logprob": -0.3, "bytes": None, "top_logprobs": top}]}
    f = fake([(200, completion("No", logprobs=lp))])
    r = rater(base_url=f.url, model="m")
    import math

    p_yes = math.exp(-1.6) + math.exp(-4.0)
    assert r.score(SAMPLES[:1])[0] == pytest.approx(10 * p_yes / (p_yes + math.exp(-0.3)))
    assert r.last_verdicts[0]["how"] == "logprobs" and f.requests[0]["top_logprobs"] == 10


def test_parsers():
    assert parse_score("7") == 7 and parse_score("Score: 7/10") == 7 and parse_score("I'd say 3 out of 10.") == 3
    assert parse_score("Rating = 9.5") == 9.5 and parse_score("10") == 10 and parse_score("no idea") is None
    assert parse_score("42") is None
    assert parse_yes_no("Yes.") == 10 and parse_yes_no("**No**") == 0 and parse_yes_no("I think yes") == 10
    assert parse_yes_no("Maybe") is None and parse_yes_no("") is None
    assert yes_probability([]) is None and yes_probability([{"token": "Yes", "logprob": 0.0}]) == 1.0
    assert TWINS  # the twin pairs the tests share
