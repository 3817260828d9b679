//! Bytes per token on the real test models (fetched by scripts/fetch-models.sh). SmolLM2 and Gemma 3 tie their
//! embeddings (every tensor is read once per token); the Qwen2.5 file has its own `output.weight`, so of
//! `token_embd` only one row counts.

use std::path::Path;

use velollm_gguf::{GgufFile, ReadOptions};

fn check(file: &str, tied: bool) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").join(file);
    assert!(path.is_file(), "{} is missing: run scripts/fetch-models.sh", path.display());
    let gguf = GgufFile::read(&path, ReadOptions::default()).unwrap();
    let bytes = gguf.weight_bytes_per_token().expect("every tensor type is known");
    let size = |t: &velollm_gguf::TensorInfo| t.ggml_type.storage_bytes(t.element_count()).unwrap();
    let all: u64 = gguf.tensors.iter().map(size).sum();
    let embd = gguf.tensors.iter().find(|t| t.name == "token_embd.weight").unwrap();
    let row = embd.ggml_type.storage_bytes(embd.dims[0]).unwrap();
    assert_eq!(bytes.tied_embeddings, tied, "{file}");
    let expected = if tied { all } else { all - size(embd) + row };
    assert_eq!(bytes.total, expected, "{file}: {bytes:?}");
    assert!(bytes.total < gguf.file_bytes, "{file}: {bytes:?}");
    assert!(bytes.layers > 0 && bytes.output > 0, "{file}: {bytes:?}");
}

#[test]
fn smollm2_reads_every_tensor_per_token() {
    check("SmolLM2-135M-Instruct.Q4_1.gguf", true);
}

#[test]
fn gemma3_reads_every_tensor_per_token() {
    check("gemma-3-270m-q4_k_m.gguf", true);
}

#[test]
fn qwen25_reads_one_embedding_row_and_its_own_output_matrix() {
    check("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", false);
}
