//! End-to-end runs of the real `velollm` binary with the candle backend, and `-b auto`.

mod common;

use common::*;
use serde_json::Value;

fn schema_errors(results: &Value) -> Vec<String> {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("docs/result.schema.json")).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("valid JSON Schema");
    validator.iter_errors(results).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

fn benchmark_json(name: &str, backend: &[&str]) -> (Value, String) {
    let dir = scratch(name);
    let out_path = dir.join("results.json");
    let model_path = model(SMOLLM2);
    let mut args = vec!["benchmark", "-m", model_path.to_str().unwrap(), "-t", "1"];
    args.extend_from_slice(backend);
    args.extend_from_slice(&["--prompt", "Write a hello world program in Python", "--max-tokens", "6"]);
    args.extend_from_slice(&["--iterations", "2", "--warmup", "1", "-o", out_path.to_str().unwrap()]);
    let out = run(&args);
    let text = stdout(&out);
    assert!(out.status.success(), "stdout: {text}\nstderr: {}", stderr(&out));
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    let errors = schema_errors(&results);
    assert!(errors.is_empty(), "output does not match docs/result.schema.json: {errors:#?}");
    (results, text)
}

#[test]
fn candle_backend_end_to_end() {
    let (results, text) = benchmark_json("candle", &["-b", "candle"]);
    assert!(text.contains("Backend: candle"), "{text}");
    let row = &results[0];
    assert_eq!(row["backend"], "candle");
    assert_eq!(row["environment"]["backend"], "candle");
    assert_eq!(row["environment"]["backend_version"], "candle 0.11.1");
    assert!(row["environment"]["backend_build"].as_str().unwrap().contains("threads 1"));
    assert_eq!(row["eval_count"], 6, "exactly max_tokens per iteration");
    assert_eq!(row["prompt_eval_count"], 7, "SmolLM2 tokenizes the suite prompt to 7 tokens, as llama.cpp does");
    assert!(row["harness_overhead"].is_null(), "candle has no engine counters to compare with");
    assert!(row["tokens_per_second"].as_f64().unwrap() > 0.0);
    for sample in row["samples"].as_array().unwrap() {
        assert!(sample["raw"]["engine_counters"].is_null());
        assert_eq!(sample["raw"]["token_times_ns"].as_array().unwrap().len(), 6);
        // Greedy SmolLM2 on this prompt starts like llama.cpp's (see velollm-candle's greedy test).
        let ids: Vec<u64> =
            sample["raw"]["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(ids, [338, 15175, 476, 19556, 28, 2260]);
    }
}

#[test]
fn auto_backend_records_the_engine_that_ran() {
    let (results, text) = benchmark_json("auto", &[]);
    let expected = if cfg!(feature = "llamacpp") { "llamacpp" } else { "candle" };
    assert!(text.contains(&format!("Backend: {expected}")), "{text}");
    assert_eq!(results[0]["backend"], expected);
}
