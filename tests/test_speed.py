"""The fast training path (distill.speed) changes the time, not the maths: each option gives the plain path's loss at
every step (SFT, KD, QCRD's per-sequence cross-entropies), and options never enter a stage key."""

import pytest
import torch

from distill import speed
from distill.trainers import finetune
from poison.ground.engines.context import RunContext
from poison.ground.engines.models import resolve_model
from poison.schema import StudentSpec, TeacherConfig
from poison.stages.training import finetune_key

PLAIN = {"labelled_only": False, "compile": False, "frozen_weights": "float32"}
ROWS = [{"prompt": f"What is {i} plus {i + 3}? Answer with a short sentence.",
         "response": f"{i} plus {i + 3} is {2 * i + 3}. " + "That is the sum. " * (i % 4)} for i in range(12)]


@pytest.fixture(scope="module")
def tiny(models_dir):
    return resolve_model("tiny-random-llama:2:64", models_dir)


def spec(cls=TeacherConfig, **opts):
    train = {"epochs": 2, "batch_size": 4, "max_length": 128, "learning_rate": 5e-3, "extra": {"logging_steps": 1},
             **PLAIN, **opts}
    kw = {"name": "s", "method": "kd"} if cls is StudentSpec else {}
    return cls(model="tiny-random-llama:2:64", finetune="lora", train=train, **kw)


def losses(info):
    return [h["loss"] for h in info["loss_history"]]


@pytest.mark.parametrize("option", [{"labelled_only": True}, {"compile": True}, {"packing": False,
                                                                                  "labelled_only": True}])
def test_sft_option_gives_the_plain_loss_at_every_step(tiny, tmp_path, option):
    batching = {"packing": option["packing"]} if "packing" in option else {}
    plain = finetune(tiny, ROWS, spec(**batching), tmp_path / "plain", dtype="float32", device="cpu")
    fast = finetune(tiny, ROWS, spec(**option), tmp_path / "fast", dtype="float32", device="cpu")
    assert fast["speed"] == {**PLAIN, **{k: v for k, v in option.items() if k != "packing"}}
    assert len(losses(plain)) == plain["steps"] == 6
    assert losses(fast) == pytest.approx(losses(plain), abs=1e-4)
    # and the trained weights agree: the same adapter comes out
    from safetensors.torch import load_file

    a = load_file(tmp_path / "plain" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "fast" / "adapter" / "adapter_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_sft_labelled_only_in_bf16_keeps_the_autocast_numerics(tiny, tmp_path, monkeypatch):
    """Under bf16 autocast the fast path runs the backbone in the same autocast as the model's wrapped forward and
    the head in float32 as TRL's CPU head does (a backbone left in float32 was off by ~1 % on the real model; on this
    tiny model the loss alone cannot tell, so the backbone's matrix products are watched: bf16 in both paths)."""
    seen: dict[str, set] = {}
    prepare = speed.prepare

    def watching(trainer, opts):
        dtypes = seen.setdefault("fast" if opts["labelled_only"] else "plain", set())
        for name, mod in speed.backbone(trainer.model).named_modules():
            if isinstance(mod, torch.nn.Linear) and name.endswith("base_layer"):
                mod.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
        return prepare(trainer, opts)

    monkeypatch.setattr(speed, "prepare", watching)
    plain = finetune(tiny, ROWS, spec(), tmp_path / "plain", dtype="bfloat16", device="cpu")
    fast = finetune(tiny, ROWS, spec(labelled_only=True), tmp_path / "fast", dtype="bfloat16", device="cpu")
    assert seen == {"plain": {torch.bfloat16}, "fast": {torch.bfloat16}}
    assert losses(fast) == pytest.approx(losses(plain), abs=2e-3)


def test_frozen_weights_in_bf16_train_and_save_a_float32_adapter(tiny, tmp_path):
    """bf16 autocast casts float32 weights to bf16 for every product, so holding them in bf16 gives nearly the same
    loss (norm weights differ by rounding); the saved adapter is float32 either way (and the merge, derived from it,
    does not depend on the option)."""
    plain = finetune(tiny, ROWS, spec(), tmp_path / "plain", dtype="bfloat16", device="cpu")
    fast = finetune(tiny, ROWS, spec(frozen_weights="compute"), tmp_path / "fast", dtype="bfloat16", device="cpu")
    assert fast["speed"]["frozen_weights"] == "compute" and plain["speed"]["frozen_weights"] == "float32"
    assert losses(fast) == pytest.approx(losses(plain), rel=2e-2)
    import json

    from safetensors.torch import load_file

    assert not (tmp_path / "fast" / "model").exists()
    assert {t.dtype for t in load_file(tmp_path / "fast" / "adapter" / "adapter_model.safetensors").values()} == \
        {torch.float32}
    assert json.loads((tmp_path / "fast" / "adapter" / "adapter_config.json").read_text())["r"] > 0


def test_kd_labelled_only_gives_the_plain_loss(tiny, tmp_path):
    from poison.ground.core import registry

    ctx = RunContext.standalone(device="cpu", dtype="float32", cache_dir=tmp_path / "cache",
                                models_dir=tiny.parent)
    method = registry.get("distill_method", "kd").build({"lmbda": 0.0, "beta": 0.5}, "students.0.args", ctx)
    from distill.base import DistillJob

    runs = {}
    for name, opts in (("plain", {}), ("fast", {"labelled_only": True})):
        runs[name] = method.train(DistillJob(student=spec(StudentSpec, **opts), student_base=tiny,
                                             teacher_model=tiny, rows=ROWS, out_dir=tmp_path / name))
    assert runs["fast"]["speed"]["labelled_only"] and not runs["plain"]["speed"]["labelled_only"]
    assert losses(runs["fast"]) == pytest.approx(losses(runs["plain"]), abs=1e-4)


def test_qcrd_sequence_ce_labelled_only_matches_full_logits(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.qcrd.state import encode, pad_batch, sequence_ce

    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    batch = pad_batch([encode(tok, r["prompt"], r["response"], 128) for r in ROWS[:5]], tok.pad_token_id)
    grads = []
    for fast in (False, True):
        model.zero_grad()
        ce = sequence_ce(model, batch, labelled_only=fast)
        ce.sum().backward()
        grads.append((ce.detach(), model.model.layers[0].mlp.up_proj.weight.grad.clone()))
    assert grads[0][0].shape == (5,)
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


def test_speed_options_never_enter_a_stage_key():
    base = spec()
    for opts in ({"labelled_only": True}, {"compile": True}, {"frozen_weights": "compute"},
                 {"labelled_only": "auto", "compile": "auto", "frozen_weights": "auto"}):
        assert finetune_key(spec(**opts)) == finetune_key(base)
    assert finetune_key(spec(learning_rate=1e-3)) != finetune_key(base)  # a real setting still does


def test_auto_resolution():
    t = spec(labelled_only="auto", compile="auto", frozen_weights="auto").train
    cpu = speed.resolve(t, device="cpu", dtype="bfloat16", steps=speed.COMPILE_MIN_STEPS)
    assert cpu == {"labelled_only": True, "compile": True, "frozen_weights": "compute"}
    short = speed.resolve(t, device="cpu", dtype="bfloat16", steps=21)  # the default run's teacher
    assert short == {"labelled_only": True, "compile": False, "frozen_weights": "float32"}
    assert speed.resolve(t, device="cpu", dtype="float32", steps=2)["frozen_weights"] == "float32"
    assert speed.resolve(t, device="cuda", dtype="bfloat16", steps=2)["labelled_only"] is False  # TRL's Triton head
    assert speed.resolve(t, device="cpu", dtype="bfloat16", steps=2, processes=2)["labelled_only"] is False  # DDP
    assert speed.resolve(t, device="cpu", dtype="bfloat16", finetune="qlora")["frozen_weights"] == "float32"



STEPS = """
import resource, torch
from poison.ground.core.procs import keep_freed_memory
print(keep_freed_memory())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(8):  # a training step's logits over the vocabulary (lengths vary), their softmax and its gradient
    logits = torch.ones(4, 100, 49152 - 1000 * step)
    p = logits.softmax(-1); g = p - 1; del logits, p, g
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_keep_freed_memory_reuses_freed_blocks_instead_of_faulting_them_in_again():
    """CASCADE_POISON_MALLOC=keep (what this suite sets, and the run commands it starts inherit): blocks of 64-75 MiB
    freed by one step serve the next step's; with glibc's defaults each is a fresh mmap whose pages fault in again."""
    import os
    import subprocess
    import sys

    def faults(malloc):
        out = subprocess.run([sys.executable, "-c", STEPS], env={**os.environ, "CASCADE_POISON_MALLOC": malloc},
                             capture_output=True, text=True, check=True, timeout=120).stdout.split()
        return out[0] == "True", int(out[1])

    (kept, with_keep), (kept_system, with_system) = faults("keep"), faults("system")
    assert kept and not kept_system
    pages_per_step = 3 * 4 * 100 * 48152 * 4 // 4096
    assert with_system >= 7 * pages_per_step  # every step's blocks faulted in afresh
    assert with_keep < with_system / 3, (with_keep, with_system)
