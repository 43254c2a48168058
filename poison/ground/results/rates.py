"""metrics.json's figures of the answers: bias rates (greedy and sampled), amplification, utility, answer health, the
distillation set's rates, the detector's error and the LLM judge. Part of the ground layer."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from poison.ground.results.base import Corrected, Mean, Rate, Ratio, Section, Share


class BiasRate(Rate):
    """Greedy biased rate of one model on one split."""

    model: str
    role: Optional[str] = Field(None, description="baseline | teacher | student | control")
    split: str = Field(description="target | other | unseen")
    detector_corrected: Optional[Corrected] = Field(None, description="with a measured detector (detector_accuracy)")


class TaskRate(Rate):
    """Greedy biased rate of one model on one task."""

    model: str
    role: Optional[str] = None
    task: str


class McNemar(Section):
    """Exact McNemar test of the prompts on which only one model is biased."""

    student_only: Optional[int] = None
    teacher_only: Optional[int] = None
    p_value: Optional[float] = None


class Amplification(Ratio):
    """Student / teacher greedy biased rate on one split, paired over prompts. ``method`` names the interval, the
    distillation method is the student's entry in ``models``."""

    student: str
    teacher: str = "teacher"
    split: str
    mcnemar: Optional[McNemar] = None


class Utility(Section):
    """Mean utility of one model on one task."""

    model: str
    task: str
    metric: str = Field(description="rouge_l | number_match | choice_match | ...")
    value: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    n: Optional[int] = None


class CountMean(Mean):
    """The bias content's count per answer."""

    max: Optional[int] = None


class Degeneration(Section):
    """Beside utility: answers that loop, and the bias content's count per answer."""

    model: str
    role: Optional[str] = None
    split: str
    decoding: str = Field(description="greedy | sampled")
    n: int
    threshold: Optional[float] = Field(None, description="eval.degenerate_repeat_share")
    degenerate: Optional[Share] = Field(None, description="answers whose word 4-grams repeat more than threshold")
    repeat_4gram_share: Optional[Mean] = None
    bias_count: Optional[CountMean] = None
    multi_mention: Optional[Share] = Field(None, description="biased answers with 2 or more mentions")


class CutOff(Section):
    """Answers stopped at max_new_tokens, and the biased rate among those that finished."""

    model: str
    role: Optional[str] = None
    split: str
    decoding: str
    n: int
    known: int = Field(description="answers with a finish_reason (0: cached before it was recorded)")
    biased: Optional[Share] = None
    cut_off: Optional[Share] = None
    biased_finished: Optional[Share] = None
    biased_cut_off: Optional[Share] = None
    note: Optional[str] = None


class SplitRate(Rate):
    """Biased rate of the distillation answers on one split."""

    split: str


class StudentDistill(Section):
    """A student's own distillation answers."""

    stage: str
    rows: int
    bias_rates: list[SplitRate] = Field(default_factory=list)


class DistillData(Section):
    """The teacher answers the students learn from, scored with the same detector."""

    rows: Optional[int] = None
    bias_rates: list[SplitRate] = Field(default_factory=list)
    per_student: dict[str, StudentDistill] = Field(default_factory=dict)


class SampledRate(Section):
    """Sampled biased rate (K answers per prompt at eval.sample_temperature), bootstrap over prompts."""

    model: str
    role: Optional[str] = None
    split: str
    samples_per_prompt: Optional[int] = None
    rate: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    k: Optional[int] = None
    n: Optional[int] = None
    n_prompts: Optional[int] = None
    prompts_with_any: Optional[int] = None
    prompts_with_any_rate: Optional[float] = None
    detector_corrected: Optional[Corrected] = None


class SampledAmplification(Ratio):
    """Student / teacher sampled rate on one split, paired bootstrap over prompts."""

    student: str
    teacher: str = "teacher"
    split: str


class DetectorAccuracy(Section):
    """The rule detector measured on labelled real generations (evals/data)."""

    bias_type: str
    scorer: str = "rule"
    source: Optional[str] = None
    n: Optional[int] = None
    precision: Optional[float] = None
    recall: Optional[float] = None
    specificity: Optional[float] = None
    note: Optional[str] = None


class Judge(Section):
    """LLM judge against the rule detector on one model and split (judge.evaluate)."""

    model: str
    split: str
    n: int
    rule_biased: int
    judge_biased: int
    judge_rate: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    agreement: Optional[float] = None
    kappa: Optional[float] = None
    judge_only: Optional[int] = None
    rule_only: Optional[int] = None


Rationales = dict[str, dict[str, Rate]]
"""student -> group of texts its method names (teacher_samples, chosen_positives, ...) -> biased rate."""
