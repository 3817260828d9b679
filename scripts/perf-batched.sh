#!/usr/bin/env bash
# Batched sequences (a benchmark, not a timed test): llama-batched-bench's test on SmolLM2, pp128+tg32 with
# 1, 2, 4 and 8 sequences (separate prompts, then one shared prompt), then writes the "Batched sequences"
# section of docs/performance.md from the JSON Lines rows: batched-bench's columns, each row's TTFT and ITL,
# and velollm's clock against llama.cpp's own counters (tokens must match exactly). Run it on a quiet machine.
#
# Usage: scripts/perf-batched.sh [OUTPUT_MD]   (default docs/performance.md; raw rows kept in perf-results/)
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
rm -f "$raw_dir/batched.jsonl"
echo "==> smollm2-135m: pp128+tg32, -npl 1,2,4,8, separate and shared prompts"
"$(velollm_bin)" benchmark -m smollm2-135m --pp 128 --tg 32 -npl 1,2,4,8 -r 3 -o "$raw_dir/batched.jsonl"
"$(velollm_bin)" benchmark -m smollm2-135m --pp 128 --tg 32 -npl 1,2,4,8 -pps -r 3 -o "$raw_dir/batched.jsonl"
python3 scripts/perf_batched_report.py "$raw_dir/batched.jsonl" "$out_md"
echo "==> wrote the Batched sequences section of $out_md"
