"""Atomic file and folder writes, stable hashing of config slices, and sweeping what killed processes left.

Part of the ground layer: it imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_dir(final: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; rename it to ``final`` only if the block finishes.

    A process killed inside the block leaves a ``.tmp-*`` folder that is never mistaken for a result (and is swept
    by :func:`sweep_stale_tmp`). If ``final`` appeared meanwhile (a concurrent run), the new copy is discarded;
    with ``replace`` (a forced recompute) the old folder is swapped out only once the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(final)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if replace and final.exists():
            old = _tmp_name(final)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
            return
        try:
            os.rename(tmp, final)
        except OSError:
            if final.exists():  # someone else finished first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tmp_name(final: Path) -> Path:
    return final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            try:
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_parquet(path: str | Path, df) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def sweep_stale_tmp(root: str | Path) -> int:
    """Remove ``.tmp-*`` leftovers of killed processes (whose pid is gone). Returns how many were removed."""
    root = Path(root)
    n = 0
    if not root.exists():
        return 0
    for p in root.rglob(".tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]
