#!/usr/bin/env python3
"""The "Model split across hosts" table from scripts/perf-rpc.sh's raw files (stdout, markdown).

Per one-way delay d: pp512 and tg128 means from velollm's rows; ms per generated token = 1000 / tg128 rate;
round trips per token implied by the slope = (ms per token at d - at 0) / (a - a0), where a is the round-trip
delay the relay actually added (the mean time the first chunk of each burst was held in it before being written on, both directions summed; a loaded machine
stretches it beyond 2 d) and a0 the same at d = 0; round trips per token counted
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


def relay(delay, run):
    return json.loads((raw / f"relay-{delay}-{run}.json").read_text())


def trips(delay, run):
    return relay(delay, run)["round_trips"]


base_ms = None
print("| one-way delay asked | round-trip delay achieved | pp512 t/s | tg128 t/s | ms per token | round trips per token (slope) | round trips per token (counted at the relay) |")
print("|---:|---:|---:|---:|---:|---:|---:|")
base_rt = None
for d in delays:
    pp, tg = rate(d, "pp512"), rate(d, "tg128")
    ms = 1000 / tg if tg else None
    achieved_ms = sum(relay(d, "tg128")["mean_one_way_delay_us"]) / 1000
    if d == 0:
        base_ms, base_rt = ms, achieved_ms
    slope = (ms - base_ms) / (achieved_ms - base_rt) if d and ms and base_ms and achieved_ms > base_rt else None
    counted = (trips(d, "tg128") - trips(d, "tg64")) / (3 * 64)
    fmt = lambda v, p: "—" if v is None else f"{v:.{p}f}"
    print(f"| {d / 1000:g} ms | {achieved_ms:.3f} ms | {fmt(pp, 1)} | {fmt(tg, 1)} | {fmt(ms, 2)} | {fmt(slope, 2)} | {counted:.2f} |")
