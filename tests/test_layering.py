"""Dependencies flow one way: distill/, defenses/, evals/ and dashboard/ never import the orchestrator."""

import ast
from pathlib import Path

from tests.conftest import REPO

ORCHESTRATOR = {"poison.run", "poison.pipeline", "poison.report"}


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_no_package_imports_the_orchestrator():
    bad = []
    for pkg in ("distill", "defenses", "evals", "dashboard"):
        for f in (REPO / pkg).rglob("*.py"):
            hit = imports(f) & ORCHESTRATOR
            if hit:
                bad.append(f"{f.relative_to(REPO)} imports {sorted(hit)}")
    assert not bad, bad


def test_leaf_modules_stay_leaves():
    # registry and io are imported by every package, so they import nothing else of the project
    for leaf in ("poison/registry.py", "poison/io.py"):
        project = {m for m in imports(REPO / leaf) if m.split(".")[0] in {"poison", "distill", "defenses", "evals"}}
        assert not project, (leaf, project)
