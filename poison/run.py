"""``python -m poison.run CONFIG [--set key.path=value ...]``: run the testbed on one config.

``python -m poison.run --list`` prints every registered plugin by kind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from poison.config import load_config, read_config_file, resolved_dict
from poison.ground import registry
from poison.ground.errors import PoisonError
from poison.ground.models import BUILTIN_MODELS
from poison.housekeeping import check_force
from poison.pipeline import Pipeline
from poison.runner import run_config
from poison.sweep import load_sweep, run_sweep


def list_plugins() -> str:
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


def has_sweep(path: str) -> bool:
    return "sweep" in read_config_file(path)


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

    if args.list:
        print(list_plugins())
        return 0
    if not args.config:
        ap.error("a config file is required (or --list)")
    try:
        if args.check:
            if has_sweep(args.config):
                _, points = load_sweep(args.config, args.overrides)
                print(f"sweep of {len(points)} runs:", *points, sep="\n  ")
            cfg = load_config(args.config, args.overrides)
            check_force(args.force)
            Pipeline(cfg, Path(cfg.runtime.runs_dir)).preflight(create=False)
            print(yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
            return 0
        if has_sweep(args.config):
            run_sweep(args.config, args.overrides)
        else:
            run_config(args.config, args.overrides, args.run_dir, args.force)
    except PoisonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
