#!/usr/bin/env bash
# The telemetry sampler's effect on timed results: PAIRS alternations of the same llama-bench tests with the
# sampler on and off (the order within a pair alternates too), then the median on/off ratio of each test's t/s.
# Usage: scripts/telemetry-effect.sh [VELOLLM] [MODEL] [PAIRS] [EXTRA BENCHMARK ARGS...]
set -euo pipefail
velollm=${1:-target/release/velollm}
model=${2:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
pairs=${3:-6}
shift $(( $# < 3 ? $# : 3 ))
extra=("$@")
out=$(mktemp -d)
for i in $(seq 1 "$pairs"); do
  if (( i % 2 )); then order="on off"; else order="off on"; fi
  for mode in $order; do
    flag=(); [[ $mode == off ]] && flag=(--no-telemetry)
    "$velollm" benchmark -m "$model" --pp 128 --tg 64 -r 5 -q ${extra[@]+"${extra[@]}"} ${flag[@]+"${flag[@]}"} -o "$out/$i-$mode.jsonl" >/dev/null
  done
done
python3 - "$out" "$pairs" <<'PY'
import json, statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
def rates(path):
    return {r["config"]["name"]: r["avg_ts"] for r in map(json.loads, open(path))}
ratios, rows = {}, []
for i in range(1, pairs + 1):
    on, off = rates(f"{out}/{i}-on.jsonl"), rates(f"{out}/{i}-off.jsonl")
    for test in on:
        ratios.setdefault(test, []).append(on[test] / off[test])
        rows.append(f"pair {i} {test}: on {on[test]:.1f} t/s, off {off[test]:.1f} t/s, ratio {on[test] / off[test]:.4f}")
print("\n".join(rows))
for test, r in ratios.items():
    print(f"{test}: median on/off ratio {statistics.median(r):.4f} (min {min(r):.4f}, max {max(r):.4f}, {len(r)} pairs)")
PY
rm -rf "$out"
