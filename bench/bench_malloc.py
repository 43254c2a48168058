"""What the process's memory settings cost or buy: glibc malloc's defaults against ``keep_freed_memory`` (no mmap for
large blocks, no trimming on free) and the test suite's ``gc.freeze`` after collection.

    .venv/bin/python bench/bench_malloc.py [--repeats R] [--arms system,keep,keep+freeze] [-- COMMAND ...]

The workload is a command run in a fresh process per arm and repeat, arms interleaved so that a noisy machine moves
them alike; by default the KD tests on tiny random-init models (``pytest tests/test_kd_masked.py``), where a batch's
logits over a 49,152-token vocabulary are the largest allocations. Any command works, e.g. a run of the CLI
(``-- .venv/bin/python -m poison.run configs/smoke.yaml``), which calls ``keep_freed_memory`` itself (it acts only
when ``CASCADE_POISON_MALLOC=keep``).

Arms (environment of the child):

- ``system``: ``CASCADE_POISON_MALLOC=system``, ``CASCADE_POISON_GC_FREEZE=0``: glibc's defaults, every allocation
  above its mmap threshold mapped and unmapped each time, and no freeze;
- ``keep``: ``keep_freed_memory`` on, no freeze;
- ``keep+freeze``: both, as the test suite runs (tests/conftest.py).

Printed per run: wall, user and system CPU seconds, minor page faults, peak resident memory (from ``wait4``); then per
arm the median, and wall, CPU and system time as ratios of ``system`` measured in this run. The machine's own limit
here is its cores: the share of the wall time the CPUs were busy (user + system over wall x cores) is printed too.
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

ARMS = {
    "system": {"CASCADE_POISON_MALLOC": "system", "CASCADE_POISON_GC_FREEZE": "0"},
    "keep": {"CASCADE_POISON_MALLOC": "keep", "CASCADE_POISON_GC_FREEZE": "0"},
    "keep+freeze": {"CASCADE_POISON_MALLOC": "keep", "CASCADE_POISON_GC_FREEZE": "1"},
}
DEFAULT = [sys.executable, "-m", "pytest", "-q", "-p", "no:logging", "-p", "no:cacheprovider",
           "tests/test_kd_masked.py"]


def measure(cmd: list[str], env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    return {"rc": os.waitstatus_to_exitcode(status), "wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
            "minflt": ru.ru_minflt, "maxrss_gib": ru.ru_maxrss / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--arms", default="system,keep,keep+freeze")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = [c for c in a.command if c != "--"] or DEFAULT
    arms = a.arms.split(",")
    for arm in arms:
        if arm not in ARMS:
            print(f"error: --arms: unknown arm {arm!r} (choices: {', '.join(ARMS)})", file=sys.stderr)
            return 2
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print(f"machine: CPU flags {cpu_flags()}, {cores} cores; workload: {' '.join(cmd)}")
    runs: dict[str, list[dict]] = {arm: [] for arm in arms}
    for r in range(a.repeats):
        for arm in arms:
            m = measure(cmd, ARMS[arm])
            runs[arm].append(m)
            print(f"{arm:12s} repeat {r}: rc {m['rc']}  wall {m['wall']:7.1f} s  user {m['user']:7.1f} s  "
                  f"sys {m['sys']:6.1f} s  minor faults {m['minflt'] / 1e6:6.2f} M  peak RSS {m['maxrss_gib']:.2f} GiB",
                  flush=True)
    med = {arm: {k: statistics.median(m[k] for m in ms) for k in ("wall", "user", "sys", "minflt", "maxrss_gib")}
           for arm, ms in runs.items()}
    base = med.get("system")
    print("\nmedian per arm" + (" (ratios: of the system arm, this run)" if base else ""))
    for arm, m in med.items():
        busy = (m["user"] + m["sys"]) / (m["wall"] * cores)
        line = (f"{arm:12s} wall {m['wall']:7.1f} s  cpu {m['user'] + m['sys']:7.1f} s (sys {m['sys']:5.1f})  "
                f"faults {m['minflt'] / 1e6:5.2f} M  peak RSS {m['maxrss_gib']:.2f} GiB  CPUs busy {busy:4.0%}")
        if base:
            cpu = (m["user"] + m["sys"]) / (base["user"] + base["sys"])
            sys_ratio = m["sys"] / max(base["sys"], 1e-9)
            line += f"  | wall x{m['wall'] / base['wall']:.2f}  cpu x{cpu:.2f}  sys x{sys_ratio:.2f}"
        print(line)
    return 0 if all(m["rc"] == 0 for ms in runs.values() for m in ms) else 1


if __name__ == "__main__":
    sys.exit(main())
