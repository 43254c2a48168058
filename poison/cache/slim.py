"""``cascade-poison cache slim``: rewrite LoRA artifacts of the old layout as the adapter-only artifact of today.

Before issue 27 a LoRA stage stored ``model/`` (the adapter merged into a float32 copy of its base, 536 MB for
SmolLM2-135M) beside ``adapter/``. Such an artifact keeps working as it is (its ``model/`` is used), so a cache filled
before the change holds two full models per replicate until its entries are recomputed. ``slim`` turns each of them
into today's layout, under the entry's lock:

1. checks the entry: both ``adapter/`` and ``model/`` present, every file of them as its marker's manifest says
   (sizes and content hashes, where the marker has a manifest) and loadable; a damaged entry is named and left
   alone (``cache verify`` / the next run deal with it);
2. writes ``tokenizer/`` from ``model/``'s files other than the weights and the model config (the tokenizer, its
   chat template, the base's generation config: what a stage writes today), atomically;
3. rewrites the marker's manifest (``model/…`` out, ``tokenizer/…`` in; a marker written before manifests stays
   without one), atomically;
4. removes ``model/`` (renamed out of the way first, so a reader sees it whole or not at all).

The merged weights are then derived from the adapter when a stage next needs them (seconds;
``poison.ground.engines.merged``). What readers see does not change: ``model/`` was the float32 PEFT merge of this
adapter, which is what the derived folder is built from (``tests/test_lora_artifacts.py`` checks that the bf16 derived
folder holds bit for bit the weights a bf16 reader saw of the float32 folder, and a KD teacher merges in float32 in
memory). QLoRA artifacts, entries a live run holds or uses, and entries with ``tokenizer/`` already are left as they
are. A crash between the steps leaves an entry that still loads (``model/`` is used while it exists) and that the next
``slim`` finishes. Stage keys and markers' results are untouched: ``stages.json`` of a run still points at the entry.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

from filelock import Timeout

from poison.cache.core import Entry, entries, human, protection, referenced, remove
from poison.ground.core.artifacts import MARKER, check_folder, folder_size, manifest
from poison.ground.engines.merged import ADAPTER, MODEL, TOKENIZER

#: files of an old ``model/`` that are the model itself (weights, their index, the model config), not tokenizer files
WEIGHT_FILES = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def _finetunes(obj: Any) -> Iterator[str]:
    """Every ``finetune`` value in a marker's inputs (teacher: ``inputs.finetune.finetune``; students nest deeper)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "finetune" and isinstance(v, str):
                yield v
            else:
                yield from _finetunes(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _finetunes(v)


def why_not(e: Entry, marker: dict) -> Optional[str]:
    """Why the entry is not slimmed (None: it is an old-layout LoRA artifact that can be)."""
    if not (e.path / ADAPTER / "adapter_config.json").is_file() or not (e.path / MODEL / "config.json").is_file():
        return "not a LoRA artifact of the old layout"
    if "qlora" in set(_finetunes(marker.get("inputs"))):
        return "a QLoRA artifact: kept as it is"
    files = marker.get("files")
    kept = {r: m for r, m in files.items() if r.split("/")[0] in (ADAPTER, MODEL)} if isinstance(files, dict) else None
    problems = check_folder(e.path, kept, full=True) if kept is not None else \
        check_folder(e.path / ADAPTER, None) + check_folder(e.path / MODEL, None)
    if problems:
        return "damaged (" + "; ".join(f"{f}: {w}" for f, w in problems[:3]) + "): run `cascade-poison cache verify`"
    return None


def _tokenizer_files(model: Path) -> list[Path]:
    return sorted(p for p in model.iterdir() if p.is_file() and p.name not in WEIGHT_FILES
                  and not p.name.endswith(WEIGHT_SUFFIXES))


def slim_entry(e: Entry, marker: dict) -> int:
    """Steps 2–4 of the module docstring for one entry (its lock held by the caller); the bytes freed."""
    before = folder_size(e.path)
    tok, tmp = e.path / TOKENIZER, e.path / f".tmp-{TOKENIZER}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    for f in _tokenizer_files(e.path / MODEL):
        shutil.copyfile(f, tmp / f.name)
    if tok.exists():  # left by a slim that stopped before its end: written again from model/
        remove(tok)
    os.rename(tmp, tok)
    if isinstance(marker.get("files"), dict):
        files = {r: m for r, m in marker["files"].items() if r.split("/")[0] not in (MODEL, TOKENIZER)}
        files.update({f"{TOKENIZER}/{r}": m for r, m in manifest(tok).items()})
        marker = {**marker, "files": dict(sorted(files.items()))}
        part = e.path / f".tmp-{MARKER}-{uuid.uuid4().hex[:8]}"
        part.write_text(json.dumps(marker, indent=2, default=str))
        os.replace(part, e.path / MARKER)
    remove(e.path / MODEL)
    return before - folder_size(e.path)


def cmd_slim(cache: Path, dry_run: bool, runs_dir: Optional[Path], out=sys.stdout) -> int:
    es = entries(cache)
    refs = referenced(runs_dir, [r for e in es for r in e.runs])
    freed = slimmed = 0
    for e in es:
        try:
            marker = json.loads((e.path / MARKER).read_text())
        except (OSError, ValueError):
            continue  # damaged marker: cache verify names it
        why = why_not(e, marker)
        if why == "not a LoRA artifact of the old layout":
            continue
        held = protection(e, refs)
        if why is None and held and not held.startswith("referenced by the run directory"):
            why = held  # a live run holds or uses it; a kept run directory's reference stays valid after slimming
        if why is not None:
            print(f"kept {e.stage}/{e.key}: {why}", file=out)
            continue
        size = folder_size(e.path / MODEL)
        if dry_run:
            print(f"would slim {e.stage}/{e.key} (frees about {human(size)})", file=out)
            freed, slimmed = freed + size, slimmed + 1
            continue
        lock = e.lock
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"kept {e.stage}/{e.key}: a run took its lock meanwhile", file=out)
            continue
        try:
            gained = slim_entry(e, marker)
        finally:
            lock.release()
        freed, slimmed = freed + gained, slimmed + 1
        print(f"slimmed {e.stage}/{e.key}: {human(e.size)} -> {human(e.size - gained)}", file=out)
    left = sum(e2.size for e2 in entries(cache))
    print(f"{'would slim' if dry_run else 'slimmed'} {slimmed} artifact(s), {'would free' if dry_run else 'freed'} "
          f"{human(freed)}; the stage artifacts hold {human(left)}", file=out)
    return 0
