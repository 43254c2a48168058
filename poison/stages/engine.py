"""Which folder or engine runs a trained model: its LoRA adapter on the public base, or a merged folder.

A LoRA (or QLoRA) training stage stores its adapter and tokenizer files; the merged folder is derived from them on
demand (poison.ground.engines.merged: ``<cache>/derived/<stage>/<key>-<dtype>``, in the run's compute dtype, rebuilt
when missing or damaged, evictable by ``cache gc``). A full fine-tune, or a LoRA artifact written before adapters alone
were kept, has its own ``model/`` folder. With ``runtime.vllm.lora_adapters`` (the default on CUDA) vLLM runs the
adapter as a ``LoRARequest`` on the base, so every model of a run trained from that base shares one engine
(poison.ground.engines.vllm_worker) and no merged folder is needed; a full fine-tune, the HF backend, or
``lora_adapters: false`` (the default on CPU, where vLLM's LoRA path is slower) load one folder per model.

In float32 both give the same greedy answers; in bfloat16 the merged folder's weights are rounded after merging, so
a few answers differ (bench/bench_eval_engine.py measures how many). The generation stages therefore put the engine
in their cache key: ``{"engine": "lora_adapter"}`` for adapters, nothing for merged folders (the key they had: a
derived merged folder in the compute dtype holds the weights a float32 merged folder held once loaded in that dtype).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from poison.ground.engines.merged import (adapter_folder, adapter_only, derived_path, ensure_merged, merge_dtype,
                                          model_folder, tokenizer_folder)

ADAPTER_IDENTITY = {"engine": "lora_adapter"}


def trained_fields(rec_path: str | Path, spec: Any, resolve: Callable[[Any], Path], dtype: str) -> dict[str, Any]:
    """The model-table fields of a trained stage's folder: ``path`` (the folder an engine loads: ``model/``, or the
    derived merged folder in ``dtype``, which :func:`ready` builds), ``tokenizer``, and for a LoRA model
    ``adapter``, ``adapter_base`` (``resolve(spec)``: the spec's base model folder) and, when its merged weights are
    derived, ``artifact``."""
    own = model_folder(rec_path)
    out: dict[str, Any] = {"path": str(own or derived_path(rec_path, dtype)),
                           "tokenizer": str(tokenizer_folder(rec_path))}
    adapter = adapter_folder(rec_path)
    if getattr(spec, "finetune", "full") != "full" and adapter is not None:
        out.update(adapter=str(adapter), adapter_base=str(resolve(spec)))
        if adapter_only(rec_path):
            out["artifact"] = str(Path(rec_path))
    return out


def use_adapters(run: Any) -> bool:
    """``runtime.vllm.lora_adapters``, where null means: on CUDA yes; on CPU no (vLLM's CPU LoRA path is slower than
    an engine per merged model: bench/bench_eval_engine.py)."""
    choice = run.cfg.runtime.vllm.lora_adapters
    return run.ctx.device == "cuda" if choice is None else choice


def engine_target(run: Any, model: dict[str, Any]) -> tuple[str, Optional[str], dict[str, Any]]:
    """(model folder, adapter or None, what the choice adds to a generation's cache key) for a model-table entry.
    A derived merged folder may not exist yet: :func:`ready` builds it when a stage computes."""
    if model.get("adapter") and run.ctx.backend == "vllm" and use_adapters(run):
        return model["adapter_base"], model["adapter"], dict(ADAPTER_IDENTITY)
    return str(model["path"]), None, {}


def ready(run: Any, model: dict[str, Any], path: Optional[str] = None) -> str:
    """``path`` (default the entry's ``path``), with the derived merged folder built first when that is what it
    names (missing or damaged: rebuilt)."""
    path = str(path or model["path"])
    if model.get("artifact") and path == str(model["path"]):
        return str(ensure_merged(model["artifact"], model["adapter_base"], dtype=run.ctx.dtype,
                                 merge_in=merge_dtype(run.ctx.dtype, run.ctx.device),
                                 verify=run.cfg.runtime.verify_cache))
    return path


def trained_entry(run: Any, rec_path: str | Path, spec: Any) -> dict[str, Any]:
    """The engine-relevant part of a model-table entry for a trained stage's folder."""
    return trained_fields(rec_path, spec, lambda s: run.ctx.model(s.model, "model", s.revision), run.ctx.dtype)
