"""python -m poison.run CONFIG [--set key.path=value ...] (or: cascade-poison CONFIG ...): run the testbed on one
config, or on every point of its sweep.

python -m poison.run --list prints every registered plugin by kind and the built-in models.
cascade-poison cache {ls,du,verify,gc} [--cache-dir DIR] looks after the stage cache (poison.cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from poison import __version__
from poison.config import load_config, read_config_file, resolved_dict
from poison.ground import registry
from poison.ground.errors import PoisonError
from poison.ground.models import BUILTIN_MODELS
from poison.housekeeping import check_force
from poison.pipeline import Pipeline
from poison.runner import run_config
from poison.stages.protocol import STAGE_VERSIONS
from poison.sweep import describe, is_sweep_override, load_sweep, run_sweep
from poison.sweep_spec import has_sweep as raw_has_sweep


def list_plugins() -> str:
    import textwrap

    lines = []
    for kind, infos in registry.all_plugins().items():
        lines.append(f"{registry.KINDS[kind]}:")
        if not infos:
            lines.append("  (none registered)")
        for info in infos:
            wrapped = textwrap.wrap(info.description, 92, break_on_hyphens=False) or [""]
            lines.append(f"  {info.name:<22} {wrapped[0]}")
            lines += [f"  {'':<22} {w}" for w in wrapped[1:]]
        lines.append("")
    lines.append("built-in models:")
    for name, m in BUILTIN_MODELS.items():
        lines.append(f"  {name:<22} {m.description}")
    lines.append(f"  {'tiny-random-llama[:L[:H]]':<22} random-init Llama with L layers, hidden size H (tests)")
    for err in registry.load_errors():
        lines.append(f"warning: plugin failed to load: {err}")
    return "\n".join(lines)


def has_sweep(path: str, overrides: list[str] | None = None) -> bool:
    """A sweep or replicated run: more than one run from this config (with the ``--set`` overrides applied)."""
    from poison.config import apply_overrides

    raw = read_config_file(path)
    try:
        raw = apply_overrides(raw, [o for o in overrides or []
                                    if o.split("=", 1)[0].strip().startswith(("replicates", "design"))])
    except PoisonError:
        pass  # the run's own validation names a bad override
    return raw_has_sweep(raw)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cache"]:  # cascade-poison cache {ls,du,verify,gc}: the stage cache (poison.cache)
        from poison.cache import main as cache_main

        return cache_main(argv[1:], prog="cascade-poison cache")
    ap = argparse.ArgumentParser(prog="python -m poison.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"cascade-poison {__version__}")
    ap.add_argument("config", nargs="?", help="YAML config (see configs/)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a config value (repeatable), e.g. --set poison.count=10")
    ap.add_argument("--list", action="store_true", help="list registered plugins and built-in models")
    ap.add_argument("--run-dir", help="write into this run directory instead of <runs_dir>/<name>-<timestamp>")
    ap.add_argument("--force", action="append", default=[], metavar="STAGE",
                    help="recompute a stage (every artifact of it) or STAGE:LABEL (one, e.g. eval:teacher) even if "
                         "cached; stages: " + ", ".join(STAGE_VERSIONS))
    ap.add_argument("--check", action="store_true", help="validate the config and print it resolved, then exit")
    args = ap.parse_args(argv)

    if args.list:
        print(list_plugins())
        return 0
    if not args.config:
        ap.error("a config file is required (or --list)")
    try:
        if args.check:
            run_sets = [o for o in args.overrides if not is_sweep_override(o)]
            if has_sweep(args.config, args.overrides):
                print(describe(load_sweep(args.config, args.overrides)))
            cfg = load_config(args.config, run_sets)
            check_force(args.force)
            pipeline = Pipeline(cfg, Path(cfg.runtime.runs_dir), force=set(args.force))
            for note in pipeline.preflight(create=False):
                print(f"note: {note}", file=sys.stderr)
            print(f"note: {pipeline.check_cache()}", file=sys.stderr)
            print(yaml.safe_dump(resolved_dict(cfg), sort_keys=False))
            return 0
        if has_sweep(args.config, args.overrides):
            run_sweep(args.config, args.overrides)
        else:
            run_config(args.config, args.overrides, args.run_dir, args.force)
    except PoisonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"error: interrupted ({e or 'SIGINT'}); what was being computed was removed, the next run resumes "
              f"from the last finished stage", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
