"""``cascade-poison cache`` (or ``python -m poison.cache``): look after the stage cache of ``--cache-dir``.

    ls       every cached artifact: stage, key, size, when it was last used, which runs used it; then the derived
             folders (a LoRA model's merged weights, ``derived:<stage>``), listed apart
    du       size per stage (and of the damaged artifacts set aside), the derived folders apart, and in all
    verify   every artifact against its marker (sizes and content hashes) and whether each file loads; names each
             damaged stage and file; exit 1 when something is damaged (a damaged derived folder is only named: the
             next run that needs it rebuilds it)
    gc       remove artifacts unused for longer than --older-than, then the least recently used ones until the cache
             is under --max-size; never one a live run holds the lock of, uses or is computing, or that a run
             directory that still exists references, unless --force; damaged copies set aside (.corrupt-*) go first,
             then derived folders (rebuilt on demand in seconds: the first to go under --max-size; --derived removes
             them all), and those whose artifact is gone
    slim     rewrite LoRA artifacts of the layout before issue 27 (merged float32 ``model/`` beside ``adapter/``, 536 MB
             each) as today's adapter + tokenizer files (22 MB), results unchanged (:mod:`poison.cache.slim`)

Derived folders (``<cache>/derived/<stage>/<key>-<dtype>``, poison.ground.engines.merged) are never referenced by a run
directory: only a live run that uses their artifact, or one building them (their lock), keeps them.

Safe while runs are going: an artifact is removed under its lock (as a run computes it) by renaming it out of the
way first, so a run sees it whole or not at all; ``verify`` and ``ls`` only read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from poison.cache.core import (DEFAULT_CACHE, Entry, cmd_du, cmd_gc, cmd_ls, cmd_verify, entries,  # noqa: F401
                               derived_entries, human, parse_age, parse_size, plan_gc, protection, referenced,
                               remove)
from poison.cache.slim import cmd_slim
from poison.ground.core.errors import ConfigError, PoisonError


def main(argv: Optional[list[str]] = None, prog: str = "python -m poison.cache") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", default=DEFAULT_CACHE,
                    help=f"the cache (runtime.cache_dir; default {DEFAULT_CACHE})")
    common = argparse.ArgumentParser(add_help=False)  # --cache-dir also after the command
    common.add_argument("--cache-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", parents=[common], help="list cached artifacts")
    sub.add_parser("du", parents=[common], help="size per stage")
    sub.add_parser("verify", parents=[common], help="check every artifact's sizes, hashes and files; exit 1 on damage")
    gc = sub.add_parser("gc", parents=[common], help="remove old or least recently used artifacts")
    gc.add_argument("--older-than", metavar="AGE", help="remove artifacts unused for longer (90m, 12h, 30d, 2w)")
    gc.add_argument("--max-size", metavar="SIZE", help="then remove the least recently used until under (e.g. 20G)")
    gc.add_argument("--runs-dir", default="runs", help="run directories whose artifacts are kept (default: runs)")
    gc.add_argument("--derived", action="store_true",
                    help="remove every derived folder (merged weights of LoRA models, rebuilt on demand)")
    gc.add_argument("--force", action="store_true", help="remove also locked, live or referenced artifacts")
    gc.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    slim = sub.add_parser("slim", parents=[common], help="rewrite old-layout LoRA artifacts as adapter + tokenizer")
    slim.add_argument("--runs-dir", default="runs", help="run directories (a live one keeps what it uses)")
    slim.add_argument("--dry-run", action="store_true", help="say what would be slimmed, change nothing")
    args = ap.parse_args(argv)
    cache = Path(args.cache_dir).expanduser()
    try:
        if not cache.is_dir():
            raise ConfigError(f"--cache-dir {cache}: no such folder")
        if args.command == "ls":
            return cmd_ls(cache)
        if args.command == "du":
            return cmd_du(cache)
        if args.command == "verify":
            return cmd_verify(cache)
        if args.command == "slim":
            return cmd_slim(cache, args.dry_run, Path(args.runs_dir))
        return cmd_gc(cache, args.older_than, args.max_size, args.force, args.dry_run, Path(args.runs_dir),
                      derived=args.derived)
    except PoisonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
