"""python -m poison.audit SUSPECT --base BASE: audit a finished model against its public base, without its training
data. Prints the suspicion score and the strings the suspect is biased towards (``--json FILE`` writes them).

SUSPECT and BASE are model specs as in a config (a built-in name, a local folder, a hub id). The neutral probe
prompts come from the offline data sources (``--sources``; ``--prompts`` of them in all), never from a run's eval set.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from poison.ground.core import registry
from poison.ground.core.errors import ConfigError, PoisonError
from poison.ground.core.io import atomic_write_json
from poison.ground.core.yamlio import load_yaml
from poison.ground.engines.context import RunContext


def probe_prompts(ctx: RunContext, sources: list[str], n: int, seed: int) -> list[str]:
    """``n`` prompts drawn evenly from the named data sources (seeded)."""
    per = max(1, -(-n // len(sources)))
    out: list[str] = []
    for name in sources:
        rows = registry.get("data_source", name, path="--sources").build({}, ctx=ctx).load()
        random.Random(f"{seed}:{name}").shuffle(rows)
        out += [r["prompt"] for r in rows[:per]]
    random.Random(seed).shuffle(out)
    return out[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m poison.audit", description=__doc__.replace("``", ""),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suspect", help="the model to audit")
    ap.add_argument("--base", required=True, help="its public base model")
    ap.add_argument("--audit", default="logit_shift", help="registered audit (python -m poison.run --list)")
    ap.add_argument("--arg", dest="args", action="append", default=[], metavar="KEY=VALUE",
                    help="an argument of the audit plugin (repeatable), e.g. --arg top_k=20")
    ap.add_argument("--prompts", type=int, default=40, help="neutral probe prompts (default 40)")
    ap.add_argument("--sources", default="drug_reviews,gsm8k,sharegpt", help="data sources of the probe prompts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models-dir", default=".cache/poison/models", help="where built-in models are converted")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--json", help="write the result to this file")
    a = ap.parse_args(argv)
    try:
        if a.prompts < 1:
            raise ConfigError("--prompts: give at least one prompt")
        args = {}
        for kv in a.args:
            if "=" not in kv:
                raise ConfigError(f"--arg {kv!r}: expected KEY=VALUE")
            k, v = kv.split("=", 1)
            args[k.strip()] = load_yaml(v, f"--arg {k}") if v else ""
        # the standalone context's judge (the ``llm`` judge, default arguments) serves an audit that needs one
        ctx = RunContext.standalone(models_dir=a.models_dir, device=a.device, dtype=a.dtype)
        plugin = registry.get("audit", a.audit, path="--audit").build(args, "--arg", ctx)
        suspect = ctx.model(a.suspect, "SUSPECT")
        base = ctx.model(a.base, "--base")
        prompts = probe_prompts(ctx, [s.strip() for s in a.sources.split(",") if s.strip()], a.prompts, a.seed)
        res = plugin.run(suspect, base, prompts)
    except PoisonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"audit {a.audit}: {a.suspect} against {a.base} on {len(prompts)} probe prompts")
    if res["score"] is None:  # an audit that cannot read this model says why (e.g. adapter_stats on a full model)
        print(f"not scored: {res.get('info', {}).get('skipped', 'no reason given')}")
    else:
        print(f"suspicion score {res['score']:.3f}")
    for i, t in enumerate(res["top"], 1):
        print(f"  {i:>2}. {t['string']!r:<40} {t['score']:8.3f}  (in {t['count']} continuations)")
    if a.json:
        atomic_write_json(Path(a.json), {"suspect": a.suspect, "base": a.base, "audit": a.audit, **res})
    return 0


if __name__ == "__main__":
    sys.exit(main())
