#!/usr/bin/env bash
# The model-hash cache's effect on time to the first number (docs/performance.md): ROUNDS rounds of the same
# `--tg 16 -r 1` run in three modes, the order rotating every round:
#   none  --no-history: no history, the model hashed every run (what every run did before the cache);
#   cold  a new history file: the model hashed, then its hash stored;
#   warm  a history that has the hash: the model file is not read for hashing.
# Per mode: the median wall time of the whole process and its CPU time (user + system, /usr/bin/time: less
# sensitive than wall time to other jobs on a shared machine), and the median of the row's
# startup_to_first_timed_iteration_ms (process start → first timed iteration, velollm's monotonic clock). The model file is in the page
# cache in every mode (each mode reads it every round), so this is the hashing's CPU time, not a cold disk.
# Usage: scripts/hash-cache-effect.sh [VELOLLM] [MODEL] [ROUNDS]
set -euo pipefail
velollm=${1:-target/release/velollm}
model=${2:-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
rounds=${3:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # MODE ROUND
  local flags=()
  case $1 in
    none) flags=(--no-history) ;;
    cold) rm -f "$out/cold.db"*; flags=(--history "$out/cold.db") ;;
    warm) flags=(--history "$out/warm.db") ;;
  esac
  /usr/bin/time -f "$1 $2 %e %U %S" -a -o "$out/wall.txt" \
    "$velollm" benchmark -m "$model" --tg 16 -r 1 -q "${flags[@]}" -o "$out/$1-$2.json" >/dev/null 2>&1
}
# Prime the warm history (its first run hashes and stores the hash).
"$velollm" benchmark -m "$model" --tg 16 -r 1 -q --history "$out/warm.db" >/dev/null 2>&1
modes=(none cold warm)
for i in $(seq 1 "$rounds"); do
  for k in 0 1 2; do
    run "${modes[$(( (i + k) % 3 ))]}" "$i"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
wall, cpu = {}, {}
for line in open(f"{out}/wall.txt"):
    mode, i, elapsed, user, system = line.split()
    wall.setdefault(mode, []).append(float(elapsed))
    cpu.setdefault(mode, []).append(float(user) + float(system))
for mode in ("none", "cold", "warm"):
    first = [json.load(open(f"{out}/{mode}-{i}.json"))[0]["startup_to_first_timed_iteration_ms"]
             for i in range(1, len(wall[mode]) + 1)]
    print(f"{mode:5} wall median {statistics.median(wall[mode]):.2f} s (min {min(wall[mode]):.2f}, max {max(wall[mode]):.2f}); "
          f"CPU median {statistics.median(cpu[mode]):.2f} s (min {min(cpu[mode]):.2f}, max {max(cpu[mode]):.2f}); "
          f"start → first timed iteration median {statistics.median(first):.0f} ms (min {min(first):.0f}, max {max(first):.0f}); n={len(first)}")
PY
