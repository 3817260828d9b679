//! Sweeps and llama-bench tests through the real binary on the real default model.

mod common;

use common::*;
use serde_json::Value;

fn schema_validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("docs/result.schema.json")).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("docs/result.schema.json is a valid JSON Schema")
}

/// Runs `velollm benchmark` on SmolLM2 with `args`, writing JSON and JSON Lines; returns (rows, stdout).
fn sweep(name: &str, args: &[&str]) -> (Vec<Value>, String) {
    let dir = scratch(name);
    let json = dir.join("r.json");
    let jsonl = dir.join("r.jsonl");
    let model_path = model(SMOLLM2);
    let mut full = vec!["benchmark", "-m", model_path.to_str().unwrap(), "--warmup", "0"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", json.to_str().unwrap(), "-o", jsonl.to_str().unwrap()]);
    let out = run(&full);
    let text = stdout(&out);
    assert!(out.status.success(), "stdout: {text}\nstderr: {}", stderr(&out));
    let rows: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let errors: Vec<String> =
        schema_validator().iter_errors(&rows).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "output does not match docs/result.schema.json: {errors:#?}");
    // The JSON Lines file holds the same rows, one complete object per line.
    let lines: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is a whole row"))
        .collect();
    assert_eq!(&lines, rows.as_array().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
    (lines, text)
}

fn requested(row: &Value, key: &str) -> Value {
    row["parameters"]["requested"][key].clone()
}

fn effective(row: &Value, key: &str) -> Value {
    row["parameters"]["effective"][key].clone()
}

#[test]
fn threads_by_ubatch_sweep_runs_every_combination_with_its_parameters() {
    let (rows, text) =
        sweep("threads-ubatch", &["--pp", "64", "--tg", "8", "-t", "1,2", "--ubatch-size", "128,512", "-r", "2"]);
    // Without --ctx-size each test gets llama-bench's context (pp64: 64, tg8: 8), so each row its own context.
    assert!(text.contains("Plan: 8 runs (1 model load, 8 contexts)"), "{text}");
    assert_eq!(rows.len(), 8, "2 tests × 2 ubatch × 2 threads");
    let combos: Vec<(u64, u64, String)> = rows
        .iter()
        .map(|r| {
            (
                requested(r, "n_ubatch").as_u64().unwrap(),
                requested(r, "n_threads").as_u64().unwrap(),
                r["config"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(u64, u64, String)> = [(128, 1), (128, 2), (512, 1), (512, 2)]
        .into_iter()
        .flat_map(|(u, t)| [(u, t, "pp64".to_string()), (u, t, "tg8".to_string())])
        .collect();
    assert_eq!(combos, expected, "ordered so each context is created once");
    for row in &rows {
        assert_eq!(row["status"], "ok");
        assert_eq!(effective(row, "n_threads"), requested(row, "n_threads"));
        let needed = row["test"]["n_prompt"].as_u64().unwrap() + row["test"]["n_gen"].as_u64().unwrap();
        assert_eq!(requested(row, "n_ctx"), needed, "llama-bench's n_prompt + n_gen + n_depth");
        let n_ctx = effective(row, "n_ctx").as_u64().unwrap();
        assert!(n_ctx >= needed, "llama.cpp pads it");
        // The ubatch that ran: as asked, clamped (with the batch) to the context asked for, as llama.cpp clamps
        // llama-bench's.
        let ubatch = requested(row, "n_ubatch").as_u64().unwrap().min(needed);
        assert_eq!(effective(row, "n_ubatch"), ubatch, "the ubatch that ran");
        assert_eq!(row["samples_ts"].as_array().unwrap().len(), 2, "-r 2");
        assert!(row["tokens_per_second"].as_f64().unwrap() > 0.0);
    }
    // The console ends with a llama-bench-style table of the columns that vary.
    let table = text.lines().find(|l| l.starts_with("| model")).expect("a sweep table");
    assert!(table.contains("n_ubatch") && table.contains("threads") && table.contains("t/s"), "{table}");
    assert!(!table.contains("type_k") && !table.contains("fa"), "constant parameters are not columns: {table}");
    assert_eq!(text.lines().filter(|l| l.starts_with("| ") && l.contains("pp64")).count(), 4, "{text}");
}

#[test]
fn gpu_layer_sweep_on_a_cpu_build_says_so_once_and_records_zero_offloaded() {
    let (rows, text) = sweep("ngl", &["-ngl", "0,all", "--tg", "4", "-r", "1"]);
    assert_eq!(text.matches("every -ngl value (0, all) runs on the CPU").count(), 1, "{text}");
    assert!(text.contains("Plan: 2 runs (2 model loads, 2 contexts)"), "{text}");
    assert_eq!(requested(&rows[0], "n_gpu_layers"), 0);
    assert_eq!(requested(&rows[1], "n_gpu_layers"), "all");
    for row in &rows {
        assert_eq!(effective(row, "n_gpu_layers"), 0, "nothing is offloaded without a GPU backend");
        assert_eq!(effective(row, "gpu_devices"), serde_json::json!([]));
    }
}

#[test]
fn token_tests_process_exactly_their_token_counts() {
    let (rows, _) = sweep("pp-tg", &["--pp", "64", "--tg", "32", "--pg", "16,8", "-r", "2"]);
    let names: Vec<&str> = rows.iter().map(|r| r["config"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp64", "tg32", "pp16+tg8"]);
    let expect = [(64, 0), (0, 32), (16, 8)];
    for (row, (n_prompt, n_gen)) in rows.iter().zip(expect) {
        assert_eq!((row["test"]["n_prompt"].as_u64(), row["test"]["n_gen"].as_u64()), (Some(n_prompt), Some(n_gen)));
        assert_eq!(row["samples_ns"].as_array().unwrap().len(), 2);
        for sample in row["samples"].as_array().unwrap() {
            let raw = &sample["raw"];
            assert_eq!(raw["prompt_tokens"], n_prompt);
            assert_eq!(raw["token_times_ns"].as_array().unwrap().len() as u64, n_gen);
            // llama.cpp's own counters saw exactly the same work inside the timed region.
            assert_eq!(raw["engine_counters"]["prompt_eval_count"], n_prompt);
            assert_eq!(raw["engine_counters"]["eval_count"], n_gen);
            let test_ns = raw["test_ns"].as_u64().unwrap();
            assert!(test_ns > 0);
            // t/s = (n_prompt + n_gen) / t, as llama-bench computes it.
            let ts = sample["metrics"]["tokens_per_second"].as_f64().unwrap();
            assert!((ts - (n_prompt + n_gen) as f64 * 1e9 / test_ns as f64).abs() < 1e-6 * ts);
        }
        let samples_ts: Vec<f64> = row["samples_ts"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let mean = samples_ts.iter().sum::<f64>() / samples_ts.len() as f64;
        // llama-bench's avg_ts is the row's one rate, and its mean statistic.
        assert!((row["tokens_per_second"].as_f64().unwrap() - mean).abs() < 1e-9 * mean);
        assert_eq!(row["tokens_per_second"], row["statistics"]["tokens_per_second"]["mean"]);
    }
    // A prompt test is not a decode test: no roofline figure, and no TTFT.
    assert!(rows[0]["time_to_first_token_ms"].is_null());
}

#[test]
fn depth_is_filled_outside_the_timed_region() {
    let (rows, _) = sweep("depth", &["--tg", "8", "--depth", "0,256", "-r", "3", "--ctx-size", "512"]);
    let names: Vec<&str> = rows.iter().map(|r| r["config"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["tg8", "tg8 @ d256"]);
    let deep = &rows[1];
    assert_eq!(deep["test"]["n_depth"], 256);
    for sample in deep["samples"].as_array().unwrap() {
        let raw = &sample["raw"];
        assert_eq!(raw["depth_tokens"], 256);
        assert!(raw["depth_prepare_ns"].as_u64().unwrap() > 0, "the depth was put in the cache (prefill or restore)");
        // Inside the timed region llama.cpp evaluated no prompt at all: the 256 tokens were already cached.
        assert_eq!(raw["engine_counters"]["prompt_eval_count"], 0);
        assert_eq!(raw["engine_counters"]["eval_count"], 8);
        let prepare = raw["depth_prepare_ns"].as_u64().unwrap();
        let test = raw["test_ns"].as_u64().unwrap();
        assert!(test > 0 && prepare > 0);
    }
    // Decoding over 256 cached tokens is not faster than over none (attention reads more).
    let shallow = rows[0]["avg_ns"].as_f64().unwrap();
    assert!(
        deep["avg_ns"].as_f64().unwrap() > 0.5 * shallow,
        "depth changed the work: {shallow} vs {}",
        deep["avg_ns"]
    );
}

#[test]
fn repetitions_auto_says_why_it_stopped() {
    let args = ["--tg", "8", "-r", "auto", "--target-ci", "50", "--max-time", "30", "--min-repetitions", "4"];
    let (rows, _) = sweep("auto", &[&args[..], &["--min-time", "0.1"]].concat());
    let reps = &rows[0]["repetitions"];
    assert_eq!(reps["mode"], "auto");
    assert_eq!(reps["target_ci_percent"], 50.0);
    assert_eq!(reps["max_time_s"], 30.0);
    assert_eq!(reps["min_repetitions"], 4);
    assert_eq!(reps["min_time_s"], 0.1);
    assert_eq!(reps["consecutive_required"], 5);
    let n = rows[0]["samples"].as_array().unwrap().len();
    let checks = reps["checks"].as_u64().unwrap() as usize;
    match reps["stopped_because"].as_str().unwrap() {
        "ci_target" => {
            assert!(n >= 4 + 4, "the minimum, then five checks in a row: {n}");
            assert!(checks >= 5 && checks <= n - 3, "{checks} checks over {n} repetitions");
            assert!(reps["ci_half_width_percent"].as_f64().unwrap() <= 50.0);
        }
        "time_cap" => assert!(n >= 1),
        other => panic!("unexpected stop rule {other}"),
    }
    if n >= 3 {
        assert!(reps["outliers"]["count"].as_u64().unwrap() as usize <= n);
    }
    assert_eq!(rows[0]["iterations_completed"].as_u64().unwrap() as usize, n);
}

#[test]
fn interleave_pairs_the_rows_of_a_sweep_by_round() {
    let (rows, _) = sweep("interleave", &["--tg", "8", "--pp", "16", "-t", "1,2", "-r", "3", "--interleave"]);
    assert_eq!(rows.len(), 4);
    let run = rows[0]["interleaved"]["run"].as_str().unwrap().to_string();
    let mut slots: Vec<u64> = Vec::new();
    for row in &rows {
        assert_eq!(row["status"], "ok", "{row:#}");
        assert_eq!(row["interleaved"]["run"], run.as_str());
        assert_eq!(row["interleaved"]["combinations"], 4);
        slots.push(row["interleaved"]["slot"].as_u64().unwrap());
        assert_eq!(row["samples_ts"].as_array().unwrap().len(), 3);
    }
    slots.sort_unstable();
    assert_eq!(slots, [0, 1, 2, 3]);
    // Round-robin: every row's first repetition ran before any row's third (sample timestamps are per row, so
    // compare through the rows' finishing order: all four finish in the last round, in slot order).
    let order: Vec<u64> = rows.iter().map(|r| r["interleaved"]["slot"].as_u64().unwrap()).collect();
    assert_eq!(order, [0, 1, 2, 3]);
}

#[test]
fn text_suite_and_token_tests_in_one_invocation() {
    let (rows, text) = sweep("mixed", &["--suite", "--tg", "4", "--max-tokens", "3", "--iterations", "1", "-r", "1"]);
    let kinds: Vec<&str> = rows.iter().map(|r| r["test"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["text", "text", "text", "tg"]);
    assert!(text.contains("📊 Benchmark Summary"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("| ") && l.contains(" tg4 ")), "the table lists the token test: {text}");
}
