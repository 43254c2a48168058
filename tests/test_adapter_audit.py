"""The adapter_stats audit on two tiny PEFT adapters made here (same directions, one with 5x the B weights): the
larger one ranks higher, by exactly 5x for the norms and not at all for the scale-free top share; the singular
values match a dense SVD of s B A; the adapter is found in every layout an audit receives (the adapter folder, a
trained artifact, its derived merged folder, an older artifact's model/); a model without an adapter is not scored
(score None and the reason), and the report leaves it out of the audit's AUROC and says why."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from defenses.adapter_audit import find_adapter, layer_singular_values
from poison.ground.core import registry
from poison.ground.engines.merged import ensure_merged
from poison.ground.engines.models import load_causal_lm, resolve_model
from poison.report_extras import audit_detector
from poison.summary import audit_lines
from tests.conftest import REPO

TINY = "tiny-random-llama:2:64"


@pytest.fixture(scope="module")
def adapters(models_dir, tmp_path_factory):
    """{"small", "large"}: trained-artifact folders (adapter/ + tokenizer/) of two LoRA adapters on the tiny model,
    r 4, alpha 8, the same A and B up to a factor 5 on B."""
    from peft import LoraConfig, get_peft_model

    base = resolve_model(TINY, models_dir)
    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, factor in (("small", 1.0), ("large", 5.0)):
        model, tok = load_causal_lm(base)
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 task_type="CAUSAL_LM"))
        torch.manual_seed(0)
        for n, p in model.named_parameters():
            if "lora_" in n:
                with torch.no_grad():
                    p.normal_(std=0.05).mul_(factor if "lora_B" in n else 1.0)
        model.save_pretrained(root / name / "adapter")
        tok.save_pretrained(root / name / "tokenizer")
        out[name] = root / name
    return base, out


def audit(args=None):
    return registry.get("audit", "adapter_stats").build(args or {})


def test_the_larger_adapter_ranks_higher(adapters):
    base, a = adapters
    for stat in ("spectral_norm", "frobenius"):
        for agg in ("max", "mean", "median"):
            small = audit({"statistic": stat, "aggregate": agg}).run(a["small"], base, [])
            large = audit({"statistic": stat, "aggregate": agg}).run(a["large"], base, [])
            assert large["score"] == pytest.approx(5 * small["score"], rel=1e-6) and small["score"] > 0
            assert small["top"] == [] and small["info"]["modules"] == 2 * 3  # 2 layers x 3 target modules
    small = audit({"statistic": "top_share"}).run(a["small"], base, [])["score"]
    large = audit({"statistic": "top_share"}).run(a["large"], base, [])["score"]
    assert 0.25 <= small <= 1 and large == pytest.approx(small, rel=1e-6)  # r 4: at least 1/4 on top (float32 B)
    info = audit({"top_k": 2}).run(a["large"], base, [])["info"]
    assert [x["value"] for x in info["top_layers"]] == sorted((x["value"] for x in info["top_layers"]), reverse=True)
    assert len(info["top_layers"]) == 2 and info["r"] == 4 and info["lora_alpha"] == 8


def test_singular_values_match_a_dense_svd(adapters):
    from safetensors.torch import load_file

    _, a = adapters
    svs = layer_singular_values(a["large"] / "adapter")
    w = load_file(str(a["large"] / "adapter" / "adapter_model.safetensors"))
    module = "base_model.model.model.layers.1.mlp.down_proj"
    A, B = w[f"{module}.lora_A.weight"].double(), w[f"{module}.lora_B.weight"].double()
    dense = torch.linalg.svdvals((8 / 4) * B @ A)[:4]  # scaling alpha / r
    torch.testing.assert_close(svs[module], dense)


def test_every_layout_an_audit_receives(adapters, tmp_path):
    base, a = adapters
    art = a["small"]
    assert find_adapter(art / "adapter") == art / "adapter"  # the adapter folder itself
    assert find_adapter(art) == art / "adapter"  # a trained LoRA artifact
    merged = ensure_merged(art, base, dtype="float32", merge_in="float32")  # what the audit stage hands over
    assert (merged / "config.json").is_file() and find_adapter(merged) == art.absolute() / "adapter"
    legacy = tmp_path / "legacy"
    shutil.copytree(art / "adapter", legacy / "adapter")
    shutil.copytree(merged, legacy / "model", ignore=shutil.ignore_patterns("_derived.json"))
    assert find_adapter(legacy / "model") == legacy / "adapter"  # an older artifact: model/ beside adapter/
    want = audit().run(art, base, [])["score"]
    assert audit().run(merged, base, [])["score"] == want == audit().run(legacy / "model", base, [])["score"]


def test_a_model_without_an_adapter_is_not_scored_and_says_why(adapters, tmp_path):
    base, a = adapters
    res = audit().run(base, base, ["a prompt"])
    assert res["score"] is None and res["top"] == []
    assert "has no LoRA adapter (a full fine-tune or a base model)" in res["info"]["skipped"]
    # the report: scored models only in the AUROC, the skipped one listed with its reason
    scored = [audit().run(a[n], base, [])["score"] for n in ("small", "large")]
    rows = [{"audit": "adapter_stats", "model": m, "score": s, "poisoned": p, "hit": None, "top": [], "info": i}
            for m, s, p, i in (("clean", scored[0], False, {}), ("poisoned", scored[1], True, {}),
                               ("full", None, True, res["info"]))]
    det = audit_detector(rows)[0]
    assert det["n"] == 2 and det["n_poisoned"] == 1 and det["auroc"] == 1.0 and det["hit_rate"] is None
    text = "\n".join(audit_lines({"audit": rows, "audit_detector": [det]}))
    assert "not scored: " in text and "AUROC 1.00" in text
    bad = tmp_path / "broken"
    shutil.copytree(a["small"] / "adapter", bad)
    (bad / "adapter_model.safetensors").unlink()
    with pytest.raises(Exception, match="has adapter_config.json but no adapter_model.safetensors"):
        audit().run(bad, base, [])


def test_audit_cli_says_why_a_model_is_not_scored(models_dir, tmp_path):
    out = tmp_path / "audit.json"
    p = subprocess.run([sys.executable, "-m", "poison.audit", TINY, "--base", TINY, "--audit", "adapter_stats",
                        "--prompts", "2", "--sources", "gsm8k", "--models-dir", str(models_dir), "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "not scored: " in p.stdout and "has no LoRA adapter" in p.stdout
    assert json.loads(out.read_text())["score"] is None
