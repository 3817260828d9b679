#!/usr/bin/env python3
"""Turns the JSON results of scripts/perf.sh into docs/performance.md (numbers only from the JSON)."""
import json
import sys
from pathlib import Path

raw_dir, out_md = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(raw_dir.glob("*.json"), key=lambda p: ["smollm2", "gemma3", "qwen2.5"].index(
    next(k for k in ["smollm2", "gemma3", "qwen2.5"] if p.name.startswith(k))))
runs = [(p.stem, json.loads(p.read_text())) for p in files]
env = runs[0][1][0]["environment"]
params = runs[0][1][0]["parameters"]
eng = params["requested"]


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def pm(summary, digits=1):
    if summary is None:
        return "n/a"
    sd = summary.get("stddev")
    return f"{summary['mean']:.{digits}f} ± {sd:.{digits}f}" if sd is not None else f"{summary['mean']:.{digits}f}"


lines = [
    "# Performance",
    "",
    "Measured by `scripts/perf.sh` (the standard suite on each test model, default settings), which wrote this",
    "file from the JSON results. Re-run it to refresh; nothing here is typed by hand.",
    "",
    f"- Machine: {env['cpu_model']}, {env['cpu_physical_cores']} physical cores / {env['cpu_logical_cpus']} logical, "
    f"{env['ram_bytes'] / 2**30:.1f} GiB RAM, {env['os']}, kernel {env['kernel']}",
    f"- velollm {env['velollm_version']} (commit {env['velollm_git_commit']}), {env['backend_version']}",
    f"- llama.cpp build: `{env['backend_build']}`",
    f"- Settings: {eng['n_threads']} threads, ctx {eng['n_ctx']}, batch {eng['n_batch']}/{eng['n_ubatch']}, "
    f"flash-attn {eng['flash_attn']}, mmap {eng['use_mmap']}, greedy, {params['warmup_iterations']} warm-up iteration(s)",
    f"- Date: {runs[0][1][0]['timestamp']}",
    "",
    "## Decode and prompt rates (mean ± sample stddev over timed iterations)",
    "",
    "| model | benchmark | decode tok/s | prompt tok/s (tokens) | TTFT ms | ITL p50 / p99 ms |",
    "|---|---|---|---|---|---|",
]
for name, rows in runs:
    for r in rows:
        s = r["statistics"]
        itl = s["inter_token_latency_ms"]
        lines.append(
            f"| {name} ({r['model']['quantization']}) | {r['config']['name']} | {pm(s['tokens_per_second'])} | "
            f"{pm(s['prompt_tokens_per_second'])} ({r['prompt_eval_count']}) | {pm(s['time_to_first_token_ms'])} | "
            f"{fmt(itl and itl['p50'], 2)} / {fmt(itl and itl['p99'], 2)} |")

lines += [
    "",
    "## Harness overhead against llama.cpp's own perf counters",
    "",
    "Same process, same iterations: velollm's decode interval (first token available → last token available,",
    "which also holds argmax sampling and bookkeeping) against the sum of llama.cpp's `t_eval_ms`; velollm's",
    "prompt-evaluation interval against llama.cpp's `t_p_eval_ms`. Overhead = (velollm / llama.cpp − 1) · 100.",
    "Target: under 1 %.",
    "",
    "| model | decode: velollm ms | llama.cpp ms | overhead | prompt: velollm ms | llama.cpp ms | overhead |",
    "|---|---|---|---|---|---|---|",
]
for name, rows in runs:
    ours = sum(r["harness_overhead"]["eval_ms_velollm"] for r in rows)
    theirs = sum(r["harness_overhead"]["eval_ms_engine"] for r in rows)
    p_ours = sum(r["harness_overhead"]["prompt_eval_ms_velollm"] for r in rows)
    p_theirs = sum(r["harness_overhead"]["prompt_eval_ms_engine"] for r in rows)
    lines.append(f"| {name} | {ours:.1f} | {theirs:.1f} | {(ours / theirs - 1) * 100:+.2f} % | {p_ours:.1f} | "
                 f"{p_theirs:.1f} | {(p_ours / p_theirs - 1) * 100:+.2f} % |")

lines += [
    "",
    "## Start-up",
    "",
    "Process start (first line of `main`) → first timed iteration: argument parsing, the model's sha256 and",
    "header check, the model load, the prompt-fit check, and the first benchmark's warm-up iteration.",
    "",
    "| model | file MB | load ms | start → first timed iteration ms |",
    "|---|---|---|---|",
]
for name, rows in runs:
    r = rows[0]
    lines.append(f"| {name} | {r['model']['bytes'] / 1e6:.1f} | {r['load_time_ms']:.0f} | "
                 f"{fmt(r['startup_to_first_timed_iteration_ms'], 0)} |")
lines.append("")
# Sections written by other scripts (scripts/perf-sweep.sh's sweep tables, the GPU section) follow the sweep
# marker; they are kept as they are.
previous = out_md.read_text() if out_md.exists() else ""
kept = previous[previous.index("<!-- sweep:begin -->"):] if "<!-- sweep:begin -->" in previous else ""
out_md.write_text("\n".join(lines))

# candle vs llama.cpp on the same files: measured side by side by scripts/perf-candle.sh and recorded in
# docs/candle.md; carried over verbatim so docs/performance.md holds every engine's numbers.
candle_doc = Path(__file__).resolve().parent.parent / "docs" / "candle.md"
if candle_doc.exists():
    text = candle_doc.read_text()
    start = text.find("## Performance")
    end = text.find("\n## ", start + 1)
    if start >= 0:
        section = text[start:end if end >= 0 else len(text)].strip().splitlines()
        section[0] = "## candle vs llama.cpp on the same files (from docs/candle.md, by scripts/perf-candle.sh)"
        section = [line.replace("### ", "#### ", 1) if line.startswith("### ") else line for line in section]
        with out_md.open("a") as f:
            f.write("\n" + "\n".join(section) + "\n")

if kept:
    with out_md.open("a") as f:
        f.write("\n" + kept)
