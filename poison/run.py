"""``python -m poison.run CONFIG [--set key.path=value ...]``: run the testbed on one config.

``python -m poison.run --list`` prints every registered plugin by kind.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import yaml

from poison import registry


def list_plugins() -> str:
    from poison.models import BUILTIN_MODELS

    lines = []
    for kind, infos in registry.all_plugins().items():
        lines.append(f"{registry.KINDS[kind]}:")
        if not infos:
            lines.append("  (none registered)")
        for info in infos:
            lines.append(f"  {info.name:<22} {info.description}")
        lines.append("")
    lines.append("built-in models:")
    for name, m in BUILTIN_MODELS.items():
        lines.append(f"  {name:<22} {m.description}")
    lines.append(f"  {'tiny-random-llama[:L[:H]]':<22} random-init Llama with L layers, hidden size H (tests)")
    for err in registry.load_errors():
        lines.append(f"warning: plugin failed to load: {err}")
    return "\n".join(lines)


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
    from poison.config import load_config, resolved_dict
    from poison.io import atomic_write_json, atomic_write_text
    from poison.pipeline import Pipeline
    from poison.report import summary_table

    cfg = load_config(config_path, overrides)
    from distill.trainers import is_main_process

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
                                           "pid": os.getpid()})
    t0 = time.time()
    try:
        metrics = Pipeline(cfg, rd, force=set(force or [])).run()
    except BaseException as e:
        atomic_write_json(rd / "status.json", {"status": "failed", "error": f"{type(e).__name__}: {e}",
                                               "config": str(config_path), "overrides": overrides or [],
                                               "seconds": round(time.time() - t0, 1)})
        raise
    metrics["run"]["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(rd / "metrics.json", metrics)
    atomic_write_json(rd / "status.json", {"status": "complete", "config": str(config_path),
                                           "overrides": overrides or [], "seconds": metrics["run"]["seconds"],
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if not quiet:
        print("\n" + summary_table(metrics))
        print(f"\nrun directory: {rd}  ({metrics['run']['seconds']:.0f}s)")
    return rd, metrics


def has_sweep(path: str) -> bool:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # load_config reports it
    return isinstance(raw, dict) and "sweep" in raw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m poison.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", nargs="?", help="YAML config (see configs/)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a config value (repeatable), e.g. --set poison.count=10")
    ap.add_argument("--list", action="store_true", help="list registered plugins and built-in models")
    ap.add_argument("--run-dir", help="write into this run directory instead of <runs_dir>/<name>-<timestamp>")
    ap.add_argument("--force", action="append", default=[], metavar="STAGE",
                    help="recompute a stage even if cached (data, poison, teacher, baseline, distill_data, student, eval)")
    ap.add_argument("--check", action="store_true", help="validate the config and print it resolved, then exit")
    args = ap.parse_args(argv)

    from poison.config import ConfigError, load_config, resolved_dict
    from poison.models import ModelError
    from evals.generate import GenerationError
    from poison.pipeline import PipelineError
    from poison.sources import DataError

    if args.list:
        print(list_plugins())
        return 0
    if not args.config:
        ap.error("a config file is required (or --list)")
    try:
        if args.check:
            if has_sweep(args.config):
                from poison.sweep import load_sweep

                _, points = load_sweep(args.config, args.overrides)
                print(f"sweep of {len(points)} runs:", *points, sep="\n  ")
            cfg = load_config(args.config, args.overrides)
            print(yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
            return 0
        if has_sweep(args.config):
            from poison.sweep import run_sweep

            run_sweep(args.config, args.overrides)
        else:
            run_config(args.config, args.overrides, args.run_dir, args.force)
    except (ConfigError, ModelError, DataError, registry.PluginError, PipelineError, GenerationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
