"""What starting the command costs before it does any work: `python -m poison.run --version` against the same import
with the statistics libraries (scipy.stats, statsmodels) imported up front, as the command did before
``poison.ground.results.compare`` imported them where they are used, and against the bare interpreter.

    .venv/bin/python bench/bench_cli_start.py [--repeats R]

Every start the test suite makes of the command (its error paths, ``--check``, each tiny run) and every ``--check`` a
user makes pays this. Arms run in fresh processes, interleaved so that a noisy machine moves them alike. Printed per
arm: the median wall, user and system CPU seconds (from ``wait4``), the wall and the CPU time (user + system) as
ratios of the eager arm measured in this run, and what share of the machine's cores the start kept busy (the limit
here is the cores: an import is one thread).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poison.ground.core.machine import cpu_flags  # noqa: E402

EAGER = ("import scipy.stats, statsmodels.stats.power, statsmodels.stats.multitest, "
         "statsmodels.stats.contingency_tables; import runpy, sys; sys.argv = ['poison.run', '--version']; "
         "runpy.run_module('poison.run', run_name='__main__')")
ARMS = {
    "interpreter": [sys.executable, "-c", "pass"],
    "eager statistics": [sys.executable, "-c", EAGER],
    "poison.run --version": [sys.executable, "-m", "poison.run", "--version"],
}


def once(cmd: list[str]) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {os.waitstatus_to_exitcode(status)}")
    return {"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, CPU features {cpu_flags()}; {args.repeats} repeats per arm")
    runs: dict[str, list[dict[str, float]]] = {a: [] for a in ARMS}
    for _ in range(args.repeats):
        for arm, cmd in ARMS.items():
            runs[arm].append(once(cmd))
    med = {a: {k: statistics.median(r[k] for r in rs) for k in ("wall", "user", "sys")} for a, rs in runs.items()}
    eager = med["eager statistics"]
    print(f"{'arm':<22} {'wall s':>7} {'user s':>7} {'sys s':>6} {'wall x eager':>13} {'CPU x eager':>11} "
          f"{'cores busy':>10}")
    for arm, m in med.items():
        cpu = m["user"] + m["sys"]
        print(f"{arm:<22} {m['wall']:7.2f} {m['user']:7.2f} {m['sys']:6.2f} {m['wall'] / eager['wall']:13.2f} "
              f"{cpu / (eager['user'] + eager['sys']):11.2f} {cpu / (m['wall'] * cores):10.0%}")


if __name__ == "__main__":
    main()
