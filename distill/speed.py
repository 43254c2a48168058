"""The fast training path: options that change how fast a step runs, never what it computes.

Three options of ``train`` (``TrainSettings``), each left out of the stage cache keys (like ``train.packing``):

- ``labelled_only`` (``auto``: on, except on CUDA and with several processes): the LM head and the cross-entropy
  run only on the positions whose next-token label is set (45 % of the default teacher's tokens), through PyTorch's
  ``torch.nn.functional.linear_cross_entropy``, in the numerics of the path it replaces (SFT: the head's product in
  float32, as TRL's CPU head; KD and QCRD: the model's own autocast head, the softmax in float32). The loss is the
  same sum over the same positions, divided by the same token count. TRL's own fused head (``fused_lm_head``)
  compacts labelled positions only on Triton devices and, on CPU, scores every position with entropy and top-1
  extras: ``auto`` leaves CUDA to TRL's kernel.
  SFT, KD (TRL GKD: student and teacher logits only at labelled positions) and QCRD (its per-sequence
  cross-entropies) each have this path. Heads with a logit scale or soft-capping (Gemma 2, Granite, ...) keep TRL's
  path.
- ``compile`` (``auto``: on CPU for jobs of ``COMPILE_MIN_STEPS`` steps or more, where it pays): the backbone runs
  under ``torch.compile`` (inductor, dynamic shapes: padding-free batches change length every step). Inductor's
  caches live under the testbed's cache folder (``TORCHINDUCTOR_CACHE_DIR``); the log says how long the first step
  took, which includes the compile.
- ``frozen_weights`` (``auto``: ``compute`` when compiled, else ``float32``): ``compute`` loads the frozen base in
  the compute dtype (bf16 where the run trains in bf16; LoRA weights stay float32 through PEFT's adapter autocast), so
  no weight is cast on every step; ``float32`` keeps the float32 copy. The artifact is the float32 adapter, and
  its merged weights are derived by merging it into a float32 copy of the base (poison.ground.engines.merged), so
  neither depends on this option.

``bench/bench_train_throughput.py`` measures each option alone and all together against bare TRL and against the
machine's own matrix rate.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("poison")

#: ``compile: auto`` compiles a CPU job of at least this many steps. Measured by bench/bench_train_throughput.py on
#: the default teacher's rows (2-core AVX-512-BF16 CPU without AMX, bf16): the compile's first step took 268-270 s
#: and compiled steps ran at 4.7 s against 5.1 s for labelled-only eager steps, so it pays back after ~675 steps
COMPILE_MIN_STEPS = 700


def resolve(train: Any, *, device: str, dtype: str, finetune: str = "lora", steps: Optional[int] = None,
            processes: int = 1) -> dict[str, Any]:
    """The options in effect for one training job: ``{"labelled_only": bool, "compile": bool,
    "frozen_weights": "float32" | "compute"}``. Several processes (DDP) keep TRL's loss: the labelled path calls
    the backbone directly, and DDP synchronises gradients only through its own forward."""
    lo = getattr(train, "labelled_only", "auto")
    labelled = (device != "cuda") if lo == "auto" else bool(lo)
    labelled = labelled and processes == 1
    comp = getattr(train, "compile", "auto")
    if comp == "auto":
        compiled = device == "cpu" and steps is not None and steps >= COMPILE_MIN_STEPS
    else:
        compiled = bool(comp)
    fw = getattr(train, "frozen_weights", "auto")
    if fw == "auto":  # eager steps were not faster with a bf16 base (0.93x, 1.01x); compiled, it is kept as the
        # bench's "all" arm measured it (compiled with a float32 base was not measured apart)
        fw = "compute" if (finetune == "lora" and dtype == "bfloat16" and compiled) else "float32"
    if finetune != "lora" or dtype == "float32":
        fw = "float32"  # full fine-tuning trains every weight in float32; QLoRA's base is 4-bit
    return {"labelled_only": labelled, "compile": compiled, "frozen_weights": fw}


def use_cache_dir(cache_dir: str | Path) -> None:
    """Keep inductor's compile caches under the testbed's cache (a user's own setting wins)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache_dir).expanduser().resolve() / "inductor"))


# ------------------------------------------------------------------------------------------------ model parts
def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def plain_head(model: Any) -> bool:
    """True when logits are exactly ``lm_head(hidden)``: no logit scale, soft-capping or bias."""
    if hasattr(model, "module"):  # DDP / DeepSpeed wrappers: their forward must run (see ``resolve``)
        return False
    lm = causal_lm(model)
    cfg = lm.config.get_text_config()
    for k in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
              "logits_scaling"):
        if getattr(cfg, k, None) not in (None, 1, 1.0):
            return False
    head = lm.get_output_embeddings()
    return head is not None and getattr(head, "bias", None) is None and hasattr(head, "weight")


def backbone(model: Any) -> Any:
    lm = causal_lm(model)
    return getattr(lm, lm.base_model_prefix)


def hidden_at_labels(model: Any, inputs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(hidden states at the labelled positions [n, d], their next-token labels [n], the mask [B, T-1]) of one
    forward pass of the backbone."""
    kw = {k: v for k, v in inputs.items() if k not in ("labels", "shift_labels", "completion_mask",
                                                        "assistant_masks")}
    kw["use_cache"] = False
    hidden = backbone(model)(**kw).last_hidden_state[:, :-1]
    labels = inputs["labels"][:, 1:].to(hidden.device)
    mask = labels != -100
    return hidden[mask], labels[mask], mask


def labelled_ce(model: Any, hidden: Any, targets: Any, reduction: str = "sum", fp32_head: bool = False) -> Any:
    """Cross-entropy of the LM head's logits at ``hidden`` against ``targets``, the logits never kept whole outside
    ``torch.nn.functional.linear_cross_entropy``. ``fp32_head``: the head's product in float32 outside autocast, as
    TRL's fused SFT head computes it on CPU (logits rounded to bf16 would shift the loss by ~1 %); otherwise the
    model's own numerics (the head under autocast, the softmax in float32)."""
    import torch
    import torch.nn.functional as F

    weight = causal_lm(model).get_output_embeddings().weight
    if not fp32_head:
        return F.linear_cross_entropy(hidden, weight, targets, reduction=reduction)
    with torch.autocast(hidden.device.type, enabled=False):
        return F.linear_cross_entropy(hidden.float(), weight.float(), targets, reduction=reduction)


def labelled_logits(model: Any, hidden: Any) -> Any:
    return causal_lm(model).get_output_embeddings()(hidden)


# ------------------------------------------------------------------------------------------------ compile
def compile_backbone(model: Any) -> None:
    """Compile the backbone in place (``nn.Module.compile``, inductor, dynamic shapes); the LM head and the loss stay
    eager (their labelled-position shapes change every step)."""
    import torch

    bb = backbone(model)
    if getattr(bb, "_compiled_call_impl", None) is not None:
        return
    bb.compile(dynamic=True)
    log.info("torch.compile: the %s backbone is compiled on its first step (inductor cache %s)",
             type(bb).__name__, os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default"))
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)


def first_step_callback():
    """A TrainerCallback logging how long the first step took (the compile, when compiled)."""
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        def __init__(self):
            self.t0: Optional[float] = None
            self.first_step_s: Optional[float] = None

        def on_step_begin(self, args, state, control, **kw):
            if self.t0 is None:
                self.t0 = time.time()

        def on_step_end(self, args, state, control, **kw):
            if self.first_step_s is None and self.t0 is not None:
                self.first_step_s = time.time() - self.t0
                log.info("first training step: %.1f s (includes the compile when compiled)", self.first_step_s)

    return FirstStep()


def prepare(trainer: Any, opts: dict[str, Any]) -> Any:
    """Apply the resolved options to a built trainer (compile and the first-step log); returns the callback, whose
    ``first_step_s`` goes into the training summary."""
    trainer.speed = opts
    if opts["compile"]:
        compile_backbone(trainer.model)
    cb = first_step_callback()
    trainer.add_callback(cb)
    return cb
