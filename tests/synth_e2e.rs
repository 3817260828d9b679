//! End-to-end: `velollm synth` writes a small synthetic model, and both in-process engines benchmark it, with
//! every result saying synthetic. Plus the refusals.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Writes a 2-layer SmolLM2-135M-shape Q4_0 model (about 35 MB) into a fresh scratch directory.
fn synth_small(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let path = dir.join("smollm2-2layers.gguf");
    let out =
        run(&["synth", "--like", "smollm2-135m", "--quant", "q4_0", "--layers", "2", "-o", path.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "stdout: {text}\nstderr: {}", stderr(&out));
    for expected in [
        "Wrote ",
        "smollm2-2layers.gguf",
        "SYNTHETIC SmolLM2 135M (synthetic: random weights, 2 of 30 layers)",
        "(Q4_0)",
        "bytes in ",
        " s (",
        "its generated text is meaningless",
    ] {
        assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert!(text.contains(&group(bytes)), "the byte count {bytes} is printed:\n{text}");
    (dir, path)
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    digits
        .chars()
        .enumerate()
        .flat_map(|(i, c)| (i > 0 && (digits.len() - i).is_multiple_of(3)).then_some(',').into_iter().chain([c]))
        .collect()
}

/// Benchmarks `model` with `backend` and returns the JSON row and the console output.
fn benchmark(dir: &Path, model: &Path, backend: &str) -> (Value, String) {
    let json = dir.join(format!("{backend}.json"));
    let out = run(&[
        "benchmark",
        "-m",
        model.to_str().unwrap(),
        "-b",
        backend,
        "-t",
        "1",
        "--prompt",
        "Hello",
        "--max-tokens",
        "4",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "-o",
        json.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{backend}: stdout: {text}\nstderr: {}", stderr(&out));
    let rows: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (rows[0].clone(), text)
}

fn assert_synthetic_run(row: &Value, text: &str, backend: &str) {
    assert_eq!(row["backend"], backend);
    assert_eq!(row["model"]["synthetic"], true, "{backend}: the row says synthetic");
    assert!(row["model"]["name"].as_str().unwrap().contains("synthetic"), "{row}");
    assert_eq!(row["model"]["architecture"], "llama");
    assert_eq!(row["model"]["quantization"], "Q4_0");
    assert_eq!(row["eval_count"], 4, "{backend}: tokens were generated");
    assert_eq!(row["samples"][0]["raw"]["token_ids"].as_array().unwrap().len(), 4);
    assert!(row["tokens_per_second"].as_f64().unwrap() > 0.0);
    assert!(text.contains("SYNTHETIC weights"), "{backend}: the console says synthetic:\n{text}");
}

#[cfg(feature = "llamacpp")]
#[test]
fn llamacpp_runs_a_synthetic_model() {
    let (dir, model) = synth_small("synth-llamacpp");
    let (row, text) = benchmark(&dir, &model, "llamacpp");
    assert_synthetic_run(&row, &text, "llamacpp");
}

#[cfg(feature = "candle")]
#[test]
fn candle_runs_a_synthetic_model() {
    let (dir, model) = synth_small("synth-candle");
    let (row, text) = benchmark(&dir, &model, "candle");
    assert_synthetic_run(&row, &text, "candle");
}

#[test]
fn the_file_is_complete_and_replaceable_by_another_synthetic_one() {
    let (dir, model) = synth_small("synth-again");
    // Writing again over a synthetic file is allowed; nothing but the model is left in the directory.
    let out = run(&["synth", "--like", "smollm2-135m", "--layers", "1", "--seed", "9", "-o", model.to_str().unwrap()]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["smollm2-2layers.gguf"]);
}

#[test]
fn list_shows_the_shapes() {
    let out = run(&["synth", "--list"]);
    let text = stdout(&out);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    for name in
        ["llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "qwen2.5-7b", "qwen2.5-0.5b", "smollm2-135m", "gemma-3-1b"]
    {
        assert!(text.contains(name), "missing {name}:\n{text}");
    }
    assert!(text.contains("1.91 GB"), "Llama 3.2 3B in Q4_0:\n{text}");
}

#[test]
fn refusals_are_one_line_errors() {
    let dir = scratch("synth-refusals");
    let target = dir.join("x.gguf");
    let target = target.to_str().unwrap();
    let unknown_shape = run(&["synth", "--like", "llama-4-400b", "-o", target]);
    assert_clean_failure(&unknown_shape, "unknown shape 'llama-4-400b' for --like (known: smollm2-135m,");
    assert!(stderr(&unknown_shape).contains("llama-3.2-3b"));
    let unknown_type = run(&["synth", "--like", "llama-3.2-3b", "--quant", "q4_k_m", "-o", target]);
    assert_clean_failure(&unknown_type, "unknown type 'q4_k_m' for --quant (known: q4_0, q8_0, f16)");
    let layers = run(&["synth", "--like", "llama-3.2-3b", "--layers", "0", "-o", target]);
    assert_clean_failure(&layers, "--layers must be 1 to 28 for llama-3.2-3b (0 given)");
    let unwritable = run(&["synth", "--like", "llama-3.2-3b", "-o", "/nonexistent-velollm-dir/x.gguf"]);
    assert_clean_failure(&unwritable, "directory /nonexistent-velollm-dir does not exist");
    let real = model(SMOLLM2);
    let real_model = run(&["synth", "--like", "smollm2-135m", "-o", real.to_str().unwrap()]);
    assert_clean_failure(&real_model, "refusing to replace");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "nothing was written");
}
