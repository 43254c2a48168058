"""The one writer of metrics.json and summary.txt. The report writes them when its figures are done; the runner
writes them again when the run ends, with the run's seconds, so that both files always agree (summary.txt is what
the CLI prints: the table, then the run directory and its seconds once they are known). The summary is passed in
as text (the table is the orchestrator's ``poison.summary``). Part of the ground layer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from poison.ground.core.io import atomic_write_json, atomic_write_text
from poison.ground.results.metrics import check_metrics

log = logging.getLogger("poison.results")


def run_line(run_dir: Path, seconds: float) -> str:
    """The line the CLI prints after the table."""
    return f"run directory: {run_dir}  ({seconds:.0f}s)"


def write_results(run_dir: Path, metrics: dict[str, Any], summary: str, *, strict: bool = False) -> list[str]:
    """Write ``metrics.json`` (exactly ``metrics``: validation changes no value) and ``summary.txt`` (``summary``,
    plus the run line when ``metrics["run"]["seconds"]`` is known). The metrics are checked against the models
    first; the problems are logged (raised with ``strict``) and returned: a finished run's figures are never lost
    to a schema slip."""
    problems = check_metrics(metrics)
    if problems:
        msg = "metrics.json does not match its models (poison.ground.results): " + "; ".join(problems[:10])
        if strict:
            raise ValueError(msg)
        log.warning(msg)
    run_dir = Path(run_dir)
    atomic_write_json(run_dir / "metrics.json", metrics)
    seconds: Optional[float] = (metrics.get("run") or {}).get("seconds")
    text = summary + ("\n\n" + run_line(run_dir, seconds) if seconds is not None else "")
    atomic_write_text(run_dir / "summary.txt", text + "\n")
    return problems
