"""One real local judge server (vLLM, SmolLM2-135M-Instruct, served as "judge") shared by every test module that
needs it: started on first use, stopped when the test session ends. Not a test module itself."""

from __future__ import annotations

import contextlib
from pathlib import Path

JUDGE_MODEL = "judge"
_stack: contextlib.ExitStack | None = None
_url: str | None = None


def judge_url(request, model_path: Path) -> str:
    """The base URL of the shared judge server (starting it if needed; ~20-70 s on 2 cores)."""
    global _stack, _url
    if _url is None:
        from poison.ground.engines.server import local_vllm_server

        stack = contextlib.ExitStack()
        log = request.getfixturevalue("tmp_path_factory").mktemp("judge-server") / "vllm.log"
        _url = stack.enter_context(local_vllm_server(model_path, served_model_name=JUDGE_MODEL, log_path=log,
                                                     max_model_len=2048))
        _stack = stack
        request.session.addfinalizer(_close)
    return _url


def _close() -> None:
    global _stack, _url
    if _stack is not None:
        _stack.close()
    _stack = _url = None
