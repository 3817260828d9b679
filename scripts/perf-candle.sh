#!/usr/bin/env bash
# candle against llama.cpp on the same GGUF files and threads, side by side in one run: for each model,
# `velollm benchmark -b llamacpp` then `-b candle` on one custom prompt, then a table of decode and prompt
# rates from the JSON results.
#
# Usage: scripts/perf-candle.sh [MODEL.gguf ...]
#   env: THREADS (2), TOKENS (128), ITERATIONS (5), VELOLLM (path to the binary; default: target/release)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

threads=${THREADS:-2}
tokens=${TOKENS:-128}
iterations=${ITERATIONS:-5}
velollm=${VELOLLM:-${CARGO_TARGET_DIR:-target}/release/velollm}
[ -x "$velollm" ] || { echo "error: $velollm not found; build it with: cargo build --release -p velollm-cli" >&2; exit 1; }
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(models/SmolLM2-135M-Instruct.Q4_1.gguf models/gemma-3-270m-q4_k_m.gguf
                                     models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf)
out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT

for model in "${models[@]}"; do
    for backend in llamacpp candle; do
        json="$out_dir/$(basename "$model" .gguf).$backend.json"
        echo "== $backend on $model" >&2
        "$velollm" benchmark -q -b "$backend" -m "$model" -t "$threads" --max-tokens "$tokens" \
            --iterations "$iterations" --prompt "Write a hello world program in Python" -o "$json" >&2
    done
done

python3 - "$out_dir" "$threads" <<'PY'
import glob, json, os, sys
out_dir, threads = sys.argv[1], sys.argv[2]
rows = {}
for path in sorted(glob.glob(os.path.join(out_dir, "*.json"))):
    result = json.load(open(path))[0]
    model = os.path.basename(result["config"]["model"])
    rows.setdefault(model, {})[result["backend"]] = result
env = next(iter(next(iter(rows.values())).values()))["environment"]
print(f"CPU: {env.get('cpu_model', '?')} | threads {threads}")
print()
print("| model | llama.cpp decode tok/s | candle decode tok/s | candle/llama.cpp | llama.cpp prompt tok/s | candle prompt tok/s | candle/llama.cpp |")
print("|---|---:|---:|---:|---:|---:|---:|")
for model, by_backend in rows.items():
    l, c = by_backend.get("llamacpp"), by_backend.get("candle")
    if not (l and c):
        continue
    ld, cd = l["tokens_per_second"], c["tokens_per_second"]
    lp, cp = l["prompt_tokens_per_second"], c["prompt_tokens_per_second"]
    print(f"| {model} | {ld:.1f} | {cd:.1f} | {cd / ld:.2f} | {lp:.1f} | {cp:.1f} | {cp / lp:.2f} |")
PY
