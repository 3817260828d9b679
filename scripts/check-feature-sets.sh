#!/usr/bin/env bash
# Checks that the feature sets users build compile, that the pure-Rust set (candle + ollama + fetch) pulls in
# no C++ build (no llama.cpp, no cmake, no bindgen): it is the install for machines without a C++ toolchain
# (ring, rustls's crypto for `velollm fetch`, compiles a little C with the C compiler Rust links with), and
# that the default build has one TLS stack (rustls), not a second one (native-tls/OpenSSL).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check() {
  echo "== cargo check --release --locked -p velollm-cli $*"
  cargo check --release --locked -q -p velollm-cli "$@"
}

pure_rust=(--no-default-features --features candle,ollama,fetch)
check "${pure_rust[@]}"
if cargo tree --locked -p velollm-cli "${pure_rust[@]}" -e normal,build --prefix none | grep -Eq '^(llama-cpp-sys-2|cmake|bindgen) '; then
  echo "error: the pure-Rust build (${pure_rust[*]}) depends on llama.cpp's C++ build" >&2
  exit 1
fi
echo "   (no llama-cpp-sys-2, cmake or bindgen in its dependency tree)"
tls=$(cargo tree --locked -p velollm-cli -e normal --prefix none | grep -E '^(rustls|native-tls|openssl-sys) ' | sed 's/ (\*)//' | sort -u)
if [ "$(printf '%s\n' "$tls" | grep -c .)" != 1 ] || ! grep -q '^rustls ' <<<"$tls"; then
  echo "error: the default build should have exactly one TLS stack (rustls); it has: $tls" >&2
  exit 1
fi
echo "   (one TLS stack in the default build: $tls)"
# llama.cpp alone, without `fetch` (its CLI then says how else to get a model)
check --no-default-features --features llamacpp
