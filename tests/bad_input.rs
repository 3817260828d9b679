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
fn zero_iterations_and_zero_tokens() {
    let dir = scratch("zero");
    let out_path = dir.join("r.json");
    for (flag, expected) in
        [("--iterations", "iterations must be at least 1"), ("--max-tokens", "max_tokens must be at least 1")]
    {
        let out = run(&["benchmark", "-m", &smollm2(), flag, "0", "-o", out_path.to_str().unwrap()]);
        assert_clean_failure(&out, expected);
        assert!(!stdout(&out).contains("Loading model"), "rejected before loading: {}", stdout(&out));
        assert!(!Path::new(&out_path).exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prompt_longer_than_context() {
    let long_prompt = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    check_rejected(
        "long-prompt",
        &["-m", &smollm2(), "--ctx-size", "128", "--prompt", &long_prompt],
        // llama.cpp pads the context to a multiple of 256, and the message reports the real size.
        "does not fit the context of",
    );
}

#[test]
fn unknown_backend() {
    check_rejected("backend", &["-m", &smollm2(), "-b", "tensorrt"], "unknown backend 'tensorrt'");
}

#[test]
fn invalid_flag_value_is_a_usage_error() {
    let out = run(&["benchmark", "--flash-attn", "sometimes"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage error: {}", stderr(&out));
    assert!(stderr(&out).contains("expected auto, on or off"), "{}", stderr(&out));
}

#[test]
fn absent_default_model_names_the_fetch_command() {
    let empty = scratch("no-models");
    let out = velollm().env("VELOLLM_MODEL_DIR", &empty).args(["benchmark", "--max-tokens", "2"]).output().unwrap();
    assert_clean_failure(&out, "fetch it with: scripts/fetch-models.sh smollm2-135m");
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn verbose_routes_llama_cpp_logs_and_quiet_default_hides_them() {
    let args =
        ["benchmark", "-m", SMOLLM2, "--prompt", "Hi", "--max-tokens", "2", "--iterations", "1", "--warmup", "0"];
    let model_dir = repo_root().join("models");
    let quiet = velollm().env("VELOLLM_MODEL_DIR", &model_dir).args(args).output().unwrap();
    assert!(quiet.status.success(), "{}", stderr(&quiet));
    assert!(!stderr(&quiet).contains("llama_model_loader"), "llama.cpp logs leaked: {}", stderr(&quiet));
    let verbose = velollm().env("VELOLLM_MODEL_DIR", &model_dir).arg("-v").args(args).output().unwrap();
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
