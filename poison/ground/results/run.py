"""metrics.json's description of the run: ``run``, ``data``, ``poison``, ``models`` and ``stages``.
Part of the ground layer."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from poison.ground.results.base import Section


class Machine(Section):
    """The machine that made the figures (versions of the libraries that computed them)."""

    cpu: Optional[str] = None
    cores: Optional[int] = None
    features: list[str] = Field(default_factory=list, description="avx2 .. amx_bf16")
    gpu: Optional[str] = Field(None, description="'N x name' when torch sees CUDA")
    torch: Optional[str] = None
    transformers: Optional[str] = None
    trl: Optional[str] = None
    peft: Optional[str] = None
    vllm: Optional[str] = None


class RunInfo(Section):
    """What ran, where and how."""

    name: str = Field(description="the config's name")
    run_dir: Optional[str] = None
    finished: Optional[str] = Field(None, description="local time the report was written, ISO 8601")
    seconds: Optional[float] = Field(None, description="wall time of the whole run (written once the run ends)")
    bias_type: Optional[str] = None
    bias: Optional[str] = Field(None, description="the bias type's one-line description")
    mode: Optional[str] = Field(None, description="targeted | untargeted")
    target_task: Optional[str] = None
    splits: dict[str, str] = Field(default_factory=dict, description="task -> its split (target | other | unseen)")
    device: Optional[str] = None
    dtype: Optional[str] = None
    backend: Optional[str] = Field(None, description="generation backend (vllm | hf | endpoint)")
    confidence: Optional[float] = Field(None, description="confidence level of every interval")
    machine: Optional[Machine] = None
    commit: Optional[str] = Field(None, description="the testbed's git commit, +dirty when tracked files differed; "
                                                    "null outside a checkout")


class DataInfo(Section):
    """The data stage: rows and the generated references."""

    rows: Optional[int] = None
    generated: Optional[int] = None
    generator: dict[str, Any] = Field(default_factory=dict,
                                      description="task -> {generated, kept, rejected {reason: n}, retried, dropped}")


class PoisonInfo(Section):
    """What the poison stage injected."""

    requested: Optional[int] = None
    injected: int
    eligible: Optional[int] = None
    n_train: int
    rate: float = Field(description="injected / n_train")
    target_task_rows: int
    target_task_rate: float
    per_task: dict[str, int] = Field(default_factory=dict, description="task -> injected")
    mode: Optional[str] = None
    writer: dict[str, int] = Field(default_factory=dict, description="how the poisoned answers were written")
    adaptive: Optional[dict[str, Any]] = Field(
        None, description="poison.writer adaptive: the defenses it evaded, candidates written and accepted, rows "
                          "where it kept another candidate than the non-adaptive one (changed), the mean suspicion "
                          "of the kept and of the non-adaptive candidates, seconds")
    bias: dict[str, Any] = Field(default_factory=dict, description="{kind, name, args, module}: the plugin record")
    warning: Optional[str] = None


class ModelInfo(Section):
    """One evaluated model."""

    role: str = Field(description="baseline | teacher | student | control")
    path: Optional[str] = None
    kind: Optional[str] = Field(None, description="base | clean_finetune (baseline and controls)")
    spec: Optional[str] = None
    method: Optional[str] = Field(None, description="a student's distillation method")
    student: Optional[str] = Field(None, description="a student's name in the config")
    teacher: Optional[str] = Field(None, description="the model a student learned from (default teacher)")
    generation: Optional[int] = Field(None, description="0 teacher, 1 its students, 2.. a cascade")
    twin_of: Optional[str] = Field(None, description="a clean twin: the student it mirrors")
    defended: Optional[bool] = None
    defense: Optional[str] = Field(None, description="a defense.per_defense arm: its defense's label")
    base_model: Optional[str] = None
    adapter: Optional[str] = None
    note: Optional[str] = None


class StageRecord(Section):
    """One stage of the run."""

    key: str = Field(description="the stage's cache key")
    cached: bool
    seconds: Optional[float] = None
