#!/usr/bin/env bash
# The GPU proof, run ON a machine with an NVIDIA GPU, CUDA, CMake and a C++ compiler, from gpu-bundle/
# (scripts/gpu-bundle.sh prepares it here). It
#   1. builds llama.cpp's CUDA backend as a loadable ggml backend from the bundle's llama.cpp sources;
#   2. prints `velollm detect` (the GPU through NVML, llama.cpp's CUDA device);
#   3. writes a synthetic Llama-3.2-3B-shape Q4_0 file with the binary itself (~2 GB, seconds);
#   4. runs the standard suite fully offloaded, and an -ngl sweep from 0 to every layer with pp512/tg128, recording
#      VRAM and energy per token (NVML) per point.
# Results go to $OUT (the device tool's output folder) or ./gpu-results.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle="$PWD/gpu-bundle"
out="${OUT:-$PWD/gpu-results}"
mkdir -p "$out"
[ -x "$bundle/velollm" ] || { echo "error: gpu-bundle/ is missing; run scripts/gpu-bundle.sh first" >&2; exit 1; }
arch="${CMAKE_CUDA_ARCHITECTURES:-90}"
jobs="${JOBS:-$(nproc)}"

nvidia-smi -L | tee "$out/nvidia-smi.txt"
cuda_home="${CUDA_PATH:-$(ls -d /usr/local/cuda-* /usr/local/cuda 2>/dev/null | head -1)}"
export PATH="$cuda_home/bin:$PATH"

echo "==> building ggml's CUDA backend (sm_$arch, $jobs jobs)"
work=/tmp/velollm-ggml-cuda
rm -rf "$work" && mkdir -p "$work/src"
tar -C "$work/src" -xzf "$bundle/llama.cpp-src.tgz"
# ggml on its own (the crate's copy of llama.cpp lacks ggml's tests, examples and pkg-config template).
touch "$work/src/ggml/ggml.pc.in"
start=$(date +%s)
cmake -S "$work/src/ggml" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_BACKEND_DL=ON \
  -DGGML_NATIVE=OFF -DGGML_CUDA=ON -DGGML_CUDA_NCCL=OFF -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF >"$out/cmake-configure.log" 2>&1
cmake --build "$work/build" --target ggml-cuda -j "$jobs" >"$out/cmake-build.log" 2>&1
cp "$(find "$work/build" -name 'libggml-cuda.so' | head -1)" "$bundle/backends/"
echo "   built in $(( $(date +%s) - start )) s"

export LD_LIBRARY_PATH="$bundle/lib:/usr/local/nvidia/lib64:$cuda_home/lib64:${LD_LIBRARY_PATH:-}"
export VELOLLM_GGML_BACKENDS="$bundle/backends"
velollm="$bundle/velollm"

echo "==> velollm detect"
"$velollm" detect --format json >"$out/detect.json"
"$velollm" detect --format table | tee "$out/detect.txt"

echo "==> velollm synth (Llama-3.2-3B shape, Q4_0)"
model=/tmp/llama-3.2-3b.Q4_0.synthetic.gguf
"$velollm" synth --like llama-3.2-3b --quant q4_0 --vocab "$bundle/vocab.gguf" -o "$model" | tee "$out/synth.txt"

echo "==> the standard suite, every layer on the GPU"
"$velollm" benchmark -m "$model" -ngl all -t "$(nproc)" -o "$out/suite.json" | tee "$out/suite.txt"

echo "==> the layer-offload curve: -ngl 0..29, pp512 and tg128"
"$velollm" benchmark -m "$model" -ngl 0-28+4,all --pp 512 --tg 128 -r 3 -t "$(nproc)" \
  -o "$out/sweep.jsonl" -o "$out/sweep.json" | tee "$out/sweep.txt"
echo "==> results in $out"
