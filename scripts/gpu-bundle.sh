#!/usr/bin/env bash
# Prepares gpu-bundle/: what the GPU check (scripts/gpu-check.sh) needs on a GPU machine that has CUDA, CMake and a
# C++ compiler but no Rust toolchain and no network (the project's lent machines). It holds
#   - a velollm binary built here with ggml's backends as shared libraries (feature `dynamic-backends`:
#     every x86-64 CPU variant, chosen at start-up), with its libllama/libggml libraries;
#   - the llama.cpp sources that binary was built from, so the CUDA backend is built there from the same ggml;
#   - a 1 MB vocabulary file for `velollm synth --vocab` (the test models are too large to carry).
# Carry it with the device tool: run(command="bash scripts/gpu-check.sh", carry=["gpu-bundle"]). It stays under
# the 64 MiB a call may carry.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_debian_packages
ensure_rust
use_ccache
cd "$repo_root"
bundle="$repo_root/gpu-bundle"
target="${GPU_BUNDLE_TARGET_DIR:-$repo_root/target-gpu-bundle}"

# ggml refuses GGML_NATIVE with dynamically loaded backends, and the binary must run on another machine: build
# the Rust code for the x86-64-v2 baseline (ggml's CPU variants pick AVX2/AVX-512 at run time themselves).
echo "==> building velollm with dynamically loaded ggml backends (llama.cpp only)"
RUSTFLAGS="-C target-cpu=x86-64-v2" CARGO_TARGET_DIR="$target" \
  cargo build --release --locked -p velollm-cli --no-default-features --features dynamic-backends

rm -rf "$bundle"
mkdir -p "$bundle/lib" "$bundle/backends"
cp "$target/release/velollm" "$bundle/"
out_dir=$(ls -td "$target"/release/build/llama-cpp-sys-2-*/out | head -1)
find "$out_dir" -maxdepth 3 \( -name 'libllama*.so*' -o -name 'libggml.so*' -o -name 'libggml-base.so*' \) \
  -exec cp -P {} "$bundle/lib/" \;
cp "$out_dir"/backends/*.so "$bundle/backends/"
# The Sapphire Rapids variant carries ggml's AMX kernels, which die with SIGILL on the project's machines
# (cmake/no-amx.cmake): without it ggml picks the best remaining variant (AVX-512) there.
rm -f "$bundle/backends/libggml-cpu-sapphirerapids.so"
strip --strip-unneeded "$bundle/velollm" "$bundle"/lib/*.so* "$bundle"/backends/*.so 2>/dev/null || true

src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-0.1.161/llama.cpp | head -1)
tar -C "$src" -czf "$bundle/llama.cpp-src.tgz" CMakeLists.txt cmake ggml include src vendor 2>/dev/null \
  || tar -C "$src" -czf "$bundle/llama.cpp-src.tgz" CMakeLists.txt cmake ggml include src

# The binary finds its libraries through LD_LIBRARY_PATH (scripts/gpu-check.sh sets it the same way).
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$bundle/velollm" synth --like llama-3.2-3b --vocab-only -o "$bundle/vocab.gguf"

# The bundle must run here too (on the CPU variants) before it is carried anywhere.
"$bundle/velollm" benchmark -m models/SmolLM2-135M-Instruct.Q4_1.gguf --tg 4 -r 1 --warmup 0 -q \
  -o "$bundle/self-check.json" >/dev/null
grep -q '"status": "ok"' "$bundle/self-check.json" || { echo "error: the bundle did not run here" >&2; exit 1; }
rm -f "$bundle/self-check.json"
size=$(du -sm "$bundle" | cut -f1)
echo "==> gpu-bundle/ is ready (${size} MiB; the device tool carries at most 64 MiB)"
[ "$size" -lt 64 ] || { echo "error: gpu-bundle is too large to carry" >&2; exit 1; }
