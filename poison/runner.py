"""One run: validate the config, create the run directory (config.yaml, status.json, run.log), run the pipeline,
write metrics.json, print the summary table. ``poison.run`` (the CLI) and ``poison.sweep`` call it."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import yaml

from poison.config import load_config, resolved_dict
from poison.ground.core.io import atomic_write_json, atomic_write_text
from poison.ground.core.procs import is_main_process, process_start, signals_interrupt
from poison.ground.results.writer import run_line, write_results
from poison.housekeeping import check_dirs, check_force
from poison.pipeline import Pipeline
from poison.summary import summary_table


def setup_logging(run_dir: Path) -> None:
    root = logging.getLogger("poison")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    sh = logging.StreamHandler(sys.stderr)
    sh.setFormatter(fmt)
    fh = logging.FileHandler(run_dir / "run.log")
    fh.setFormatter(fmt)
    root.addHandler(sh)
    root.addHandler(fh)
    root.propagate = False


def make_run_dir(runs_dir: str, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir) / f"{name}-{stamp}"
    d, i = base, 1
    while d.exists():
        d = Path(f"{base}-{i}")
        i += 1
    d.mkdir(parents=True)
    return d


def run_config(config_path: str, overrides: list[str] | None = None, run_dir: str | None = None,
               force: list[str] | None = None, quiet: bool = False):
    """Validate, create the run directory, run every stage; returns (run_dir, metrics)."""
    cfg = load_config(config_path, overrides)
    check_force(force or [])
    check_dirs(cfg, run_dir)
    if not is_main_process():
        # a helper process of `accelerate launch`: it trains alongside the main process and writes no run directory
        import tempfile

        with tempfile.TemporaryDirectory(prefix="poison-rank-") as tmp:
            logging.basicConfig(level=logging.WARNING)
            Pipeline(cfg, Path(tmp)).run()
        return None, {}
    rd = Path(run_dir) if run_dir else make_run_dir(cfg.runtime.runs_dir, cfg.name)
    rd.mkdir(parents=True, exist_ok=True)
    setup_logging(rd)
    atomic_write_text(rd / "config.yaml", yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
    atomic_write_json(rd / "status.json", {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                           "config": str(config_path), "overrides": overrides or [],
                                           "pid": os.getpid(), "pid_start": process_start(os.getpid())})
    t0 = time.time()
    try:
        with signals_interrupt():
            metrics = Pipeline(cfg, rd, force=set(force or [])).run()
    except KeyboardInterrupt as e:  # SIGINT or SIGTERM: what was running is cleaned up; the next run resumes
        atomic_write_json(rd / "status.json", {"status": "interrupted", "error": f"interrupted ({str(e) or 'SIGINT'})",
                                               "config": str(config_path), "overrides": overrides or [],
                                               "seconds": round(time.time() - t0, 1)})
        raise
    except BaseException as e:
        atomic_write_json(rd / "status.json", {"status": "failed", "error": f"{type(e).__name__}: {e}",
                                               "config": str(config_path), "overrides": overrides or [],
                                               "seconds": round(time.time() - t0, 1)})
        raise
    metrics["run"]["seconds"] = round(time.time() - t0, 1)
    table = summary_table(metrics)
    write_results(rd, metrics, table)  # again, now with the run's seconds: metrics.json and summary.txt agree
    atomic_write_json(rd / "status.json", {"status": "complete", "config": str(config_path),
                                           "overrides": overrides or [], "seconds": metrics["run"]["seconds"],
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if not quiet:
        print("\n" + table)
        print("\n" + run_line(rd, metrics["run"]["seconds"]))
    return rd, metrics
