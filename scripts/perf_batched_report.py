#!/usr/bin/env python3
"""Writes the "Batched sequences" section of docs/performance.md from scripts/perf-batched.sh's JSON Lines
(numbers only from the rows). The section sits between two marker comments and replaces the previous one."""
import json
import sys
from pathlib import Path

rows_path, out_md = Path(sys.argv[1]), Path(sys.argv[2])
BEGIN, END = "<!-- batched:begin -->", "<!-- batched:end -->"
rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
rows = [r for r in rows if r.get("batched") and r["status"] == "ok"]
if not rows:
    sys.exit("no finished batched rows in " + str(rows_path))


def num(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"


first = rows[0]
env = first["environment"]
lines = [
    BEGIN,
    "## Batched sequences: llama-batched-bench's test (`-npl`)",
    "",
    "Written by `scripts/perf-batched.sh` from its JSON Lines rows (re-run it to refresh). Columns are",
    "batched-bench's (docs/metrics.md has the formulas), each the mean over the repetitions; TTFT is the mean over",
    "every sequence and repetition, ITL the p50 / p99 of every sequence's gaps. *Engine check*: llama.cpp's",
    "token count over the row's repetitions (it must equal Σ N_KV) and velollm's clock over its own",
    "(Σ T / Σ (t_p_eval + t_eval)).",
    "",
    f"- Machine: {env['cpu_model']}, {env['cpu_physical_cores']} physical cores, {env['os']}; "
    f"{env['backend_version']}; {first['timestamp']}",
    f"- Model: {first['model'].get('name')} ({first['model'].get('quantization')}); threads "
    f"{first['parameters']['requested']['n_threads']}, batch {first['parameters']['requested']['n_batch']} "
    f"(llama.cpp clamps it to each context's size), "
    f"{first['repetitions']['requested']} repetitions after one warm-up",
    "",
    "| test | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | T s | S t/s | TTFT ms | ITL p50 / p99 ms "
    "| engine check: tokens, clock ratio |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
]
for row in rows:
    b = row["batched"]
    itl = b.get("inter_token_latency_ms")
    check = b.get("engine_check")
    check_text = "n/a" if not check else (
        f"{check['tokens_engine']} = {check['tokens_velollm']}, {num(check['ratio'], 4)}"
        if check["tokens_engine"] == check["tokens_velollm"]
        else f"{check['tokens_engine']} ≠ {check['tokens_velollm']}, {num(check['ratio'], 4)}")
    lines.append(
        f"| {row['config']['name']} | {b['pp']} | {b['tg']} | {b['pl']} | {b['n_kv']} | {num(b['t_pp'], 3)} | "
        f"{num(b['speed_pp'], 1)} | {num(b['t_tg'], 3)} | {num(b['speed_tg'], 1)} | {num(b['t'], 3)} | "
        f"{num(b['speed'], 1)} | {num(b.get('ttft_mean_ms'), 1)} | "
        f"{'n/a' if not itl else num(itl['p50'], 2) + ' / ' + num(itl['p99'], 2)} | {check_text} |")
busy = sorted({w for r in rows for w in r.get("warnings", []) if "busy" in w})
if busy:
    lines += ["", "Warnings the rows carry (the numbers are likely low):", ""] + [f"- {w}" for w in busy]
lines.append(END)
section = "\n".join(lines) + "\n"

text = out_md.read_text() if out_md.exists() else "# Performance\n"
if BEGIN in text and END in text:
    text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
else:
    text = text.rstrip("\n") + "\n\n" + section
out_md.write_text(text)
