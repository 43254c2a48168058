"""Distillation methods: QCRD's loss and discriminator, GKD config validation, a tiny end-to-end run of every method."""

import json
import math

import pandas as pd
import pytest
import torch

from distill.qcrd import (Discriminator, QCRDConfig, chosen_negative, closest_positive, hinge, negative_alpha,
                          qcrd_loss, quality_weights, self_consistency)
from poison.ground.core import registry
from poison.config import ConfigError, load_config
from poison.runner import run_config
from tests.conftest import TINY_CONFIG, dirs


# ------------------------------------------------------------------------------------------------ QCRD loss
def test_closest_positive_and_chosen_negative():
    assert closest_positive([2.1, 0.7, 1.5]) == 1
    assert chosen_negative([2.1, 0.7, 3.5], "farthest") == 2
    assert chosen_negative([2.1, 0.7, 3.5], "closest") == 1


def test_hinge_is_zero_beyond_delta():
    ce = torch.tensor([0.5, 2.9, 3.0, 4.2])
    h = hinge(ce, 3.0)
    assert h.tolist() == pytest.approx([2.5, 0.1, 0.0, 0.0], abs=1e-6)
    # no gradient flows from a negative already beyond the margin
    x = torch.tensor([4.2], requires_grad=True)
    hinge(x, 3.0).sum().backward()
    assert x.grad.item() == 0.0


def test_weights_move_monotonically_with_discriminator_score():
    scores = torch.linspace(0, 1, 11)
    w_pos, w_neg = quality_weights(scores, 0.2)
    assert torch.all(w_pos[1:] > w_pos[:-1]) and torch.all(w_neg[1:] < w_neg[:-1])
    assert w_pos[0].item() == pytest.approx(0.8) and w_pos[-1].item() == pytest.approx(1.2)
    assert w_neg[5].item() == pytest.approx(1.0)


def test_negative_weight_decays_as_configured():
    cfg = QCRDConfig()
    assert [negative_alpha(cfg.alpha_neg, cfg.negative_decay, e) for e in range(3)] == pytest.approx(
        [0.5, 0.45, 0.405])
    # the negative term of the loss shrinks by exactly that factor from one epoch to the next
    one, zero = torch.ones(2), torch.zeros(2)
    args = (torch.zeros(2), zero, torch.zeros(2), one, torch.tensor([1.0, 2.0]), one, one, cfg)
    l0, p0 = qcrd_loss(*args, epoch=0)
    l1, p1 = qcrd_loss(*args, epoch=1)
    assert p0["neg_hinge"] == pytest.approx(1.5) and l0.item() == pytest.approx(0.5 * 1.5)
    assert l1.item() == pytest.approx(0.45 * 1.5)


def test_qcrd_loss_combines_terms():
    cfg = QCRDConfig()
    label_ce, has_label = torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0])  # second item: free text, no label
    pos_ce, w_pos = torch.tensor([2.0, 4.0]), torch.tensor([1.2, 0.8])
    neg_ce, has_neg, w_neg = torch.tensor([1.0, 5.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.9, 1.1])
    loss, parts = qcrd_loss(label_ce, has_label, pos_ce, w_pos, neg_ce, has_neg, w_neg, cfg, epoch=0)
    expect = 0.5 * (1.0 / 2) + 0.5 * ((1.2 * 2.0 + 0.8 * 4.0) / 2) + 0.5 * ((0.9 * 2.0 + 0) / 2)
    assert loss.item() == pytest.approx(expect)


def test_self_consistency_splits_on_majority_answer():
    s = ["... so the answer is 12", "12 apples #### 12", "the total is 15", "I cannot tell"]
    maj, pos, neg = self_consistency(s, "number_match")
    assert maj == "12" and pos == [0, 1] and neg == [2, 3]
    maj, pos, neg = self_consistency(["a summary", "another"], "rouge_l")  # free text: no consistency signal
    assert maj is None and pos == [0, 1] and neg == []


def test_discriminator_update_step_learns_and_scores():
    d = Discriminator(_minilm(), hidden=32, lr=5e-3, seed=0)
    pos = ["Q: 2+3? Two plus three is five. The answer is 5.", "Q: 4*2? Four times two is eight. Answer: 8.",
           "Q: 9-4? Nine minus four leaves five. The answer is 5."]
    neg = ["Q: 2+3? banana sky # ## purple 17 lorem", "Q: 4*2? zzz qqq ??? the the the"]
    before = [p.detach().clone() for p in d.head.parameters()]
    log = d.train_steps(pos, neg, steps=60, batch_size=8, mask_prob=0.15)
    assert log["steps"] == 60 and log["last_loss"] < log["first_loss"]
    assert any(not torch.equal(a, b) for a, b in zip(before, d.head.parameters()))
    sp, sn = d.score(pos), d.score(neg)
    assert min(sp) > max(sn)
    assert all(0.0 <= s <= 1.0 for s in sp + sn)


def _minilm():
    from poison.ground.engines.models import resolve_encoder

    return resolve_encoder("all-minilm-l6-v2")


# ------------------------------------------------------------------------------------------------ GKD config
@pytest.mark.parametrize("bad, path", [("beta: 1.5", "students.0.args.beta"), ("lmbda: -0.1", "students.0.args.lmbda"),
                                       ("temprature: 0.9", "students.0.args.temprature")])
def test_kd_config_validation(tmp_path, bad, path):
    cfg = TINY_CONFIG.replace("    args: {min_response_words: 0}", f"    method: kd\n    args: {{{bad}}}")
    p = tmp_path / "c.yaml"
    p.write_text(cfg)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert path in str(e.value)


def test_kd_needs_shared_tokenizer(tmp_path, models_dir):
    # a student with a different vocabulary is refused before any stage runs, naming the field
    from transformers import AutoTokenizer

    from poison.ground.engines.models import resolve_model

    other = tmp_path / "other-tok-model"
    src = resolve_model("tiny-random-llama:1:64", models_dir)
    import shutil

    shutil.copytree(src, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<extra_kd_token>"])
    tok.save_pretrained(other)
    cfg = TINY_CONFIG.replace('    model: "tiny-random-llama:1:64"\n    args: {min_response_words: 0}',
                              f'    model: "{other}"\n    method: kd\n    args: {{}}')
    p = tmp_path / "c.yaml"
    p.write_text(cfg)
    flat = dirs(tmp_path, models_dir)
    with pytest.raises(ConfigError) as e:
        run_config(str(p), [flat[i + 1] for i in range(0, len(flat), 2)], quiet=True)
    assert "students.0.model" in str(e.value) and "tokenizer" in str(e.value)
    assert not (tmp_path / "cache" / "stages").exists() or not list((tmp_path / "cache" / "stages").iterdir())


# ------------------------------------------------------------------------------------------------ end to end
METHODS_TINY = TINY_CONFIG.replace("""students:
  - name: sft
    model: "tiny-random-llama:1:64"
    args: {min_response_words: 0}  # a random-init teacher may answer with nothing
    train: {epochs: 1, batch_size: 4, max_length: 192}""", """students:
  - name: sft
    model: "tiny-random-llama:1:64"
    args: {min_response_words: 0}
    train: {epochs: 1, batch_size: 4, max_length: 192}
  - name: kd
    method: kd
    model: "tiny-random-llama:1:64"
    args: {min_response_words: 0, lmbda: 0.5, max_new_tokens: 8}
    train: {epochs: 1, batch_size: 4, max_length: 192}
  - name: qcrd
    method: qcrd
    model: "tiny-random-llama:1:64"
    args: {k_samples: 3, teacher_max_new_tokens: 16, negative_max_new_tokens: 8, checkpoint_lag: 1,
           disc_pretrain_steps: 20, disc_online_steps: 5}
    train: {epochs: 2, batch_size: 4, max_length: 192}
  - name: kd_masked
    method: kd_masked
    model: "tiny-random-llama:1:64"
    args: {min_response_words: 0, lmbda: 0.0, mask_fraction: 0.2}
    train: {epochs: 1, batch_size: 4, max_length: 192}""")


def test_every_method_end_to_end_tiny(tmp_path, models_dir):
    assert {"sft", "kd", "qcrd"} <= set(registry.names("distill_method"))
    p = tmp_path / "m.yaml"
    p.write_text(METHODS_TINY)
    flat = dirs(tmp_path, models_dir)
    rd, m = run_config(str(p), [flat[i + 1] for i in range(0, len(flat), 2)], quiet=True)
    for name in ("sft", "kd", "qcrd", "kd_masked"):
        assert m["models"][f"student:{name}"]["method"] == name
        assert {r["split"] for r in m["bias_rates"] if r["model"] == f"student:{name}"} == {"target", "other"}
    samples = pd.read_parquet(rd / "samples.parquet")
    assert {"student:sft", "student:kd", "student:qcrd"} <= set(samples.model)
    st = json.loads((rd / "stages.json").read_text())
    qdir = st["student:qcrd"]["path"]
    info = json.loads(open(f"{qdir}/train_log.json").read())
    assert info["teacher_samples"] == 3 and info["items"] == 6 + 4
    assert info["discriminator"][0]["when"] == "pretrain" and len(info["refreshes"]) == 2  # one per epoch
    assert all(math.isfinite(h["loss"]) for h in info["loss_history"])
    kd = json.loads(open(f"{st['student:kd']['path']}/train_log.json").read())
    assert kd["steps"] > 0 and all(math.isfinite(h["loss"]) for h in kd["loss_history"])
    # kd_masked compares the teacher with its clean control: the baseline is trained first and joins its key
    log = json.loads(open(f"{st['student:kd_masked']['path']}/train_log.json").read())
    masked = log["divergence_mask"]  # floor(0.2 n) of each batch's n labelled positions
    n = masked["positions"]
    assert masked["control"] and 0.2 * n - log["steps"] <= masked["masked"] <= 0.2 * n
    assert masked["mean_divergence_masked"] >= masked["mean_divergence_kept"]
    marker = json.loads(open(f"{st['student:kd_masked']['path']}/_stage.json").read())
    assert marker["inputs"]["control"] == st["clean_control"]["key"]  # baseline.kind is base: trained for it
    assert "eval:clean_control" not in st  # and not evaluated as a model of the run


def test_qlora_teacher_trains_on_cpu(tmp_path, models_dir):
    """4-bit bitsandbytes QLoRA: the base is quantised (Linear4bit), the adapter trains and is saved; its merged
    folder, derived on demand, merges into an unquantised copy of the base."""
    import bitsandbytes as bnb

    from distill.trainers import finetune, load_trainable
    from poison.schema import TeacherConfig
    from poison.ground.engines.models import resolve_model

    base = resolve_model("tiny-random-llama:2:64", models_dir)
    ft = TeacherConfig(model="x", finetune="qlora", train={"epochs": 1, "batch_size": 4, "max_length": 64})
    model, _, peft_cfg = load_trainable(base, ft, dtype="float32", device="cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) and peft_cfg is not None
    rows = [{"prompt": f"What is {i} plus {i}?", "response": f"{i} plus {i} is {2 * i}."} for i in range(8)]
    info = finetune(base, rows, ft, tmp_path / "out", dtype="float32", device="cpu")
    assert info["finetune"] == "qlora" and info["steps"] == 2 and math.isfinite(info["final_loss"] or 0.0)
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    from poison.ground.engines.merged import ensure_merged

    assert not (tmp_path / "out" / "model").exists()
    merged = AutoModelForCausalLM.from_pretrained(ensure_merged(tmp_path / "out", base, dtype="float32",
                                                                merge_in="float32"))
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
