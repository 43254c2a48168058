"""Config sections kept apart from ``poison.schema`` so each module stays small (it imports them into
``RunConfig``): the runtime (``RuntimeConfig``, ``VLLMSettings``), one defense (``DefenseSpec``), the adaptive
poison writer (``AdaptiveWriterConfig``) and the evidence a run's figures rest on (``ReplicatesConfig``: the
replicate as a run's unit)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from poison.schema_train import JSONValue, Strict


# --------------------------------------------------------------------------------------------------- runtime
class VLLMSettings(Strict):
    gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1,
        description="Fraction of device memory vLLM may use. On CPU 0.3 passes vLLM's memory check on a 24 GB box.",
    )
    enforce_eager: bool = Field(True, description="Skip torch.compile/CUDA graphs: 19-40 s faster start on CPU.")
    max_model_len: int = Field(2048, ge=128, description="Longest prompt + answer vLLM accepts.")
    max_num_seqs: Optional[int] = Field(
        None, ge=1, le=4096, description="Sequences vLLM's scheduler runs at once (null: vLLM's own default). "
                                         "bench/bench_vllm_settings.py measures it for greedy and K = 16 sampling.")
    cpu_threads: Optional[str] = Field(
        None, description="CPU cores vLLM binds, e.g. '0-1'. Default: all cores of this machine (CPU only)."
    )
    lora_adapters: Optional[bool] = Field(
        None, description="Run LoRA/QLoRA-trained models as adapters on their base, every model on one base in one "
                          "engine (vLLM enable_lora), instead of one engine per merged model. null: adapters on CUDA, "
                          "merged folders on CPU, where vLLM's LoRA path measured 2.3x slower "
                          "(bench/bench_eval_engine.py). Full fine-tunes always get their own engine.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one vLLM engine shards a model across.")
    data_parallel_size: int = Field(
        1, ge=1, le=64, description="vLLM engines side by side, each on its own tensor_parallel_size GPUs with a "
                                    "share of the prompts (the judge server: vLLM's own data parallelism).")


class RuntimeConfig(Strict):
    runs_dir: str = Field("runs", description="Where run directories are written.")
    cache_dir: str = Field(".cache/poison", description="Stage artifact cache shared by all runs (content-addressed).")
    models_dir: Optional[str] = Field(
        None, description="Where converted/downloaded models are kept; default <cache_dir>/models."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Training/generation device.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bfloat16 on GPUs and on CPUs with native bf16 (AVX512-BF16/AMX), else float32."
    )
    backend: Literal["vllm", "hf"] = Field("vllm", description="Generation engine: vLLM, or HF generate (fallback).")
    hf_batch_size: int = Field(64, ge=1, description="Batch size of the HF generate backend.")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    verify_cache: Literal["size", "full"] = Field(
        "size", description="How a cached stage artifact is checked before it is used: size (every file's size "
                            "against its marker, and that it loads) or full (its content hash too, reading every "
                            "byte). A damaged artifact is set aside as .corrupt-* and recomputed, with a warning.")


# --------------------------------------------------------------------------------------------------- evidence
VaryWhat = Literal["train_seed", "data_draw"]


class ReplicatesConfig(Strict):
    """``replicates: {n: 3, vary: [train_seed, data_draw]}``: the run is made N times, each replicate a run
    directory inside one parent directory (like a sweep's points), and every headline figure is reported per
    replicate and pooled over them (``poison.replicates``)."""

    n: int = Field(1, ge=1, description="Replicates of the run (1: a single run; its figures say so).")
    vary: list[VaryWhat] = Field(
        default_factory=lambda: ["train_seed", "data_draw"], min_length=1,
        description="What each replicate redraws: train_seed (the training seeds of every model and the sampling "
                    "seed of the sampled answers, set to the replicate's index) and data_draw (the config's seed: "
                    "other train, distillation and eval rows from the same sources). Control, teacher and students "
                    "of one replicate share its draw (paired).")
    index: int = Field(0, ge=0, description="This run's replicate (set by the launcher for each replicate; leave "
                                            "it).")

    @model_validator(mode="after")
    def _index(self):
        if self.index >= self.n:
            raise ValueError(f"replicates.index {self.index} is not below replicates.n {self.n}")
        if len(set(self.vary)) != len(self.vary):
            raise ValueError(f"replicates.vary: {self.vary} names a factor twice")
        return self


class DesignConfig(Strict):
    """``design: {type: brand_swap, swap: {brand: NovaCalm, url: novacalm.example}}``: the placebo design. Each
    replicate is run twice on the same rows at the same seeds, arm A with ``poison.bias.args`` and arm B with those
    args updated by ``swap``; each teacher (and its students) is the other arm's placebo, and the likelihood probe
    scores both arms' texts on every model (``poison.brand_swap``)."""

    type: Literal["single", "brand_swap"] = Field("single", description="single: one poisoned arm (the usual run); "
                                                  "brand_swap: two arms, A and B, each the other's placebo.")
    swap: dict[str, JSONValue] = Field(default_factory=dict, description="brand_swap: the bias arguments that arm B "
                                       "changes (e.g. brand, product, url; each also written in poison.bias.args, "
                                       "arm A's value); every other argument stays arm A's. In each arm's own run it "
                                       "holds the other arm's values (the launcher sets arm B's).")
    arm: Literal["A", "B"] = Field("A", description="This run's arm (set by the launcher for each arm; leave it).")


# --------------------------------------------------------------------------------------------------- defense
class DefenseSpec(Strict):
    type: str = Field(description="Registered defense (python -m poison.run --list).")
    name: Optional[str] = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$",
        description="This defense's label in reports, its flags and `defense.filter` (default: its type). Two "
                    "defenses of one type need distinct names.")
    args: dict[str, JSONValue] = Field(default_factory=dict, description="Arguments of the defense plugin.")
    threshold: Optional[float] = Field(None, description="Fixed threshold (flag = score > threshold); unset: chosen "
                                                         "by the false-positive budget `fpr` on trusted clean samples.")
    fpr: float = Field(0.05, ge=0, le=1, description="False-positive budget on the trusted clean samples.")
    allow_writer_reference: bool = Field(
        False, description="A likelihood defense (e.g. perplexity) may use as its reference the model that wrote the "
                           "clean responses it scores (the data generator; the teacher's base model at the distill "
                           "places): clean rows then score low by construction. Off: such a run stops with an error; "
                           "on: it runs and a warning names both models. Changes no result, so not in the stage key.")

    @property
    def label(self) -> str:
        """What reports, flags and ``defense.filter`` call this defense: its name, else its type."""
        return self.name or self.type


class AdaptiveWriterConfig(Strict):
    """``poison.writer: adaptive``: an attacker who knows the configured defenses. For each poisoned row it writes
    candidates (template variants and LLM rewrites), scores them with those defenses (fitted as the defender fits
    them) and keeps the one they find least suspicious among those the bias's rule detector still finds biased."""

    template_variants: int = Field(4, ge=1, le=64, description="Template writer draws per poisoned row.")
    llm_variants: int = Field(
        2, ge=0, le=16, description="LLM rewrites per poisoned row (the rewriter, poison.rewriter): the first greedy, "
                                    "the others sampled at llm_temperature. 0: template variants only.")
    llm_temperature: float = Field(0.8, gt=0, le=2, description="Sampling temperature of the LLM rewrites after the "
                                                                 "first.")
    defenses: Optional[list[str]] = Field(
        None, description="Labels of the configured defenses (defense.defenses) the attacker knows and evades; "
                          "default: all of them. A candidate's suspicion is its highest score quantile over these "
                          "defenses, each quantile taken among the same defense's scores of the rows' clean answers "
                          "(the attacker holds them: they are the answers it rewrites).")
