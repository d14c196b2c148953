#!/usr/bin/env bash
# Create .venv and install quantgrid with the extras named in $1 ("all" or "dev").
# torch is pinned first: with torch already present, quantgrid's `torch>=2.4` installs
# nothing more (on a CUDA machine the same pin gives the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
if [ "$extras" = dev ]; then
  # llama-cpp-python compiles from source; pip caches the built wheel, so later runs reuse it.
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python -m pip install -q -e ".[all,dev]"
else
  python -m pip install -q -e ".[$extras]"
fi
