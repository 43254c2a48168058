"""Writes the generated pages of the documentation site from the code, so that they cannot drift from it.

    .venv/bin/python scripts/gen_docs.py            # writes docs/reference/config.md and stages.md
    .venv/bin/python scripts/gen_docs.py --check    # exit 1 (naming the page) when it is not up to date

``docs/reference/config.md`` walks the config schema (``poison.schema.RunConfig`` and the sections it nests, from
``poison.schema``, ``poison.schema_parts`` and ``poison.schema_train``) and lists every field with its key path,
type and constraints, default and description; then the arguments of every built-in plugin (bias types, data
sources, distillation methods, defenses, scorers, audits: each plugin's own config class, what ``args:`` holds).
``docs/reference/stages.md`` lists the stages as their modules declare them (``poison.stages.all_stages()``):
name, version, the inputs each key must hold, what each makes, why each version was bumped.
``tests/test_docs.py`` regenerates both and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

from poison.ground.core import registry  # noqa: E402
from poison.ground.core.io import atomic_write_text  # noqa: E402
from poison.schema import RunConfig  # noqa: E402

CONFIG_PAGE = ROOT / "docs" / "reference" / "config.md"
STAGES_PAGE = ROOT / "docs" / "reference" / "stages.md"
#: packages of this repository: plugins from elsewhere (installed third-party packages) stay off the page
OWN_PACKAGES = ("poison", "distill", "defenses", "evals")
CONSTRAINTS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"), ("min_length", "min length"),
               ("max_length", "max length"))


def type_text(tp: Any) -> str:
    """A field's annotation as short text: ``int``, ``"a" | "b"``, ``list[str]``, ``str | null``, a section's name."""
    if tp is type(None):
        return "null"
    if getattr(tp, "__name__", None) == "JSONValue" or repr(tp) == "JSONValue":
        return "any"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin in (list, tuple, set):
        return f"list[{', '.join(type_text(a) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"map[{type_text(args[0])}, {type_text(args[1])}]"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def constraints(field) -> str:
    out = []
    for m in field.metadata:
        for attr, sign in CONSTRAINTS:
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sign} {v}")
    return ", ".join(out)


def default_text(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return "`" + json.dumps(value, default=str) + "`"


def cell(text: str) -> str:
    """Table-cell text: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def section_model(tp: Any) -> tuple[type[BaseModel] | None, bool]:
    """The config section a field holds (a model, or a list of models: then True), else (None, False)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp, False
    if origin in (list, tuple):
        inner, _ = section_model(args[0]) if args else (None, False)
        return inner, inner is not None
    if origin in (Union, types.UnionType):
        for a in args:
            inner, many = section_model(a)
            if inner is not None:
                return inner, many
    return None, False


def walk(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel], list[tuple]]]:
    """Depth-first: (key path of the section, its model, its rows) for ``model`` and every section nested in it. A
    row is (key path, type, default, description); a list of sections is written ``key.N``."""
    rows, nested = [], []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        sub, many = section_model(field.annotation)
        kind = type_text(field.annotation) + (f" ({constraints(field)})" if constraints(field) else "")
        rows.append((path, kind, default_text(field), field.description or ""))
        if sub is not None:
            nested.append((f"{path}.N" if many else path, sub))
    out = [(prefix.rstrip("."), model, rows)]
    for path, sub in nested:
        out += walk(sub, path + ".")
    return out


def schema_fields() -> list[str]:
    """Every key path of the schema (``students.N.train.epochs``, ...)."""
    return [row[0] for _, _, rows in walk(RunConfig) for row in rows]


def table(rows: list[tuple]) -> list[str]:
    out = ["| key | type | default | description |", "|---|---|---|---|"]
    out += [f"| `{path}` | {cell(kind)} | {cell(default)} | {cell(desc)} |" for path, kind, default, desc in rows]
    return out


def doc_line(model: type) -> str:
    return registry.first_paragraph(model.__doc__) if model.__doc__ and model.__module__ != "pydantic.main" else ""


def config_page() -> str:
    lines = ["# Config reference", "",
             "<!-- generated by scripts/gen_docs.py from the config schema: do not edit; run that script -->", "",
             "Every key of a run's YAML config, generated from the schema (`poison/schema.py`,",
             "`poison/schema_parts.py`, `poison/schema_train.py`) with its type, constraints, default and description.",
             "Unknown keys and values",
             "of the wrong type are errors (`true` is no count, `\"3\"` no integer; `.inf` and `.nan` are refused).",
             "`N` stands for a list index (`students.0.train.epochs`); `--set key.path=value` overrides any key.",
             "`python -m poison.run CONFIG --check` prints a config with every default filled in.", ""]
    for path, model, rows in walk(RunConfig):
        lines += [f"## `{path}`" if path else "## Top level", ""]
        doc = doc_line(model) if model is not RunConfig else ""
        if doc and not doc.startswith(("Unknown keys", "Base class")):
            lines += [cell(doc), ""]
        lines += table(rows) + [""]
    lines += ["# Plugin arguments", "",
              "What `args:` holds for each built-in plugin (`poison.bias.args`, `data.sources.N.args`,",
              "`students.N.args`, `defense.defenses.N.args`, `audit.audits.N.args`, `judge.args`), from each plugin's",
              "own config class. `python -m poison.run --list` also shows plugins that installed packages add.", ""]
    for kind, infos in registry.all_plugins().items():
        own = [i for i in infos if i.module.split(".")[0] in OWN_PACKAGES]
        if not own:
            continue
        lines += [f"## {registry.KINDS[kind].capitalize()}", ""]
        for info in own:
            lines += [f"### `{info.name}`", "", cell(info.description) + f" (`{info.module}`)", ""]
            fields = info.config_cls.model_fields
            if not fields:
                lines += ["No arguments.", ""]
                continue
            lines += table([(name, type_text(f.annotation) + (f" ({constraints(f)})" if constraints(f) else ""),
                             default_text(f), f.description or "") for name, f in fields.items()]) + [""]
    return "\n".join(lines).rstrip() + "\n"


def stages_page() -> str:
    from poison.stages import all_stages

    lines = ["# Stages", "",
             "<!-- generated by scripts/gen_docs.py from the stages' declarations; do not edit -->", "",
             "Every stage of a run, as the module that computes it declares it (`stage(name, version, inputs, ...)` "
             "in `poison/stages/`). A stage's artifact is keyed by a hash of its name, its version and its inputs "
             "(`<cache_dir>/stages/<stage>/<key>/`); the inputs listed are those every key of the stage holds (the "
             "stage adds others where they apply: the plugin records, the defense a student was distilled behind, "
             "...). Bumping a version recomputes the stage's artifacts; each bump says why. Training stages run in "
             "every process of a multi-process launch. `--force STAGE` recomputes a stage's artifacts.", "",
             "| stage | version | key inputs | training | what it makes | versions |", "|---|---|---|---|---|---|"]
    for name, spec in all_stages().items():
        changes = "; ".join(spec.changes) or "1: first"
        lines.append(f"| `{name}` | {spec.version} | {', '.join(f'`{i}`' for i in spec.inputs)} | "
                     f"{'yes' if spec.training else ''} | {cell(spec.doc)} | {cell(changes)} |")
    return "\n".join(lines) + "\n"


def pages() -> dict[Path, str]:
    return {CONFIG_PAGE: config_page(), STAGES_PAGE: stages_page()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a generated page is not up to date")
    args = ap.parse_args(argv)
    stale = [page for page, text in pages().items()
             if not page.exists() or page.read_text(encoding="utf-8") != text]
    if args.check:
        for page in stale:
            print(f"{page.relative_to(ROOT)} is not up to date: run scripts/gen_docs.py", file=sys.stderr)
        return 1 if stale else 0
    for page, text in pages().items():
        atomic_write_text(page, text)
        print(f"wrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
