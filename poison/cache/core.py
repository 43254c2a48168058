"""The stage cache's entries and the ``ls``, ``du``, ``verify`` and ``gc`` commands of ``cascade-poison cache``
(the command line and the whole story: :mod:`poison.cache`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from filelock import FileLock, Timeout

from poison.ground.core.artifacts import (CORRUPT_PREFIX, MARKER, check_folder, describe, folder_size, read_uses,
                                          uses_file)
from poison.ground.core.errors import ConfigError
from poison.ground.core.procs import alive
from poison.ground.engines.merged import DERIVED, DERIVED_MARKER, derived_problems

DEFAULT_CACHE = ".cache/poison"
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SPANS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class Entry:
    stage: str
    key: str
    path: Path
    size: int
    last_used: float
    runs: list[str] = field(default_factory=list)
    #: a derived folder: the artifact it is derived from ("" when its marker does not say)
    source: Optional[str] = None

    @property
    def derived(self) -> bool:
        return self.source is not None

    @property
    def name(self) -> str:
        return f"{DERIVED}:{self.stage}" if self.derived else self.stage

    @property
    def lock(self) -> FileLock:
        return FileLock(str(self.path.parent / f".lock-{self.key}"))


def entries(cache_dir: Path) -> list[Entry]:
    """Every cached artifact (a folder with a marker) under ``<cache_dir>/stages``."""
    out = []
    root = Path(cache_dir) / "stages"
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for d in sorted(stage_dir.iterdir()):
            if d.name.startswith(".") or not (d / MARKER).is_file():
                continue
            try:
                size = folder_size(d)
                used = max([(d / MARKER).stat().st_mtime]
                           + ([uses_file(d).stat().st_mtime] if uses_file(d).exists() else []))
            except FileNotFoundError:  # removed or set aside meanwhile
                continue
            runs = list(dict.fromkeys(u["run"] for u in read_uses(d)))
            out.append(Entry(stage_dir.name, d.name, d, size, used, runs))
    return out


def derived_entries(cache_dir: Path) -> list[Entry]:
    """Every derived folder (a LoRA model's merged weights) under ``<cache_dir>/derived``; a folder without its marker
    (damaged) is listed too, with its folder's time as its last use."""
    out = []
    root = Path(cache_dir) / DERIVED
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for d in sorted(stage_dir.iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                continue
            try:
                marker = d / DERIVED_MARKER
                used = (marker if marker.is_file() else d).stat().st_mtime
                size = folder_size(d)
            except FileNotFoundError:
                continue
            try:
                source = str(json.loads(marker.read_text()).get("source") or "")
            except (OSError, ValueError, AttributeError):
                source = ""
            out.append(Entry(stage_dir.name, d.name, d, size, used, [], source))
    return out


def corrupt_folders(cache_dir: Path) -> list[Path]:
    root = Path(cache_dir) / "stages"
    return sorted(root.glob(f"*/{CORRUPT_PREFIX}*")) if root.is_dir() else []


# --------------------------------------------------------------------------------------------------- protection
def held(e: Entry) -> bool:
    """A live run holds the entry's lock (it is computing it) or another ``gc`` is removing it."""
    lock = e.lock
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def _run_status(run: Path) -> dict:
    try:
        st = json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return st if isinstance(st, dict) else {}


def referenced(runs_dir: Optional[Path], extra: list[str]) -> dict[str, str]:
    """``{artifact path: why it is kept}`` for every run directory that still exists: the runs of the use lists and
    those under ``runs_dir`` (their ``stages.json``); a run still going (status running, its process alive) keeps
    what it used as a live run."""
    runs = {Path(r) for r in extra}
    if runs_dir and runs_dir.is_dir():
        runs |= {p.parent for p in list(runs_dir.glob("*/stages.json")) + list(runs_dir.glob("*/*/stages.json"))}
    out: dict[str, str] = {}
    for run in sorted(runs):
        try:
            stages = json.loads((run / "stages.json").read_text())
        except (OSError, ValueError):
            continue
        st = _run_status(run)
        live = st.get("status") == "running" and alive(st.get("pid"), st.get("pid_start"))
        why = f"used by the live run {run}" if live else f"referenced by the run directory {run}"
        for rec in stages.values() if isinstance(stages, dict) else []:
            if isinstance(rec, dict) and rec.get("path"):
                out.setdefault(str(Path(rec["path"]).absolute()), why)
    return out


def protection(e: Entry, refs: dict[str, str]) -> Optional[str]:
    if held(e):
        return "its lock is held by a live run"
    if e.derived:  # evictable unless a live run uses the artifact it is derived from
        why = refs.get(str(Path(e.source).absolute())) if e.source else None
        return why if why and why.startswith("used by the live run") else None
    return refs.get(str(e.path.absolute()))


def remove(path: Path) -> None:
    """Rename out of the way (a ``.tmp-*`` name the next run sweeps if this process dies), then delete."""
    gone = path.parent / f".tmp-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.rename(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- commands
def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([bkmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise ConfigError(f"--max-size {text!r}: a size such as 500M, 20G or 1.5T")
    return int(float(m[1]) * _UNITS[m[2]])


def parse_age(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([smhdw])\s*", text.lower())
    if not m:
        raise ConfigError(f"--older-than {text!r}: an age such as 90m, 12h, 30d or 2w")
    return float(m[1]) * _SPANS[m[2]]


def cmd_ls(cache: Path, out=sys.stdout) -> int:
    es, ds = entries(cache), derived_entries(cache)
    print(f"{'stage':<13} {'key':<17} {'size':>10}  {'last used':<16}  runs", file=out)
    for e in sorted(es, key=lambda e: (e.stage, -e.last_used)):
        names = [Path(r).name for r in e.runs]
        runs = ", ".join(names[-3:]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
        print(f"{e.stage:<13} {e.key:<17} {human(e.size):>10}  "
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(e.last_used)):<16}  {runs or '-'}", file=out)
    print(f"{len(es)} artifact(s), {human(sum(e.size for e in es))} in {cache / 'stages'}", file=out)
    if ds:
        print(f"derived (merged weights, rebuilt on demand, evictable) in {cache / DERIVED}:", file=out)
        for e in sorted(ds, key=lambda e: (e.stage, -e.last_used)):
            print(f"{e.name:<21} {e.key:<26} {human(e.size):>10}  "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(e.last_used)):<16}", file=out)
        print(f"{len(ds)} derived folder(s), {human(sum(e.size for e in ds))}", file=out)
    return 0


def cmd_du(cache: Path, out=sys.stdout) -> int:
    per: dict[str, list[int]] = {}
    for e in entries(cache):
        per.setdefault(e.stage, [0, 0])
        per[e.stage][0] += 1
        per[e.stage][1] += e.size
    bad = corrupt_folders(cache)
    for stage, (n, size) in sorted(per.items()):
        print(f"{stage:<13} {n:>5} artifact(s) {human(size):>11}", file=out)
    bad_size = sum(folder_size(p) for p in bad)
    if bad:
        print(f"{'(set aside)':<13} {len(bad):>5} damaged    {human(bad_size):>11}", file=out)
    kept = sum(s for _, s in per.values())
    print(f"{'artifacts':<13} {sum(n for n, _ in per.values()):>5} artifact(s) {human(kept + bad_size):>11}", file=out)
    ds = derived_entries(cache)
    dsize = sum(e.size for e in ds)
    for stage in sorted({e.stage for e in ds}):
        mine = [e for e in ds if e.stage == stage]
        print(f"{DERIVED + ':' + stage:<21} {len(mine):>5} folder(s) {human(sum(e.size for e in mine)):>11}  "
              f"(rebuilt on demand)", file=out)
    print(f"{'total':<13} {human(kept + bad_size + dsize):>30}", file=out)
    return 0


def cmd_verify(cache: Path, out=sys.stdout) -> int:
    es, damaged = entries(cache), 0
    for e in es:
        try:
            marker = json.loads((e.path / MARKER).read_text())
            files = marker.get("files") if isinstance(marker, dict) else None
            problems = check_folder(e.path, files if isinstance(files, dict) else None, full=True)
        except FileNotFoundError:
            continue  # set aside or removed meanwhile
        except (OSError, ValueError, AttributeError) as err:
            problems = [(MARKER, f"unreadable ({err})")]
        if problems:
            damaged += 1
            print(f"damaged: stage {e.stage}, key {e.key}: {describe(problems)} (in {e.path}); rerun with --force "
                  f"{e.stage} to recompute it", file=out)
    print(f"verified {len(es)} artifact(s) (sizes and content hashes): "
          + (f"{damaged} damaged" if damaged else "all intact"), file=out)
    ds = derived_entries(cache)
    for e in ds:
        problems = derived_problems(e.path, full=True)
        if problems:
            print(f"damaged derived folder {e.stage}/{e.key}: {describe(problems)}; the next run that needs it "
                  f"rebuilds it", file=out)
    return 1 if damaged else 0


def plan_gc(es: list[Entry], older_than: Optional[float], max_size: Optional[int], now: float,
            first=lambda e: False) -> Iterator[Entry]:
    """The entries to remove, least recently used first (those ``first`` says before all others): those unused for
    ``older_than`` seconds, then more until what is left fits ``max_size``."""
    total = sum(e.size for e in es)
    for e in sorted(es, key=lambda e: (not first(e), e.last_used)):
        if (older_than is not None and now - e.last_used > older_than) or (max_size is not None and total > max_size):
            yield e
            total -= e.size


def cmd_gc(cache: Path, older_than: Optional[str], max_size: Optional[str], force: bool, dry_run: bool,
           runs_dir: Optional[Path], out=sys.stdout, derived: bool = False) -> int:
    if older_than is None and max_size is None and not derived:
        raise ConfigError("cache gc: give --older-than AGE, --max-size SIZE and/or --derived")
    age = parse_age(older_than) if older_than is not None else None
    cap = parse_size(max_size) if max_size is not None else None
    now, freed, kept = time.time(), 0, 0
    for p in corrupt_folders(cache):  # damaged copies kept for inspection: never read, removed first
        if age is None or now - p.stat().st_mtime > age or cap is not None:
            size = folder_size(p)
            if not dry_run:
                remove(p)
            freed += size
            print(f"{'would remove' if dry_run else 'removed'} damaged copy {p.parent.name}/{p.name} ({human(size)})",
                  file=out)
    es = entries(cache)
    refs = referenced(runs_dir, [r for e in es for r in e.runs])
    ds = derived_entries(cache)
    for e in ds:  # derived from an artifact that is gone: never used again
        if e.source and not Path(e.source).exists():
            e.last_used = 0.0
    protected = {e.path: protection(e, refs) for e in es + ds} if not force else {}
    budget = None if cap is None else cap - sum(e.size for e in es + ds if protected.get(e.path))
    free_ds = [e for e in ds if not protected.get(e.path)]
    doomed = list(free_ds) if derived else [e for e in free_ds if e.last_used == 0.0]
    # derived folders go first (rebuilt in seconds), then artifacts, each least recently used first
    rest = [e for e in free_ds if e not in doomed]
    plan = doomed + list(plan_gc(rest + [e for e in es if not protected.get(e.path)], age, budget, now,
                                 first=lambda e: e.derived))
    for e in plan:
        lock = e.lock
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not force:
                print(f"kept {e.stage}/{e.key}: a run took its lock meanwhile", file=out)
                continue
            lock = None
        try:
            if not dry_run:
                remove(e.path)
                uses_file(e.path).unlink(missing_ok=True)
            freed += e.size
            what = f"derived folder {e.stage}/{e.key}" if e.derived else f"{e.stage}/{e.key}"
            print(f"{'would remove' if dry_run else 'removed'} {what} ({human(e.size)})", file=out)
        finally:
            if lock is not None:
                lock.release()
    for e in ds:  # derived from an artifact removed just now
        if e.path.exists() and not protected.get(e.path) and e.source and not Path(e.source).exists() \
                and not dry_run:
            remove(e.path)
            freed += e.size
            print(f"removed derived folder {e.stage}/{e.key} ({human(e.size)}): its artifact is gone", file=out)
    for e in (es if age is not None or cap is not None else []) + ds:
        if protected.get(e.path):
            kept += 1
            print(f"kept {'derived folder ' if e.derived else ''}{e.stage}/{e.key}: {protected[e.path]}", file=out)
    left = sum(folder_size(e.path) for e in entries(cache) + derived_entries(cache))
    print(f"{'would free' if dry_run else 'freed'} {human(freed)}; {kept} protected artifact(s) kept; the cache "
          f"holds {human(left)}", file=out)
    return 0
