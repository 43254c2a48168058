"""Which vLLM engine runs a trained model: its LoRA adapter on the public base, or its merged folder.

A LoRA (or QLoRA) training stage saves both ``adapter/`` and the merged ``model/`` (the adapter merged into the
unquantised base). With ``runtime.vllm.lora_adapters`` (the default on CUDA) vLLM runs the adapter as a
``LoRARequest`` on the base, so every model of a run trained from that base shares one engine
(poison.ground.vllm_worker); a full fine-tune, the HF backend, or ``lora_adapters: false`` (the default on CPU,
where vLLM's LoRA path is slower) use the merged folder, one engine per model.

In float32 both give the same greedy answers; in bfloat16 the merged folder's weights are rounded after merging, so
a few answers differ (bench/bench_eval_engine.py measures how many). The generation stages therefore put the engine
in their cache key: ``{"engine": "lora_adapter"}`` for adapters, nothing for merged folders (the key they had).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

ADAPTER_IDENTITY = {"engine": "lora_adapter"}


def adapter_fields(rec_path: str | Path, spec: Any, resolve: Callable[[Any], Path]) -> dict[str, Any]:
    """``{"adapter", "adapter_base"}`` of a trained stage's folder when it holds a LoRA adapter, else ``{}``.
    ``resolve(spec)`` is the spec's base model folder."""
    adapter = Path(rec_path) / "adapter"
    if getattr(spec, "finetune", "full") == "full" or not (adapter / "adapter_config.json").is_file():
        return {}
    return {"adapter": str(adapter), "adapter_base": str(resolve(spec))}


def use_adapters(run: Any) -> bool:
    """``runtime.vllm.lora_adapters``, where null means: on CUDA yes; on CPU no (vLLM's CPU LoRA path is slower than
    an engine per merged model: bench/bench_eval_engine.py)."""
    choice = run.cfg.runtime.vllm.lora_adapters
    return run.ctx.device == "cuda" if choice is None else choice


def engine_target(run: Any, model: dict[str, Any]) -> tuple[str, Optional[str], dict[str, Any]]:
    """(model folder, adapter or None, what the choice adds to a generation's cache key) for a model-table entry."""
    if model.get("adapter") and run.ctx.backend == "vllm" and use_adapters(run):
        return model["adapter_base"], model["adapter"], dict(ADAPTER_IDENTITY)
    return str(model["path"]), None, {}


def trained_entry(run: Any, rec_path: str | Path, spec: Any) -> dict[str, Any]:
    """The engine-relevant part of a model-table entry for a trained stage's folder (``path`` and the adapter)."""
    return {"path": str(Path(rec_path) / "model"),
            **adapter_fields(rec_path, spec, lambda s: run.ctx.model(s.model, "model", s.revision))}
