//! The real test models, shared by this crate's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
pub const QWEN25: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";

/// A real model from models/ (fetched by scripts/fetch-models.sh, which the test command runs first).
pub fn model(file: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(file);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models.sh", path.display());
    path
}
