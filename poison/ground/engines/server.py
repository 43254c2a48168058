"""A local OpenAI-compatible server (``vllm.entrypoints.openai.api_server``) for a judge model, as a context manager.

    with local_vllm_server(model_folder, served_model_name="judge") as base_url:
        rater = registry.get("judge", "llm").build({"base_url": base_url, "model": "judge"})

On CPU the server gets the same environment as the testbed's vLLM worker (``poison.ground.engines.generate.vllm_env``:
OpenMP threads bound to every core of this machine, no reserved core, libiomp5 preloaded), with the engine in its own
process. The server runs in its own process group, which is terminated (then killed) on exit. It also gets a
parent-death signal, so a run killed with -9 takes it along, and (with ``pid_dir``) a pid file that the next run reaps
if the signal did not do it. Part of the ground layer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional, Sequence

from poison.ground.core.errors import ServerError
from poison.ground.core.procs import die_with_parent, record_child


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(base_url: str, proc: Optional[subprocess.Popen] = None, timeout: float = 600.0,
                    log_path: Optional[Path] = None) -> None:
    """Poll ``{base_url}/models`` until it answers; ServerError if the process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    offset = Path(log_path).stat().st_size if log_path and Path(log_path).exists() else 0  # an earlier start's lines
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"the vLLM server for {base_url} exited with code {proc.returncode} before answering"
                              + _tail(log_path))
        dead = _engine_dead(log_path, offset)
        if dead:
            raise ServerError(f"the vLLM server for {base_url} lost its engine before answering ({dead})"
                              + _tail(log_path))
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise ServerError(f"the vLLM server for {base_url} did not answer /models within {timeout:.0f} s" + _tail(log_path))


# What vLLM logs when its engine process is gone while the API server process lives on (it would not answer, and
# would not exit, until the timeout).
_ENGINE_DEAD = ("EngineDeadError", "EngineCore encountered a fatal error")


def _engine_dead(log_path: Optional[Path], offset: int = 0) -> Optional[str]:
    """Why the server's engine died, from its log past ``offset``: None while it has not."""
    if not log_path or not Path(log_path).exists():
        return None
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    if not any(m in text for m in _ENGINE_DEAD):
        return None
    if "died unexpectedly (exit code: -9)" in text:
        return ("its worker was killed (signal 9): on CPU most likely by the kernel's out-of-memory killer, when "
                "other jobs took the memory vLLM reserved; run fewer jobs at once or lower the memory it reserves")
    return "the engine core failed: see the log"


def _tail(log_path: Optional[Path], chars: int = 3000) -> str:
    if not log_path or not Path(log_path).exists():
        return ""
    text = Path(log_path).read_text(errors="replace")
    return f"; the end of its log ({log_path}):\n{text[-chars:]}"


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its engine process (they share the group we created)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextlib.contextmanager
def local_vllm_server(model_path: str | Path, port: Optional[int] = None, *, served_model_name: Optional[str] = None,
                      device: str = "auto", dtype: str = "auto", max_model_len: int = 2048,
                      gpu_memory_utilization: float = 0.3, enforce_eager: bool = True,
                      startup_timeout: float = 600.0, log_path: Optional[str | Path] = None,
                      extra_args: Sequence[str] = (), pid_dir: Optional[Path] = None) -> Iterator[str]:
    """Start ``python -m vllm.entrypoints.openai.api_server`` for ``model_path`` (a local HF folder) on 127.0.0.1,
    wait until ``/v1/models`` answers, yield the base URL (``http://127.0.0.1:PORT/v1``), stop the server afterwards.

    The served model name is ``served_model_name`` or, by default, the folder's name (``Path(model_path).name``).
    ``dtype`` "auto" picks bfloat16 where the hardware does it natively, float32 otherwise. vLLM's output goes to
    ``log_path`` (default: a temporary file, kept); a failed start raises ServerError with the end of that log.
    """
    from poison.ground.engines.generate import vllm_env
    from poison.ground.engines.models import pick_device, pick_dtype
    from poison.ground.engines.vllm_worker import cpu_memory_fraction

    dev = pick_device(device)
    port = port or free_port()
    name = served_model_name or Path(model_path).name
    log = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
           "--dtype", pick_dtype(dtype, dev), "--max-model-len", str(max_model_len),
           "--gpu-memory-utilization", str(cpu_memory_fraction(gpu_memory_utilization) if dev == "cpu"
                                           else gpu_memory_utilization),
           *(["--enforce-eager"] if enforce_eager else []),
           *extra_args]
    env = vllm_env(dev)
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # a server runs its engine in its own process
    url = f"http://127.0.0.1:{port}/v1"
    with open(log, "ab") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=die_with_parent)
    pid_file = record_child(Path(pid_dir), "vllm-server", proc.pid) if pid_dir else None
    try:
        wait_for_server(url, proc, startup_timeout, log)
        yield url
    finally:
        _stop(proc)
        if pid_file:
            pid_file.unlink(missing_ok=True)
