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
  # llama-cpp-python (the GGUF tests' real consumer) compiles from source; pip caches the
  # built wheel, so later runs reuse it. The build is portable AVX2 rather than
  # -march=native: a native build on AMX CPUs emits AMX kernels for q8_0 that crash where
  # the kernel/sandbox does not grant AMX tile state.
  # scripts/constraints-dev.txt pins the whole dev set: see its header for why.
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python -m pip install -q -c scripts/constraints-dev.txt -e ".[all,dev]"
else
  python -m pip install -q -e ".[$extras]"
fi
