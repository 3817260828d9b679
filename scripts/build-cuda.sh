#!/usr/bin/env bash
# Builds velollm with llama.cpp's CUDA backend linked in (cargo feature `cuda`), for a machine with an NVIDIA GPU,
# its driver and the CUDA toolkit (nvcc, cudart, cuBLAS). CI does not run this: it has no GPU.
#
#   scripts/build-cuda.sh                      # GPU architecture of this machine's GPU (CMake's "native")
#   CMAKE_CUDA_ARCHITECTURES=90 scripts/build-cuda.sh   # H100/H200 (sm_90) when building without the GPU present
#
# The binary goes to target-cuda/release/velollm (a separate target directory keeps the CPU build). Then:
#   target-cuda/release/velollm detect                       # the GPU as NVML sees it, and llama.cpp's CUDA device
#   target-cuda/release/velollm benchmark -ngl all           # the standard suite, every layer on the GPU
#   target-cuda/release/velollm benchmark -ngl 0-28+4,all --pp 512 --tg 128   # the layer-offload curve
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_debian_packages
ensure_rust
use_ccache

cuda_home="${CUDA_PATH:-${CUDA_HOME:-}}"
if [ -z "$cuda_home" ]; then
  for candidate in /usr/local/cuda /usr/local/cuda-*; do
    [ -x "$candidate/bin/nvcc" ] && { cuda_home=$candidate; break; }
  done
fi
if [ -z "$cuda_home" ] && command -v nvcc >/dev/null 2>&1; then
  cuda_home=$(dirname "$(dirname "$(command -v nvcc)")")
fi
[ -n "$cuda_home" ] && [ -x "$cuda_home/bin/nvcc" ] || {
  echo "error: nvcc not found; install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads) or set CUDA_PATH" >&2
  exit 1
}
export CUDA_PATH="$cuda_home" PATH="$cuda_home/bin:$PATH"
export CMAKE_CUDA_ARCHITECTURES="${CMAKE_CUDA_ARCHITECTURES:-native}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target-cuda}"
echo "==> building velollm with CUDA ($("$cuda_home/bin/nvcc" --version | tail -1); architectures $CMAKE_CUDA_ARCHITECTURES)"
cd "$repo_root"
cargo build --release --locked -p velollm-cli --features cuda
echo "==> built $CARGO_TARGET_DIR/release/velollm"
"$CARGO_TARGET_DIR/release/velollm" detect --format table || true
