"""Processes: a run may be several processes (``accelerate launch -m poison.run``), and it starts children that must
not outlive it.

The main process (rank 0) computes every non-training stage and writes the run directory; training stages run in
every process (data parallel) and the main one saves. The others wait for the main process's artifacts. A child
server (the local judge) gets a parent-death signal and a pid file, so that a run killed with -9 takes it along or
the next run reaps it. Part of the ground layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

from poison.ground.core.errors import StageError


def world_size() -> int:
    """Number of processes in this launch (``WORLD_SIZE``, 1 when not launched by accelerate/torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def wait_for(path: Path, what: str, timeout: float | None = None) -> None:
    """Block until the main process has written ``path`` (multi-process runs)."""
    timeout = timeout if timeout is not None else float(os.environ.get("POISON_RANK_WAIT_S", 6 * 3600))
    t0 = time.time()
    while not Path(path).exists():
        if time.time() - t0 > timeout:
            raise StageError(f"waited {timeout:.0f}s for the main process to finish {what} ({path})")
        time.sleep(1.0)


# ------------------------------------------------------------------------------------------- process lifetimes
def process_start(pid: int) -> Optional[int]:
    """The start time of a live process (clock ticks since boot, from /proc), or None when it is gone (or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def alive(pid: Optional[int], start: Optional[int] = None) -> bool:
    """Whether process ``pid`` runs (and, when ``start`` is given, is the same process, not a reused pid)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is not None:
        now = process_start(int(pid))
        return now is None or now == start
    return True


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt (see :func:`signals_interrupt`)."""


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Interrupted`, as SIGINT raises KeyboardInterrupt, so that every
    ``with`` and ``finally`` runs: a stage's temporary folder is removed, its lock released, a worker subprocess killed
    (``subprocess.run`` kills its child on an exception), a local server stopped. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise Interrupted(f"signal {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child process (``preexec_fn``): ask the kernel to send ``sig`` when the parent dies, even by kill -9
    (Linux prctl PR_SET_PDEATHSIG; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def record_child(folder: Path, name: str, pid: int) -> Path:
    """A pid file for a child process group that must not outlive this process: ``folder/<name>-<pid>.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{pid}.json"
    path.write_text(json.dumps({"owner": os.getpid(), "owner_start": process_start(os.getpid()), "pgid": pid,
                                "pgid_start": process_start(pid), "name": name}))
    return path


def reap_orphans(folder: Path) -> list[str]:
    """Terminate the process groups recorded by ``record_child`` whose owner is gone (a run killed with -9);
    returns what was reaped."""
    reaped = []
    for f in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else []:
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if alive(rec.get("owner"), rec.get("owner_start")):
            continue
        if alive(rec.get("pgid"), rec.get("pgid_start")):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(int(rec["pgid"]), sig)
                except (ProcessLookupError, PermissionError):
                    break
                for _ in range(50):
                    if not alive(rec["pgid"]):
                        break
                    time.sleep(0.1)
            reaped.append(f"{rec.get('name')} (process group {rec.get('pgid')})")
        f.unlink(missing_ok=True)
    return reaped


def release_memory() -> None:
    """Give memory a finished stage no longer uses back to the system: a garbage collection, then glibc's
    ``malloc_trim`` (where the C library is glibc). A training stage leaves the process holding the freed heap of its
    model, optimizer and batches (measured: 2.8 GiB after a short SmolLM2-135M fine-tune, 0.75 GiB after this), and
    several such stages held 9.7 GiB in one run, so the vLLM engine that the eval stage then starts beside it was
    killed for memory on a 24 GB machine."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


#: ``mallopt`` parameters of glibc (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """With ``CASCADE_POISON_MALLOC=keep`` (the test suite sets it), have glibc's malloc keep the memory a process
    frees for its next allocations instead of handing each large block back to the kernel; returns whether it was set
    (False when not asked for, or where the C library is not glibc).

    glibc gives every allocation above 32 MiB (a batch's logits over a 49,152-token vocabulary, their gradients) its
    own ``mmap``: freed with ``munmap``, and the next step's equal-sized tensor faults every page in again, zeroed by
    the kernel. On tiny models that is a large share of the work: the KD tests spent 41.6 s of 97 s of CPU time in
    the kernel with 11.0 M page faults; with mmap off and no trimming on free, 3.6 s, 0.66 M and 0.56 of the wall
    time (bench/bench_malloc.py, quiet AVX2 machine). It is not the default of a run: on SmolLM2-135M the kernel's
    share was 2 % of a teacher's training, and glibc before 2.38 cannot reuse a freed aligned block for an aligned
    request of the same size (torch's allocations are 64-byte aligned), so the heap grows by such blocks where mmap
    would have returned them (peak memory +43 % on the KD tests). Memory still goes back to the system between
    stages: :func:`release_memory` trims the heap."""
    if os.environ.get("CASCADE_POISON_MALLOC", "").lower() != "keep":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc
        return False


#: The log level of the testbed's vLLM workers (their environment's default, and the value settled at start).
VLLM_LOG_LEVEL = "WARNING"

#: Environment variables that libraries add to the process environment in the middle of a run, when they are first
#: imported or first compile (found by diffing the C environment before and after a run), with the value each would
#: write. None: computed in :func:`settle_environment`.
LATE_ENVIRONMENT = {
    "KMP_DUPLICATE_LIB_OK": "True",  # scikit-learn, threadpoolctl (inductor writes TRUE)
    "KMP_INIT_AT_FORK": "FALSE",  # scikit-learn, joblib
    "VLLM_LOGGING_LEVEL": VLLM_LOG_LEVEL,  # trl on import ("ERROR" when unset); the testbed's vLLM workers want WARNING
    "_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR": None,  # inductor, each time it loads a compiled kernel library
}


def settle_environment() -> list[str]:
    """Add, while the process has one thread, the environment variables that libraries would add later (a user's own
    setting wins); returns the names added.

    Adding a variable makes glibc's setenv() reallocate the environment array and free the old one; a native thread
    that reads the environment meanwhile (getenv) reads freed memory. A run crashed in getenv on a library thread at
    the start of its teacher stage, where trl is first imported and inductor compiles: this race is the likely cause
    (not reproduced). Replacing an existing variable's value moves no array, so later writes of these names are
    safe."""
    added = []
    for name, value in LATE_ENVIRONMENT.items():
        if name in os.environ:
            continue
        if value is None:
            try:
                from torch._C._dynamo import guards

                value = str(guards._torchinductor_pyobject_tensor_data_ptr)  # type: ignore[attr-defined]
            except (ImportError, AttributeError):
                continue
        os.environ[name] = value
        added.append(name)
    return added
