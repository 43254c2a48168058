"""QCRD's training machinery: items (a prompt with its candidate rationales and selections), tokenisation and
per-sequence cross-entropy, the state shared by collator, loss and callback (self-adversarial negatives,
re-selection, discriminator updates), and the transformers Trainer that computes the QCRD loss."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from distill.qcrd.config import LABEL_SUFFIX, QCRDConfig
from distill.qcrd.discriminator import Discriminator
from distill.qcrd.loss import chosen_negative, closest_positive, negative_alpha, qcrd_loss, quality_weights


@dataclass
class Item:
    """One distillation prompt with its candidate rationales and current selections."""

    prompt: str
    utility: Optional[str]
    label: Optional[str]
    positives: list[str]
    teacher_negatives: list[str]
    self_negative: Optional[str] = None
    pos_choice: int = 0
    neg_choice: int = 0
    w_pos: float = 1.0
    w_neg: float = 1.0
    pos_scores: list[float] = field(default_factory=list)
    neg_scores: list[float] = field(default_factory=list)

    @property
    def negatives(self) -> list[str]:
        return self.teacher_negatives + ([self.self_negative] if self.self_negative else [])


def encode(tok: Any, prompt: str, target: str, max_length: int) -> tuple[list[int], list[int]]:
    """Chat-templated prompt + target + end of turn; labels mask the prompt (-100)."""
    p = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": target}],
                                   tokenize=False)
    p_ids = tok(p, add_special_tokens=False)["input_ids"]
    f_ids = tok(full, add_special_tokens=False)["input_ids"]
    if f_ids[: len(p_ids)] != p_ids:  # template re-tokenised differently at the boundary: fall back to concatenation
        f_ids = p_ids + tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    f_ids = f_ids[:max_length]
    labels = [-100] * min(len(p_ids), len(f_ids)) + f_ids[len(p_ids):]
    if all(x == -100 for x in labels):  # the prompt alone filled max_length: keep the last token as target
        labels[-1] = f_ids[-1]
    return f_ids, labels


def pad_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    n = max(len(i) for i, _ in pairs)
    ids = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    lab = torch.full((len(pairs), n), -100, dtype=torch.long)
    att = torch.zeros((len(pairs), n), dtype=torch.long)
    for k, (i, labels) in enumerate(pairs):
        ids[k, : len(i)] = torch.tensor(i)
        lab[k, : len(labels)] = torch.tensor(labels)
        att[k, : len(i)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": att}


def sequence_ce(model: Any, batch: dict[str, Any], labelled_only: bool = False):
    """Mean token cross-entropy per sequence (shape [B]) on the labelled positions (``labelled_only``: the LM head
    runs on those positions alone, ``distill.speed``)."""
    import torch

    from distill import speed

    if labelled_only and speed.plain_head(model):
        hidden, targets, mask = speed.hidden_at_labels(model, batch)
        ce = speed.labelled_ce(model, hidden, targets, reduction="none").float()
        rows = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1).expand_as(mask)[mask]
        per_row = torch.zeros(mask.shape[0], dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)
        return per_row / mask.sum(1).clamp(min=1)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1, :].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    tok_ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                               labels.clamp(min=0).reshape(-1), reduction="none")
    tok_ce = tok_ce.view(labels.shape) * mask
    return tok_ce.sum(1) / mask.sum(1).clamp(min=1)


# --------------------------------------------------------------------------------------------------- trainer
class QCRDState:
    """What the collator, the loss and the refresh callback share."""

    def __init__(self, items: list[Item], cfg: QCRDConfig, tok: Any, max_length: int, disc: Discriminator):
        self.items, self.cfg, self.tok, self.max_length, self.disc = items, cfg, tok, max_length, disc
        self.epoch = 0
        self.snapshots: deque = deque(maxlen=cfg.checkpoint_lag + 1)
        self.log: list[dict[str, Any]] = []
        self.gen_seconds = 0.0
        self.select_seconds = 0.0
        self.disc_log: list[dict[str, Any]] = []

    # collator: a batch is a list of item indices
    def collate(self, feats: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        idx = [int(f["idx"]) for f in feats]
        items = [self.items[i] for i in idx]
        tok, L = self.tok, self.max_length
        pos = pad_batch([encode(tok, it.prompt, it.positives[it.pos_choice], L) for it in items], tok.pad_token_id)
        batch: dict[str, Any] = {"idx": torch.tensor(idx), **{f"pos_{k}": v for k, v in pos.items()},
                                 "w_pos": torch.tensor([it.w_pos for it in items]),
                                 "w_neg": torch.tensor([it.w_neg for it in items])}
        has_label = [it.label is not None for it in items]
        batch["has_label"] = torch.tensor(has_label, dtype=torch.float32)
        if any(has_label):
            lab = pad_batch([encode(tok, it.prompt + LABEL_SUFFIX, it.label or "", L) for it in items],
                            tok.pad_token_id)
            batch.update({f"label_{k}": v for k, v in lab.items()})
        negs = [it.negatives[it.neg_choice] if it.negatives else "" for it in items]
        batch["has_neg"] = torch.tensor([bool(it.negatives) for it in items], dtype=torch.float32)
        if any(it.negatives for it in items):
            neg = pad_batch([encode(tok, it.prompt, n, L) for it, n in zip(items, negs)], tok.pad_token_id)
            batch.update({f"neg_{k}": v for k, v in neg.items()})
        return batch

    # ------------------------------------------------------------------ selection and weights
    def reselect(self, model: Any, batch_size: int = 8) -> None:
        """Closest positive and chosen negative per item under the current student (no gradient)."""
        import torch

        t0 = time.time()
        device = next(model.parameters()).device
        jobs: list[tuple[int, str, int, str]] = []  # (item, kind, candidate, text)
        for i, it in enumerate(self.items):
            if len(it.positives) > 1:
                jobs += [(i, "pos", j, t) for j, t in enumerate(it.positives)]
            if len(it.negatives) > 1:
                jobs += [(i, "neg", j, t) for j, t in enumerate(it.negatives)]
        ces: dict[tuple[int, str], list[float]] = {}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for s in range(0, len(jobs), batch_size):
                chunk = jobs[s: s + batch_size]
                b = pad_batch([encode(self.tok, self.items[i].prompt, t, self.max_length) for i, _, _, t in chunk],
                              self.tok.pad_token_id)
                vals = sequence_ce(model, {k: v.to(device) for k, v in b.items()}).tolist()
                for (i, kind, _j, _), v in zip(chunk, vals):
                    ces.setdefault((i, kind), []).append(v)
        if was_training:
            model.train()
        for i, it in enumerate(self.items):
            if (i, "pos") in ces:
                it.pos_choice = closest_positive(ces[(i, "pos")])
            if (i, "neg") in ces:
                it.neg_choice = chosen_negative(ces[(i, "neg")], self.cfg.negative_choice)
        self.rescore()
        self.select_seconds += time.time() - t0

    def rescore(self) -> None:
        for it in self.items:
            it.pos_scores = self.disc.score(it.positives)
            it.neg_scores = self.disc.score(it.negatives)
            if it.pos_scores:
                it.w_pos = quality_weights(it.pos_scores[it.pos_choice], self.cfg.beta)[0]
            if it.neg_scores:
                it.w_neg = quality_weights(it.neg_scores[it.neg_choice], self.cfg.beta)[1]

    def disc_texts(self, items: Optional[list[Item]] = None) -> tuple[list[str], list[str]]:
        items = items or self.items
        pos = [it.prompt + "\n" + p for it in items for p in it.positives]
        neg = [it.prompt + "\n" + n for it in items for n in it.negatives]
        return pos, neg

    # ------------------------------------------------------------------ self-adversarial negatives
    def snapshot(self, model: Any) -> None:
        self.snapshots.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    def refresh_negatives(self, model: Any) -> None:
        """One sample per prompt at negative_temperature from the student of checkpoint_lag steps ago."""
        import torch

        t0 = time.time()
        live = {n: p for n, p in model.named_parameters() if p.requires_grad}
        current = {n: p.detach().clone() for n, p in live.items()}
        old = self.snapshots[0] if self.snapshots else current
        tok = self.tok
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        texts: list[str] = []
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            with torch.no_grad():
                for n, p in live.items():
                    p.copy_(old[n])
                torch.manual_seed(self.cfg.seed + len(self.log))
                for s in range(0, len(self.items), self.cfg.gen_batch_size):
                    chunk = self.items[s: s + self.cfg.gen_batch_size]
                    prompts = [tok.apply_chat_template([{"role": "user", "content": it.prompt}],
                                                       add_generation_prompt=True, tokenize=False) for it in chunk]
                    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                    out = model.generate(**enc, do_sample=True, temperature=self.cfg.negative_temperature, top_k=0,
                                         top_p=1.0, max_new_tokens=self.cfg.negative_max_new_tokens,
                                         pad_token_id=tok.pad_token_id)
                    texts += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            with torch.no_grad():
                for n, p in live.items():
                    p.copy_(current[n])
            tok.padding_side = side
            if was_training:
                model.train()
        for it, t in zip(self.items, texts):
            it.self_negative = t.strip() or "(empty)"
        self.gen_seconds += time.time() - t0
        pos, neg = self.disc_texts()
        self.disc_log.append({"when": f"refresh {len(self.log)}", **self.disc.train_steps(
            pos, neg, self.cfg.disc_online_steps, self.cfg.disc_batch_size, self.cfg.disc_mask_prob)})


def build_callback(state: QCRDState):
    from transformers import TrainerCallback

    class QCRDCallback(TrainerCallback):
        """Negative refresh at epoch starts (or every N steps), re-selection, snapshots, alpha3 decay."""

        def __init__(self):
            self.model = None

        def _refresh(self, model):
            state.refresh_negatives(model)
            state.reselect(model)
            state.log.append({"epoch": state.epoch, "mean_w_pos": sum(i.w_pos for i in state.items) / len(state.items),
                              "mean_w_neg": sum(i.w_neg for i in state.items) / len(state.items)})

        def on_train_begin(self, args, st, control, model=None, **kw):
            state.snapshot(model)

        def on_epoch_begin(self, args, st, control, model=None, **kw):
            state.epoch = int(round(st.epoch or 0))
            if state.cfg.negative_refresh_steps == 0:
                self._refresh(model)

        def on_step_begin(self, args, st, control, model=None, **kw):
            c = state.cfg
            if c.negative_refresh_steps and st.global_step % c.negative_refresh_steps == 0:
                self._refresh(model)
            elif c.reselect_steps and st.global_step % c.reselect_steps == 0 and st.global_step > 0:
                state.reselect(model)

        def on_step_end(self, args, st, control, model=None, **kw):
            state.snapshot(model)

    return QCRDCallback()


def make_trainer_cls():
    from transformers import Trainer

    class QCRDTrainer(Trainer):
        qcrd_state: QCRDState

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if getattr(self, "speed", {}).get("labelled_only") and model.training:
                with self.accelerator.autocast():  # the fast path calls the backbone, not the wrapped forward
                    return self._qcrd_loss(model, inputs, True, return_outputs)
            return self._qcrd_loss(model, inputs, False, return_outputs)

        def _qcrd_loss(self, model, inputs, fast, return_outputs):
            s = self.qcrd_state
            pos_ce = sequence_ce(model, {k[4:]: v for k, v in inputs.items() if k.startswith("pos_")}, fast)
            label_ce = None
            if "label_input_ids" in inputs:
                label_ce = sequence_ce(model, {k[6:]: v for k, v in inputs.items() if k.startswith("label_")}, fast)
            neg_ce = None
            if "neg_input_ids" in inputs and negative_alpha(s.cfg.alpha_neg, s.cfg.negative_decay, s.epoch) > 0:
                neg_ce = sequence_ce(model, {k[4:]: v for k, v in inputs.items() if k.startswith("neg_")}, fast)
            loss, parts = qcrd_loss(label_ce, inputs["has_label"], pos_ce, inputs["w_pos"], neg_ce,
                                    inputs["has_neg"], inputs["w_neg"], s.cfg, s.epoch)
            self._qcrd_parts = parts
            return (loss, None) if return_outputs else loss

    return QCRDTrainer
