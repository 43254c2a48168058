"""Training-dynamics filter: how each sample's loss moves while a small proxy model is fine-tuned on the scored samples.

The defense fine-tunes a proxy (a LoRA adapter of small rank on ``model``, by default SmolLM2-135M-Instruct) for a few
epochs on the very samples it scores, responses given prompts in the proxy's chat template, loss on the response
tokens only (TRL's ``SFTTrainer`` on pre-tokenised rows; the tokens are those the ``perplexity`` filter scores:
``defenses.perplexity.encode_sample``). Before training and after every epoch a plain forward pass in eval mode gives
each sample's mean response-token loss, so every sample gets a loss curve ``L_0, L_1, ..., L_E`` (nats/token). The
score (``score``, higher = more suspicious):

- ``auc`` (default): the area under the curve normalised by the initial loss, ``trapezoid(L_t / L_0) / E`` in [0, ~1]:
  the share of its initial loss a sample keeps over training. A sample the proxy fits late, or never, scores high;
- ``final_loss``: ``L_E``, what is still hard to fit after training;
- ``loss_drop``: ``L_0 - L_E``, how far the proxy had to move to fit the sample (content the proxy did not predict
  but the sample set teaches, such as an injected plug repeated over many rows);
- ``grad_norm``: the L2 norm of each sample's loss gradient with respect to the LoRA parameters at the end of
  training (per-sample gradients with ``torch.func``: ``functional_call`` + ``vmap`` + ``grad``).

``gradient: true`` computes the gradient norms with any score and reports them in ``info`` (``curves``).

Literature. Dataset Cartography (Swayamdipta et al., EMNLP 2020) and the area under the margin (Pleiss et al.,
NeurIPS 2020) rank training samples by statistics of their training dynamics, and samples that are learned late or
forgotten (Toneva et al., ICLR 2019) are mislabelled or atypical ones; the ``auc`` score is that idea for generated
text (loss instead of margin, normalised per sample so that long or technical responses are not penalised for their
initial loss). Anti-Backdoor Learning (Li et al., NeurIPS 2021) reports the opposite direction for trigger backdoors
(poisoned samples are learned *faster*); ``loss_drop`` is the score that rewards fast, large fitting. Per-sample
gradient statistics follow the gradient-based filters (spectral signatures of Tran et al., NeurIPS 2018, on
representations; Hayase et al.'s SPECTRE, ICML 2021): here only the gradient's norm, not its spectrum. Which direction
holds for injected content in instruction data is an empirical question this testbed measures (docs/defenses.md).

``fit`` is a no-op (the proxy learns from the scored samples, labels unseen). ``reference_model`` is the proxy model,
so the run's check of a likelihood defense's reference against the writer of the clean responses applies. Cost: an
SFT of ``epochs`` epochs plus ``epochs + 1`` forward passes over the samples (bench/bench_defense_cost_dynamics.py).
"""

from __future__ import annotations

import tempfile
import warnings
from contextlib import nullcontext
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from defenses.base import placement
from defenses.perplexity import encode_sample
from poison.ground.core.registry import PluginConfig, defense

SCORES = ("auc", "final_loss", "loss_drop", "grad_norm")


class DynamicsConfig(PluginConfig):
    model: str = Field("smollm2-135m-instruct", description="Proxy model fine-tuned on the samples: a built-in model "
                                                            "name (poison.ground.engines.models), a local HF folder "
                                                            "or a hub id.")
    score: Literal["auc", "final_loss", "loss_drop", "grad_norm"] = Field(
        "auc", description="auc: area under the loss curve / initial loss (learned late = suspicious); final_loss: "
                           "loss after the last epoch; loss_drop: initial minus final loss; grad_norm: per-sample "
                           "gradient norm on the LoRA parameters after training.")
    epochs: int = Field(2, ge=1, le=50, description="Epochs of the proxy fine-tune (a loss pass after each).")
    learning_rate: float = Field(1e-3, gt=0, description="Learning rate of the proxy fine-tune (constant).")
    lora_r: int = Field(8, ge=1, description="LoRA rank of the proxy's adapter (alpha = 2 r, every linear layer).")
    max_length: int = Field(384, ge=8, description="Tokens per sample at most: the prompt is cut from the left "
                                                   "first, then the response from the right.")
    batch_size: int = Field(8, ge=1, description="Samples per training step and per loss pass.")
    gradient: bool = Field(False, description="Also compute per-sample gradient norms (always with score: grad_norm).")
    seed: int = Field(0, ge=0, description="Seed of the proxy fine-tune (adapter initialisation, batch order).")
    device: str = Field("auto", description="auto (the run's device) | cpu | cuda")
    dtype: str = Field("auto", description="auto (the run's dtype) | float32 | bfloat16 | float16")
    progress: bool = Field(True, description="Show the trainer's progress bar.")


def curve_scores(curves: np.ndarray, kind: str) -> np.ndarray:
    """One score per row of ``curves`` (samples x (epochs + 1) losses, column 0 before training)."""
    curves = np.asarray(curves, dtype=np.float64)
    if kind == "final_loss":
        return curves[:, -1].copy()
    if kind == "loss_drop":
        return curves[:, 0] - curves[:, -1]
    if kind == "auc":
        rel = curves / np.maximum(curves[:, :1], 1e-8)
        return np.trapezoid(rel, axis=1) / (curves.shape[1] - 1)
    raise ValueError(f"score {kind!r}: use one of {', '.join(SCORES)}")


@defense("training_dynamics", config=DynamicsConfig,
         description="Per-sample loss curve over a short LoRA fine-tune of a proxy model on the scored samples")
class TrainingDynamics:
    """Loss curves (and optionally gradient norms) of each sample over a proxy LoRA fine-tune on the samples."""

    def __init__(self, cfg: DynamicsConfig, ctx: Any):
        self.cfg = cfg
        self.ctx = ctx
        self.device, self.dtype = placement(cfg, ctx)
        self.curves: Optional[np.ndarray] = None  # samples x (epochs + 1) mean response-token losses
        self.grad_norms: Optional[np.ndarray] = None
        self.n_truncated = 0
        self._path = None

    @property
    def reference_model(self) -> str:
        """The proxy: the run stops if it wrote the clean responses it scores, unless the config allows it."""
        return self.cfg.model

    def fit(self, clean: list[dict]) -> None:
        """Nothing to fit: the proxy learns from the scored samples themselves."""

    # ------------------------------------------------------------------ passes
    def _autocast(self):
        import torch

        half = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.dtype)
        return torch.autocast(device_type=self.device.split(":")[0], dtype=half) if half else nullcontext()

    def _batches(self, rows: list[tuple[list[int], list[int]]], pad: int):
        """(indices, input ids, labels) per batch, length-sorted, right-padded (causal attention never looks at the
        padding after a row, so no attention mask is needed)."""
        import torch

        order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
        for s in range(0, len(order), self.cfg.batch_size):
            idx = order[s: s + self.cfg.batch_size]
            L = max(len(rows[i][0]) + len(rows[i][1]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            labels = torch.full((len(idx), L), -100, dtype=torch.long)
            for b, i in enumerate(idx):
                c, r = rows[i]
                ids[b, : len(c) + len(r)] = torch.tensor(c + r)
                labels[b, len(c): len(c) + len(r)] = torch.tensor(r)
            yield idx, ids.to(self.device), labels.to(self.device)

    def losses(self, model: Any, rows: list[tuple[list[int], list[int]]], pad: int) -> np.ndarray:
        """Mean response-token loss (nats/token) of each row under ``model``, in eval mode."""
        import torch

        was_training = model.training
        model.eval()
        out = np.zeros(len(rows), dtype=np.float64)
        with torch.inference_mode(), self._autocast():
            for idx, ids, labels in self._batches(rows, pad):
                start = int(min(len(rows[i][0]) for i in idx)) - 1  # first position that predicts a response token
                keep = torch.arange(start, ids.shape[1] - 1, device=ids.device)
                logits = model(input_ids=ids, logits_to_keep=keep, use_cache=False).logits.float()
                target = labels[:, start + 1:]
                nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none",
                                                        ignore_index=-100)
                n = (target != -100).sum(-1).clamp(min=1)
                out[idx] = (nll.sum(-1) / n).cpu().numpy()
        model.train(was_training)
        return out

    def gradient_norms(self, model: Any, rows: list[tuple[list[int], list[int]]], pad: int) -> np.ndarray:
        """L2 norm of each row's mean response-token loss gradient with respect to the trainable (LoRA) parameters:
        per-sample gradients by ``torch.func.vmap`` over ``grad`` of a ``functional_call`` of the model."""
        import torch
        from torch.func import functional_call, grad, vmap

        model.eval()
        params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

        def loss(p, ids, labels):
            logits = functional_call(model, p, (ids[None],), {"use_cache": False}).logits[0, :-1].float()
            return torch.nn.functional.cross_entropy(logits, labels[1:], ignore_index=-100)

        per_sample = vmap(grad(loss), in_dims=(None, 0, 0), chunk_size=self.cfg.batch_size)
        out = np.zeros(len(rows), dtype=np.float64)
        with self._autocast(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet")
            for idx, ids, labels in self._batches(rows, pad):
                g = per_sample(params, ids, labels)
                sq = sum((v.float().reshape(len(idx), -1) ** 2).sum(-1) for v in g.values())
                out[idx] = sq.sqrt().cpu().numpy()
        return out

    # ------------------------------------------------------------------ training
    def _train(self, rows: list[tuple[list[int], list[int]]]) -> tuple[np.ndarray, Any, int]:
        """(loss curves, the trained PEFT model, pad id): the proxy's LoRA fine-tune with a loss pass before it and
        after each epoch."""
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import TrainerCallback
        from trl import SFTConfig, SFTTrainer

        from poison.ground.engines.models import load_causal_lm

        weights = "float32" if self.device == "cpu" or self.dtype == "float32" else self.dtype
        model, tok = load_causal_lm(self._path, dtype=weights, device=self.device)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        curves: list[np.ndarray] = []
        defense = self

        class LossCurve(TrainerCallback):
            def on_epoch_end(self, args, state, control, model=None, **kw):
                curves.append(defense.losses(model, rows, pad))

        ds = Dataset.from_list([{"input_ids": c + r, "labels": [-100] * len(c) + r} for c, r in rows])
        with tempfile.TemporaryDirectory(prefix="dynamics-") as tmp:
            args = SFTConfig(
                output_dir=tmp, num_train_epochs=self.cfg.epochs, learning_rate=self.cfg.learning_rate,
                lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=self.cfg.batch_size,
                max_length=self.cfg.max_length, seed=self.cfg.seed, data_seed=self.cfg.seed,
                use_cpu=self.device == "cpu", bf16=self.dtype == "bfloat16", fp16=self.dtype == "float16",
                gradient_checkpointing=False, save_strategy="no", report_to="none", logging_steps=10,
                disable_tqdm=not self.cfg.progress, dataloader_num_workers=0)
            lora = LoraConfig(r=self.cfg.lora_r, lora_alpha=2 * self.cfg.lora_r, lora_dropout=0.0,
                              target_modules="all-linear", task_type="CAUSAL_LM")
            torch.manual_seed(self.cfg.seed)
            trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora,
                                 callbacks=[LossCurve()])
            curves.append(self.losses(trainer.model, rows, pad))  # before training (B = 0: the proxy itself)
            trainer.train()
        return np.stack(curves, axis=1), trainer.model, pad

    def score(self, samples: list[dict]) -> np.ndarray:
        from transformers import AutoTokenizer

        if not samples:
            return np.zeros(0)
        self._path = self.ctx.model(self.cfg.model, "defenses.training_dynamics.model")
        tok = AutoTokenizer.from_pretrained(self._path)
        enc = [encode_sample(tok, s, self.cfg.max_length) for s in samples]
        self.n_truncated = sum(t for _, _, t in enc)
        rows = [(c, r) for c, r, _ in enc]
        self.curves, model, pad = self._train(rows)
        if self.cfg.gradient or self.cfg.score == "grad_norm":
            self.grad_norms = self.gradient_norms(model, rows, pad)
        del model
        if self.cfg.score == "grad_norm":
            return self.grad_norms.copy()
        return curve_scores(self.curves, self.cfg.score)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score": self.cfg.score, "model": str(self._path or self.cfg.model),
                               "epochs": self.cfg.epochs, "lora_r": self.cfg.lora_r, "device": self.device,
                               "dtype": self.dtype, "truncated": self.n_truncated}
        if self.curves is not None:
            out["mean_loss_per_epoch"] = [round(float(v), 4) for v in self.curves.mean(axis=0)]
            out["curves"] = [[round(float(v), 4) for v in row] for row in self.curves]
        if self.grad_norms is not None:
            out["grad_norms"] = [round(float(v), 6) for v in self.grad_norms]
        return out
