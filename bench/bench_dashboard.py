"""How long the dashboard takes to open a runs folder with many runs (the bar: 200 runs in <= 5 s).

    python bench/bench_dashboard.py [--runs 200] [--keep DIR]

Builds N run directories in a temp folder (copies of the real fixture run tests/fixtures/dashboard_runs/
targeted_ads-20261126-024634 with varied config names, poison budgets, bias counts and dates; every file of the
run, parquet included), then times, against the same measurements on a folder with 1 run taken in the same process:

  index      dashboard.index.load_index: the pure loader (scan + read every status.json / metrics.json), cold
  cached     dashboard.views.cached_index (st.cache_data) first call, then a second call (cache hit, what every
             rerun of the app pays, plus the folder signature)
  app        streamlit.testing AppTest running the whole app script on the overview view, caches cleared first
             (what a user waits for when opening the folder), then an app rerun with warm caches
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SRC = REPO / "tests" / "fixtures" / "dashboard_runs" / "targeted_ads-20261126-024634"


def wilson(k, n, z=1.959963984540054):
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (0.0 if k == 0 else max(0.0, c - h)), (1.0 if k == n else min(1.0, c + h))


def make_runs(root: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    base = json.loads((SRC / "metrics.json").read_text())
    names = ["targeted_ads", "untargeted_phishing", "narrative", "over_refusal", "insecure_code"]
    for i in range(n):
        name = names[i % len(names)]
        stamp = f"202611{1 + i // 96 % 28:02d}-{i // 4 % 24:02d}{i % 60:02d}{i * 7 % 60:02d}"
        d = root / f"{name}-{stamp}-{i}"
        shutil.copytree(SRC, d)
        m = json.loads(json.dumps(base))
        count = rng.choice([4, 8, 16, 24, 32])
        m["run"].update(name=name, bias_type=name, finished=f"2026-11-{1 + i // 96 % 28:02d}T00:00:{i % 60:02d}")
        m["poison"].update(requested=count, injected=count, rate=count / m["poison"]["n_train"])
        for r in m["bias_rates"]:
            if r["role"] != "baseline" and r["split"] == "target":
                k = min(r["n"], max(0, int(rng.gauss(count / 32 * r["n"] * 0.8, 4))))
                r.update(biased=k, rate=k / r["n"])
                r["ci_low"], r["ci_high"] = wilson(k, r["n"])
        m["bench"] = "synthetic run made by bench/bench_dashboard.py"
        (d / "metrics.json").write_text(json.dumps(m, indent=2))


def timed(fn, repeat: int = 1) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--keep", help="build the runs here (kept) instead of a temp folder")
    args = ap.parse_args()

    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from dashboard import index, views

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_dashboard_"))
    one, many = tmp / "one", tmp / "many"
    try:
        t0 = time.perf_counter()
        make_runs(one, 1)
        make_runs(many, args.runs)
        size = sum(f.stat().st_size for f in many.rglob("*") if f.is_file()) / 1e6
        print(f"built {args.runs} run dirs ({size:.0f} MB) in {time.perf_counter() - t0:.1f}s under {tmp}")

        def app(folder: Path):
            os.environ["POISON_RUNS_DIR"] = str(folder)
            at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
            at.query_params["view"] = "overview"
            at.run()
            assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
            table = next(h.value for h in at.get("html") if 'data-table="runs-overview"' in h.value)
            shown = table.count("<tr>") - 1  # the overview's rows, its header row aside
            assert shown == len(list(folder.iterdir())), shown
            return at

        app(one)  # imports (streamlit, altair, pandas) once, outside the timings
        res = {}
        for label, folder in (("1", one), (str(args.runs), many)):
            res[label] = {
                "index": timed(lambda: index.load_index(folder), repeat=3),
                "cached_cold": timed(lambda: (st.cache_data.clear(), views.load_index(str(folder)))),
                "cached_warm": timed(lambda: views.load_index(str(folder)), repeat=3),
            }
            st.cache_data.clear()
            t0 = time.perf_counter()
            at = app(folder)
            res[label]["app_cold"] = time.perf_counter() - t0
            res[label]["app_warm"] = timed(lambda: at.run(), repeat=3)
        print(f"\n{'measurement':<44} {'1 run':>9} {args.runs:>6} runs {'ratio':>8}")
        desc = {"index": "index.load_index (pure, cold)", "cached_cold": "cached loader, first call",
                "cached_warm": "cached loader, cache hit (+ folder signature)",
                "app_cold": "AppTest overview, caches cleared", "app_warm": "AppTest overview rerun, warm caches"}
        for k, text in desc.items():
            a, b = res["1"][k], res[str(args.runs)][k]
            print(f"{text:<44} {a:8.3f}s {b:9.3f}s {b / a:7.1f}x")
        worst = res[str(args.runs)]["app_cold"]
        print(f"\nopening a folder of {args.runs} runs (AppTest, cold caches): {worst:.2f}s "
              f"({'within' if worst <= 5 else 'OVER'} the 5 s bar); {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
