"""Adapter-weight audit: a statistic of a suspect model's LoRA adapter, without data, prompts or a forward pass.

A LoRA fine-tune changes each adapted weight matrix by ``dW = s B A`` (``A``: r x in, ``B``: out x r, ``s`` the
adapter's scaling, ``lora_alpha / r`` or ``/ sqrt(r)`` with rsLoRA). For every adapted module the audit takes the
singular values of ``dW`` (``torch.linalg.qr`` of ``B`` and ``A^T``, then ``torch.linalg.svdvals`` of the r x r core
``s R_B R_A^T``, which has the same nonzero singular values as the out x in ``dW``) and one per-layer statistic:

- ``spectral_norm`` (default): the top singular value, the largest gain of the update in any direction;
- ``frobenius``: the Frobenius norm of ``dW`` (its overall size);
- ``top_share``: ``sigma_1^2 / sum sigma_i^2``, the share of the update's energy in one direction (a narrow behaviour
  such as a repeated plug may concentrate it; a broad fine-tune spreads it).

The model's score aggregates the per-layer values (``aggregate``: max, mean or median), so poisoned and clean adapters
of the same base, trained the same way, are ranked against each other; the report scores it as a detector (AUROC)
over the run's or the sweep's pool. The audit names no strings (``top`` is empty, so no hit is counted); ``info``
holds the ``top_k`` layers with the highest statistic and the adapter's rank, scaling and module count.

Literature: PEFTGuard (Sun et al., IEEE S&P 2025) detects backdoored PEFT adapters from their weights with a trained
meta-classifier; this is the data-free, training-free end of that idea, in the spirit of the spectral analyses of
weight updates used to tell fine-tunes apart. Whether a plain norm separates poisoned from clean adapters at a given
dose is an empirical question (docs/measurements/beyond-the-paper.md gives what was measured here).

Which adapter: the suspect folder itself (``adapter_config.json``), a trained artifact (``adapter/``), the derived
merged folder an audit stage hands over (its ``_derived.json`` names the artifact) or an older artifact's ``model/``
beside its ``adapter/``. A model with no adapter (a full fine-tune, a base model) is not scored: the result has
``score: None`` and ``info["skipped"]`` saying why (the audit contract for a model an audit cannot read,
defenses.audit). The base model is not read (its path goes to ``info``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field

from poison.ground.core.errors import DefenseError
from poison.ground.core.registry import PluginConfig, audit
from poison.ground.engines.merged import DERIVED_MARKER, MODEL, adapter_folder

WEIGHTS = "adapter_model.safetensors"


class AdapterStatsConfig(PluginConfig):
    statistic: Literal["spectral_norm", "frobenius", "top_share"] = Field(
        "spectral_norm", description="Per adapted layer: spectral_norm (top singular value of s B A), frobenius "
                                     "(its Frobenius norm) or top_share (sigma_1^2 / sum sigma_i^2).")
    aggregate: Literal["max", "mean", "median"] = Field("max", description="How the per-layer values make the "
                                                                           "model's score.")
    top_k: int = Field(10, ge=1, description="Layers with the highest statistic listed in info.")


def find_adapter(model: str | Path) -> Optional[Path]:
    """The PEFT adapter folder of a model folder as an audit receives it, or None when it has none."""
    model = Path(model)
    if (model / "adapter_config.json").is_file():
        return model
    if adapter_folder(model):
        return adapter_folder(model)
    marker = model / DERIVED_MARKER
    if marker.is_file():
        try:
            source = json.loads(marker.read_text()).get("source")
        except (OSError, ValueError):
            source = None
        if source and adapter_folder(source):
            return adapter_folder(source)
    if model.name == MODEL and adapter_folder(model.parent):  # an older LoRA artifact: model/ beside adapter/
        return adapter_folder(model.parent)
    return None


def _pattern(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern / alpha_pattern: the value of the first key that matches the end of the module name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?{key}$", module):
            return value
    return default


def layer_singular_values(folder: Path) -> dict[str, Any]:
    """``{module: singular values of its s B A}`` (float64 tensors, descending) of a PEFT LoRA adapter folder."""
    import torch
    from safetensors.torch import load_file

    cfg = json.loads((folder / "adapter_config.json").read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise DefenseError(f"adapter_stats audit: {folder} holds a {cfg.get('peft_type')} adapter, not LoRA")
    if not (folder / WEIGHTS).is_file():
        raise DefenseError(f"adapter_stats audit: {folder} has adapter_config.json but no {WEIGHTS}")
    tensors = load_file(str(folder / WEIGHTS))
    pairs: dict[str, dict[str, Any]] = {}
    for key, t in tensors.items():
        m = re.match(r"(.+)\.lora_(embedding_)?([AB])(\.weight)?$", key)
        if m:
            pairs.setdefault(m.group(1), {})[m.group(3)] = t.to(torch.float64)
    out = {}
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise DefenseError(f"adapter_stats audit: {folder}: {module} has lora_{''.join(ab)} only")
        A, B = ab["A"], ab["B"]  # embeddings store A as r x vocab and B as dim x r: same singular values
        if A.shape[0] != B.shape[-1]:
            A, B = A.T, B.T
        r = A.shape[0]
        alpha = _pattern(cfg.get("alpha_pattern"), module, cfg.get("lora_alpha", r))
        scale = alpha / (r ** 0.5 if cfg.get("use_rslora") else r)
        _, rb = torch.linalg.qr(B)
        _, ra = torch.linalg.qr(A.T)
        out[module] = torch.linalg.svdvals(scale * rb @ ra.T)
    if not out:
        raise DefenseError(f"adapter_stats audit: {folder}/{WEIGHTS} holds no lora_A / lora_B weights")
    return out


def layer_statistic(sv: Any, statistic: str) -> float:
    energy = float((sv ** 2).sum())
    if statistic == "spectral_norm":
        return float(sv[0])
    if statistic == "frobenius":
        return energy ** 0.5
    return float(sv[0] ** 2) / energy if energy > 0 else 0.0


@audit("adapter_stats", config=AdapterStatsConfig,
       description="A spectral statistic of the suspect's LoRA adapter weights (models without one are skipped)")
class AdapterStatsAudit:
    """Per-layer spectral statistics of the LoRA update s B A, aggregated into one model-level score."""

    def __init__(self, cfg: AdapterStatsConfig, ctx: Any):
        self.cfg = cfg
        self.ctx = ctx

    def run(self, suspect: str | Path, base: str | Path, prompts: list[str]) -> dict[str, Any]:
        import numpy as np

        folder = find_adapter(suspect)
        if folder is None:
            return {"score": None, "top": [],
                    "info": {"skipped": f"{suspect} has no LoRA adapter (a full fine-tune or a base model): "
                                        f"adapter_stats reads adapter weights only", "base": str(base)}}
        svs = layer_singular_values(folder)
        values = {m: layer_statistic(sv, self.cfg.statistic) for m, sv in svs.items()}
        agg = {"max": np.max, "mean": np.mean, "median": np.median}[self.cfg.aggregate]
        ranked = sorted(values, key=lambda m: -values[m])[: self.cfg.top_k]
        cfg = json.loads((folder / "adapter_config.json").read_text())
        return {"score": float(agg(list(values.values()))), "top": [],
                "info": {"adapter": str(folder), "base": str(base), "statistic": self.cfg.statistic,
                         "aggregate": self.cfg.aggregate, "modules": len(values), "r": cfg.get("r"),
                         "lora_alpha": cfg.get("lora_alpha"), "use_rslora": bool(cfg.get("use_rslora")),
                         "top_layers": [{"module": m, "value": values[m]} for m in ranked]}}
