"""Artifact files that can be trusted: a manifest of a folder's files (size and a blake2b hash of each, recorded in
a stage's marker when the stage writes it), checks that a cached folder still matches its manifest and that each file
still loads (a parquet footer, a JSON document, a safetensors header that fits the file), guarded reads that turn a
library's exception into one :class:`ArtifactError` naming the file and what to do, and moving a damaged folder
aside (``.corrupt-*``, kept for inspection).

Part of the ground layer: it imports nothing of the project above it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from poison.ground.core.errors import ArtifactError

MARKER = "_stage.json"
CORRUPT_PREFIX = ".corrupt-"
_CHUNK = 1 << 20
# <cache>/stages/<stage>/<key>/<file>: a file of a cached stage artifact
_STAGE_PATH = re.compile(r"/stages/(?P<stage>[A-Za-z_]+)/(?P<key>[0-9a-f]{8,64})(/|$)")


class CacheMiss(Exception):
    """A checking walk (``--check``) reached something a run would compute (a stage artifact, a converted model);
    the walk stops there. Not an error."""


# --------------------------------------------------------------------------------------------------- manifest
def file_hash(path: str | Path) -> str:
    """blake2b (128 bit) of a file's content, read in 1 MiB chunks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_files(folder: Path) -> list[Path]:
    """Every file of an artifact folder but its marker, in a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name != MARKER)


def manifest(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"size", "blake2b"}}`` of every file of a freshly written artifact folder."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "blake2b": file_hash(p)}
            for p in folder_files(folder)}


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------- load probes
def probe(path: Path) -> Optional[str]:
    """Why ``path`` would not load by its kind (``None``: it would, or its kind has no cheap check)."""
    suffix = path.suffix
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.ParquetFile(path).metadata  # noqa: B018 (reads the footer: magic bytes, schema, row groups)
        elif suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    json.loads(line)
        elif suffix == ".safetensors":
            return safetensors_problem(path)
    except (ValueError, UnicodeDecodeError) as e:
        return f"not valid {suffix[1:]} ({_short(e)})"
    except OSError as e:
        return f"cannot be read ({e.strerror or _short(e)})"
    except Exception as e:  # pyarrow's ArrowInvalid and friends: the file is not what its name says
        return f"not a readable {suffix[1:]} file ({_short(e)})"
    return None


def safetensors_problem(path: Path) -> Optional[str]:
    """A safetensors file whose header does not parse, or whose size is not what its header says (truncated)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"truncated ({size} bytes, no header)"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"truncated or not safetensors (header of {n} bytes in a file of {size})"
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return "not safetensors (its header is not JSON)"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and "data_offsets" in v]
    want = 8 + n + max(ends, default=0)
    if size != want:
        return f"{size} bytes, its header says {want} (truncated?)" if size < want else \
            f"{size} bytes, its header says {want}"
    return None


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


# --------------------------------------------------------------------------------------------------- folder checks
def check_folder(folder: Path, files: Optional[dict[str, dict[str, Any]]], full: bool = False,
                 ) -> list[tuple[str, str]]:
    """``[(file, what is wrong)]`` of a cached artifact folder: against its manifest ``files`` (sizes always, hashes
    with ``full``), then each file's load probe. ``files=None`` (a marker written before manifests) checks what can be
    checked: every file present loads."""
    folder = Path(folder)
    problems: list[tuple[str, str]] = []
    if files is None:
        paths = folder_files(folder)
    else:
        paths = []
        for rel, meta in files.items():
            p = folder / rel
            if not p.is_file():
                problems.append((rel, "missing"))
                continue
            size = p.stat().st_size
            if size != meta.get("size"):
                problems.append((rel, f"{size} bytes, its marker says {meta.get('size')}"))
                continue
            if full and meta.get("blake2b") and file_hash(p) != meta["blake2b"]:
                problems.append((rel, "content differs from its marker's hash"))
                continue
            paths.append(p)
    for p in paths:
        why = probe(p)
        if why:
            problems.append((p.relative_to(folder).as_posix(), why))
    return problems


def model_folder_problem(folder: str | Path) -> Optional[tuple[Path, str]]:
    """The first file of a model or adapter folder that would not load: a missing or garbled ``config.json`` /
    ``adapter_config.json``, a truncated safetensors file."""
    folder = Path(folder)
    if not folder.is_dir():
        return folder, "missing"
    configs = [folder / n for n in ("config.json", "adapter_config.json") if (folder / n).exists()]
    if not configs:
        return folder / "config.json", "missing (neither config.json nor adapter_config.json)"
    for p in configs + sorted(folder.glob("*.safetensors")):
        why = probe(p)
        if why:
            return p, why
    return None


def check_model_folder(folder: str | Path, role: str = "model") -> None:
    """ArtifactError naming the file when a model or adapter folder would not load."""
    bad = model_folder_problem(folder)
    if bad:
        raise ArtifactError(f"{role} {bad[0]}: {bad[1]}; {fix_hint(bad[0])}")


# --------------------------------------------------------------------------------------------------- guarded reads
def stage_of(path: str | Path) -> Optional[tuple[str, str]]:
    """(stage, key) of a path inside a stage cache (``.../stages/<stage>/<key>/...``), else None."""
    m = _STAGE_PATH.search(Path(path).absolute().as_posix())
    return (m["stage"], m["key"]) if m else None


def fix_hint(path: str | Path) -> str:
    """What to do about a damaged file: recompute its stage, or recreate a file of a run directory."""
    sk = stage_of(path)
    if sk:
        return (f"the cached {sk[0]} artifact {sk[1]} is damaged: rerun with --force {sk[0]} (or run "
                f"`cascade-poison cache verify` to find every damaged artifact)")
    return "the file is damaged or not what its name says: restore it, or rerun what wrote it"


def read_parquet(path: str | Path, columns: Optional[list[str]] = None):
    """``pandas.read_parquet`` whose failure is one ArtifactError naming the file and what to do."""
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {fix_hint(path)}") from None
    except (KeyError, MemoryError) as e:
        raise ArtifactError(f"{path}: cannot be read ({_short(e)}); {fix_hint(path)}") from None
    except Exception as e:  # pyarrow.ArrowInvalid ("Parquet magic bytes not found"), OSError, ...
        raise ArtifactError(f"{path}: not a readable parquet file ({_short(e)}); {fix_hint(path)}") from None


def parquet_columns(path: str | Path) -> list[str]:
    """The column names of a parquet file (its footer only); failure as in :func:`read_parquet`."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        return list(pq.read_schema(path).names)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {fix_hint(path)}") from None
    except Exception as e:
        raise ArtifactError(f"{path}: not a readable parquet file ({_short(e)}); {fix_hint(path)}") from None


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a missing, unreadable or garbled file is one ArtifactError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {fix_hint(path)}") from None
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise ArtifactError(f"{path}: not valid JSON ({_short(e)}); {fix_hint(path)}") from None


# --------------------------------------------------------------------------------------------------- setting aside
def move_aside(folder: Path) -> Path:
    """Rename a damaged artifact folder to ``.corrupt-<name>-<time>-<id>`` beside it (never read as a result, kept
    for inspection; ``cascade-poison cache gc`` removes it). Returns the new path."""
    folder = Path(folder)
    target = folder.parent / f"{CORRUPT_PREFIX}{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    os.rename(folder, target)
    return target


def describe(problems: Iterable[tuple[str, str]]) -> str:
    return "; ".join(f"{f}: {why}" for f, why in problems)


# --------------------------------------------------------------------------------------------------- uses
def uses_file(folder: Path) -> Path:
    """Where the runs that used a cached artifact are listed (beside its folder, dot-prefixed like its lock)."""
    folder = Path(folder)
    return folder.parent / f".uses-{folder.name}.jsonl"


def record_use(folder: Path, run_dir: Path, label: str) -> None:
    """Append one line (run directory, time, label) to an artifact's use list; a failure to record is not fatal."""
    line = json.dumps({"run": str(Path(run_dir).absolute()), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       "label": label}) + "\n"
    try:
        with open(uses_file(folder), "a") as f:
            f.write(line)
    except OSError:
        pass


def read_uses(folder: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        lines = uses_file(folder).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "run" in rec:
            out.append(rec)
    return out
