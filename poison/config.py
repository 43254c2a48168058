"""Loading a run's config: YAML in, ``--set`` overrides applied, every section validated by ``poison.schema`` (every
plugin's arguments by the plugin's own config class, through the registry, inside the schema), resolved form out
(stored back fully resolved, so the saved config rebuilds the run)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from poison.ground.core import registry
from poison.ground.core.errors import ConfigError
from poison.ground.core.yamlio import load_yaml, read_yaml_file
from poison.schema import RunConfig


def _index(cur: list, part: str, path: str, at: str) -> int:
    """A list index from a --set key part (IndexError and ValueError become ConfigError naming the key)."""
    if not part.lstrip("-").isdigit():
        raise ConfigError(f"--set {path}: {at} is a list; use an item number (0-{len(cur) - 1}), not {part!r}")
    i = int(part)
    if not 0 <= i < len(cur):
        raise ConfigError(f"--set {path}: index {part} out of range (list has {len(cur)} items)")
    return i


def _set_path(d: Any, path: str, value: Any) -> None:
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ConfigError(f"--set {path!r}: the key path has an empty part")
    cur = d
    for i, p in enumerate(parts):
        at = ".".join(parts[:i]) or "<top>"
        last = i == len(parts) - 1
        if isinstance(cur, list):
            key: Any = _index(cur, p, path, at)
        elif isinstance(cur, dict):
            key = p
            if not last and (key not in cur or cur[key] is None):
                cur[key] = {}
        else:
            raise ConfigError(f"--set {path}: {at} is a {type(cur).__name__}, not a mapping or a list")
        if last:
            cur[key] = value
        else:
            cur = cur[key]


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (numbers, lists, true/false, null)."""
    out = copy.deepcopy(raw)
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"--set {ov!r}: expected key.path=value")
        key, val = ov.split("=", 1)
        try:
            parsed = load_yaml(val, f"--set {key.strip()}") if val != "" else ""
        except ConfigError as e:
            if "duplicate key" in str(e) or "aliases" in str(e) or "expands" in str(e):
                raise
            parsed = val  # not YAML: the plain string
        _set_path(out, key.strip(), parsed)
    return out


def _clean(msg: str) -> str:
    return msg.replace("Value error, ", "")


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    raw = read_config_file(path)
    return config_from_dict(raw, overrides, source=str(path))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a config file (UTF-8, bounded YAML, a mapping at the top)."""
    path = Path(path)
    raw = read_yaml_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def config_from_dict(raw: dict[str, Any], overrides: list[str] | None = None, source: str = "<config>") -> RunConfig:
    raw = apply_overrides(raw, overrides or [])
    raw.pop("sweep", None)  # sweeps (and seed replicates) are expanded by poison.sweep before validation
    raw.pop("seeds", None)
    try:
        cfg = RunConfig.model_validate(raw)  # plugin names and arguments too, through the registry
    except ValidationError as e:
        lines = [ln.removeprefix("<root>: ") for ln in
                 _clean(registry.format_validation_error(e, RunConfig)).splitlines()]
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(lines)) from None
    probe_error = _check_probe(cfg)
    if probe_error:
        raise ConfigError(f"{source}: invalid config\n{probe_error}")
    return cfg


def _check_probe(cfg: RunConfig) -> str | None:
    """With eval.probe, the bias type must have probe texts and at least two held-out paraphrases that are none of
    the poison's own sentences."""
    if not cfg.eval.probe:
        return None
    info = registry.get("bias_type", cfg.poison.bias.type)
    bias = info.factory(info.validate_args(cfg.poison.bias.args), None)
    try:
        texts = bias.probe_texts(cfg.eval.probe_unseen)
    except (KeyError, IndexError, ValueError) as e:
        return f"eval.probe_unseen: a paraphrase uses a field the bias type does not have ({e})"
    if not texts:
        return (f"eval.probe: bias type {cfg.poison.bias.type!r} has no probe texts (it defines no seen wording); "
                f"turn the probe off for it")
    if len(texts["unseen"]) < 2:
        return "eval.probe_unseen: give at least two held-out paraphrases"
    same = set(texts["unseen"]) & set(texts["seen"])
    if same:
        return f"eval.probe_unseen: {sorted(same)[0]!r} is one of the poison's own sentences, not a held-out one"
    return None


def resolved_dict(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
