#!/usr/bin/env bash
# Quick start, step 2: install what is missing, fetch the test models, and run the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

started=$(date +%s)
step() { # the phase's name, and how long the command has run so far (README states the totals)
  local elapsed=$(( $(date +%s) - started ))
  echo "==> $* [$((elapsed / 60))m$(printf %02d $((elapsed % 60)))s]"
}
ensure_debian_packages test
ensure_rust
use_ccache
"$repo_root/scripts/fetch-models.sh"
step "llama-cpp-python's OpenAI-compatible server for the openai tests (built once, cached outside the clone)"
"$repo_root/scripts/pyserver.sh" >/dev/null
cd "$repo_root"
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (warnings are errors)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
step "feature sets, built and run on a real model (pure Rust; llama.cpp only; Ollama only)"
bash scripts/check-feature-sets.sh
step "cargo test"
# One test at a time within each test binary: two llama.cpp processes with busy-waiting OpenMP threads on a
# 2-core machine slow each other down tenfold (the whole suite took 5 min in parallel, 2 min like this).
RUST_TEST_THREADS="${RUST_TEST_THREADS:-1}" cargo test --release --locked --workspace
step "the guide's Custom Benchmarks example"
# The binary `cargo test` built (a `cargo run -p velollm-benchmarks` would resolve other features and build it again).
"${CARGO_TARGET_DIR:-$repo_root/target}/release/examples/custom_benchmark"
step "test command finished"
