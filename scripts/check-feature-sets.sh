#!/usr/bin/env bash
# Builds and runs the feature sets users install, on a real model:
# - candle + ollama + fetch (the install for machines without a C++ toolchain; ring, rustls's crypto for
#   `velollm fetch`, compiles a little C with the C compiler Rust links with): its dependency tree must hold no
#   llama.cpp, cmake or bindgen, and `-b candle` must benchmark SmolLM2;
# - llama.cpp only: `-b llamacpp` must benchmark SmolLM2;
# - ollama only: `-b auto` must say that it needs an in-process engine instead of listing `auto`.
# Each binary is copied aside before the next build replaces target/release/velollm. With scripts/test.sh's ccache
# the llama.cpp-only build reuses the objects of the full build instead of compiling llama.cpp again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
model="models/SmolLM2-135M-Instruct.Q4_1.gguf"

build() { # NAME FEATURES...
  local name=$1
  shift
  echo "== cargo build --release --locked -p velollm-cli $*"
  cargo build --release --locked -q -p velollm-cli "$@"
  cp "$target_dir/release/velollm" "$work/velollm-$name"
}

run_on_model() { # NAME BACKEND
  echo "== velollm-$1 benchmark -b $2 on $model"
  "$work/velollm-$1" benchmark -b "$2" -m "$model" --prompt "Hello" --max-tokens 4 --iterations 1 --warmup 0 \
    -t 2 -q -o "$work/$1.json" >/dev/null
  grep -q '"status": "ok"' "$work/$1.json" || { echo "error: velollm-$1 did not produce an ok row" >&2; exit 1; }
  echo "   ok: $(grep -m1 '"tokens_per_second"' "$work/$1.json" | tr -d ' ,')"
}

pure_rust=(--no-default-features --features candle,ollama,fetch)
if cargo tree --locked -p velollm-cli "${pure_rust[@]}" -e normal,build --prefix none | grep -Eq '^(llama-cpp-sys-2|cmake|bindgen) '; then
  echo "error: the pure-Rust build (${pure_rust[*]}) depends on llama.cpp's C++ build" >&2
  exit 1
fi
echo "== the candle+ollama+fetch dependency tree holds no llama-cpp-sys-2, cmake or bindgen"
tls=$(cargo tree --locked -p velollm-cli -e normal --prefix none | grep -E '^(rustls|native-tls|openssl-sys) ' | sed 's/ (\*)//' | sort -u)
if [ "$(printf '%s\n' "$tls" | grep -c .)" != 1 ] || ! grep -q '^rustls ' <<<"$tls"; then
  echo "error: the default build should have exactly one TLS stack (rustls); it has: $tls" >&2
  exit 1
fi
echo "== one TLS stack in the default build: $tls"
build pure-rust "${pure_rust[@]}"
run_on_model pure-rust candle

build llamacpp --no-default-features --features llamacpp
run_on_model llamacpp llamacpp

build ollama-only --no-default-features --features ollama
echo "== velollm-ollama-only benchmark -b auto"
if out=$("$work/velollm-ollama-only" benchmark -b auto -m "$model" 2>&1); then
  echo "error: -b auto succeeded in a build without an in-process engine" >&2
  exit 1
fi
echo "$out" | grep -q -- "-b auto picks an in-process engine (llamacpp or candle) and this build has neither" || {
  echo "error: unexpected message from -b auto: $out" >&2
  exit 1
}
echo "   ok: $out"
