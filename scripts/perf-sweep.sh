#!/usr/bin/env bash
# Sweep check (a benchmark, not a timed test): on each test model, threads × micro-batch with llama-bench's pp512
# and tg128, then writes the "Sweeps" section of docs/performance.md from the JSON Lines results: the rates, and
# velollm's clock against llama.cpp's own perf counters for the same work (the harness overhead, which must stay
# under 1 %). Run it on a quiet machine: it measures.
#
# Usage: scripts/perf-sweep.sh [OUTPUT_MD]   (default docs/performance.md; raw rows kept in perf-results/)
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
  echo "==> $model: threads 1,2 × ubatch 128,512, pp512 and tg128"
  rm -f "$raw_dir/sweep-$model.jsonl"
  "$(velollm_bin)" benchmark -m "$model" -t 1,2 --ubatch-size 128,512 --pp 512 --tg 128 -r 5 \
    -o "$raw_dir/sweep-$model.jsonl"
done
python3 scripts/perf_sweep_report.py "$raw_dir" "$out_md"
echo "==> wrote the Sweeps section of $out_md"
