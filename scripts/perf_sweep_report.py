#!/usr/bin/env python3
"""Writes the "Sweeps" section of docs/performance.md from scripts/perf-sweep.sh's JSON Lines (numbers only from
the rows). The section sits between two marker comments and replaces the previous one."""
import json
import sys
from pathlib import Path

raw_dir, out_md = Path(sys.argv[1]), Path(sys.argv[2])
order = ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b"]
BEGIN, END = "<!-- sweep:begin -->", "<!-- sweep:end -->"


def rows_of(model):
    path = raw_dir / f"sweep-{model}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pm(row):
    if row.get("avg_ts") is None:
        return "failed" if row["status"] == "failed" else "n/a"
    sd = row.get("stddev_ts")
    return f"{row['avg_ts']:.1f} ± {sd:.1f}" if sd is not None else f"{row['avg_ts']:.1f}"


def overhead(row, key):
    o = row.get("harness_overhead") or {}
    v = o.get(key)
    return "n/a" if v is None else f"{v:+.2f} %"


models = [m for m in order if (raw_dir / f"sweep-{m}.jsonl").exists()]
first = rows_of(models[0])[0]
env = first["environment"]
lines = [
    BEGIN,
    "## Sweeps: threads × micro-batch, llama-bench's pp512 and tg128",
    "",
    "Written by `scripts/perf-sweep.sh` from its JSON Lines rows (re-run it to refresh). Each cell is llama-bench's",
    "t/s, mean ± sample stddev over 5 repetitions after one warm-up; random token ids, the timed region is the",
    "evaluation calls plus the device synchronize. *Overhead* is velollm's clock against llama.cpp's own perf",
    "counters over the same repetitions (`harness_overhead`: prompt part for pp512, decode part for tg128); the",
    "target is under 1 %.",
    "",
    f"- Machine: {env['cpu_model']}, {env['cpu_physical_cores']} physical cores, {env['os']}; "
    f"{env['backend_version']}; {first['timestamp']}",
    "",
]
for model in models:
    rows = rows_of(model)
    name = rows[0]["model"].get("name") or model
    lines += [f"### {model} ({name}, {rows[0]['model'].get('quantization')})", "",
              "| threads | n_ubatch | pp512 t/s | overhead (prompt) | tg128 t/s | overhead (decode) |",
              "|---:|---:|---:|---:|---:|---:|"]
    combos = []
    for row in rows:
        key = (row["parameters"]["requested"]["n_threads"], row["parameters"]["requested"]["n_ubatch"])
        if key not in combos:
            combos.append(key)
    for threads, ubatch in combos:
        cell = {r["config"]["name"]: r for r in rows
                if (r["parameters"]["requested"]["n_threads"], r["parameters"]["requested"]["n_ubatch"]) == (threads, ubatch)}
        pp, tg = cell.get("pp512"), cell.get("tg128")
        lines.append(f"| {threads} | {ubatch} | {pm(pp) if pp else '-'} | "
                     f"{overhead(pp, 'prompt_eval_overhead_percent') if pp else '-'} | {pm(tg) if tg else '-'} | "
                     f"{overhead(tg, 'eval_overhead_percent') if tg else '-'} |")
    lines.append("")
lines.append(END)
section = "\n".join(lines) + "\n"

text = out_md.read_text() if out_md.exists() else "# Performance\n"
if BEGIN in text and END in text:
    text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
else:
    text = text.rstrip("\n") + "\n\n" + section
out_md.write_text(text)
