"""python -m poison.run CONFIG [--set key.path=value ...] (or: cascade-poison CONFIG ...): run the testbed on one
config, or on every point of its sweep.

python -m poison.run --list prints every registered plugin by kind and the built-in models.
cascade-poison cache {ls,du,verify,gc,slim} [--cache-dir DIR] looks after the stage cache (poison.cache).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from poison import __version__
from poison.config import load_config, read_config_file, resolved_dict
from poison.ground.core import registry
from poison.ground.core.errors import ConfigError, PoisonError
from poison.ground.core.procs import keep_freed_memory, settle_environment
from poison.ground.engines.models import BUILTIN_MODELS
from poison.housekeeping import check_force
from poison.pipeline import Pipeline
from poison.runner import run_config
from poison.stages import all_stages
from poison.stages.data import check_source_sizes
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
            tags = ([f"needs {', '.join(sorted(info.needs))}"] * bool(info.needs)
                    + [f"v{info.version}"] * bool(info.version))
            text = info.description + (f" [{'; '.join(tags)}]" if tags else "")
            wrapped = textwrap.wrap(text, 92, break_on_hyphens=False) or [""]
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


def check_verdict(name: str, device: str, dtype: str, plan: dict | None, notes: int) -> str:
    """``--check``'s last line: the config passed, where and in what dtype it runs, and how many runs it makes (a
    sweep's points x replicates x arms). On stderr, after the resolved config's YAML on stdout."""
    runs = "1 run"
    if plan:
        n, st = len(plan["points"]), plan["settings"]
        reps, arms = st["replicates"]["n"], 2 if st.get("design") == "brand_swap" else 1
        points = n // max(reps * arms, 1)
        parts = [f"{points} sweep points"] if points > 1 else []
        parts += [f"{reps} replicates"] * (reps > 1) + ["2 brand-swap arms"] * (arms > 1)
        runs = f"{n} run{'s' * (n != 1)}" + (f" ({' x '.join(parts)})" if parts else "")
    tail = f"; {notes} note{'s' * (notes != 1)} on the config above" if notes else ""
    return f"config ok: {name}; device {device}, dtype {dtype}; {runs}{tail}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cache"]:  # cascade-poison cache {ls,du,verify,gc,slim}: the stage cache (poison.cache)
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
                         "cached; stages: " + ", ".join(all_stages()))
    ap.add_argument("--resume", metavar="SWEEP_DIR",
                    help="run a sweep or replicated run into this existing sweep directory: its completed points "
                         "(same resolved config) are kept, the others are run")
    ap.add_argument("--repool", action="store_true",
                    help="with --resume: run nothing; pool the sweep's completed points again with this version of "
                         "the code and rewrite its sweep.json, sweep_table.csv and summary.txt")
    ap.add_argument("--replicate", type=int, action="append", metavar="N",
                    help="in a replicated sweep, run only replicate N's points (repeatable; N as in the points' seed= "
                         "label); the others are left for a later --resume, so a long sweep runs in pieces")
    ap.add_argument("--check", action="store_true",
                    help="validate the config, print it resolved and a verdict line, then exit")
    args = ap.parse_args(argv)

    if args.list:
        print(list_plugins())
        return 0
    if not args.config:
        ap.error("a config file is required (or --list)")
    try:
        if args.check:
            run_sets = [o for o in args.overrides if not is_sweep_override(o)]
            plan = load_sweep(args.config, args.overrides) if has_sweep(args.config, args.overrides) else None
            if plan:
                print(describe(plan))
            cfg = load_config(args.config, run_sets)
            check_force(args.force)
            pipeline = Pipeline(cfg, Path(cfg.runtime.runs_dir), force=set(args.force))
            notes = pipeline.preflight(create=False) + check_source_sizes(cfg, pipeline.ctx)
            cache_state = pipeline.check_cache()  # raises, naming the stage and --force, on a damaged artifact
            print(yaml.safe_dump(resolved_dict(cfg), sort_keys=False), flush=True)
            for note in notes:  # after the YAML, beside the verdict, where they are read
                print(f"note: {note}", file=sys.stderr)
            print(f"note: {cache_state}", file=sys.stderr)
            print(check_verdict(cfg.name, pipeline.ctx.device, pipeline.ctx.dtype, plan, len(notes)), file=sys.stderr)
            return 0
        if args.replicate and not has_sweep(args.config, args.overrides):
            raise ConfigError(f"--replicate: {args.config} is a single run (no replicates)")
        if args.repool and not args.resume:
            raise ConfigError("--repool needs --resume SWEEP_DIR: the sweep whose completed points to pool")
        if has_sweep(args.config, args.overrides):
            run_sweep(args.config, args.overrides, resume=args.resume, pool_only=args.repool,
                      only_replicates=args.replicate)
        elif args.resume:
            raise ConfigError(f"--resume: {args.config} is a single run (no sweep:, seeds: or replicates.n > 1); "
                              "a single run resumes from the stage cache by running it again")
        else:
            run_config(args.config, args.overrides, args.run_dir, args.force)
    except PoisonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"error: interrupted ({str(e) or 'SIGINT'}); what was being computed was removed, the next run resumes "
              f"from the last finished stage", file=sys.stderr)
        return 130
    return 0


def cli() -> None:
    """The command's entry point (``python -m poison.run``, ``cascade-poison``): main()'s value is the exit status.

    After an interrupt the process ends itself with 130. CPython would otherwise end it by SIGINT at exit, whatever
    sys.exit said, when the KeyboardInterrupt (caught and reported above) had crossed a C-level ``PyRun_*`` call on
    its way (a stale "unhandled KeyboardInterrupt" flag): the status was 130 or -SIGINT by chance. The atexit
    handlers (Ray's shutdown, logging's flush) run first; what is skipped is the join of non-daemon threads.

    A crash in native code (SIGSEGV, SIGABRT, ...) prints every thread's Python stack to stderr (faulthandler) before
    the process dies, so that a rare crash in a library names where it happened. The environment variables that
    libraries would add mid-run are added first, while the process has one thread (``settle_environment``); with
    ``CASCADE_POISON_MALLOC=keep`` malloc keeps freed memory for the next allocations (``keep_freed_memory``)."""
    import faulthandler

    faulthandler.enable(all_threads=True)
    settle_environment()
    keep_freed_memory()
    rc = main()
    if rc == 130:
        import atexit
        import os

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(rc)


if __name__ == "__main__":
    cli()
