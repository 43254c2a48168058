"""A LoRA model's artifact is its adapter; its merged weights are a derived folder, rebuilt on demand and evictable.

A LoRA (or QLoRA) training stage stores what defines the trained model, a few MB::

    <cache>/stages/<stage>/<key>/adapter/     the PEFT adapter (adapter_config.json, adapter_model.safetensors)
    <cache>/stages/<stage>/<key>/tokenizer/   the tokenizer, its chat template, the generation config

Every file of it is in the stage marker's manifest, so ``runtime.verify_cache`` and ``cache verify`` check it. A
full fine-tune (and a LoRA artifact written before adapters alone were kept) stores ``model/`` instead, used as is.

An engine that loads one folder per model (vLLM without LoRA requests, the HF backend, the likelihood probe's scorer,
audits, a QCRD teacher's sampler) needs the adapter merged into its base. That folder is derived::

    <cache>/derived/<stage>/<key>-<dtype>/    merged weights in ``dtype`` (the run's compute dtype: what reads them)
                                              + the artifact's tokenizer files + _derived.json (source, manifest)

It is built when first needed (seconds: load the base, merge with PEFT, save), checked when used again (against its
manifest, and that it was derived from the artifact's present adapter: a recomputed artifact makes it stale), rebuilt
when missing, damaged or stale, and ``cascade-poison cache gc`` may evict it at any time.

Numerics: the merge runs where the training stage merged before (``merge_dtype``: float32 on CPU, the compute dtype
on GPUs), then the weights are rounded to ``dtype``. Every reader of the folder loads it in that dtype, which is the
same rounding it applied to a float32 folder on load: the weights it sees are bit for bit those of the float32 merge.
A reader that needs the merge in another dtype (a KD teacher held in float32) merges in memory: :func:`load_merged`.

Part of the ground layer: it imports nothing of the project above it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from poison.ground.core.artifacts import check_folder, check_model_folder, describe, file_hash, manifest, read_json
from poison.ground.core.errors import ArtifactError, PoisonError
from poison.ground.core.io import atomic_dir

log = logging.getLogger("poison")

ADAPTER = "adapter"
TOKENIZER = "tokenizer"
MODEL = "model"
DERIVED = "derived"
DERIVED_MARKER = "_derived.json"
#: bump when the way a merged folder is built changes what it holds (older derived folders are then rebuilt)
MERGE_VERSION = 1


# --------------------------------------------------------------------------------------------------- the artifact
def model_folder(artifact: str | Path) -> Optional[Path]:
    """``model/`` of a trained artifact that holds its own weights (a full fine-tune; a LoRA artifact written before
    adapters alone were kept), else None."""
    folder = Path(artifact) / MODEL
    return folder if (folder / "config.json").is_file() else None


def adapter_folder(artifact: str | Path) -> Optional[Path]:
    folder = Path(artifact) / ADAPTER
    return folder if (folder / "adapter_config.json").is_file() else None


def adapter_only(artifact: str | Path) -> bool:
    """The artifact is an adapter (+ tokenizer files) whose merged weights are derived."""
    return model_folder(artifact) is None and adapter_folder(artifact) is not None


def tokenizer_folder(artifact: str | Path) -> Path:
    """Where a trained artifact's tokenizer is: ``model/`` when it holds its weights, else ``tokenizer/``."""
    return model_folder(artifact) or Path(artifact) / TOKENIZER


def merge_dtype(dtype: str, device: str) -> str:
    """The dtype a model's weights are held in for training, and merged in: float32 on CPU (the Trainer autocasts
    where bf16 is on), the run's dtype on GPUs (large models)."""
    return "float32" if device == "cpu" or dtype == "float32" else dtype


# --------------------------------------------------------------------------------------------------- merging
def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def cast(model: Any, dtype: str) -> Any:
    """Round ``model``'s parameters to ``dtype`` (as ``from_pretrained(dtype=...)`` rounds a float32 checkpoint),
    keeping the modules the architecture holds in float32 (``_keep_in_fp32_modules``)."""
    want = _torch_dtype(dtype)
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, p in model.named_parameters():
        if p.is_floating_point() and p.dtype != want and not keep & set(name.split(".")):
            p.data = p.data.to(want)
    model.config.use_cache = True
    return model


def load_merged(artifact: str | Path, base: str | Path, *, dtype: str, merge_in: str, device: str = "cpu") -> Any:
    """The trained model of ``artifact`` in memory, in ``dtype``: its own folder loaded, or its adapter merged (PEFT)
    into ``base`` held in ``merge_in`` and rounded to ``dtype``."""
    from transformers import AutoModelForCausalLM

    own = model_folder(artifact)
    if own is not None:
        check_model_folder(own, "trained model")
        return AutoModelForCausalLM.from_pretrained(own, dtype=_torch_dtype(dtype)).to(device)
    adapter = adapter_folder(artifact)
    if adapter is None:
        raise ArtifactError(f"{artifact}: neither model/ nor adapter/ holds a trained model; rerun its stage "
                            f"with --force")
    from peft import PeftModel

    check_model_folder(base, "base model")
    check_model_folder(adapter, "adapter")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=_torch_dtype(merge_in))
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return cast(model, dtype).to(device)


def write_merged(artifact: str | Path, base: str | Path, out: str | Path, *, dtype: str, merge_in: str) -> None:
    """A plain HF folder of the merged model in ``dtype`` (+ the artifact's tokenizer files) in ``out``."""
    out = Path(out)
    model = load_merged(artifact, base, dtype=dtype, merge_in=merge_in)
    model.save_pretrained(out)
    del model
    for f in sorted(tokenizer_folder(artifact).iterdir()):  # tokenizer, chat template, the base's generation config
        if f.is_file():
            shutil.copyfile(f, out / f.name)


# --------------------------------------------------------------------------------------------------- derived folders
def derived_root(artifact: str | Path) -> Path:
    """``<cache>/derived/<stage>`` for an artifact ``<cache>/stages/<stage>/<key>``; beside any other folder."""
    artifact = Path(artifact).absolute()
    if artifact.parent.parent.name == "stages":
        return artifact.parent.parent.parent / DERIVED / artifact.parent.name
    return artifact.parent / f".{DERIVED}"


def derived_path(artifact: str | Path, dtype: str) -> Path:
    """Where the merged folder of an adapter artifact in ``dtype`` is (or will be built)."""
    return derived_root(artifact) / f"{Path(artifact).name}-{dtype}"


def source_hash(artifact: str | Path) -> dict[str, str]:
    """``{file: blake2b}`` of what a merged folder is derived from (the adapter and tokenizer files, a few MB): a
    recomputed artifact (``--force``, or set aside as damaged) makes its older derived folder stale."""
    artifact = Path(artifact)
    return {p.relative_to(artifact).as_posix(): file_hash(p) for d in (ADAPTER, TOKENIZER)
            for p in sorted((artifact / d).rglob("*")) if p.is_file()}


def derived_problems(folder: Path, full: bool = False, source: Optional[dict[str, str]] = None
                     ) -> list[tuple[str, str]]:
    """What is wrong with a derived folder (``[]``: nothing): its marker, that it was derived from ``source`` (the
    artifact's :func:`source_hash`, when given), each file against the marker's manifest (sizes; hashes with
    ``full``), that each file loads."""
    if not (folder / DERIVED_MARKER).is_file():
        return [(DERIVED_MARKER, "missing")]
    try:
        marker = read_json(folder / DERIVED_MARKER)
    except PoisonError as e:
        return [(DERIVED_MARKER, str(e).split(": ", 1)[-1].split(";")[0])]
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        return [(DERIVED_MARKER, "not a derived-folder marker")]
    if marker.get("version") != MERGE_VERSION:
        return [(DERIVED_MARKER, f"built by merge version {marker.get('version')}, not {MERGE_VERSION}")]
    if source is not None and marker.get("source_files") != source:
        return [(DERIVED_MARKER, "derived from an earlier copy of its artifact (recomputed since)")]
    return check_folder(folder, marker["files"], full=full)


def _lock(folder: Path):
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder.parent / f".lock-{folder.name}"))


def ensure_merged(artifact: str | Path, base: str | Path, *, dtype: str, merge_in: str,
                  verify: str = "size") -> Path:
    """The folder an engine loads for a trained ``artifact``: its own ``model/``, or its derived merged folder in
    ``dtype``, built now if it is missing, damaged or stale (rebuilt, with one warning: derived from an earlier copy
    of its artifact, or by an older merge version). Built
    under a lock of its name (two runs build it once), written atomically; its marker's time is its last use."""
    own = model_folder(artifact)
    if own is not None:
        return own
    final = derived_path(artifact, dtype)
    with _lock(final):
        source = source_hash(artifact)
        problems = derived_problems(final, full=verify == "full", source=source) if final.exists() else None
        if problems == []:
            os.utime(final / DERIVED_MARKER)  # last used now (cache ls / gc --older-than)
            return final
        if problems is not None:
            log.warning("derived merged folder %s: %s; rebuilding it", final, describe(problems))
            gone = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(final, gone)
            shutil.rmtree(gone, ignore_errors=True)
        t0 = time.time()
        with atomic_dir(final) as tmp:
            write_merged(artifact, base, tmp, dtype=dtype, merge_in=merge_in)
            secs = round(time.time() - t0, 2)
            (tmp / DERIVED_MARKER).write_text(json.dumps(
                {"kind": "merged", "version": MERGE_VERSION, "source": str(Path(artifact).absolute()),
                 "source_files": source,
                 "base": str(Path(base).absolute()), "dtype": dtype, "merged_in": merge_in, "seconds": secs,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": manifest(tmp)}, indent=2))
        log.info("merged %s into its base (%s) in %.1fs: %s", Path(artifact).name, dtype, secs, final)
    return final
