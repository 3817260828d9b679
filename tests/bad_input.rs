//! Bad input: each case ends with one `error:` line, a non-zero exit, no panic, and no output file.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Runs `velollm benchmark` with `args` plus `-o` into a fresh directory, and checks the failure contract
/// and that no results file (nor any temporary file) was left behind.
fn check_rejected(name: &str, args: &[&str], expected: &str) {
    let dir = scratch(name);
    let out_path = dir.join("results.json");
    let mut full = vec!["benchmark"];
    full.extend_from_slice(args);
    full.extend_from_slice(&[
        "--max-tokens",
        "2",
        "--iterations",
        "1",
        "--warmup",
        "0",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let out = run(&full);
    assert_clean_failure(&out, expected);
    let left: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "{name}: files left behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn smollm2() -> String {
    model(SMOLLM2).to_str().unwrap().to_string()
}

#[test]
fn missing_model_file() {
    check_rejected("missing", &["-m", "/nonexistent/velollm/model.gguf"], "model file not found");
}

#[test]
fn unknown_model_name_lists_known_ones() {
    check_rejected("unknown-name", &["-m", "no-such-model"], "smollm2-135m");
}

#[test]
fn directory_as_model() {
    let dir = scratch("a-dir");
    check_rejected("dir", &["-m", dir.to_str().unwrap()], "is a directory");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_gguf_file() {
    let dir = scratch("not-gguf-src");
    let path = dir.join("model.gguf");
    std::fs::write(&path, b"this is a text file, not a model\n").unwrap();
    check_rejected("not-gguf", &["-m", path.to_str().unwrap()], "not a GGUF file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_gguf_in_tensor_data_and_in_header() {
    let bytes = std::fs::read(model(SMOLLM2)).unwrap();
    let dir = scratch("truncated-src");
    let half = dir.join("half.gguf");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    check_rejected("truncated", &["-m", half.to_str().unwrap()], "truncated GGUF file");
    let header_only = dir.join("header.gguf");
    std::fs::write(&header_only, &bytes[..4096]).unwrap();
    check_rejected("truncated-header", &["-m", header_only.to_str().unwrap()], "truncated GGUF file");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn crafted_gguf_of_nested_arrays_is_refused_before_any_engine() {
    // Issue 18: 1.2 MB of arrays inside arrays (12 bytes a level) once overflowed the stack of velollm's own
    // header reader, an abort without a message. The reader refuses the first nested level, in one line naming
    // the key, while the model is identified, before a backend loads the file.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes()); // tensors
    bytes.extend_from_slice(&1u64.to_le_bytes()); // key/values
    bytes.extend_from_slice(&6u64.to_le_bytes());
    bytes.extend_from_slice(b"nested");
    bytes.extend_from_slice(&9u32.to_le_bytes()); // an array …
    for _ in 0..100_000 {
        bytes.extend_from_slice(&9u32.to_le_bytes()); // … of arrays …
        bytes.extend_from_slice(&1u64.to_le_bytes()); // … of one item
    }
    bytes.extend_from_slice(&0u32.to_le_bytes()); // u8
    bytes.extend_from_slice(&1u64.to_le_bytes());
    bytes.push(7);
    let dir = scratch("nested-src");
    let path = dir.join("nested.gguf");
    std::fs::write(&path, &bytes).unwrap();
    check_rejected("nested", &["-m", path.to_str().unwrap()], "\"nested\" is an array of arrays");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_directory_missing() {
    let out = run(&["benchmark", "-m", &smollm2(), "-o", "/nonexistent/velollm/out.json"]);
    assert_clean_failure(&out, "does not exist");
    // Detected before the model was loaded: nothing of the run was printed.
    assert!(!stdout(&out).contains("Loading model"), "{}", stdout(&out));
}

#[test]
fn output_directory_not_writable() {
    // /proc refuses new files even to root, which is who CI runs as (a chmod'ed directory would not do).
    let out = run(&["benchmark", "-m", &smollm2(), "-o", "/proc/velollm-results.json"]);
    assert_clean_failure(&out, "not writable");
    assert!(!stdout(&out).contains("Loading model"), "{}", stdout(&out));
}

#[test]
fn output_path_is_a_directory() {
    let dir = scratch("out-dir");
    let out = run(&["benchmark", "-m", &smollm2(), "-o", dir.to_str().unwrap()]);
    assert_clean_failure(&out, "is a directory");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_invalid_number_is_one_line_naming_the_flag_and_the_range() {
    let dir = scratch("numbers");
    let out_path = dir.join("r.json");
    let cases: &[(&[&str], &str)] = &[
        (&["--iterations", "0"], "invalid --iterations 0: out of range (allowed: 1–10000)"),
        (&["--iterations", "99999"], "invalid --iterations 99999: out of range (allowed: 1–10000)"),
        (&["--iterations", "-2"], "invalid --iterations -2: out of range (allowed: 1–10000)"),
        (&["--iterations", "five"], "invalid --iterations 'five': not a whole number (allowed: 1–10000)"),
        (&["--max-tokens", "0"], "invalid --max-tokens 0: out of range (allowed: 1–2047)"),
        (&["--max-tokens", "4096"], "invalid --max-tokens 4096: out of range (allowed: 1–2047)"),
        (&["--warmup", "-1"], "invalid --warmup -1: out of range (allowed: 0–1000)"),
        (&["--threads", "0"], "invalid --threads 0: out of range (allowed: 1–1024)"),
        (&["--threads", "-4"], "invalid --threads '-4': '-4' is negative (allowed: 1–1024)"),
        (&["--threads", "2x"], "invalid --threads '2x': '2x' is not a whole number (allowed: 1–1024)"),
        (&["--ctx-size", "0"], "invalid --ctx-size 0: out of range (allowed: 1–1048576)"),
        (&["--ctx-size", "99999999"], "invalid --ctx-size 99999999: out of range (allowed: 1–1048576)"),
        (&["--batch-size", "0"], "invalid --batch-size 0: out of range (allowed: 1–2048)"),
        (&["--batch-size", "4096"], "invalid --batch-size 4096: out of range (allowed: 1–2048)"),
        (&["--batch-size", "18446744073709551615"], "larger than 4294967295"),
        (&["--ubatch-size", "0"], "invalid --ubatch-size 0: out of range (allowed: 1–2048)"),
        (
            &["--ubatch-size", "1024", "--batch-size", "512"],
            "invalid --ubatch-size 1024: out of range (allowed: 1–512)",
        ),
        (&["--n-gpu-layers", "-1"], "invalid --n-gpu-layers '-1': '-1' is negative (allowed: 0–100000 or all)"),
        (&["-ngl", "some"], "invalid --n-gpu-layers 'some': 'some' is not a whole number"),
        (&["--threads", "8-1"], "invalid --threads '8-1': the range starts at 8, after its end 1"),
        (&["--flash-attn", "maybe"], "invalid flash-attention policy 'maybe' (expected auto, on or off)"),
        (&["--cache-type-k", "q3_k"], "invalid KV cache type 'q3_k'"),
        (&["--repetitions", "0"], "invalid --repetitions 0: out of range (allowed: 1–10000); or 'auto'"),
        (&["--target-ci", "0"], "invalid --target-ci 0: out of range"),
        (&["--max-time", "-5"], "invalid --max-time -5: out of range"),
        (&["--min-repetitions", "1"], "invalid --min-repetitions 1: out of range (allowed: 2–200)"),
        (&["--min-repetitions", "many"], "invalid --min-repetitions 'many': not a whole number"),
        (&["--min-time", "-1"], "invalid --min-time -1: out of range (allowed: 0–86400 seconds)"),
        (&["--min-time", "90", "--max-time", "60"], "--min-time 90 is more than --max-time 60"),
        (&["-r", "5", "--min-repetitions", "10"], "go with --repetitions auto, not a fixed count"),
        (&["--pp", "0"], "invalid --pp 0: out of range (allowed: 1–1048576)"),
        (&["--pg", "512"], "invalid --pg '512': expected two numbers P,T"),
        (&["--depth", "64"], "--depth applies to llama-bench tests"),
    ];
    for (args, expected) in cases {
        let mut full = vec!["benchmark", "-m", SMOLLM2, "-o", out_path.to_str().unwrap()];
        full.extend_from_slice(args);
        let out = run(&full);
        assert_clean_failure(&out, expected);
        assert_eq!(out.status.code(), Some(2), "{args:?}: a usage error exits with 2: {}", stderr(&out));
        assert!(!stdout(&out).contains("Loading model"), "{args:?} rejected before loading: {}", stdout(&out));
        assert!(!Path::new(&out_path).exists(), "{args:?}: no results file for rejected input");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prompt_longer_than_context_is_a_failed_row() {
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let dir = scratch("long-prompt");
    let out_path = dir.join("r.json");
    let out = run(&[
        "benchmark",
        "-m",
        &smollm2(),
        "--ctx-size",
        "128",
        "--prompt",
        &long_prompt,
        "--max-tokens",
        "2",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    // llama.cpp pads the context to a multiple of 256, and the message reports the real size.
    assert_clean_failure(&out, "does not fit the context of 256 tokens; raise --ctx-size");
    // Nothing was measured, but what was tried and why it failed is recorded.
    let rows: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(rows[0]["status"], "failed");
    assert!(rows[0]["error"].as_str().unwrap().contains("does not fit the context of 256 tokens"));
    assert_eq!(rows[0]["iterations_completed"], 0);
    assert!(rows[0]["tokens_per_second"].is_null());
    assert_eq!(rows[0]["parameters"]["effective"]["n_ctx"], 256, "the padded context is recorded");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_backend() {
    check_rejected("backend", &["-m", &smollm2(), "-b", "tensorrt"], "unknown backend 'tensorrt'");
}

#[test]
fn unknown_flag_is_one_usage_line() {
    let out = run(&["benchmark", "--no-such-flag"]);
    assert_clean_failure(&out, "unexpected argument '--no-such-flag'");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn absent_default_model_tells_an_installed_user_how_to_get_it() {
    // An installed binary run outside the repository: no ./models, an empty data directory.
    let elsewhere = scratch("no-models");
    let out = velollm()
        .current_dir(&elsewhere)
        .env_remove("VELOLLM_MODELS")
        .env("XDG_DATA_HOME", elsewhere.join("data"))
        .args(["benchmark", "--max-tokens", "2"])
        .output()
        .unwrap();
    let data_dir = elsewhere.join("data/velollm/models");
    assert_clean_failure(
        &out,
        &format!(
            "model 'smollm2-135m' is not downloaded (looked for SmolLM2-135M-Instruct.Q4_1.gguf in models, {}); \
             get it with: velollm fetch smollm2-135m",
            data_dir.display()
        ),
    );
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn models_are_found_in_velollm_models_and_the_data_directory() {
    let elsewhere = scratch("model-dirs");
    let store = elsewhere.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::os::unix::fs::symlink(model(SMOLLM2), store.join(SMOLLM2)).unwrap();
    let args = ["benchmark", "-m", "smollm2-135m", "--prompt", "Hi", "--max-tokens", "2", "--iterations", "1"];
    let out = velollm()
        .current_dir(&elsewhere)
        .env("VELOLLM_MODELS", &store)
        .env("XDG_DATA_HOME", elsewhere.join("none"))
        .args(args)
        .args(["--warmup", "0", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "$VELOLLM_MODELS: {}", stderr(&out));
    let data = elsewhere.join("data");
    std::fs::create_dir_all(data.join("velollm")).unwrap();
    std::fs::rename(&store, data.join("velollm/models")).unwrap();
    let out = velollm()
        .current_dir(&elsewhere)
        .env_remove("VELOLLM_MODELS")
        .env("XDG_DATA_HOME", &data)
        .args(args)
        .args(["--warmup", "0", "-q"])
        .output()
        .unwrap();
    assert!(out.status.success(), "XDG data directory: {}", stderr(&out));
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn verbose_routes_llama_cpp_logs_and_quiet_default_hides_them() {
    let args =
        ["benchmark", "-m", SMOLLM2, "--prompt", "Hi", "--max-tokens", "2", "--iterations", "1", "--warmup", "0"];
    let model_dir = repo_root().join("models");
    let quiet = velollm().env("VELOLLM_MODELS", &model_dir).args(args).output().unwrap();
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains("llama_model_loader"), "llama.cpp logs leaked: {}", stderr(&quiet));
    let verbose = velollm().env("VELOLLM_MODELS", &model_dir).arg("-v").args(args).output().unwrap();
    assert!(verbose.status.success(), "{}", stderr(&verbose));
    assert!(stderr(&verbose).contains("llama_model_loader"), "no llama.cpp log with -v: {}", stderr(&verbose));
}

#[test]
fn closed_stdout_pipe_is_not_a_panic() {
    use std::process::Stdio;
    let mut child = velollm()
        .args(["benchmark", "-m", model(SMOLLM2).to_str().unwrap(), "--prompt", "Hi", "--max-tokens", "2"])
        .args(["--iterations", "1", "--warmup", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // like `velollm benchmark | head -0`
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(101));
}

/// SmolLM2 with its tensor `blk.0.attn_q.weight` renamed in place (same length): a well-formed GGUF file that
/// lacks a tensor the architecture requires, which velollm's own checks cannot know and the engine refuses.
fn model_missing_a_tensor(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(model(SMOLLM2)).unwrap();
    let name = b"blk.0.attn_q.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).expect("SmolLM2 has blk.0.attn_q.weight");
    bytes[at..at + name.len()].copy_from_slice(b"blk.0.attn_x.weight");
    let path = dir.join("missing-tensor.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_file_llama_cpp_refuses_says_llama_cpp_s_own_reason_once() {
    let dir = scratch("refused-llamacpp");
    let path = model_missing_a_tensor(&dir);
    let out_path = dir.join("r.jsonl");
    let out = run(&[
        "benchmark",
        "-m",
        path.to_str().unwrap(),
        "-b",
        "llamacpp",
        "--max-tokens",
        "2",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    // llama.cpp's specific line (which tensor), not its final "failed to load model".
    assert_clean_failure(&out, "blk.0.attn_q.weight");
    let err = stderr(&out);
    assert!(!err.contains("(llama_model_load_from_file_impl: failed to load model)"), "{err}");
    assert!(!err.contains("did not complete"), "a failed load is one failure, not one per run: {err}");
    // The console says it once, where the load was announced; every planned row is kept, failed.
    let text = stdout(&out);
    assert_eq!(text.matches("blk.0.attn_q.weight").count(), 1, "said once: {text}");
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&out_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "the suite's three rows");
    assert!(rows.iter().all(|r| r["status"] == "failed"), "{rows:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_candle_refusal_is_one_line_even_with_rust_backtrace() {
    let dir = scratch("refused-candle");
    let path = model_missing_a_tensor(&dir);
    let out = velollm()
        .env("RUST_BACKTRACE", "1")
        .args(["benchmark", "-m", path.to_str().unwrap(), "-b", "candle", "--max-tokens", "2"])
        .output()
        .unwrap();
    // candle's error carries a backtrace in its Display when RUST_BACKTRACE is set (19 lines here): one line.
    assert_clean_failure(&out, "blk.0.attn_q.weight");
    assert!(!stderr(&out).contains("did not complete"), "{}", stderr(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
