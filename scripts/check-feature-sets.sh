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
# The runs below go to a history of their own, not to the user's ~/.local/share/velollm/history.db.
export VELOLLM_HISTORY="$work/history.db"
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

# candle, candle-transformers and tokenizers take about 4 minutes to compile on 2 cores. Cargo reuses them only
# when every crate they depend on resolves with the same features, so the pure-Rust build, the default build and
# the test build (dev-dependencies included) must agree on candle's whole dependency closure; otherwise the
# test command compiles candle twice (crates/velollm-candle/Cargo.toml asks for the features that differed).
candle_closure=$(cargo tree --locked -p candle-transformers -e normal --prefix none -f '{p}' | sed 's/ (\*)$//' | sort -u)
closure_features() { # cargo tree arguments: each crate of candle's closure with the features it gets there
  cargo tree --locked "$@" --prefix none -f '{p}|{f}' | sed 's/ (\*)$//' | sort -u |
    awk -F'|' 'NR == FNR { closure[$0]; next } $1 in closure' <(echo "$candle_closure") -
}
tests_features=$(closure_features --workspace -e normal,dev)
for build in "${pure_rust[*]}" ""; do
  # shellcheck disable=SC2086 # the feature arguments are words
  if ! drift=$(diff <(closure_features -p velollm-cli $build -e normal) <(echo "$tests_features")); then
    echo "error: candle's dependencies resolve differently in \`cargo build -p velollm-cli $build\` than in the" \
      "test build, so candle would be compiled twice; ask for the same features in crates/velollm-candle/Cargo.toml:" >&2
    echo "$drift" >&2
    exit 1
  fi
done
echo "== candle's dependency closure resolves alike in the pure-Rust, default and test builds (compiled once)"
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
