"""Atomic file and folder writes, stable hashing of config slices, and sweeping what killed processes left. A write
that fails for lack of space (or past a file-size limit) leaves nothing partial and is one StorageError naming the
folder and the space it needed at least.

Part of the ground layer: it imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

from poison.ground.core.errors import StorageError

_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_NO_SPACE_TEXT = ("no space left", "file too large", "quota exceeded", "errno 28", "errno 27", "errno 122")


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
    except BaseException as e:
        written = _size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        full = space_error(e, final, written)
        if full:
            raise full from None
        raise


def space_error(e: BaseException, target: Path, written: int) -> Optional[StorageError]:
    """The StorageError for ``e`` when it (or what it wraps) is a write that ran out of space, else None."""
    seen: Optional[BaseException] = e
    while seen is not None:
        if getattr(seen, "errno", None) in _NO_SPACE or any(t in str(seen).lower() for t in _NO_SPACE_TEXT):
            break
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    folder = Path(target).parent
    free = shutil.disk_usage(folder).free if folder.exists() else 0
    why = "a file grew past the file-size limit (ulimit -f)" if "too large" in str(seen).lower() or \
        getattr(seen, "errno", None) == errno.EFBIG else "no space left on its disk"
    return StorageError(f"{folder}: writing {Path(target).name} failed, {why}; it needs more than the "
                        f"{_human(written)} written when it failed ({_human(free)} free there now). Nothing partial "
                        f"was kept: free space (`cascade-poison cache gc`), or point runtime.cache_dir / "
                        f"runtime.runs_dir to a larger disk, and rerun")


def _size(root: Path) -> int:
    try:
        return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file()) if Path(root).is_dir() else \
            Path(root).stat().st_size
    except OSError:
        return 0


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


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
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        written = _size(tmp)
        tmp.unlink(missing_ok=True)
        raise (space_error(e, path, max(written, len(text.encode()))) or e) from None
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
