"""Plugin registry: bias types, data sources, distillation methods, defenses, scorers, model audits and judges.

A plugin is a class or function registered under a name with one of the decorators below, optionally with a pydantic
config class that validates its arguments. Plugins are found through the Python entry-point group
``cascade_poison.plugins``: every entry names a module, and importing that module runs its decorators. The project's
own built-ins are declared the same way in pyproject.toml, so a third-party package adds a plugin exactly like the
project does::

    # my_defense/__init__.py
    from poison.ground.core.registry import PluginConfig, defense

    @defense("my_filter", config=MyFilterConfig, description="...")
    class MyFilter:
        def __init__(self, cfg: MyFilterConfig, ctx: RunContext): ...

    # its pyproject.toml
    [project.entry-points."cascade_poison.plugins"]
    my_defense = "my_defense"

A plugin declares what it needs from the run on its decorator, never by a convention the orchestrator tests by name:
``needs={"judge"}`` (it calls the run's judge: its context's ``ctx.judge_plugin()`` is the ``judge`` plugin the config
names in ``judge.type``, the judge's identity joins its stage's cache key and the judge model is resolved before any
stage runs; a plugin that does not declare it gets no judge), ``needs={"judge_model"}`` (it asks the run's judge
model itself, ``ctx.judge_endpoint()``, with settings of its own, as the ``llm_autorater`` defense does: the model's
identity joins its stage's key), ``needs={"shared_tokenizer"}`` (a distillation method
that learns the teacher's logits: teacher and student must share a tokenizer), ``needs={"sft_batches"}`` (a
distillation method that trains on SFT batches, so ``train.packing`` applies), ``needs={"clean_control"}`` (a
distillation method that compares the teacher with its clean control, which the run then trains). ``version=N`` is
the plugin's own version: bump it when a change to the plugin's code would change its results, and every cached
artifact that depends on it is recomputed (the version joins the plugin's record and, through ``versions_entry``, the
cache-key inputs of the stages that run it; a plugin without one keeps its record, and those keys, as before)::

    @defense("my_judge_filter", config=MyConfig, needs={"judge"}, version=2)

Every factory is called the same way, ``factory(cfg, ctx)``: ``cfg`` is the validated argument object and ``ctx`` the
run's :class:`poison.ground.engines.context.RunContext` (cache and model folders, device, dtype, generate and score
functions). A plugin takes run settings from ``ctx`` and nowhere else; outside a run (tests, benchmarks) pass
``ctx=RunContext.standalone()``; without one a plugin gets :class:`NoRunContext`, which says so when it is used.

Part of the ground layer: it imports nothing above it.
"""

from __future__ import annotations

import difflib
import importlib
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict, ValidationError

from poison.ground.core.errors import PluginError

ENTRY_POINT_GROUP = "cascade_poison.plugins"

KINDS: dict[str, str] = {
    "bias_type": "bias types",
    "data_source": "data sources",
    "distill_method": "distillation methods",
    "defense": "defenses",
    "scorer": "scorers",
    "audit": "audits",
    "judge": "judges",
}


CAPABILITIES: dict[str, str] = {
    "judge": "calls the run's judge, ctx.judge_plugin() (its identity joins the stage key; its model is resolved up "
             "front)",
    "judge_model": "asks the run's judge model itself, ctx.judge_endpoint(), with settings of its own (the model's "
                   "identity joins the stage key; it is resolved up front)",
    "shared_tokenizer": "learns the teacher's logits, so teacher and student must share a tokenizer",
    "sft_batches": "trains on SFT batches, so train.packing applies",
    "clean_control": "reads the teacher's clean control (the same fine-tune on the clean set): the run trains it and "
                     "its key joins the stage's",
}


class PluginConfig(BaseModel):
    """Base class for plugin argument schemas: unknown keys are errors, values keep their YAML type (``true`` is no
    count), numbers are finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class NoArgs(PluginConfig):
    """For plugins without arguments."""


@dataclass
class PluginInfo:
    kind: str
    name: str
    factory: Callable[..., Any]
    config_cls: type[PluginConfig]
    description: str
    module: str
    extra: dict[str, Any] = field(default_factory=dict)
    needs: frozenset[str] = frozenset()  # capabilities the plugin declares (CAPABILITIES)
    version: int | None = None  # the plugin's own version; part of its record (and so of stage keys) when set

    def validate_args(self, args: dict[str, Any] | None, path: str | None = None) -> PluginConfig:
        try:
            return self.config_cls.model_validate(dict(args or {}))
        except ValidationError as e:
            raise PluginArgsError(validation_problems(e, self.config_cls), path) from None

    def resolve_args(self, args: dict[str, Any] | None) -> dict[str, Any]:
        """The arguments validated by the plugin's config class, every default filled in, as JSON values (what a
        resolved config holds; the config schema calls it for every plugin's ``args``)."""
        return self.validate_args(args).model_dump(mode="json")

    def build(self, args: dict[str, Any] | None = None, path: str | None = None, ctx: Any = None) -> Any:
        """Instantiate the plugin as ``factory(cfg, ctx)`` with validated arguments and the run context. Without
        ``ctx`` the plugin gets :class:`NoRunContext`: enough for a plugin that never asks the run for anything (a
        data source, a bias type); one that does is told to pass ``ctx=RunContext.standalone()``
        (``poison.ground.engines.context``). The instance carries ``plugin_record``."""
        cfg = self.validate_args(args, path)
        if ctx is None:
            ctx = NoRunContext(self)
        for_plugin = getattr(ctx, "for_plugin", None)  # a plugin that declares needs={"judge"} gets the run's judge
        obj = self.factory(cfg, for_plugin(self) if for_plugin else ctx)
        try:
            obj.plugin_record = self.record(cfg)
        except AttributeError:  # functions or slotted objects: record is still available from .record()
            pass
        return obj

    def record(self, cfg: PluginConfig) -> dict[str, Any]:
        """What is needed to rebuild this plugin: kind, name, fully resolved arguments and where it came from."""
        rec = {"kind": self.kind, "name": self.name, "args": cfg.model_dump(mode="json"), "module": self.module}
        return rec if self.version is None else {**rec, "version": self.version}


class NoRunContext:
    """What a plugin built outside a run without a context gets: any use of the run (models, generation, the judge)
    raises a :class:`PluginError` that says how to give it one. The core layer never makes a run context itself:
    that is the engines' (``RunContext.standalone()``)."""

    def __init__(self, info: PluginInfo):
        self._info = info

    def for_plugin(self, info: PluginInfo) -> "NoRunContext":
        return self

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise PluginError(f"{self._info.kind} '{self._info.name}' uses the run context (ctx.{attr}) but was built "
                          "without one: build it with ctx=RunContext.standalone() "
                          "(poison.ground.engines.context), or inside a run")


class PluginArgsError(PluginError):
    """A plugin's arguments are invalid: ``problems`` holds one (key path under ``args``, message) per problem."""

    def __init__(self, problems: list[tuple[str, str]], path: str | None = None):
        self.problems = problems
        super().__init__("\n".join(f"{key or '<root>'}: {msg}" for key, msg in problems), path)


_plugins: dict[str, dict[str, PluginInfo]] = {k: {} for k in KINDS}
_loaded = False
_lock = threading.RLock()
_load_errors: list[str] = []


def _register(kind: str, name: str, config: type[PluginConfig] | None, description: str | None,
              needs: Iterable[str] = (), version: int | None = None, **extra: Any):
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
    unknown = sorted(set(needs) - set(CAPABILITIES))
    if unknown:
        raise PluginError(f"{kind} {name!r}: unknown capability {unknown[0]!r} in needs; capabilities: "
                          f"{', '.join(CAPABILITIES)}")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise PluginError(f"{kind} {name!r}: version must be a positive integer, not {version!r}")

    def deco(obj: Callable[..., Any]):
        desc = description or first_paragraph(obj.__doc__)
        info = PluginInfo(kind, name, obj, config or NoArgs, desc, getattr(obj, "__module__", "?"), dict(extra),
                          frozenset(needs), version)
        with _lock:
            old = _plugins[kind].get(name)
            if old is not None and old.module != info.module:
                raise PluginError(f"{kind} {name!r} is registered twice: by {old.module} and by {info.module}")
            _plugins[kind][name] = info
        obj.plugin_info = info  # type: ignore[attr-defined]  # the record travels with the class
        return obj

    return deco


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph as one line (what ``--list`` shows), RST literals unquoted."""
    para = (doc or "").strip().split("\n\n", 1)[0]
    return " ".join(para.split()).replace("``", "")


def bias_type(name: str, config: type[PluginConfig] | None = None, description: str | None = None,
              needs: Iterable[str] = (), version: int | None = None):
    return _register("bias_type", name, config, description, needs, version)


def data_source(name: str, config: type[PluginConfig] | None = None, description: str | None = None,
                needs: Iterable[str] = (), version: int | None = None):
    return _register("data_source", name, config, description, needs, version)


def distill_method(name: str, config: type[PluginConfig] | None = None, description: str | None = None,
                   needs: Iterable[str] = (), version: int | None = None):
    return _register("distill_method", name, config, description, needs, version)


def defense(name: str, config: type[PluginConfig] | None = None, description: str | None = None,
            needs: Iterable[str] = (), version: int | None = None):
    return _register("defense", name, config, description, needs, version)


def scorer(name: str, config: type[PluginConfig] | None = None, description: str | None = None,
           needs: Iterable[str] = (), version: int | None = None):
    return _register("scorer", name, config, description, needs, version)


def audit(name: str, config: type[PluginConfig] | None = None, description: str | None = None,
          needs: Iterable[str] = (), version: int | None = None):
    return _register("audit", name, config, description, needs, version)


def judge(name: str, config: type[PluginConfig] | None = None, description: str | None = None,
          needs: Iterable[str] = (), version: int | None = None):
    """A judge: ``judge_texts(texts, rubric_context=None, prompts=None)`` gives one verdict dict per text (``score``
    0-10, ``biased``; optionally ``parsed``, ``judge_model``, ``prompt_sha256``) and ``info()`` a JSON-safe dict.
    The config's ``judge.type`` names the run's judge: it gives the eval verdicts (``judge.evaluate``) and is what
    plugins that declare ``needs={"judge"}`` get from ``ctx.judge_plugin()``."""
    return _register("judge", name, config, description, needs, version)


def load_plugins() -> None:
    """Import every module named in the ``cascade_poison.plugins`` entry-point group (once)."""
    global _loaded
    with _lock:
        if _loaded:
            return
        _loaded = True
        _load_errors.extend(import_entry_points(ENTRY_POINT_GROUP))


def import_entry_points(group: str) -> list[str]:
    """Import the module of every entry point of ``group``, in name order; one line for each that failed to import
    (a broken third-party package must not take the testbed or the dashboard down)."""
    errors = []
    for ep in sorted(metadata.entry_points(group=group), key=lambda e: e.name):
        try:
            importlib.import_module(ep.value.split(":")[0])
        except Exception as e:
            errors.append(f"{ep.name} ({ep.value}): {type(e).__name__}: {e}")
    return errors


def reset_for_tests() -> None:
    """Forget that entry points were loaded, so a test can install a plugin package and reload."""
    global _loaded
    with _lock:
        _loaded = False
        _load_errors.clear()


def load_errors() -> list[str]:
    return list(_load_errors)


def names(kind: str) -> list[str]:
    load_plugins()
    return sorted(_plugins[kind])


def needs(kind: str, name: str, capability: str) -> bool:
    """Whether the registered plugin declares ``capability`` (False for a name that is not registered: the schema
    reports that one)."""
    if capability not in CAPABILITIES:
        raise PluginError(f"unknown capability {capability!r}; capabilities: {', '.join(CAPABILITIES)}")
    load_plugins()
    info = _plugins[kind].get(name)
    return info is not None and capability in info.needs


def versions_entry(plugins: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """For a stage's cache-key inputs: ``{"plugin_versions": {"kind:name": version}}`` for those of ``plugins``
    (``(kind, name)`` pairs the stage runs) that declare a version, else nothing, so a stage whose plugins declare
    none keeps the key it always had."""
    load_plugins()
    found = {f"{k}:{n}": _plugins[k][n].version for k, n in plugins
             if n in _plugins[k] and _plugins[k][n].version is not None}
    return {"plugin_versions": dict(sorted(found.items()))} if found else {}


def get(kind: str, name: str, path: str | None = None) -> PluginInfo:
    load_plugins()
    try:
        return _plugins[kind][name]
    except KeyError:
        known = sorted(_plugins[kind])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        extra = f"; plugins that failed to load: {'; '.join(_load_errors)}" if _load_errors else ""
        raise PluginError(
            f"unknown {KINDS[kind][:-1]} {name!r}{hint}; registered: {', '.join(known) or 'none'}{extra}", path
        ) from None


def all_plugins() -> dict[str, list[PluginInfo]]:
    load_plugins()
    return {k: [v[n] for n in sorted(v)] for k, v in _plugins.items()}


def format_validation_error(e: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> str:
    """One line per problem: ``key.path: message (did you mean ...?)``; a plugin's arguments checked inside the
    schema (a :class:`PluginArgsError`) give one line per problem of theirs, each with its full key path."""
    return "\n".join(f"{key or '<root>'}: {msg}" for key, msg in validation_problems(e, model, prefix))


def validation_problems(e: ValidationError, model: type[BaseModel] | None = None,
                        prefix: str = "") -> list[tuple[str, str]]:
    """(key path, message) per problem of ``e``, as :func:`format_validation_error` writes them."""
    out = []
    for err in e.errors():
        loc = [str(x) for x in err.get("loc", ())]
        path = ".".join(p for p in [prefix, *loc] if p != "")
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, PluginArgsError):
            out += [(".".join(p for p in (path, key) if p), msg) for key, msg in inner.problems]
            continue
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden" and model is not None:
            msg = "unknown key" + _suggest(model, err.get("loc", ()))
        out.append((path, msg))
    return out


def _suggest(model: type[BaseModel], loc: tuple) -> str:
    """Walk the schema along ``loc`` and suggest the closest valid key for the last element."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or cur is None:
            continue
        fld = getattr(cur, "model_fields", {}).get(part)
        if fld is None:
            return ""
        cur = _inner_model(fld.annotation)
    if cur is None or not hasattr(cur, "model_fields"):
        return ""
    aliases = {"lr": "learning_rate", "bs": "batch_size", "epoch": "epochs", "steps": "epochs"}
    alias = aliases.get(str(loc[-1]).lower())
    close = ([alias] if alias in cur.model_fields
             else difflib.get_close_matches(str(loc[-1]), list(cur.model_fields), n=1))
    return f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(cur.model_fields)})"


def _inner_model(tp: Any) -> Any:
    import typing

    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        m = _inner_model(arg)
        if m is not None:
            return m
    return None
