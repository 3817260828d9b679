#!/usr/bin/env bash
# "Model split across hosts" (a benchmark, not a test): SmolLM2 fully offloaded to one `velollm rpc-server` on
# this host, reached through scripts' delay relay (crates/velollm-fixtures, `delay-relay`) that adds a fixed
# one-way delay to every byte in each direction, as a network between two hosts would. This kernel has no netem.
# For each delay: pp512 and tg128 (llama-bench's tests), and the round trips the relay counted per generated
# token (the difference between a tg128 and a tg64 run, divided by the tokens between them). Prints the table
# for docs/performance.md; raw rows kept in perf-results/rpc/. Loopback only; every process is bounded in time.
#
# Usage: scripts/perf-rpc.sh [DELAYS_US]   (default "0 100 500 2000")
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ensure_debian_packages
ensure_rust
"$repo_root/scripts/fetch-models.sh"
build_velollm
(cd "$repo_root" && cargo build --release --locked -p velollm-fixtures --bin delay-relay)
cd "$repo_root"
velollm=$(velollm_bin)
relay="${CARGO_TARGET_DIR:-$repo_root/target}/release/delay-relay"
raw=perf-results/rpc
mkdir -p "$raw"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

server_port=$(free_port)
"$velollm" rpc-server --port "$server_port" --threads 1 >/dev/null 2>&1 &
server_pid=$!
trap 'kill $server_pid ${relay_pid:-} 2>/dev/null || true' EXIT
wait_port "$server_port"

for delay in ${1:-0 100 500 2000}; do
  for run in pp512 tg128 tg64; do
    relay_port=$(free_port)
    "$relay" --listen "127.0.0.1:$relay_port" --to "127.0.0.1:$server_port" --delay-us "$delay" \
      --max-seconds 900 --stats "$raw/relay-$delay-$run.json" &
    relay_pid=$!
    wait_port "$relay_port"
    case $run in pp512) tests=(--pp 512) ;; tg128) tests=(--tg 128) ;; tg64) tests=(--tg 64) ;; esac
    echo "==> one-way delay ${delay} µs: ${tests[*]}"
    rm -f "$raw/rows-$delay-$run.jsonl"
    "$velollm" benchmark -m smollm2-135m --rpc "127.0.0.1:$relay_port" -ngl all -t 1 "${tests[@]}" -r 3 \
      --warmup 1 -q -o "$raw/rows-$delay-$run.jsonl"
    sleep 0.3
    kill "$relay_pid"; wait "$relay_pid" 2>/dev/null || true
  done
done
python3 scripts/perf_rpc_report.py "$raw" ${1:-0 100 500 2000}
