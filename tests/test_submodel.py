"""A smaller student made of some of a model's layers (``<spec>@layers=...``, poison.ground.engines.submodel): the kept
layers carry the base's weights, the model loads and generates, its identity names the base and the layers, and a bad
selection is one error naming the field."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from poison.ground.core.errors import ModelError
from poison.ground.engines.models import model_identity, resolve_model
from poison.ground.engines.submodel import kept_layers


def test_a_count_keeps_evenly_spaced_layers_first_and_last_included():
    keep = kept_layers("15", 30, "m")
    assert len(keep) == 15 and keep[0] == 0 and keep[-1] == 29 and keep == sorted(set(keep))
    assert kept_layers("2", 4, "m") == [0, 3] and kept_layers("1", 4, "m") == [0]
    assert kept_layers("4", 4, "m") == [0, 1, 2, 3]
    assert kept_layers("0-1,3", 4, "m") == [0, 1, 3]
    for sel, msg in (("0", "keep between 1"), ("5", "keep between 1"), ("x", "give a count"),
                     ("1-0", "must increase"), ("0,0", "must increase"), ("2-4", "below the base's 4 layers")):
        with pytest.raises(ModelError, match=rf"students.0.model: @layers=.*{msg}"):
            kept_layers(sel, 4, "students.0.model")


def test_layer_subset_of_a_model_keeps_its_weights_and_generates(models_dir):
    base = resolve_model("tiny-random-llama:4:64", models_dir)
    small = resolve_model("tiny-random-llama:4:64@layers=0,3", models_dir, "students.0.model")
    assert small != base and json.loads((small / "config.json").read_text())["num_hidden_layers"] == 2
    ident = model_identity(small)
    assert ident == {"kind": "layer_subset", "base": model_identity(base), "keep": [0, 3]}
    assert resolve_model("tiny-random-llama:4:64@layers=2", models_dir) == small  # the same layers, the same folder
    big = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    sub = AutoModelForCausalLM.from_pretrained(small, dtype=torch.float32)
    for new, old in ((0, 0), (1, 3)):
        pairs = zip(sub.model.layers[new].named_parameters(), big.model.layers[old].named_parameters())
        for (name, p), (_, q) in pairs:
            assert torch.equal(p, q), name
    assert torch.equal(sub.lm_head.weight, big.lm_head.weight)
    assert torch.equal(sub.model.norm.weight, big.model.norm.weight)
    ids = torch.tensor([[1, 2, 3, 4]])
    out = sub.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)  # the KV cache follows the new indices
    ref = sub.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False)
    assert out.shape == (1, 8) and torch.equal(out, ref)
    with pytest.raises(ModelError, match=r"students.1.model: @layers=9: keep between 1 and the base's 4 layers"):
        resolve_model("tiny-random-llama:4:64@layers=9", models_dir, "students.1.model")
    # --check resolves without building
    path = resolve_model("tiny-random-llama:4:64@layers=3", models_dir, create=False)
    assert not path.exists()
