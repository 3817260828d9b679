//! llama-batched-bench's test (`-npl`) through the real binary, real llama.cpp and the real SmolLM2: the
//! columns follow from the raw timeline, the tokens llama.cpp counted are exactly batched-bench's N_KV, and
//! velollm's clock agrees with llama.cpp's own over the same region.

mod common;

use common::*;
use serde_json::Value;

/// Runs `velollm benchmark` on SmolLM2 with `args` and no warm-up, writing JSON; returns (rows, stdout).
fn batched(name: &str, args: &[&str]) -> (Vec<Value>, String) {
    let dir = scratch(name);
    let json = dir.join("r.json");
    let model_path = model(SMOLLM2);
    let mut full = vec!["benchmark", "-m", model_path.to_str().unwrap(), "--warmup", "0"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", json.to_str().unwrap()]);
    let out = run(&full);
    let text = stdout(&out);
    assert!(out.status.success(), "stdout: {text}\nstderr: {}", stderr(&out));
    let rows: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (rows.as_array().unwrap().clone(), text)
}

fn u64s(value: &Value) -> Vec<u64> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn batched_rows_carry_batched_bench_s_columns_and_llama_cpp_counts_the_same_tokens() {
    let (rows, text) = batched("npl", &["--pp", "32", "--tg", "8", "-npl", "1,2,4", "-r", "2"]);
    let names: Vec<&str> = rows.iter().map(|r| r["config"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["pp32+tg8 x1", "pp32+tg8 x2", "pp32+tg8 x4"]);
    // The console shows batched-bench's table, one line per B.
    assert!(text.contains("|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s"), "{text}");
    assert!(text.contains("|    32 |      8 |    4 |    160 |"), "{text}");
    for (row, b) in rows.iter().zip([1u64, 2, 4]) {
        let n_kv = b * (32 + 8);
        assert_eq!(row["status"], "ok");
        assert_eq!(row["test"]["parallel"]["n_sequences"], b);
        // Each B has its own context holding B sequences, as llama.cpp reported it.
        assert_eq!(row["parameters"]["requested"]["n_seq_max"].as_u64().unwrap_or(1), b);
        let effective = &row["parameters"]["effective"];
        if b > 1 {
            assert_eq!(effective["n_seq_max"], b);
            assert_eq!(effective["kv_unified"], false);
            let n_ctx_seq = effective["n_ctx_seq"].as_u64().unwrap();
            assert!(n_ctx_seq >= 40 && n_ctx_seq * b == effective["n_ctx"].as_u64().unwrap());
        }
        let columns = &row["batched"];
        assert_eq!(
            (columns["pp"].as_u64(), columns["tg"].as_u64(), columns["pl"].as_u64()),
            (Some(32), Some(8), Some(b))
        );
        assert_eq!(columns["n_kv"], n_kv);
        let samples = row["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2);
        let mut speeds = Vec::new();
        for sample in samples {
            let raw = &sample["raw"];
            let test_ns = raw["test_ns"].as_u64().unwrap();
            let prompt_ns = raw["prompt_eval_ns"].as_u64().unwrap();
            assert_eq!(raw["prompt_tokens"], b * 32);
            // llama.cpp evaluated exactly N_KV tokens in the timed region. It files a decode of one token
            // under "eval" and of several under "prompt eval", so with B > 1 the steps are "prompt eval".
            let counters = &raw["engine_counters"];
            let (p_eval, eval) =
                (counters["prompt_eval_count"].as_u64().unwrap(), counters["eval_count"].as_u64().unwrap());
            assert_eq!(p_eval + eval, n_kv);
            assert_eq!(eval, if b == 1 { 8 } else { 0 });
            // Every sequence: a first-token time inside the prompt phase, then one time per step.
            let sequences = raw["batched"]["sequence_token_times_ns"].as_array().unwrap();
            assert_eq!(sequences.len() as u64, b);
            for times in sequences {
                let times = u64s(times);
                assert_eq!(times.len(), 9);
                assert!(times[0] <= prompt_ns && times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
                assert!(*times.last().unwrap() <= test_ns);
            }
            let step_ends = u64s(&raw["token_times_ns"]);
            assert_eq!(step_ends.len(), 8);
            // The columns follow from the timeline by batched-bench's formulas.
            let m = &sample["metrics"]["batched"];
            let (t_pp, t) = (prompt_ns as f64 / 1e9, test_ns as f64 / 1e9);
            assert!(close(m["t_pp"].as_f64().unwrap(), t_pp));
            assert!(close(m["speed_pp"].as_f64().unwrap(), (b * 32) as f64 / t_pp));
            assert!(close(m["speed_tg"].as_f64().unwrap(), (b * 8) as f64 / (t - t_pp)));
            assert!(close(m["speed"].as_f64().unwrap(), n_kv as f64 / t));
            assert!(close(sample["metrics"]["tokens_per_second"].as_f64().unwrap(), n_kv as f64 / t));
            assert_eq!(m["ttft_ms"].as_array().unwrap().len() as u64, b);
            speeds.push(m["speed"].as_f64().unwrap());
        }
        // The row's S is the mean of the repetitions', and it is the row's rate (llama-bench's avg_ts).
        assert!(close(columns["speed"].as_f64().unwrap(), (speeds[0] + speeds[1]) / 2.0));
        assert!(close(row["tokens_per_second"].as_f64().unwrap(), columns["speed"].as_f64().unwrap()));
        // velollm's clock against llama.cpp's over the same region: same tokens, and its time holds the
        // engine's (ratio ≥ 0.99) with little more around it.
        let check = &columns["engine_check"];
        assert_eq!(check["tokens_velollm"], check["tokens_engine"]);
        assert_eq!(check["tokens_velollm"], 2 * n_kv);
        let ratio = check["ratio"].as_f64().unwrap();
        assert!((0.99..1.2).contains(&ratio), "velollm / llama.cpp = {ratio}");
        // The single-sequence split does not apply to llama.cpp's filing of batched steps: absent, not wrong.
        assert!(row["harness_overhead"].is_null());
    }
}

#[test]
fn a_batch_smaller_than_the_prompts_gives_each_sequence_its_own_first_token_time() {
    // n_batch 16 = one sequence's prompt per decode call: sequence i's first logits come with call i.
    let (rows, _) = batched("npl-chunked", &["--pp", "16", "--tg", "4", "-npl", "4", "--batch-size", "16", "-r", "1"]);
    let raw = &rows[0]["samples"][0]["raw"];
    assert_eq!(rows[0]["parameters"]["effective"]["n_batch"], 16);
    let firsts: Vec<u64> =
        raw["batched"]["sequence_token_times_ns"].as_array().unwrap().iter().map(|t| t[0].as_u64().unwrap()).collect();
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "one call per sequence, in order: {firsts:?}");
    assert_eq!(firsts[3], raw["prompt_eval_ns"].as_u64().unwrap(), "the last sequence ends the prompt phase");
    let ttft = rows[0]["batched"]["ttft_ms_per_sequence"].as_array().unwrap();
    assert!(ttft[0].as_f64().unwrap() < ttft[3].as_f64().unwrap());
    // A step of 4 tokens fits one call: every sequence's later tokens arrive together.
    let sequences: Vec<Vec<u64>> =
        raw["batched"]["sequence_token_times_ns"].as_array().unwrap().iter().map(u64s).collect();
    assert!(sequences.iter().all(|s| s[1..] == sequences[0][1..]), "{sequences:?}");
}

#[test]
fn a_shared_prompt_is_evaluated_once_and_swept_with_threads() {
    let (rows, _) = batched("npl-shared", &["--pp", "32", "--tg", "4", "-npl", "3", "-pps", "-t", "1,2", "-r", "1"]);
    assert_eq!(rows.len(), 2, "threads sweep over the batched test");
    let threads: Vec<u64> = rows.iter().map(|r| r["parameters"]["requested"]["n_threads"].as_u64().unwrap()).collect();
    assert_eq!(threads, [1, 2]);
    for row in &rows {
        assert_eq!(row["config"]["name"], "pp32+tg4 x3 shared");
        let columns = &row["batched"];
        assert_eq!((columns["is_pp_shared"].as_bool(), columns["n_kv"].as_u64()), (Some(true), Some(32 + 3 * 4)));
        let raw = &row["samples"][0]["raw"];
        assert_eq!(raw["prompt_tokens"], 32, "one prompt, copied to the other sequences");
        let counters = &raw["engine_counters"];
        assert_eq!(counters["prompt_eval_count"].as_u64().unwrap() + counters["eval_count"].as_u64().unwrap(), 44);
        let prompt_ns = raw["prompt_eval_ns"].as_u64().unwrap();
        for times in raw["batched"]["sequence_token_times_ns"].as_array().unwrap() {
            assert_eq!(times[0], prompt_ns, "one prompt's logits serve every sequence's first token");
        }
        // S_PP counts the shared prompt once: PP / T_PP.
        let m = &row["samples"][0]["metrics"]["batched"];
        assert!(close(m["speed_pp"].as_f64().unwrap(), 32.0 / (prompt_ns as f64 / 1e9)));
    }
}

#[test]
fn batched_tests_refuse_what_they_cannot_run_in_one_line() {
    let smollm = model(SMOLLM2);
    let m = smollm.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["-npl", "2", "--pp", "32"], "--parallel needs both --pp"),
        (&["-npl", "0", "--pp", "32", "--tg", "4"], "--parallel"),
        (&["-npl", "300", "--pp", "32", "--tg", "4"], "--parallel"),
        (&["--shared-prompt", "--pp", "32", "--tg", "4"], "--shared-prompt applies to batched tests"),
        (&["-npl", "2", "--pp", "32", "--tg", "4", "--depth", "64"], "--depth does not apply to --parallel"),
        (&["-npl", "256", "--pp", "4096", "--tg", "1024"], "need 1310720 tokens of context"),
    ];
    for (args, expected) in cases {
        let mut full = vec!["benchmark", "-m", m];
        full.extend_from_slice(args);
        let out = run(&full);
        assert_clean_failure(&out, expected);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = run(&["benchmark", "-b", "ollama", "-m", "x", "-npl", "2", "--pp", "8", "--tg", "2"]);
    assert_clean_failure(&out, "not on -b ollama");
    assert_eq!(out.status.code(), Some(2));
    let out = run(&[
        "benchmark",
        "-b",
        "openai",
        "--url",
        "http://127.0.0.1:9/v1",
        "-m",
        "x",
        "-npl",
        "2",
        "--pp",
        "8",
        "--tg",
        "2",
    ]);
    assert_clean_failure(&out, "not on -b openai: a server's concurrency is a load profile (--concurrency)");
    assert_eq!(out.status.code(), Some(2));
    #[cfg(feature = "candle")]
    {
        let out = run(&["benchmark", "-b", "candle", "-m", m, "-npl", "2", "--pp", "8", "--tg", "2"]);
        assert_clean_failure(&out, "not on -b candle: candle's models hold one sequence's cache");
        assert_eq!(out.status.code(), Some(2));
    }
}
