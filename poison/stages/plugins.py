"""What the stages fold into their cache keys for the plugins they run, read from each plugin's declaration
(``poison.ground.registry``), never from its name: its own version (``registry.versions_entry``) and, for a plugin that
declares ``needs={"judge"}``, the run's judge (``judge_entry``). The run's judge is built here too (``build_judge``):
the ``judge`` plugin of ``judge.type``, through the registry."""

from __future__ import annotations

from typing import Any, Iterable

from poison.ground import registry
from poison.ground.models import model_identity
from poison.schema import JudgeConfig
from poison.stages import Run

#: the judge a config gets when it names none; a key names the judge type only when it is another one
DEFAULT_JUDGE = JudgeConfig.model_fields["type"].default


def build_judge(judge_type: str, args: dict[str, Any], ctx: Any) -> Any:
    """The run's judge: the registered ``judge`` plugin ``judge_type`` with ``args`` (``RunContext.judge_factory``
    and the judge stage both build it this way)."""
    return registry.get("judge", judge_type, "judge.type").build(args, "judge.args", ctx)


def judge_identity(run: Run) -> dict[str, Any]:
    """What defines the judge for caching (not the port of a local server): its model, and its type when it is not
    the default one (so keys of runs with the default judge are what they were)."""
    j = run.cfg.judge
    if j.endpoint:
        ident = {"endpoint": j.endpoint, "model": j.endpoint_model or j.model}
    else:
        ident = {"model": model_identity(run.ctx.model(j.model, "judge.model", j.revision)), "backend": "vllm"}
    return ident if j.type == DEFAULT_JUDGE else {**ident, "type": j.type}


def needs_judge(plugins: Iterable[tuple[str, str]]) -> bool:
    """Whether any of the ``(kind, name)`` plugins declares ``needs={"judge"}``."""
    return any(registry.needs(kind, name, "judge") for kind, name in plugins)


def judge_entry(run: Run, plugins: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """For a stage's cache-key inputs: ``{"judge": identity}`` when one of ``plugins`` declares it needs the judge
    (its arguments too, where they are not the judge type's defaults: such a plugin asks the judge itself), else
    nothing."""
    if not needs_judge(plugins):
        return {}
    j = run.cfg.judge
    ident = judge_identity(run)
    own = j.args != registry.get("judge", j.type).resolve_args({})
    return {"judge": {**ident, "args": j.args} if own else ident}


def plugin_entries(run: Run, plugins: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Everything a stage's key takes from the declarations of the plugins it runs: their versions and the judge."""
    plugins = list(plugins)
    return {**registry.versions_entry(plugins), **judge_entry(run, plugins)}


def configured_plugins(cfg: Any) -> list[tuple[str, str]]:
    """``(kind, name)`` of every plugin a config names (the judge aside: it is what some of them need)."""
    return ([("data_source", s.type) for s in cfg.data.sources] + [("bias_type", cfg.poison.bias.type)]
            + [("distill_method", s.method) for s in cfg.students]
            + [("defense", d.type) for d in cfg.defense.defenses] + [("audit", a.type) for a in cfg.audit.audits])
