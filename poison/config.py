"""Loading a run's config: YAML in, ``--set`` overrides applied, every section validated by ``poison.schema`` and every
plugin's arguments by the plugin's own config class, resolved form out (stored back fully resolved, so the saved
config rebuilds the run)."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from poison.ground import registry
from poison.ground.errors import ConfigError
from poison.schema import RunConfig


def _set_path(d: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    cur = d
    for i, p in enumerate(parts[:-1]):
        key: Any = int(p) if isinstance(cur, list) else p
        if isinstance(cur, list):
            if not (0 <= key < len(cur)):
                raise ConfigError(f"--set {path}: index {p} out of range (list has {len(cur)} items)")
        elif key not in cur or cur[key] is None:
            cur[key] = {}
        cur = cur[key]
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    elif isinstance(cur, dict):
        cur[last] = value
    else:
        raise ConfigError(f"--set {path}: {'.'.join(parts[:-1])} is not a mapping")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (numbers, lists, true/false, null)."""
    out = copy.deepcopy(raw)
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"--set {ov!r}: expected key.path=value")
        key, val = ov.split("=", 1)
        try:
            parsed = yaml.safe_load(val) if val != "" else ""
        except yaml.YAMLError:
            parsed = val
        _set_path(out, key.strip(), parsed)
    return out


def _plugin_sites(raw: dict[str, Any]) -> list[tuple[str, str, str, dict]]:
    """(kind, name, key path, args) of every plugin named in a raw config dict."""
    sites = []
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    for i, s in enumerate(data.get("sources") or []):
        if isinstance(s, dict) and isinstance(s.get("type"), str):
            sites.append(("data_source", s["type"], f"data.sources.{i}", s.get("args") or {}))
    poison = raw.get("poison") if isinstance(raw.get("poison"), dict) else {}
    bias = poison.get("bias")
    if isinstance(bias, dict) and isinstance(bias.get("type"), str):
        sites.append(("bias_type", bias["type"], "poison.bias", bias.get("args") or {}))
    for i, st in enumerate(raw.get("students") or []):
        if isinstance(st, dict):
            sites.append(("distill_method", st.get("method", "sft"), f"students.{i}", st.get("args") or {}))
    defense = raw.get("defense") if isinstance(raw.get("defense"), dict) else {}
    for i, d in enumerate(defense.get("defenses") or []):
        if isinstance(d, dict) and isinstance(d.get("type"), str):
            sites.append(("defense", d["type"], f"defense.defenses.{i}", d.get("args") or {}))
    judge = raw.get("judge") if isinstance(raw.get("judge"), dict) else {}
    sites.append(("defense", "llm_autorater", "judge", judge.get("args") or {}))
    return sites


def _check_plugins(raw: dict[str, Any]) -> tuple[list[str], dict[str, dict]]:
    """Validate each plugin's arguments with its own config class. Returns (errors, resolved args by key path)."""
    errors, resolved = [], {}
    for kind, name, path, args in _plugin_sites(raw):
        name_key = "method" if kind == "distill_method" else "type"
        if path == "judge":
            name_key = "args"
        try:
            info = registry.get(kind, name, path=f"{path}.{name_key}")
            if not isinstance(args, dict):
                raise registry.PluginError("must be a mapping", f"{path}.args")
            resolved[path] = info.validate_args(args).model_dump(mode="json")
        except registry.PluginError as e:
            if e.path and e.path.endswith(name_key):
                errors.append(str(e))
            else:  # argument errors: one line per problem, each with its full key path
                body = str(e)
                errors += [f"{path}.args.{_clean(line)}" for line in body.splitlines()]
    return errors, resolved


def _clean(msg: str) -> str:
    return msg.replace("Value error, ", "")


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return config_from_dict(raw, overrides, source=str(path))


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "<config>") -> RunConfig:
    raw = apply_overrides(raw, overrides or [])
    raw.pop("sweep", None)  # sweeps are expanded by poison.run before validation
    plugin_errors, resolved = _check_plugins(raw)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        lines = _clean(registry.format_validation_error(e, RunConfig)).splitlines()
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(lines + plugin_errors)) from None
    if plugin_errors:
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(plugin_errors))
    for i, s in enumerate(cfg.data.sources):
        s.args = resolved[f"data.sources.{i}"]
    cfg.poison.bias.args = resolved["poison.bias"]
    for i, st in enumerate(cfg.students):
        st.args = resolved[f"students.{i}"]
    for i, d in enumerate(cfg.defense.defenses):
        d.args = resolved[f"defense.defenses.{i}"]
    cfg.judge.args = resolved["judge"]
    return cfg


def resolved_dict(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def suggest_key(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
