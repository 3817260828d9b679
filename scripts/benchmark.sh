#!/usr/bin/env bash
# Quick start, step 1: install what is missing, fetch the default model, build, and run `velollm benchmark`.
# Extra arguments go to `velollm benchmark` (e.g. scripts/benchmark.sh -o results.json).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_debian_packages
ensure_rust
"$repo_root/scripts/fetch-models.sh" smollm2-135m
build_velollm
cd "$repo_root"
exec "$(velollm_bin)" benchmark "$@"
