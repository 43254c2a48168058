"""Time every stage of a run: cold (fresh stage cache), then the same config again (warm, all cached).

    python bench/bench_stages.py [CONFIG] [--keep-models]

Prints each stage's seconds on the cold run and the cold/warm ratio of the whole run, measured in the same process
run. Models converted from GGUF are kept in .cache/poison/models unless --cold-models is given (then the conversion
is timed too).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", nargs="?", default="configs/targeted_ads.yaml")
    ap.add_argument("--cold-models", action="store_true", help="also time the GGUF -> safetensors conversion")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from poison.runner import run_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    models = tmp / "models" if args.cold_models else Path(".cache/poison/models").resolve()
    ov = [f"runtime.cache_dir={tmp / 'cache'}", f"runtime.runs_dir={tmp / 'runs'}", f"runtime.models_dir={models}",
          *args.overrides]
    t0 = time.time()
    rd, m = run_config(args.config, ov, quiet=True)
    cold = time.time() - t0
    t1 = time.time()
    rd2, m2 = run_config(args.config, ov, quiet=True)
    warm = time.time() - t1

    print(f"config {args.config} | device {m['run']['device']} | dtype {m['run']['dtype']} "
          f"| backend {m['run']['backend']}")
    print(f"\n{'stage':<22} {'cold s':>8}")
    for k, v in m["stages"].items():
        print(f"{k:<22} {v['seconds']:>8.1f}")
    staged = sum(v["seconds"] for v in m["stages"].values())
    print(f"{'(outside stages)':<22} {cold - staged:>8.1f}   model resolution/conversion, imports, report")
    print(f"{'total cold':<22} {cold:>8.1f}")
    print(f"{'total warm (rerun)':<22} {warm:>8.1f}   "
          f"all stages cached: {all(v['cached'] for v in m2['stages'].values())}")
    print(f"\ncold / warm: {cold / warm:.0f}x")
    print("\n" + (rd / "summary.txt").read_text())
    shutil.rmtree(tmp / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
