"""The real pretrained model shipped on PyPI: GGUF -> cached safetensors folder that reproduces the GGUF model."""

import json
import time

import pytest
import torch

from poison.ground.engines.models import ModelError, load_causal_lm, pick_dtype, resolve_model

pytestmark = pytest.mark.slow


def test_gguf_conversion_matches_gguf_and_generates(smollm2, models_dir):
    from transformers import AutoModelForCausalLM

    assert (smollm2 / "model.safetensors").exists() and (smollm2 / "config.json").exists()
    cfg = json.loads((smollm2 / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 30 and "quantization_config" not in cfg
    # second resolution is a cache hit: no re-conversion
    t = time.time()
    assert resolve_model("smollm2-135m-instruct", models_dir) == smollm2
    assert time.time() - t < 2

    gguf = json.loads((smollm2 / "source.json").read_text())["gguf"]
    from pathlib import Path

    g = Path(gguf)
    ref = AutoModelForCausalLM.from_pretrained(g.parent, gguf_file=g.name).eval()
    model, tok = load_causal_lm(smollm2, dtype="float32")
    model.eval()
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        a = ref(**ids).logits
        b = model(**ids).logits
        assert torch.allclose(a, b, atol=1e-4)
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text  # a real pretrained model, not random weights


def test_bad_model_specs_name_the_field(tmp_path):
    with pytest.raises(ModelError, match=r"teacher.model: local model folder ./nowhere does not exist"):
        resolve_model("./nowhere", tmp_path, field="teacher.model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path, field="teacher.model")
    with pytest.raises(ModelError, match="GGUF file .* not found"):
        resolve_model(str(tmp_path / "x.gguf"), tmp_path)


def test_dtype_choice(monkeypatch):
    monkeypatch.delenv("CASCADE_POISON_AUTO_DTYPE", raising=False)  # the suite may be run with auto forced
    assert pick_dtype("float32") == "float32"
    assert pick_dtype("auto", "cuda") == "bfloat16"
    assert pick_dtype("auto", "cpu") in ("float32", "bfloat16")
    monkeypatch.setenv("CASCADE_POISON_AUTO_DTYPE", "float32")  # what auto means, for running the suite both ways
    assert pick_dtype("auto", "cpu") == "float32" and pick_dtype("bfloat16", "cpu") == "bfloat16"
