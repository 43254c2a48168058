"""The training-dynamics defense on a tiny random-init model: a loss curve per sample (before training and after each
epoch of the proxy's LoRA fine-tune), its first point equal to the model's own per-sample loss, one finite score per
sample, each score definition checked by hand on the recorded curves, and the per-sample gradient norms of
``torch.func`` against one backward pass per sample. The real-model check (poisoned twin above its clean one) is
``tests/test_defenses.py``'s test over every defense."""

import numpy as np
import pytest

from defenses.base import run_defense
from defenses.dynamics import curve_scores
from poison.ground.core import registry
from poison.ground.engines.context import RunContext
from poison.ground.engines.models import load_causal_lm
from tests.test_defenses import SAMPLES

TINY = "tiny-random-llama:2:64"


@pytest.fixture(scope="module")
def ctx(models_dir, tmp_path_factory) -> RunContext:
    return RunContext.standalone(models_dir=models_dir, cache_dir=tmp_path_factory.mktemp("dyn"), device="cpu",
                                 dtype="float32")


@pytest.fixture(scope="module")
def recorded(ctx):
    """One scoring of the twins on the tiny model: 2 epochs, gradient norms too."""
    return run_defense("training_dynamics", SAMPLES, ctx=ctx,
                       args={"model": TINY, "epochs": 2, "batch_size": 2, "gradient": True, "progress": False})


def _rows_and_model(ctx, lora_scale=0.0):
    """The tiny model's encoded twins, and the model with a LoRA adapter whose B is random (``lora_scale`` > 0)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from defenses.perplexity import encode_sample

    model, tok = load_causal_lm(ctx.model(TINY), dtype="float32")
    rows = [encode_sample(tok, s, 384)[:2] for s in SAMPLES]
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name and lora_scale:
            torch.nn.init.normal_(p, std=lora_scale)
    return rows, model, tok.pad_token_id


def _hf_loss(model, rows):
    """Each row's loss as transformers computes it from labels (mean over the response tokens), one row at a time."""
    import torch

    out = []
    with torch.inference_mode():
        for c, r in rows:
            ids = torch.tensor([c + r])
            labels = torch.tensor([[-100] * len(c) + r])
            out.append(float(model(input_ids=ids, labels=labels).loss))
    return np.array(out)


def test_losses_are_recorded_before_training_and_after_every_epoch(recorded, ctx):
    d = recorded.defense
    assert d.curves.shape == (len(SAMPLES), 3)  # before training + 2 epochs
    assert np.all(np.isfinite(d.curves)) and np.all(d.curves > 0)
    # before training the adapter is zero: the curve starts at the proxy's own per-sample loss
    rows, model, _ = _rows_and_model(ctx)
    np.testing.assert_allclose(d.curves[:, 0], _hf_loss(model.eval(), rows), rtol=1e-5)
    # the proxy learns the samples: the mean loss falls with every epoch
    mean = d.curves.mean(axis=0)
    assert mean[1] < mean[0] and mean[2] < mean[1], mean
    assert recorded.info["mean_loss_per_epoch"] == [round(float(v), 4) for v in mean]
    assert len(recorded.info["curves"]) == len(SAMPLES) and recorded.info["model"].endswith("tiny-random-llama_2_64")


def test_one_finite_score_per_sample_and_the_definitions_by_hand(recorded):
    s, c = recorded.scores, recorded.defense.curves
    assert s.shape == (len(SAMPLES),) and np.all(np.isfinite(s))
    for i, (l0, l1, l2) in enumerate(c):
        auc = ((1 + l1 / l0) / 2 + (l1 / l0 + l2 / l0) / 2) / 2  # trapezoids of L_t / L_0, over 2 epochs
        assert s[i] == pytest.approx(auc, rel=1e-12)  # the default score
        assert curve_scores(c, "final_loss")[i] == l2
        assert curve_scores(c, "loss_drop")[i] == pytest.approx(l0 - l2, rel=1e-12)
    flat = np.array([[2.0, 2.0, 2.0], [2.0, 1.0, 0.0]])  # never learned / learned linearly to zero
    np.testing.assert_allclose(curve_scores(flat, "auc"), [1.0, 0.5])
    with pytest.raises(ValueError, match="score 'margin'"):
        curve_scores(flat, "margin")


def test_grad_norm_score_and_gradient_norms(recorded, ctx):
    g = recorded.defense.grad_norms
    assert g.shape == (len(SAMPLES),) and np.all(np.isfinite(g)) and np.all(g > 0)
    assert recorded.info["grad_norms"] == [round(float(v), 6) for v in g]


def test_vmap_gradient_norms_match_one_backward_pass_per_sample(ctx):
    import torch

    d = registry.get("defense", "training_dynamics").build({"model": TINY, "batch_size": 3}, ctx=ctx)
    rows, model, pad = _rows_and_model(ctx, lora_scale=0.02)
    got = d.gradient_norms(model, rows, pad)
    want = []
    params = [p for p in model.parameters() if p.requires_grad]
    for c, r in rows:
        out = model(input_ids=torch.tensor([c + r]), labels=torch.tensor([[-100] * len(c) + r]))
        grads = torch.autograd.grad(out.loss, params)
        want.append(float(torch.sqrt(sum((x ** 2).sum() for x in grads))))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # and the batched loss pass (length-sorted, right-padded, logits kept only where the response is) agrees with
    # transformers' own loss with a non-zero adapter
    np.testing.assert_allclose(d.losses(model, rows, pad), _hf_loss(model.eval(), rows), rtol=1e-5)


def test_bad_arguments_name_the_field(ctx):
    with pytest.raises(registry.PluginError, match=r"score"):
        run_defense("training_dynamics", SAMPLES, args={"score": "margin"}, ctx=ctx)
    with pytest.raises(registry.PluginError, match=r"epochs"):
        run_defense("training_dynamics", SAMPLES, args={"epochs": 0}, ctx=ctx)
    d = registry.get("defense", "training_dynamics").build({}, ctx=ctx)
    assert d.reference_model == "smollm2-135m-instruct" and d.score([]).shape == (0,)
