//! End-to-end runs of the real `velollm` binary on real GGUF models.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn schema_validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("docs/result.schema.json")).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("docs/result.schema.json is a valid JSON Schema")
}

fn assert_valid(results: &Value) {
    let validator = schema_validator();
    let errors: Vec<String> =
        validator.iter_errors(results).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "output does not match docs/result.schema.json: {errors:#?}");
}

#[test]
fn standard_suite_end_to_end() {
    let dir = scratch("suite");
    let out_path = dir.join("results.json");
    let model_path = model(SMOLLM2);
    let out = run(&[
        "benchmark",
        "-m",
        model_path.to_str().unwrap(),
        "--max-tokens",
        "7",
        "--iterations",
        "2",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "stdout: {text}\nstderr: {}", stderr(&out));

    // The guide's console view.
    for expected in [
        "🚀 VeloLLM Benchmark Suite",
        "Backend: llamacpp",
        "Loading model... ✓",
        "Running 3 benchmarks...",
        "Running benchmark: short_completion (2 iterations)",
        "Running benchmark: medium_completion (2 iterations)",
        "Running benchmark: code_generation (2 iterations)",
        "  Iteration 1/2... ",
        "  Iteration 2/2... ",
        "  Average: ",
        "📊 Benchmark Summary",
        "Overall Average:",
        "Results saved to",
    ] {
        assert!(text.contains(expected), "missing '{expected}' in:\n{text}");
    }
    assert!(text.contains("tok/s ("), "per-iteration rate lines missing:\n{text}");

    let results: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_valid(&results);
    let rows = results.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["config"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["short_completion", "medium_completion", "code_generation"]);

    for row in rows {
        assert_eq!(row["backend"], "llamacpp");
        assert_eq!(row["status"], "ok");
        assert!(row.get("complete").is_none(), "schema 3: `status` alone says how the row ended");
        assert_eq!(row["test"]["kind"], "text");
        assert_eq!(row["test"]["n_gen"], 7);
        assert!(row["avg_ns"].is_null(), "llama-bench figures are for token tests only");
        assert!(row.get("avg_ts").is_none(), "schema 3: the rate has one name, tokens_per_second");
        assert_eq!(row["eval_count"], 7, "exactly max_tokens per iteration");
        assert_eq!(row["total_tokens"], 14);
        assert_eq!(row["samples"].as_array().unwrap().len(), 2);
        assert!(row["tokens_per_second"].as_f64().unwrap() > 0.0);
        assert!(row["load_time_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(row["model"]["sha256"], "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
        assert_eq!(row["model"]["architecture"], "llama");
        assert_eq!(row["model"]["quantization"], "Q4_1");
        assert!(row["environment"]["backend_version"].as_str().unwrap().contains("llama.cpp"));
        // What was asked for, and what the engine did with it (a CPU-only build offloads nothing).
        let requested = &row["parameters"]["requested"];
        let effective = &row["parameters"]["effective"];
        assert!(requested["n_threads"].as_u64().unwrap() >= 1);
        assert_eq!(requested["n_gpu_layers"], "all");
        assert_eq!(effective["n_gpu_layers"], 0, "no GPU backend in this build: 0 layers offloaded");
        assert_eq!(effective["n_layers_total"], 31, "SmolLM2's 30 layers plus the output layer");
        assert_eq!(effective["n_ctx"], 2048);
        assert_eq!(effective["n_batch"], 2048);
        assert_eq!(effective["n_ubatch"], 512);
        assert_eq!(effective["n_threads"], requested["n_threads"]);
        assert!(matches!(effective["flash_attn"].as_str(), Some("on" | "off")), "auto is resolved: {effective}");
        assert_eq!(effective["type_k"], "f16");
        let kinds: Vec<&str> =
            effective["context_buffers"].as_array().unwrap().iter().map(|b| b["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"kv_cache") && kinds.contains(&"compute"), "llama.cpp's buffers: {kinds:?}");
        for sample in row["samples"].as_array().unwrap() {
            let m = &sample["metrics"];
            let times: Vec<u64> =
                sample["raw"]["token_times_ns"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
            assert_eq!(times.len(), 7, "a timestamp for every token");
            assert!(times.windows(2).all(|w| w[0] < w[1]), "timestamps strictly increase: {times:?}");
            assert!(m["ttft_ms"].as_f64().unwrap() < m["total_ms"].as_f64().unwrap(), "TTFT < total");
            assert!(m["prompt_eval_ms"].as_f64().unwrap() < m["ttft_ms"].as_f64().unwrap(), "prefill inside TTFT");
            assert!(m["prompt_eval_count"].as_u64().unwrap() >= 5);
            // llama.cpp's own counters saw the same work: the whole prompt, and one decode per later token.
            let counters = &sample["raw"]["engine_counters"];
            assert_eq!(counters["prompt_eval_count"], m["prompt_eval_count"]);
            assert_eq!(counters["eval_count"], 6);
        }
        let overhead = &row["harness_overhead"];
        let ratio = overhead["eval_ratio"].as_f64().unwrap();
        // velollm's interval contains llama.cpp's decode time: it cannot be smaller.
        assert!(ratio >= 0.99, "velollm decode time below llama.cpp's own: {ratio}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn custom_prompt_without_output_shows_the_tip() {
    let out = run(&[
        "benchmark",
        "-m",
        model(SMOLLM2).to_str().unwrap(),
        "--prompt",
        "Say hi",
        "--max-tokens",
        "3",
        "--iterations",
        "1",
        "--warmup",
        "0",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("Running benchmark: custom (1 iterations)"), "{text}");
    assert!(text.contains("💡 Tip: Use -o <file> to save results to JSON"), "{text}");
}

#[test]
fn quiet_prints_only_the_summary() {
    let out = run(&[
        "benchmark",
        "-m",
        model(SMOLLM2).to_str().unwrap(),
        "--prompt",
        "Hi",
        "--max-tokens",
        "2",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "-q",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(!text.contains("Iteration 1/1"), "{text}");
    assert!(text.contains("📊 Benchmark Summary"), "{text}");
}

#[test]
fn all_three_test_models_run_and_are_identified() {
    for (file, arch) in [(SMOLLM2, "llama"), (GEMMA3, "gemma3"), (QWEN25, "qwen2")] {
        let dir = scratch(&format!("models-{arch}"));
        let out_path = dir.join("r.json");
        let out = run(&[
            "benchmark",
            "-m",
            model(file).to_str().unwrap(),
            "--prompt",
            "def fib(n):",
            "--max-tokens",
            "4",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "-q",
            "-o",
            out_path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
        let results: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
        assert_valid(&results);
        assert_eq!(results[0]["model"]["architecture"], arch);
        assert_eq!(results[0]["eval_count"], 4);
        assert!(!results[0]["generated_text"].as_str().unwrap().is_empty(), "{file} generated no text");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn ctrl_c_keeps_finished_benchmarks_and_exits_non_zero() {
    let dir = scratch("ctrlc");
    let out_path = dir.join("partial.json");
    let mut child = velollm()
        .args([
            "benchmark",
            "-m",
            model(SMOLLM2).to_str().unwrap(),
            "--max-tokens",
            "40",
            "--iterations",
            "3",
            "-o",
            out_path.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first benchmark has been saved, then interrupt the second.
    let deadline = Instant::now() + Duration::from_secs(240);
    while !out_path.exists() {
        assert!(Instant::now() < deadline, "first benchmark never finished");
        assert!(child.try_wait().unwrap().is_none(), "velollm exited before it could be interrupted");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("interrupted"));

    let results: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_valid(&results);
    let rows = results.as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() < 3, "expected a partial run, got {} rows", rows.len());
    assert_eq!(rows[0]["config"]["name"], "short_completion");
    assert_eq!(rows[0]["status"], "ok");
    // The benchmark that was interrupted keeps its finished iterations, marked incomplete.
    if let Some(last) = rows.get(1) {
        assert_eq!(last["status"], "incomplete");
        assert_eq!(last["error"], "interrupted");
        assert_eq!(last["samples"].as_array().unwrap().len() as u64, last["iterations_completed"].as_u64().unwrap());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
