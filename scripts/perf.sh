#!/usr/bin/env bash
# Performance check (a benchmark, not a timed test): runs the standard suite on the three test models and
# writes docs/performance.md from the JSON results: decode and prompt rates, harness overhead against
# llama.cpp's own perf counters, and the time from process start to the first timed iteration.
#
# Usage: scripts/perf.sh [OUTPUT_MD]   (default docs/performance.md; raw JSON kept in perf-results/)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_debian_packages
ensure_rust
"$repo_root/scripts/fetch-models.sh"
build_velollm
cd "$repo_root"
out_md=${1:-docs/performance.md}
raw_dir=perf-results
mkdir -p "$raw_dir"
for model in smollm2-135m gemma3-270m qwen2.5-coder-0.5b; do
  echo "==> $model"
  "$(velollm_bin)" benchmark -m "$model" -q -o "$raw_dir/$model.json"
done
python3 scripts/perf_report.py "$raw_dir" "$out_md"
echo "==> wrote $out_md"
