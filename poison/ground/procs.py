"""Process groups: a run may be several processes (``accelerate launch -m poison.run``).

The main process (rank 0) computes every non-training stage and writes the run directory; training stages run in
every process (data parallel) and the main one saves. The others wait for the main process's artifacts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from poison.ground.errors import StageError


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
