"""What the stages fold into their cache keys for the plugins they run, read from each plugin's declaration
(``poison.ground.core.registry``), never from its name: its own version (``registry.versions_entry``) and, for a plugin
that declares ``needs={"judge"}``, the run's judge (``judge_entry``). The run's judge is built here too
(``build_judge``): the ``judge`` plugin of ``judge.type``, through the registry."""

from __future__ import annotations

from typing import Any, Iterable

from poison.ground.core import registry
from poison.ground.engines.models import model_identity
from poison.schema import JudgeConfig
from poison.stages import Run

#: the judge a config gets when it names none; a key names the judge type only when it is another one
DEFAULT_JUDGE = JudgeConfig.model_fields["type"].default


def build_judge(judge_type: str, args: dict[str, Any], ctx: Any) -> Any:
    """The run's judge: the registered ``judge`` plugin ``judge_type`` with ``args`` (``RunContext.judge_factory``
    and the judge stage both build it this way)."""
    return registry.get("judge", judge_type, "judge.type").build(args, "judge.args", ctx)


def judge_model_identity(run: Run) -> dict[str, Any]:
    """What defines the judge model for caching (not the port of a local server)."""
    j = run.cfg.judge
    if j.endpoint:
        return {"endpoint": j.endpoint, "model": j.endpoint_model or j.model}
    return {"model": model_identity(run.ctx.model(j.model, "judge.model", j.revision)), "backend": "vllm"}


def judge_identity(run: Run) -> dict[str, Any]:
    """What defines the judge for caching: its model, and its type when it is not the default one (so keys of runs
    with the default judge are what they were)."""
    j = run.cfg.judge
    ident = judge_model_identity(run)
    return ident if j.type == DEFAULT_JUDGE else {**ident, "type": j.type}


def _declare(plugins: Iterable[tuple[str, str]], capability: str) -> bool:
    return any(registry.needs(kind, name, capability) for kind, name in plugins)


def needs_judge(plugins: Iterable[tuple[str, str]]) -> bool:
    """Whether any of the ``(kind, name)`` plugins needs the judge or its model (which is then resolved up front)."""
    plugins = list(plugins)
    return _declare(plugins, "judge") or _declare(plugins, "judge_model")


def judge_entry(run: Run, plugins: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """For a stage's cache-key inputs, ``{"judge": ...}`` when one of ``plugins`` needs it, else nothing: for
    ``needs={"judge"}`` the judge's identity (its arguments too, where they are not the judge type's defaults: such a
    plugin asks the judge itself); for ``needs={"judge_model"}`` (the plugin asks the model with settings of its own)
    the model's identity alone."""
    plugins = list(plugins)
    if _declare(plugins, "judge"):
        j = run.cfg.judge
        ident = judge_identity(run)
        own = j.args != registry.get("judge", j.type).resolve_args({})
        return {"judge": {**ident, "args": j.args} if own else ident}
    if _declare(plugins, "judge_model"):
        return {"judge": judge_model_identity(run)}
    return {}


def plugin_entries(run: Run, plugins: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Everything a stage's key takes from the declarations of the plugins it runs: their versions and the judge."""
    plugins = list(plugins)
    return {**registry.versions_entry(plugins), **judge_entry(run, plugins)}


def configured_plugins(cfg: Any) -> list[tuple[str, str]]:
    """``(kind, name)`` of every plugin a config names (the judge aside: it is what some of them need)."""
    return ([("data_source", s.type) for s in cfg.data.sources] + [("bias_type", cfg.poison.bias.type)]
            + [("distill_method", s.method) for s in cfg.students]
            + [("defense", d.type) for d in cfg.defense.defenses] + [("audit", a.type) for a in cfg.audit.audits])
