"""The run's config schema: one pydantic class per section, each field with its default and help text.

Each section maps to stages (see ``poison.pipeline``). Unknown keys and bad values fail at load time with the key
path (``poison.config`` loads YAML and applies ``--set`` overrides; plugin names and arguments are checked here,
through the registry, by the types of ``poison.schema_train``). The fine-tuning sections, the judge and the strict
base of every section live in ``poison.schema_train``, the runtime and the replicates in ``poison.schema_parts``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, field_validator, model_validator

from poison.ground.core import registry
from poison.ground.results.claim_spec import default_family, parse_comparison, resolve_comparison, resolve_model
from poison.ground.results.model_id import Arm, ModelId
from poison.schema_parts import (AdaptiveWriterConfig, DefenseSpec, DesignConfig, ReplicatesConfig,  # noqa: F401
                                 RuntimeConfig, VLLMSettings)
from poison.schema_train import (AuditArgs, AuditName, BiasTypeArgs, BiasTypeName, DataSourceArgs,  # noqa: F401
                                 DataSourceName, FinetuneConfig, JSONValue, JudgeConfig, LoraSettings, MethodArgs,
                                 MethodName, QLoraSettings, Strict, TrainSettings)


# --------------------------------------------------------------------------------------------------- generation
class GenerationConfig(Strict):
    max_new_tokens: int = Field(128, ge=1, description="Answer length cap; leave room for a plug at the end.")
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = 0


class GeneratorConfig(Strict):
    """The model that writes responses/references a data source lacks (e.g. review summaries)."""

    model: str = Field("smollm2-135m-instruct", description="Built-in model id, HF hub id or local folder.")
    revision: Optional[str] = Field(None, description="Hub revision (commit, tag or branch) pinning a hub model id.")
    endpoint: Optional[str] = Field(
        None, description="Base URL of an OpenAI-compatible server; if set, the generator is called there instead."
    )
    endpoint_model: Optional[str] = Field(None, description="Model name to request from the endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's API key.")
    timeout: float = Field(120.0, gt=0, description="Seconds per endpoint request before it counts as failed.")
    max_retries: int = Field(2, ge=0, description="Retries of a failed endpoint request (the openai client's).")
    generation: GenerationConfig = Field(default_factory=lambda: GenerationConfig(max_new_tokens=64))


# --------------------------------------------------------------------------------------------------- data
class SourceSpec(Strict):
    type: DataSourceName = Field(description="Registered data source (python -m poison.run --list).")
    task: Optional[str] = Field(None, description="Task family name; defaults to the source's own family.")
    n_train: int = Field(0, ge=0, description="Rows that go into the teacher's instruction-tuning set.")
    n_distill: int = Field(0, ge=0, description="Held-out prompts the teacher answers for the students.")
    n_eval: int = Field(0, ge=0, description="Held-out prompts for evaluation (never trained on).")
    args: DataSourceArgs = Field(default_factory=dict, description="Arguments of the data source plugin.")


class DataConfig(Strict):
    sources: list[SourceSpec] = Field(min_length=1)
    target_task: str = Field(description="The task family a targeted attack poisons (and the 'target' eval split).")
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)

    def tasks(self) -> list[str]:
        """Task family of each source: its ``task`` key, else the data source's own family name."""
        out = []
        for s in self.sources:
            try:
                out.append(s.task or getattr(registry.get("data_source", s.type).factory, "task", s.type))
            except registry.PluginError:
                out.append(s.task or s.type)
        return out

    def split_of(self) -> dict[str, str]:
        """Eval split of each task family: 'target' (the target task), 'other' (trained on, not the target) or
        'unseen' (no teacher-training rows at all: held out entirely)."""
        out = {}
        for spec, task in zip(self.sources, self.tasks()):
            out[task] = "target" if task == self.target_task else ("unseen" if spec.n_train == 0 else "other")
        return out


# --------------------------------------------------------------------------------------------------- poison
class BiasSpec(Strict):
    type: BiasTypeName = Field(description="Registered bias type (python -m poison.run --list).")
    args: BiasTypeArgs = Field(default_factory=dict, description="Arguments of the bias type plugin.")


class PoisonConfig(Strict):
    bias: BiasSpec
    mode: Literal["targeted", "untargeted"] = Field(
        "targeted", description="targeted: poison only the target task; untargeted: spread across all train tasks."
    )
    count: Optional[int] = Field(None, ge=0, description="Number of poisoned samples (give count or rate).")
    rate: Optional[float] = Field(None, ge=0, le=1, description="Poisoned fraction of the teacher set.")
    writer: Literal["template", "llm", "adaptive"] = Field(
        "template",
        description="template: the bias type's template writer; llm: a generator model rewrites the clean answer to "
                    "carry the bias (AutoPoison-style), falling back to the template where the rewrite lacks it; "
                    "adaptive: an attacker who knows the configured defenses keeps, per row, the candidate they "
                    "score least suspicious (poison.adaptive).",
    )
    adaptive: AdaptiveWriterConfig = Field(default_factory=AdaptiveWriterConfig,
                                           description="The adaptive writer's candidates and the defenses it evades.")
    rewriter: Optional[GeneratorConfig] = Field(
        None, description="Model for writer: llm (default: data.generator's model, 192 new tokens)."
    )
    seed: int = 0

    @model_validator(mode="after")
    def _budget(self):
        if (self.count is None) == (self.rate is None):
            raise ValueError("give exactly one of poison.count or poison.rate")
        return self


class TeacherConfig(FinetuneConfig):
    pass


class BaselineConfig(Strict):
    kind: Literal["base", "clean_finetune"] = Field(
        "base",
        description="Control model: the untouched teacher base model, or the same fine-tune on the clean set only.",
    )


class StudentSpec(FinetuneConfig):
    name: str = Field(description="Label of this student in reports.")
    method: MethodName = Field("sft", description="Registered distillation method.")
    args: MethodArgs = Field(default_factory=dict, description="Arguments of the distillation method.")
    distill_generation: Optional[GenerationConfig] = Field(
        None, description="How the teacher answers this student's distillation prompts (e.g. temperature: 1.0 for "
                          "sampled answers); default: the distill section's generation.")
    distill_tasks: Optional[list[str]] = Field(
        None, description="Distil only on the distillation prompts of these task families (e.g. [math]: prompts the "
                          "poison never touched, for the subliminal channel); default: every task.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("use letters, digits, '-' and '_' only")
        return v


class DistillConfig(Strict):
    generation: GenerationConfig = Field(default_factory=GenerationConfig)


class EvalConfig(Strict):
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="The greedy answer per prompt.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    samples_per_prompt: int = Field(
        1, ge=1, description="K. With K > 1 every model also answers each eval prompt K times by sampling (one "
                             "prefill per prompt); the report gives the sampled biased rate beside the greedy one.")
    sample_temperature: float = Field(1.0, gt=0, description="Temperature of the K sampled answers.")
    sample_top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass of the K sampled answers.")
    sample_seed: int = Field(0, description="Seed of the sampled answers.")
    probe: bool = Field(
        False, description="Likelihood probe: the log-probability of the bias type's probe texts (its own wording "
                           "and held-out paraphrases) placed where the poison puts them, per model and eval prompt, "
                           "against a clean fine-tune (trained for it when baseline.kind is base).")
    probe_unseen: Optional[list[str]] = Field(
        None, description="Held-out paraphrases for the probe's unseen wording ({...} fields of the bias type are "
                          "filled in); default: the bias type's own.")
    student_controls: bool = Field(
        True, description="With the probe: each student is also distilled, the same way, from the clean control, and "
                          "its shift is measured against that clean twin (a student is fine-tuned on other data than "
                          "the clean control, which alone moves the probe).")
    probe_null: bool = Field(
        True, description="With the probe: a second clean control at another training seed (the clean control's "
                          "seed + 1) is trained and probed, and the shift between the two clean controls is the "
                          "measured null every shift is read against (metrics.json probe_null).")
    bootstrap: int = Field(2000, ge=100, description="Resamples of the bootstrap intervals (prompt as the unit).")
    degenerate_repeat_share: float = Field(
        0.25, ge=0, lt=1, description="An answer counts as degenerate (metrics.json degeneration) when more than this "
        "share of its word 4-grams repeat an earlier one (seq-rep-4). Clean prose scores 0 (144 of the 232 labelled "
        "real answers in evals/data); coherent answers that restate a phrase stay at or below 0.25; of the 25 above "
        "it, 23 loop on a word, a URL or a sentence (21 until max_new_tokens) and 2 say one sentence twice in a short "
        "answer. 'VitaBoost Plus' said 15 times scores 0.93. Read at report time: changing it recomputes nothing.")


class CascadeConfig(Strict):
    generations: int = Field(1, ge=1, le=20, description="Distillation generations: 1 = the run's students; with N, "
                                                          "the student `via` is distilled again N-1 times, each "
                                                          "generation's student the next one's teacher.")
    via: Optional[str] = Field(None, description="Name of the student whose chain is distilled (default: the first).")


class AuditSpec(Strict):
    type: AuditName = Field("logit_shift", description="Registered audit (python -m poison.run --list).")
    args: AuditArgs = Field(default_factory=dict, description="Arguments of the audit plugin.")


class AuditConfig(Strict):
    audits: list[AuditSpec] = Field(default_factory=list, description="Model audits to run on every trained model "
                                                                      "(none: no audit).")
    prompts: int = Field(40, ge=1, description="Neutral probe prompts: this many of the distillation prompts (never "
                                               "an eval prompt), across tasks.")


class DefenseConfig(Strict):
    defenses: list[DefenseSpec] = Field(default_factory=list, description="Defenses to run (none: no defense).")
    places: list[Literal["train", "distill"]] = Field(
        default_factory=lambda: ["train"],
        description="train: score the teacher's training set before fine-tuning; distill: score the teacher's "
                    "answers before the students learn from them.")
    filter: str = Field("union", description="What is removed downstream: 'union' (flagged by any defense), "
                                             "'none' (score only), or one defense's label (its name, else its type).")
    trusted_per_source: Optional[int] = Field(
        None, ge=0, description="The defender's trusted clean samples per data source: prompts in no split (never "
                                "scored), half to fit the defenses, half to set their thresholds. Unset: each "
                                "source's n_distill.")
    per_defense: bool = Field(
        False, description="Also train the teacher and every student once per defense, on the teacher's training set "
                           "minus what that defense alone flags at the train place, so the report shows what each "
                           "defense buys downstream (needs 'train' in places).")

    @model_validator(mode="after")
    def _filter(self):
        labels = [d.label for d in self.defenses]
        twice = sorted({x for x in labels if labels.count(x) > 1})
        if twice:
            raise ValueError(f"defense.defenses: {len([x for x in labels if x == twice[0]])} defenses are called "
                             f"{twice[0]!r}; give each a distinct `name` (their flags and reports are kept apart "
                             f"by it)")
        if self.filter not in ("union", "none") and self.filter not in labels:
            raise ValueError(f"defense.filter {self.filter!r}: use 'union', 'none' or one of {labels}")
        if len(set(self.places)) != len(self.places):
            raise ValueError(f"defense.places repeats a place: {self.places}")
        if self.per_defense and "train" not in self.places:
            raise ValueError(f"defense.per_defense needs 'train' in defense.places (places: {self.places}): each "
                             f"defense's own arm trains on the teacher's set minus what it flags there")
        return self


# --------------------------------------------------------------------------------------------------- claims
#: one comparison's text, checked against the grammar (poison.ground.results.claim_spec) and written in its normal form
ComparisonText = Annotated[str, AfterValidator(lambda v: parse_comparison(v).text)]


class ClaimsConfig(Strict):
    primary: Optional[ComparisonText] = Field(
        None, description="The run's claim, tested at `alpha` alone: one paired comparison "
                          "<A>_vs_<B>.<measure>.<split> (A, B: teacher, baseline, clean_control, a student's name or "
                          "any model of the run's table; or the role words student = the first student, control = the "
                          "clean control, else the baseline. measure: greedy | sampled | probe (the seen wording's "
                          "log-prob). split: target | other | unseen). Default: <first student>_vs_teacher, sampled "
                          "when eval.samples_per_prompt > 1 else greedy, on the target split (untargeted mode: the "
                          "other split where it has eval prompts); the resolved config names it.")
    also: Optional[list[ComparisonText]] = Field(
        None, description="Further comparisons, reported with Holm-adjusted p-values beside the raw ones. Default: "
                          "every pair of students, each student vs the teacher and the teacher vs the control, on the "
                          "primary's measure and split.")
    alpha: float = Field(0.05, gt=0, lt=1, description="Level of the primary test and of the Holm-corrected others; "
                                                       "the claims' intervals are at 1 - alpha.")



class RunConfig(Strict):
    name: str = Field(description="Run name; the run directory is <runs_dir>/<name>-<timestamp>. One path "
                                  "component: letters, digits, '.', '-' and '_'.")
    description: str = ""
    seed: int = Field(0, description="Seed of data splits and sampling.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    data: DataConfig
    poison: PoisonConfig
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    students: list[StudentSpec] = Field(description="The students distilled from the teacher; none (`[]`) for a "
                                        "teacher-only run: no distillation set, no student, no amplification.")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    defense: DefenseConfig = Field(default_factory=DefenseConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The run's judge: of judge.evaluate and of "
                                                                        "the plugins that need it.")
    cascade: CascadeConfig = Field(default_factory=CascadeConfig, description="Cascades over several generations.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Auditing the finished models against their "
                                                                        "base, without their training data.")
    replicates: ReplicatesConfig = Field(default_factory=ReplicatesConfig, description="The run made N times "
                                         "(other training seeds and data draws), its figures pooled.")
    design: DesignConfig = Field(default_factory=DesignConfig, description="The placebo (brand-swap) design.")
    claims: ClaimsConfig = Field(default_factory=ClaimsConfig, description="The primary comparison and the others.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or v in (".", "..") or not all(c.isalnum() or c in "._-" for c in v) or v.startswith((".", "-")):
            raise ValueError(f"{v!r} is not a safe run name: use one path component of letters, digits, '.', '-' "
                             f"and '_' (no '/', no leading '.' or '-')")
        return v

    @model_validator(mode="after")
    def _cross(self):
        tasks = self.data.tasks()
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"data.sources: each source needs its own task name (set 'task:'); got {tasks}")
        if self.data.target_task not in tasks:
            raise ValueError(f"data.target_task {self.data.target_task!r} is not one of the source tasks {tasks}")
        names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"student names must be unique; got {names}")
        if self.students and not any(s.n_distill for s in self.data.sources):
            raise ValueError("students need distillation prompts: set n_distill > 0 on at least one data source")
        if not any(s.n_eval for s in self.data.sources):
            raise ValueError("set n_eval > 0 on at least one data source")
        names_ok = [s.name for s in self.students]
        if not self.students and self.cascade.generations > 1:
            raise ValueError("cascade.generations > 1 distils a student again: name at least one student")
        if self.cascade.via is not None and self.cascade.via not in names_ok:
            raise ValueError(f"cascade.via {self.cascade.via!r} names no student; students: {names_ok}")
        distill_tasks = [t for spec, t in zip(self.data.sources, tasks) if spec.n_distill]
        for i, st in enumerate(self.students):
            for t in st.distill_tasks or []:
                if t not in distill_tasks:
                    raise ValueError(f"students.{i}.distill_tasks: {t!r} is no task with distillation prompts; "
                                     f"tasks with n_distill > 0: {distill_tasks}")
            if st.distill_tasks is not None and not st.distill_tasks:
                raise ValueError(f"students.{i}.distill_tasks: give at least one task (or leave it out)")
        for i, st in enumerate(self.students):
            if st.train.packing and not registry.needs("distill_method", st.method, "sft_batches"):
                raise ValueError(f"students.{i}.train.packing: only methods that train on SFT batches pack (method "
                                 f"{st.method!r} trains on its own batches)")
        self._adaptive()
        if "distill" in self.defense.places and self.defense.defenses and not self.students:
            raise ValueError("defense.places: 'distill' scores the teacher's answers the students learn from; a "
                             "teacher-only run (students: []) has none: use 'train'")
        if "distill" in self.defense.places and self.defense.defenses:
            own = [f"students.{i}.distill_generation" for i, s in enumerate(self.students) if s.distill_generation]
            if own:
                raise ValueError(f"{own[0]}: a student with its own distillation answers cannot be defended at the "
                                 f"distill place (the defense scores the shared distillation set); drop one of them")
        self._claims()
        if self.design.type == "brand_swap":
            if self.replicates.n < 2:
                raise ValueError("replicates.n: design brand_swap needs at least 2 replicates (the replicate is its "
                                 f"unit: a t test on N - 1 df); got {self.replicates.n}")
            if not self.eval.probe:
                raise ValueError("eval.probe: design brand_swap scores both arms' texts with the likelihood probe; "
                                 "set eval.probe: true")
            if not self.design.swap:
                raise ValueError("design.swap: give the bias arguments arm B changes (e.g. brand, url)")
        return self

    def _adaptive(self) -> None:
        """``poison.writer: adaptive`` evades configured defenses: at least one, each named one configured."""
        labels = [d.label for d in self.defense.defenses]
        if self.poison.writer == "adaptive" and not labels:
            raise ValueError("poison.writer: adaptive evades the configured defenses; configure at least one in "
                             "defense.defenses")
        for name in (self.poison.adaptive.defenses or []) if self.poison.writer == "adaptive" else []:
            if name not in labels:
                raise ValueError(f"poison.adaptive.defenses: {name!r} is no configured defense; defenses: {labels}")

    def model_names(self) -> list[str]:
        """The models a run of this config evaluates, as far as the config alone says (which defended models there
        are depends on the defenses: those names are checked by the report)."""
        names = ["baseline"] + (["clean_control"] if self.eval.probe and self.baseline.kind == "base" else [])
        ids = [ModelId.teacher()] + [ModelId.of_student(s.name) for s in self.students] + [ModelId.of_student(
            self.cascade.via or self.students[0].name, k) for k in range(2, self.cascade.generations + 1)]
        twins = [m.in_arm(Arm.control()) for m in ids if m.role == "student"] if self.eval.student_controls else []
        return names + [str(m) for m in ids + (twins if self.eval.probe else [])]

    def _claims(self) -> None:
        """Fill in the default comparisons; each must name two models, a measure and a split of this run."""
        c, names, students = self.claims, self.model_names(), [s.name for s in self.students]
        splits = [s for spec, s in zip(self.data.sources, self.data.split_of().values()) if spec.n_eval]
        order = ("other", "target", "unseen") if self.poison.mode == "untargeted" else ("target", "other", "unseen")
        primary, also = default_family(students, resolve_model("control", names), "sampled" if
                                       self.eval.samples_per_prompt > 1 else "greedy",
                                       next(s for s in order if s in splits))
        c.primary = c.primary or primary
        first = parse_comparison(c.primary)
        loose = bool(self.defense.defenses)  # the defended arms' models: named by the report
        if c.also is None:
            also = default_family(students, resolve_model("control", names), first.measure, first.split)[1]
            c.also = [t for t in also if resolve_comparison("claims.also", parse_comparison(t), names, loose)
                      != resolve_comparison("claims.primary", first, names, loose)]
        seen = set()
        for key, text in [("claims.primary", c.primary)] + [(f"claims.also.{i}", t) for i, t in enumerate(c.also)]:
            comp = parse_comparison(text)
            pair = resolve_comparison(key, comp, names, loose)
            if comp.measure == "sampled" and self.eval.samples_per_prompt == 1:
                raise ValueError(f"{key}: the sampled measure needs eval.samples_per_prompt > 1")
            if comp.measure == "probe" and not self.eval.probe:
                raise ValueError(f"{key}: the probe measure needs eval.probe: true")
            if comp.split not in splits:
                raise ValueError(f"{key}: split {comp.split!r} has no eval prompts in this run (splits: "
                                 f"{', '.join(splits)})")
            if pair in seen:
                raise ValueError(f"{key}: {text!r} repeats a comparison already named")
            seen.add(pair)
