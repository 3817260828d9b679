#!/usr/bin/env bash
# Quick start, step 2: install what is missing, fetch the test models, and run the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

started=$(date +%s)
ensure_debian_packages test
ensure_rust
use_ccache
"$repo_root/scripts/fetch-models.sh"
cd "$repo_root"
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (warnings are errors)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
echo "==> feature sets, built and run on a real model (pure Rust; llama.cpp only; Ollama only)"
bash scripts/check-feature-sets.sh
echo "==> cargo test"
# One test at a time within each test binary: two llama.cpp processes with busy-waiting OpenMP threads on a
# 2-core machine slow each other down tenfold (the whole suite took 5 min in parallel, 2 min like this).
RUST_TEST_THREADS="${RUST_TEST_THREADS:-1}" cargo test --release --locked --workspace
echo "==> the guide's Custom Benchmarks example"
cargo run --release --locked -q -p velollm-benchmarks --example custom_benchmark
echo "==> test command finished in $(( $(date +%s) - started )) s"
