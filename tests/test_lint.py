"""The code's own checks as tests: ruff (pycodestyle, pyflakes, bugbear at 120 columns, configured in pyproject.toml)
on the whole repository, and mypy on the ground layer (``[tool.mypy]``)."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(name)
    return subprocess.run([str(exe), *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    r = _tool("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_mypy_passes_on_the_ground_layer():
    r = _tool("mypy", "--no-incremental")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "Success: no issues found" in r.stdout
