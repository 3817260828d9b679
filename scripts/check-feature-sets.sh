#!/usr/bin/env bash
# Check that every supported cargo feature set of the velollm binary compiles, in particular the build
# without llama.cpp (`--no-default-features --features candle`), which must need no C++ toolchain.
#
# Usage: scripts/check-feature-sets.sh   (uses $CARGO_TARGET_DIR if set)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check() {
    echo "== cargo check --release -p velollm-cli $*"
    cargo check --release -p velollm-cli "$@"
}

check --no-default-features --features candle
check --no-default-features --features llamacpp
check
