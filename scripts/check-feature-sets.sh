#!/usr/bin/env bash
# Checks that the feature sets users build compile, and that the pure-Rust set (candle + ollama) pulls in no
# C/C++ build (no llama.cpp, no cmake): it is the install for machines without a C++ toolchain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check() {
  echo "== cargo check --release --locked -p velollm-cli $*"
  cargo check --release --locked -q -p velollm-cli "$@"
}

pure_rust=(--no-default-features --features candle,ollama)
check "${pure_rust[@]}"
if cargo tree --locked -p velollm-cli "${pure_rust[@]}" -e normal,build --prefix none | grep -Eq '^(llama-cpp-sys-2|cmake|bindgen) '; then
  echo "error: the candle+ollama build depends on llama.cpp's C++ build" >&2
  exit 1
fi
echo "   (no llama-cpp-sys-2, cmake or bindgen in its dependency tree)"
check --no-default-features --features llamacpp
