"""Spectral signatures and activation clustering: representation outliers among a task's training samples.

The classic backdoor-data defenses (Tran et al. 2018, "Spectral Signatures in Backdoor Attacks"; Chen et al. 2018,
"Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering") applied to instruction data. Poisoned
rows of one task share content the clean rows lack (the same plug, the same link), so their representations move
together along one direction; that direction dominates the top of the spectrum of the task's centered
representations.

Representation: a reference LM (``model``, default SmolLM2-135M-Instruct; device and dtype from the run unless given)
reads each sample formatted with its chat template, [user: prompt][assistant: response] (the tokenisation of the
perplexity filter, :meth:`defenses.perplexity.PerplexityFilter.encode`, ``max_length`` tokens at most); the sample's
vector is the hidden state of layer ``layer`` averaged over the response tokens. The default layer is 3/4 of the depth
(layer 22 of SmolLM2's 30): the middle-to-late layers carry what the text says rather than its next-token surface.

Scores, computed per task (the ``task`` key; samples without one form one group):
- ``method: spectral`` (default): center the task's vectors, take the top right singular vector ``v`` of the centered
  matrix (``numpy.linalg.svd``) and score each sample by its squared projection ``((x - mu) . v)^2``, divided by the
  mean squared projection of the reference rows (the clean samples when given, else the task's own rows) so that
  scores of different tasks share one scale.
- ``method: activation_clustering``: reduce the centered vectors to ``components`` dimensions (scikit-learn PCA, or
  FastICA as in Chen et al.), split them with KMeans (k = 2) and score each sample by its margin towards the suspect
  cluster, ``(|z - c_other| - |z - c_suspect|) / |c_suspect - c_other|`` (positive inside the suspect cluster, larger
  the deeper inside). The suspect cluster is the smaller one, or with clean samples the one holding the smaller share
  of them (so a task whose scored rows are all poisoned still has a clean cluster to stand apart from).

``fit(clean)``: trusted clean samples are encoded the same way. For a task with at least 2 of them, their mean is the
center (instead of the scored rows' own mean, which a fully poisoned task would drag onto the poison) and their
squared projections give the scale. A task is scored when it has at least 2 scored rows, or 1 scored row and at least 2
clean ones; its rows otherwise score 0 and are counted in ``info()["unscored"]``. Note that with two scored rows and no
clean reference both rows lie at the same distance from their mean, so the spectral score cannot tell them apart: the
method needs a population (or the clean reference).

The score is a function of the reference model's representations, so the defense exposes ``reference_model`` and the
run's reference-model check applies to it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field

from poison.ground.core.registry import PluginConfig, defense


class SpectralConfig(PluginConfig):
    model: str = Field(
        "smollm2-135m-instruct",
        description="Reference LM whose hidden states represent the samples: a built-in model name, a local HF folder "
                    "or a hub id.",
    )
    layer: Optional[int] = Field(
        None, description="Hidden state used: 0 = the embeddings, L = the last layer, negative counts from the end; "
                          "default 3/4 of the depth (rounded).",
    )
    method: Literal["spectral", "activation_clustering"] = Field(
        "spectral", description="spectral: squared projection on the top singular vector (Tran et al. 2018); "
                                "activation_clustering: KMeans k=2 on reduced vectors (Chen et al. 2018).",
    )
    reduction: Literal["pca", "ica"] = Field(
        "pca", description="activation_clustering: how the vectors are reduced before KMeans (scikit-learn PCA or "
                           "FastICA).",
    )
    components: int = Field(10, ge=1, description="activation_clustering: dimensions kept (at most rows - 1).")
    batch_size: int = Field(16, ge=1, description="Samples per forward pass (sorted by length first).")
    max_length: int = Field(512, ge=8, description="Tokens per sample at most (cut as the perplexity filter does).")
    seed: int = Field(0, description="Seed of KMeans and FastICA.")
    device: str = Field("auto", description="auto (the run's device) | cpu | cuda")
    dtype: str = Field("auto", description="auto (the run's dtype) | float32 | bfloat16 | float16")


def spectral_scores(x: np.ndarray, mu: np.ndarray, ref: Optional[np.ndarray] = None) -> np.ndarray:
    """Squared projections of ``x - mu`` on the top right singular vector of ``x - mu``, divided by the mean squared
    projection of ``ref - mu`` (``ref`` = ``x`` when None)."""
    c = np.asarray(x, dtype=np.float64) - mu
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    v = vt[0]
    tau = (c @ v) ** 2
    r = tau if ref is None else ((np.asarray(ref, dtype=np.float64) - mu) @ v) ** 2
    scale = float(np.mean(r))
    return tau / scale if scale > 0 else tau


def clustering_scores(x: np.ndarray, mu: np.ndarray, ref: Optional[np.ndarray], components: int, reduction: str,
                      seed: int) -> np.ndarray:
    """Activation clustering margins of the rows of ``x`` (see the module docstring); ``ref`` = clean rows or None."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, FastICA

    n = len(x)
    both = np.vstack([x, ref]) if ref is not None else np.asarray(x)
    both = np.asarray(both, dtype=np.float64) - mu
    k = max(1, min(components, len(both) - 1, both.shape[1]))
    red = (FastICA(n_components=k, random_state=seed, max_iter=1000) if reduction == "ica"
           else PCA(n_components=k, random_state=seed))
    z = red.fit_transform(both)
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(z)
    lab = km.labels_
    if ref is not None:  # the cluster holding the smaller share of the clean rows is the suspect one
        share = [np.mean(lab[n:] == c) for c in (0, 1)]
        suspect = int(np.argmin(share))
    else:
        suspect = int(np.argmin(np.bincount(lab[:n], minlength=2)))
    cs, co = km.cluster_centers_[suspect], km.cluster_centers_[1 - suspect]
    gap = float(np.linalg.norm(cs - co)) or 1.0
    zx = z[:n]
    return (np.linalg.norm(zx - co, axis=1) - np.linalg.norm(zx - cs, axis=1)) / gap


@defense("spectral_signature", config=SpectralConfig,
         description="Representation outliers per task: top-singular-vector projection (spectral signatures) or "
                     "activation clustering on a reference LM's hidden states")
class SpectralSignature:
    """Per-task representation outlier score from a reference LM's hidden states (higher = more suspicious)."""

    def __init__(self, cfg: SpectralConfig, ctx: Any):
        from defenses.perplexity import PerplexityConfig, PerplexityFilter

        self.cfg = cfg
        self.ctx = ctx
        # the perplexity filter's loader and tokenisation (chat template, response span, truncation) are reused
        self._lm = PerplexityFilter(PerplexityConfig(model=cfg.model, max_length=cfg.max_length, device=cfg.device,
                                                     dtype=cfg.dtype, progress=False), ctx)
        self.device, self.dtype = self._lm.device, self._lm.dtype
        self._clean: dict[str, np.ndarray] = {}
        self._info: dict[str, Any] = {}
        self.layer_used: Optional[int] = None

    @property
    def reference_model(self) -> str:
        """The model whose representations the score is made of (the run's reference-model check applies)."""
        return self.cfg.model

    # ------------------------------------------------------------------ representations
    def _layer(self, n_layers: int) -> int:
        if self.cfg.layer is None:
            return int(round(0.75 * n_layers))
        layer = self.cfg.layer if self.cfg.layer >= 0 else n_layers + 1 + self.cfg.layer
        if not 0 <= layer <= n_layers:
            from poison.ground.core.errors import DefenseError

            raise DefenseError(f"spectral_signature: layer {self.cfg.layer} is outside 0..{n_layers} for "
                               f"{self.cfg.model} ({n_layers} layers; negative values count from the end)")
        return layer

    def represent(self, samples: list[dict]) -> np.ndarray:
        """One vector per sample: the chosen layer's hidden state averaged over the response tokens (float64)."""
        import torch

        lm = self._lm
        lm._load()
        model, tok = lm._model, lm._tok
        layer = self.layer_used = self._layer(int(model.config.num_hidden_layers))
        enc = [lm.encode(s)[:2] for s in samples]
        out = np.zeros((len(enc), int(model.config.hidden_size)), dtype=np.float64)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]) + len(enc[i][1]), reverse=True)
        for s in range(0, len(order), self.cfg.batch_size):
            idx = order[s: s + self.cfg.batch_size]
            L = max(len(enc[i][0]) + len(enc[i][1]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            att = torch.zeros((len(idx), L), dtype=torch.long)
            resp = torch.zeros((len(idx), L), dtype=torch.bool)
            for b, i in enumerate(idx):  # left padding: the response is the last len(r) positions
                c, r = enc[i]
                ids[b, L - len(c) - len(r):] = torch.tensor(c + r)
                att[b, L - len(c) - len(r):] = 1
                resp[b, L - len(r):] = True
            pos = (att.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                h = model(input_ids=ids.to(self.device), attention_mask=att.to(self.device),
                          position_ids=pos.to(self.device), output_hidden_states=True).hidden_states[layer]
                m = resp.to(h.device).unsqueeze(-1).to(torch.float32)
                vec = (h.float() * m).sum(1) / m.sum(1).clamp(min=1)
            out[idx] = vec.cpu().double().numpy()
        return out

    # ------------------------------------------------------------------ fit / score
    def fit(self, clean: list[dict]) -> None:
        """Encode the trusted clean samples and keep them per task (center and scale of that task's scores)."""
        groups = _by_task(clean)
        reps = self.represent(clean) if clean else np.zeros((0, 0))
        self._clean = {t: reps[ix] for t, ix in groups.items()}

    def score(self, samples: list[dict]) -> np.ndarray:
        scores = np.zeros(len(samples), dtype=np.float64)
        self._info = {"unscored": 0, "tasks": {}}
        if not samples:
            return scores
        reps = self.represent(samples)
        for task, ix in _by_task(samples).items():
            ref = self._clean.get(task)
            ref = ref if ref is not None and len(ref) >= 2 else None
            if len(ix) < 2 and ref is None:
                self._info["unscored"] += len(ix)
                self._info["tasks"][task] = {"rows": len(ix), "clean": 0, "scored": False}
                continue
            x = reps[ix]
            mu = ref.mean(0) if ref is not None else x.mean(0)
            if self.cfg.method == "spectral":
                scores[ix] = spectral_scores(x, mu, ref)
            else:
                scores[ix] = clustering_scores(x, mu, ref, self.cfg.components, self.cfg.reduction, self.cfg.seed)
            self._info["tasks"][task] = {"rows": len(ix), "clean": 0 if ref is None else len(ref), "scored": True}
        return scores

    def info(self) -> dict[str, Any]:
        what = ("squared projection on the top singular vector of the task's centered representations, in units of "
                "the reference rows' mean" if self.cfg.method == "spectral"
                else "KMeans (k=2) margin towards the suspect cluster of the task's reduced representations")
        return {"score": what, "method": self.cfg.method, "model": self.cfg.model, "layer": self.layer_used,
                "device": self.device, "dtype": self.dtype, **self._info}


def _by_task(samples: list[dict]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[str(s.get("task") or "")].append(i)
    return dict(groups)
