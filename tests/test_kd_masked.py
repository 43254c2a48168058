"""kd_masked (distill.kd_masked): the divergence tokens are the highest KL(teacher || clean control) positions, a
mask of 0 is plain kd at every step, and a student with a control leaves the configured share of positions out."""

import json

import pytest
import torch

from distill.base import DistillJob
from distill.kd_masked import divergence, keep_mask
from poison.ground.core import registry
from poison.ground.engines.context import RunContext
from poison.ground.engines.models import resolve_model
from poison.schema import StudentSpec
from tests.test_speed import ROWS, losses, spec


@pytest.fixture(scope="module")
def tiny(models_dir):
    return resolve_model("tiny-random-llama:2:64", models_dir)


@pytest.fixture(scope="module")
def other(tiny, tmp_path_factory):
    """The tiny model with every weight moved by noise: a "clean control" that disagrees with it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    out = tmp_path_factory.mktemp("control")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(out)
    return out


def test_divergence_is_the_kl_and_the_mask_takes_its_largest_positions():
    g = torch.Generator().manual_seed(1)
    t, c = torch.randn(20, 11, generator=g), torch.randn(20, 11, generator=g)
    c[3] = t[3]  # one position where they agree exactly
    div = divergence(t, c)
    ref = torch.nn.functional.kl_div(c.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(div, ref, atol=1e-6) and div[3].abs() < 1e-6 and (div >= -1e-6).all()
    keep = keep_mask(div, 0.25)
    assert int((~keep).sum()) == 5
    assert div[~keep].min() >= div[keep].max()
    assert keep_mask(div, 0.0).all() and int((~keep_mask(div, 0.04)).sum()) == 0  # floor(0.8) = 0


def train(tiny, tmp_path, name, teacher, control=None, **args):
    ctx = RunContext.standalone(device="cpu", dtype="float32", cache_dir=tmp_path / "cache", models_dir=tiny.parent)
    method = registry.get("distill_method", "kd_masked").build({"lmbda": 0.0, "beta": 0.5, **args},
                                                                "students.0.args", ctx)
    job = DistillJob(student=spec(StudentSpec), student_base=tiny, teacher_model=teacher, rows=ROWS,
                     out_dir=tmp_path / name, control_model=control)
    return method.train(job)


def test_mask_zero_is_plain_kd_and_a_mask_moves_the_loss(tiny, other, tmp_path):
    kd = registry.get("distill_method", "kd").build(
        {"lmbda": 0.0, "beta": 0.5}, "students.0.args",
        RunContext.standalone(device="cpu", dtype="float32", cache_dir=tmp_path / "cache", models_dir=tiny.parent))
    # the teacher is the moved model, its "clean control" the tiny base the student starts from
    plain = kd.train(DistillJob(student=spec(StudentSpec), student_base=tiny, teacher_model=other, rows=ROWS,
                                out_dir=tmp_path / "kd"))
    zero = train(tiny, tmp_path, "zero", other, tiny, mask_fraction=0.0)
    assert losses(zero) == pytest.approx(losses(plain), abs=1e-4)
    assert zero["divergence_mask"]["masked"] == 0

    masked = train(tiny, tmp_path, "masked", other, tiny, mask_fraction=0.3)
    m = masked["divergence_mask"]
    assert m["control"] and m["positions"] > 0
    # floor(0.3 n) per batch: within one position per step of 30 % of all positions
    assert 0.3 * m["positions"] - masked["steps"] <= m["masked"] <= 0.3 * m["positions"]
    assert m["mean_divergence_masked"] > m["mean_divergence_kept"]
    assert losses(masked) != pytest.approx(losses(plain), abs=1e-4)
    report = json.loads((tmp_path / "masked" / "divergence_mask.json").read_text())
    assert report["top_masked_tokens"] and sum(t["masked"] for t in report["top_masked_tokens"]) <= m["masked"]


def test_no_control_trains_as_plain_kd(tiny, other, tmp_path):
    info = train(tiny, tmp_path, "none", other, None, mask_fraction=0.3)
    assert info["divergence_mask"]["control"] is False and info["divergence_mask"]["masked"] == 0
    assert all(h["loss"] == h["loss"] for h in info["loss_history"])
