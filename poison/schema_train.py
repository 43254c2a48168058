"""The config schema's fine-tuning sections (LoRA, QLoRA, the training settings, a fine-tuned model: the teacher,
the clean control and each student), the judge section, ``Strict``, the base of every section of ``poison.schema``,
which re-exports them, and the types of plugin names and arguments.

A plugin's name is checked against the registry (an unknown one is an error with a did-you-mean) and its ``args`` are
validated once, here, by the plugin's own config class through the registry (``PluginInfo.resolve_args``): a loaded
config holds every plugin's arguments with their defaults filled in, and an argument error names its full key path
(``poison.bias.args.brnad: unknown key (did you mean 'brand'?)``).
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo
from typing_extensions import Annotated, TypeAliasType

from poison.ground.core import registry

#: any JSON/YAML value (plugin arguments are validated by the plugin's own config class)
JSONValue = TypeAliasType("JSONValue", Union[str, int, float, bool, None, list["JSONValue"], dict[str, "JSONValue"]])


def _registered(kind: str) -> Callable[[str], str]:
    def check(name: str) -> str:
        registry.get(kind, name)  # PluginError: unknown <kind> 'x' (did you mean 'y'?); registered: ...
        return name
    return check


def _resolved(kind: str, name_field: str) -> Callable[[dict, ValidationInfo], dict]:
    def check(args: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get(name_field)
        if name is None:  # the name itself is invalid: its own error says so
            return args
        return registry.get(kind, name).resolve_args(args)  # PluginArgsError: one problem per key path
    return check


def plugin_name(kind: str) -> Any:
    """The type of a field naming a registered plugin of ``kind``."""
    return Annotated[str, AfterValidator(_registered(kind))]


def plugin_args(kind: str, name_field: str = "type") -> Any:
    """The type of a plugin's ``args``: validated by the config class of the plugin the model's ``name_field`` names
    (a field declared before ``args``), defaults filled in (also when ``args`` is left out)."""
    return Annotated[dict[str, JSONValue], AfterValidator(_resolved(kind, name_field)), Field(validate_default=True)]


DataSourceName, DataSourceArgs = plugin_name("data_source"), plugin_args("data_source")
BiasTypeName, BiasTypeArgs = plugin_name("bias_type"), plugin_args("bias_type")
MethodName, MethodArgs = plugin_name("distill_method"), plugin_args("distill_method", "method")
DefenseName, DefenseArgs = plugin_name("defense"), plugin_args("defense")
AuditName, AuditArgs = plugin_name("audit"), plugin_args("audit")
JudgeName, JudgeArgs = plugin_name("judge"), plugin_args("judge")


class Strict(BaseModel):
    """Unknown keys are errors; values keep their YAML type (``true`` is no count, ``"3"`` no integer); numbers are
    finite (``.inf`` and ``.nan`` are refused)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


# --------------------------------------------------------------------------------------------------- training
class LoraSettings(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear", description="'all-linear' or a list of module names.")


class QLoraSettings(Strict):
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="bitsandbytes 4-bit quantisation of the base weights.")
    double_quant: bool = Field(True, description="Also quantise the quantisation constants (QLoRA's double quant).")


class TrainSettings(Strict):
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(384, ge=16, description="Tokens; longer rows are truncated from the right.")
    scheduler: str = Field("cosine", description="transformers lr_scheduler_type.")
    warmup_steps: int = Field(2, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 0
    packing: Union[bool, Literal["padding_free"], None] = Field(
        None, description="SFT batching (teacher, clean control, sft students). null or 'padding_free': the same rows "
                          "per batch flattened into one sequence with attention kept within each row: the padded "
                          "batch's loss without pad tokens (exact; 1.10x the padded throughput on the default "
                          "teacher's rows here). true: TRL's best-fit-decreasing packing into max_length sequences, "
                          "a batch is batch_size packs (fewer, fuller steps: not the same training). false: padded "
                          "batches. kd and qcrd batch their own way.")
    attn_implementation: Optional[str] = Field(
        None, description="transformers attention kernel for training (e.g. flash_attention_2 where flash-attn is "
                          "installed: padding-free batches without a block mask; sdpa; eager); null: transformers' "
                          "default.")
    labelled_only: Union[bool, Literal["auto"]] = Field(
        "auto", description="Speed (not in the cache key): run the LM head and the loss only at positions that carry a "
                            "label (torch's linear_cross_entropy), for SFT, KD and QCRD: the same loss. auto: on, "
                            "except on CUDA where TRL's fused Triton head already does it.")
    compile: Union[bool, Literal["auto"]] = Field(
        "auto", description="Speed (not in the cache key): torch.compile (inductor) the model's backbone; its cache "
                            "lives under the testbed's cache folder. auto: on CPU for jobs of 700 steps or more "
                            "(measured: a 270 s compile for 0.4 s a step over labelled_only alone).")
    frozen_weights: Literal["auto", "float32", "compute"] = Field(
        "auto", description="Speed (not in the cache key): LoRA's frozen base in float32 or in the compute dtype (bf16 "
                            "where the run trains in bf16; the adapter, and merges of it, stay float32). "
                            "auto: compute for LoRA in bf16 when compiled (eager steps were not faster with it).")
    report_to: Literal["none", "tensorboard", "wandb", "mlflow", "trackio"] = Field(
        "none", description="Experiment tracker TRL reports to (tensorboard logs go to the stage's logs/ folder). "
                            "Nothing is sent anywhere by default.")
    extra: dict[str, JSONValue] = Field(default_factory=dict,
                                        description="Any further TRL/transformers training argument, passed as is "
                                                    "(e.g. {gradient_checkpointing: true}).")


class FinetuneConfig(Strict):
    model: str = Field("smollm2-135m-instruct", description="Built-in model id, HF hub id or local folder.")
    revision: Optional[str] = Field(None, description="Hub revision (commit, tag or branch) pinning a hub model id.")
    finetune: Literal["lora", "qlora", "full"] = Field(
        "lora", description="PEFT LoRA adapter; QLoRA (4-bit bitsandbytes base + LoRA, CPU or CUDA); "
                            "or full fine-tuning.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    qlora: QLoraSettings = Field(default_factory=QLoraSettings, description="Used when finetune is qlora.")
    train: TrainSettings = Field(default_factory=TrainSettings)


class JudgeConfig(Strict):
    type: JudgeName = Field("llm", description="Registered judge (python -m poison.run --list): gives the eval "
                                               "verdicts and is what a plugin that declares it needs the judge gets "
                                               "(llm: the judge model below, asked through an OpenAI-compatible API).")
    model: str = Field("smollm2-135m-instruct", description="Judge model; served by a local vLLM server started for "
                                                            "the run and stopped afterwards, unless `endpoint` is set.")
    revision: Optional[str] = Field(None, description="Hub revision (commit, tag or branch) pinning a hub model id.")
    endpoint: Optional[str] = Field(None, description="An OpenAI-compatible endpoint (http://host:port/v1) to use "
                                                      "instead of a local server.")
    endpoint_model: Optional[str] = Field(None, description="Model name at `endpoint` (default: `model`).")
    evaluate: bool = Field(False, description="Also judge every eval answer (a second verdict beside the rule "
                                              "detector; the report gives both rates and Cohen's kappa).")
    args: JudgeArgs = Field(default_factory=dict, description="Arguments of the judge plugin (judge.type; llm: rubric, "
                                                              "method, threshold, ...).")
