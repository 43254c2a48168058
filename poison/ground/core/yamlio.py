"""Reading YAML that a user wrote, with bounds: the safe loader (plain data only), duplicate keys rejected (YAML would
keep the last silently), at most ``max_aliases`` aliases and ``max_nodes`` values once aliases are expanded (a
"billion laughs" file is refused instead of hanging whatever walks it), a size limit, and YAML 1.2 numbers
(``1e-3`` is a float, not the string PyYAML's YAML 1.1 rules make of it). Errors are ``ConfigError`` naming the
file and line. Part of the ground layer.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from poison.ground.core.errors import ConfigError

MAX_BYTES = 1 << 20
MAX_ALIASES = 200
MAX_NODES = 100_000

_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X)


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that counts aliases and rejects duplicate mapping keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(f"line {mark.line + 1}: more than {MAX_ALIASES} YAML aliases")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r} (first on line "
                                  f"{seen[key] + 1})")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def expanded_size(obj: Any, limit: int = MAX_NODES) -> int:
    """How many values ``obj`` holds once shared (aliased) parts are counted every time they occur (linear in the
    number of distinct objects: sizes are memoised by identity)."""
    memo: dict[int, int] = {}

    def size(o: Any) -> int:
        if isinstance(o, (dict, list)):
            if id(o) in memo:
                return memo[id(o)]
            memo[id(o)] = limit + 1  # a cycle counts as too large
            items = list(o.items()) if isinstance(o, dict) else [(None, v) for v in o]
            n = 1
            for k, v in items:
                n += size(v) + (1 if k is not None else 0)
                if n > limit:
                    break
            memo[id(o)] = n
            return n
        return 1

    return size(obj)


def load_yaml(text: str, source: str = "<yaml>", max_bytes: int = MAX_BYTES) -> Any:
    """Parse user-written YAML with the bounds above; ConfigError naming ``source`` on any problem."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ConfigError(f"{source}: larger than {max_bytes // 1024} KiB; a config is a few KiB")
    try:
        data = yaml.load(text, Loader=BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    if expanded_size(data) > MAX_NODES:
        raise ConfigError(f"{source}: expands to more than {MAX_NODES} values (nested YAML aliases?)")
    return data


def read_yaml_file(path) -> Any:
    """``load_yaml`` of a file that must exist and be UTF-8 text."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror or e})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{p}: larger than {MAX_BYTES // 1024} KiB; a config is a few KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{p}: not UTF-8 text (line {line}, byte {e.start})") from None
    return load_yaml(text, str(p))
