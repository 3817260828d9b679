#!/usr/bin/env python3
"""The "Model split across hosts" table from scripts/perf-rpc.sh's raw files (stdout, markdown).

Per one-way delay d: pp512 and tg128 means from velollm's rows; ms per generated token = 1000 / tg128 rate;
round trips per token implied by the slope = (ms per token at d - at 0) / (2 d); round trips per token counted
by the relay = (round trips of the tg128 run - round trips of the tg64 run) / (3 repetitions x 64 tokens), the
two runs differing only in 64 decoded tokens per repetition (the same load and warm-up). Rates are llama-bench's
avg_ts of each test (velollm's row field of the same name)."""
import json
import sys
from pathlib import Path

raw = Path(sys.argv[1])
delays = [int(d) for d in sys.argv[2:]] or [0, 100, 500, 2000]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rate(delay, name):
    for row in rows(raw / f"rows-{delay}-{name}.jsonl"):
        if row["config"]["name"] == name and row["status"] == "ok":
            return row["avg_ts"]
    return None


def trips(delay, run):
    return json.loads((raw / f"relay-{delay}-{run}.json").read_text())["round_trips"]


base_ms = None
print("| one-way delay | pp512 t/s | tg128 t/s | ms per token | round trips per token (slope) | round trips per token (counted at the relay) |")
print("|---:|---:|---:|---:|---:|---:|")
for d in delays:
    pp, tg = rate(d, "pp512"), rate(d, "tg128")
    ms = 1000 / tg if tg else None
    if d == 0:
        base_ms = ms
    slope = (ms - base_ms) / (2 * d / 1000) if d and ms and base_ms else None
    counted = (trips(d, "tg128") - trips(d, "tg64")) / (3 * 64)
    fmt = lambda v, p: "—" if v is None else f"{v:.{p}f}"
    print(f"| {d / 1000:g} ms | {fmt(pp, 1)} | {fmt(tg, 1)} | {fmt(ms, 2)} | {fmt(slope, 2)} | {counted:.2f} |")
