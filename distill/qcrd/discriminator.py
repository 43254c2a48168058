"""QCRD's online discriminator: a frozen sentence encoder, max pooling, two linear layers, a quality score."""

from __future__ import annotations

import math
import random
from typing import Any


class Discriminator:
    """Encoder -> max pooling over tokens -> Linear -> ReLU -> Linear -> sigmoid quality score.

    The encoder is frozen, so pooled features are computed once per text and cached; only the two linear layers train
    (pre-training and online updates are then cheap enough for a CPU).
    """

    def __init__(self, encoder: str, hidden: int = 256, lr: float = 1e-3, seed: int = 0, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.device = device
        self.tok = AutoTokenizer.from_pretrained(encoder)
        self.encoder = AutoModel.from_pretrained(encoder, dtype=torch.float32).to(device).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        dim = self.encoder.config.hidden_size
        self.head = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        with torch.no_grad():
            for p in self.head.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[-1])))
        self.head.to(device)
        self.opt = torch.optim.AdamW(self.head.parameters(), lr=lr)
        self.rng = random.Random(seed)
        self._cache: dict[str, Any] = {}
        self.steps = 0

    def features(self, texts: list[str], batch_size: int = 32):
        import torch

        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(todo), batch_size):
            chunk = todo[i: i + batch_size]
            enc = self.tok(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt").to(self.device)
            with torch.no_grad():
                h = self.encoder(**enc).last_hidden_state
            h = h.masked_fill(enc["attention_mask"].unsqueeze(-1) == 0, float("-inf")).max(dim=1).values
            for t, v in zip(chunk, h):
                self._cache[t] = v
        return torch.stack([self._cache[t] for t in texts])

    def score(self, texts: list[str]) -> list[float]:
        import torch

        if not texts:
            return []
        with torch.no_grad():
            return torch.sigmoid(self.head(self.features(texts)).squeeze(-1)).tolist()

    def augment(self, text: str, vocab: list[str], prob: float) -> str:
        """A copy with words masked or replaced (class balancing, as in the paper)."""
        words = text.split()
        out = []
        for w in words:
            r = self.rng.random()
            if r < prob / 2:
                out.append(self.tok.mask_token or "[MASK]")
            elif r < prob and vocab:
                out.append(self.rng.choice(vocab))
            else:
                out.append(w)
        return " ".join(out)

    def balanced(self, pos: list[str], neg: list[str], prob: float) -> tuple[list[str], list[int]]:
        vocab = [w for t in pos + neg for w in t.split()][:5000]
        pos, neg = list(pos), list(neg)
        small, big = (pos, neg) if len(pos) < len(neg) else (neg, pos)
        base = list(small)
        while base and len(small) < len(big):
            small.append(self.augment(self.rng.choice(base), vocab, prob))
        return pos + neg, [1] * len(pos) + [0] * len(neg)

    def train_steps(self, pos: list[str], neg: list[str], steps: int, batch_size: int, mask_prob: float) -> dict:
        """``steps`` AdamW steps of binary cross-entropy on positives (1) vs negatives (0). Returns loss/accuracy."""
        import torch

        if steps <= 0 or not pos or not neg:
            return {"steps": 0}
        texts, labels = self.balanced(pos, neg, mask_prob)
        x = self.features(texts)
        y = torch.tensor(labels, dtype=torch.float32, device=x.device)
        first = last = None
        for _ in range(steps):
            idx = torch.tensor(self.rng.sample(range(len(texts)), min(batch_size, len(texts))))
            logits = self.head(x[idx]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx])
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            last = loss.item()
            first = last if first is None else first
            self.steps += 1
        with torch.no_grad():
            acc = float(((self.head(x).squeeze(-1) > 0).float() == y).float().mean())
        return {"steps": steps, "first_loss": first, "last_loss": last, "accuracy": acc, "n": len(texts)}
