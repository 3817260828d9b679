//! Writes the seeds of the reader's fuzz test (`tests/fuzz_reader.rs`) from real models: each model's header with
//! its metadata (arrays cut to a few items) and every tensor info (real names, dimension counts and types), but
//! each tensor shrunk to one block of its type, so a seed is a complete, valid file of a few dozen KB. Also
//! writes the first 4 KiB of the first model as it is, real bytes the writer did not produce.
//!
//! cargo run --release -p velollm-gguf --example fuzz_corpus -- OUT_DIR MODEL.gguf…

use std::path::{Path, PathBuf};

use velollm_gguf::{GgufFile, GgufWriter, MetadataValue, ReadOptions, TensorData, TensorInfo, WriteOptions};

/// Items kept of each metadata array (vocabularies, merges, token types).
const ARRAY_ITEMS_KEPT: usize = 16;
/// The prefix of a real file kept as it is.
const RAW_PREFIX_BYTES: usize = 4096;

/// Tensor data of zeros: the reader never looks at it.
struct Zeros;
impl TensorData for Zeros {
    fn fill(&self, _index: usize, _tensor: &TensorInfo, _start: u64, out: &mut [u8]) {
        out.fill(0);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let Some((out_dir, models)) = args.split_first().filter(|(_, models)| !models.is_empty()) else {
        return Err("usage: fuzz_corpus OUT_DIR MODEL.gguf…".into());
    };
    std::fs::create_dir_all(out_dir)?;
    for model in models {
        let seed = shrunk_copy(model)?;
        let target = out_dir.join(format!("{}.header.gguf", stem(model)));
        std::fs::write(&target, &seed)?;
        println!("{}: {} bytes", target.display(), seed.len());
    }
    let first = &models[0];
    let mut prefix = vec![0u8; RAW_PREFIX_BYTES];
    std::io::Read::read_exact(&mut std::fs::File::open(first)?, &mut prefix)?;
    let target = out_dir.join(format!("{}.first-4k.gguf", stem(first)));
    std::fs::write(&target, &prefix)?;
    println!("{}: {} bytes", target.display(), prefix.len());
    Ok(())
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

/// The model's header with short arrays and one-block tensors, written whole.
fn shrunk_copy(model: &Path) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let file = GgufFile::read(model, ReadOptions { keep_arrays: true })?;
    let mut writer = GgufWriter::new();
    for (key, value) in &file.metadata {
        writer.add_metadata(key, shortened(value))?;
    }
    for tensor in &file.tensors {
        let (block_elements, _) = tensor.ggml_type.block().ok_or("a tensor of unknown type")?;
        let mut dims = vec![1; tensor.dims.len().max(1)];
        dims[0] = block_elements;
        writer.add_tensor(&tensor.name, &dims, tensor.ggml_type)?;
    }
    let mut bytes = Vec::new();
    writer.layout().write_to(&mut bytes, &Zeros, &WriteOptions::default())?;
    Ok(bytes)
}

fn shortened(value: &MetadataValue) -> MetadataValue {
    match value {
        MetadataValue::Array { items: Some(items), .. } => {
            let kept: Vec<MetadataValue> = items.iter().take(ARRAY_ITEMS_KEPT).cloned().collect();
            MetadataValue::Array { len: kept.len() as u64, items: Some(kept) }
        }
        other => other.clone(),
    }
}
