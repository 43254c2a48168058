"""How a sweep's points run: ``local`` (one after another in this process) or ``ray`` (each point a Ray task with
the resources it asks for, all submitted at once, so they run side by side on a Ray cluster or on this machine).

Either way each point is an ordinary run (``poison.runner.run_config``) writing its own run directory, and points
share the content-addressed stage cache: the per-key stage lock (poison.stages.protocol) makes the first point that
needs a shared stage (the data stage, a clean control) compute it while the others wait and then read it. With Ray
the cache and runs folders must be storage every node sees (a shared filesystem); the sweep passes them, and the
config, as absolute paths, and each task works in the driver's working directory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from poison.ground.core.errors import PoisonError
from poison.runner import run_config

#: environment variables a Ray task gets from the driver (a cluster's workers do not inherit the driver's)
ENV_PREFIXES = ("CASCADE_POISON_", "HF_", "TRANSFORMERS_", "VLLM_", "TOKENIZERS_")


class SweepError(PoisonError):
    """Points of a sweep failed (the others completed and are in the sweep table)."""


@dataclass
class PointJob:
    index: int
    label: str
    sets: list[str]
    run_dir: str
    total: int = 0  # the sweep's number of points (a resumed sweep runs fewer jobs than that)


def run_local(config: str, jobs: list[PointJob], on_done: Callable[[PointJob, dict], None], quiet: bool) -> None:
    for job in jobs:
        if not quiet:
            print(f"\n=== sweep point {job.index + 1}/{job.total or len(jobs)}: {job.label}", flush=True)
        _, metrics = run_config(config, job.sets, run_dir=job.run_dir, quiet=quiet)
        on_done(job, metrics)


def _point_task(config: str, sets: list[str], run_dir: str, cwd: str) -> dict[str, Any]:
    """One sweep point in a Ray worker: an ordinary run, in the driver's working directory."""
    os.chdir(cwd)
    _, metrics = run_config(config, sets, run_dir=run_dir, quiet=True)
    return metrics


def connect(address: str | None) -> bool:
    """Connect to Ray: ``address`` if given, else a running cluster (``ray start --head``), else a local one on this
    machine. Returns whether this call started the connection (and so should end it)."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = dict(log_to_driver=False, configure_logging=False)
    if address:
        ray.init(address=address, **kw)
        return True
    try:
        ray.init(address="auto", **kw)
    except ConnectionError:
        ray.init(include_dashboard=False, **kw)
    return True


def run_ray(config: str, jobs: list[PointJob], on_done: Callable[[PointJob, dict], None], quiet: bool, *,
            resources: dict[str, float], address: str | None) -> None:
    """Every point a Ray task asking for ``resources`` (num_cpus, num_gpus, memory in bytes); results are handed
    to ``on_done`` as points finish. A failed point does not stop the others; they are reported together after."""
    import ray

    started = connect(address)
    try:
        env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
        opts: dict[str, Any] = {"num_cpus": resources.get("num_cpus", 1), "num_gpus": resources.get("num_gpus", 0),
                                "max_retries": 0}
        if resources.get("memory"):
            opts["memory"] = resources["memory"]
        if env:
            opts["runtime_env"] = {"env_vars": env}
        task = ray.remote(_point_task).options(**opts)
        t0 = time.time()
        pending = {task.remote(config, job.sets, job.run_dir, os.getcwd()): job for job in jobs}
        if not quiet:
            print(f"submitted {len(jobs)} sweep points to Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs, "
                  f"{ray.cluster_resources().get('GPU', 0):.0f} GPUs; each asks {opts['num_cpus']} CPU, "
                  f"{opts['num_gpus']} GPU); each point logs to its run directory's run.log", flush=True)
        failed = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            try:
                metrics = ray.get(done[0])
            except ray.exceptions.RayError as e:  # the point's own error, or Ray's (a worker killed for memory)
                cause = (getattr(e, "cause", None) or e) if isinstance(e, ray.exceptions.RayTaskError) else e
                msg = str(cause) if isinstance(cause, PoisonError) else f"{type(cause).__name__}: {cause}"
                failed.append(f"sweep point {job.index + 1} ({job.label}): {msg.splitlines()[0] if msg else ''}"
                              f" (see {job.run_dir}/run.log)")
                continue
            if not quiet:
                took = time.time() - t0
                print(f"  point {job.index + 1}/{job.total or len(jobs)} {job.label}: done after {took:.0f}s",
                      flush=True)
            on_done(job, metrics)
        if failed:
            raise SweepError(f"{len(failed)} of {len(jobs)} sweep points failed (the others are in the sweep "
                             "table):\n" + "\n".join(failed))
    finally:
        if started:
            ray.shutdown()
