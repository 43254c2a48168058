"""A smaller student made from a bigger model: a subset of its decoder layers, initialised from its weights.

The Cascading-bias paper distils into students smaller than the teacher; on CPU the testbed's only real model family
is SmolLM2-135M (30 layers), so a smaller student is that model with some of its layers kept, the usual start of a
layer-dropping distillation (DistilBERT kept every other layer). A model spec names it with a suffix:

    smollm2-135m-instruct@layers=15        15 layers, evenly spaced, the first and the last always kept
    smollm2-135m-instruct@layers=0-7,22-29 exactly these layers (ranges and single indices, in order)

The folder is built once into the models folder (atomically) and carries an identity (the base's identity and the
kept layers), so its cache keys follow what it was made from. Embeddings, the final norm and the LM head are the
base's. The tokenizer is the base's, so logit distillation from the full-size teacher applies.

Part of the ground layer: it imports nothing above it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from poison.ground.core.errors import ModelError
from poison.ground.core.io import atomic_dir

SUFFIX = "@layers="
_RANGES = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def split_spec(spec: str) -> tuple[str, str] | None:
    """``(base spec, layer selection)`` for a spec with the ``@layers=`` suffix, else None."""
    if SUFFIX not in spec:
        return None
    base, _, sel = spec.rpartition(SUFFIX)
    return base, sel


def kept_layers(sel: str, n_layers: int, field: str) -> list[int]:
    """The layer indices a selection keeps: a count (evenly spaced, first and last included) or ranges."""
    if sel.isdigit():
        k = int(sel)
        if not 1 <= k <= n_layers:
            raise ModelError(f"{field}: @layers={sel}: keep between 1 and the base's {n_layers} layers")
        if k == 1:
            return [0]
        return sorted({round(i * (n_layers - 1) / (k - 1)) for i in range(k)})
    if not _RANGES.match(sel):
        raise ModelError(f"{field}: @layers={sel!r}: give a count (e.g. 15) or ranges of layer indices "
                         f"(e.g. 0-7,22-29)")
    keep: list[int] = []
    for part in sel.split(","):
        lo, _, hi = part.partition("-")
        keep += range(int(lo), int(hi or lo) + 1)
    if not keep or keep != sorted(set(keep)) or keep[-1] >= n_layers:
        raise ModelError(f"{field}: @layers={sel}: layer indices must increase, without repeats, and stay below "
                         f"the base's {n_layers} layers")
    return keep


def base_layer_count(base: Path) -> int:
    cfg = json.loads((Path(base) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    return int(cfg["num_hidden_layers"])


def folder_name(base: Path, keep: list[int]) -> str:
    return f"{Path(base).name}-layers-{'_'.join(map(str, keep))}"[:200]


def build_layer_subset(base: Path, keep: list[int], out: Path, identity: dict[str, Any],
                       identity_file: str) -> Path:
    """Save ``base`` with only the decoder layers ``keep`` (float32 weights, tokenizer and generation config kept)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    with atomic_dir(out) as tmp:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        decoder = model.get_decoder()
        layers = decoder.layers
        decoder.layers = torch.nn.ModuleList([layers[i] for i in keep])
        for new_index, layer in enumerate(decoder.layers):  # the KV cache is indexed by position in the stack
            for mod in (layer, getattr(layer, "self_attn", None)):
                if mod is not None and hasattr(mod, "layer_idx"):
                    mod.layer_idx = new_index
        cfg = model.config.get_text_config()
        cfg.num_hidden_layers = len(keep)
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = [cfg.layer_types[i] for i in keep]
        try:
            model.generation_config = GenerationConfig.from_pretrained(base)
        except OSError:
            pass
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        (tmp / identity_file).write_text(json.dumps(identity, sort_keys=True))
    return out
