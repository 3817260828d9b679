#!/usr/bin/env bash
# A/A check of `velollm compare` on this machine (docs/metrics.md, "Interleaved runs: the paired test"): two
# configurations that measure the same thing, many trials, and how often each method calls a difference at
# p < 0.05 (a correct test: about 5 %).
#
#   interleaved: one `--interleave` run of both, compared with --base/--new (paired t-test on the rounds);
#   blocks:      one run of the first, then one of the second, compared as two files (Welch's test).
#
# The two configurations are n_batch 2048 and 1024: n_batch only splits prompt batches, and a tg test decodes one
# token at a time (both are clamped to the context as well), so the engine does the same work for both.
#
# Usage: scripts/aa.sh [TRIALS]   (default 100; env: VELOLLM, MODEL=smollm2-135m, TEST="--tg 32", REPS=10,
#                                  THREADS=2, OUT=aa-results)
# Prints one line per trial and the two rates at the end; the raw files stay in $OUT.
set -euo pipefail
trials=${1:-100}
velollm=${VELOLLM:-target/release/velollm}
model=${MODEL:-smollm2-135m}
read -r -a test <<<"${TEST:---tg 32}"
reps=${REPS:-10}
threads=${THREADS:-2}
out=${OUT:-aa-results}
mkdir -p "$out"
command -v jq >/dev/null || { echo "error: jq is needed (apt-get install jq)" >&2; exit 2; }

bench() { "$velollm" benchmark -m "$model" "${test[@]}" -t "$threads" -r "$reps" -q "$@" >/dev/null; }
# "method verdict" of the first metric of the first pair.
verdict() { jq -r '.comparisons[0].pairs[0].metrics[0] | "\(.method) \(.verdict)"'; }

paired=0
welch=0
for i in $(seq 1 "$trials"); do
  bench --batch-size 2048,1024 --interleave -o "$out/interleaved-$i.json"
  p=$("$velollm" compare "$out/interleaved-$i.json" --base n_batch=2048 --new n_batch=1024 --format json | verdict)
  case $p in
    paired\ *) ;;
    *) echo "error: trial $i was not compared paired ($p): does the run write \"interleaved\"?" >&2; exit 1 ;;
  esac
  bench --batch-size 2048 -o "$out/block-a-$i.json"
  bench --batch-size 1024 -o "$out/block-b-$i.json"
  w=$("$velollm" compare "$out/block-a-$i.json" "$out/block-b-$i.json" --ignore n_batch --format json | verdict)
  case ${p#* } in faster | slower | differs_zero_variance) paired=$((paired + 1)) ;; esac
  case ${w#* } in faster | slower | differs_zero_variance) welch=$((welch + 1)) ;; esac
  echo "trial $i: interleaved $p · blocks $w"
done
awk -v t="$trials" -v p="$paired" -v w="$welch" 'BEGIN {
  printf "A/A over %d trials: paired on interleaved rounds called a difference %d times (%.1f %%), Welch on blocks %d times (%.1f %%)\n", t, p, 100 * p / t, w, 100 * w / t
}'
