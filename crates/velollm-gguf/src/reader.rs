//! The parsed header of a GGUF file: metadata, tensor infos, and what velollm reads from them.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::header::{self, HeaderProblem};
use crate::GgmlType;

/// Why a file could not be read as a GGUF model.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("model file not found: {0}")]
    NotFound(PathBuf),
    #[error("model path is a directory, not a GGUF file: {0}")]
    IsDirectory(PathBuf),
    #[error("cannot read model file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("not a GGUF file (bad magic bytes {found:?}): {path}")]
    NotGguf { path: PathBuf, found: String },
    #[error("unsupported GGUF version {version} in {path} (supported: 2, 3)")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    /// The header breaks a rule of the format (docs/gguf.md); `at` is the byte offset where it was found.
    #[error("invalid GGUF file {path}: {problem} (header byte {at})")]
    Invalid { path: PathBuf, at: u64, problem: HeaderProblem },
    #[error("truncated GGUF file {path}: its header ends past the end of the file ({actual} bytes)")]
    TruncatedHeader { path: PathBuf, actual: u64 },
    #[error("truncated GGUF file {path}: its tensors need {expected} bytes but the file has {actual}")]
    Truncated { path: PathBuf, expected: u64, actual: u64 },
}

/// A metadata value. Arrays keep their items only when [`ReadOptions::keep_arrays`] is set.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array { len: u64, items: Option<Vec<MetadataValue>> },
}

impl MetadataValue {
    /// The value as an unsigned integer, for any integer type holding a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I8(v) => u64::try_from(v).ok(),
            MetadataValue::I16(v) => u64::try_from(v).ok(),
            MetadataValue::I32(v) => u64::try_from(v).ok(),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The GGUF name of the value's type (`u32`, `string`, `array`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetadataValue::U8(_) => "u8",
            MetadataValue::I8(_) => "i8",
            MetadataValue::U16(_) => "u16",
            MetadataValue::I16(_) => "i16",
            MetadataValue::U32(_) => "u32",
            MetadataValue::I32(_) => "i32",
            MetadataValue::U64(_) => "u64",
            MetadataValue::I64(_) => "i64",
            MetadataValue::F32(_) => "f32",
            MetadataValue::F64(_) => "f64",
            MetadataValue::Bool(_) => "bool",
            MetadataValue::String(_) => "string",
            MetadataValue::Array { .. } => "array",
        }
    }

    /// Array items, when the array was kept.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            MetadataValue::Array { items: Some(items), .. } => Some(items),
            _ => None,
        }
    }
}

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The number of elements. The reader refuses shapes whose count overflows; for a `TensorInfo` built by
    /// hand such a count saturates.
    pub fn element_count(&self) -> u64 {
        self.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).unwrap_or(u64::MAX)
    }
}

/// What to keep while reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Keep array items (vocabularies, merges). Off, arrays are skipped and only their length is kept,
    /// which makes reading a 262k-token vocabulary header nearly free.
    pub keep_arrays: bool,
}

/// The parsed header of a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub file_bytes: u64,
    pub metadata: BTreeMap<String, MetadataValue>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
}

impl GgufFile {
    /// Reads and checks the header of `path`: magic, version, metadata, tensor infos (docs/gguf.md lists the
    /// rules), and that the file is long enough to hold every tensor the header declares.
    pub fn read(path: &Path, options: ReadOptions) -> Result<GgufFile, GgufError> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(GgufError::NotFound(path.to_path_buf())),
            Err(source) => return Err(GgufError::Io { path: path.to_path_buf(), source }),
        };
        if meta.is_dir() {
            return Err(GgufError::IsDirectory(path.to_path_buf()));
        }
        header::read_file(path, meta.len(), options)
    }

    /// Reads and checks a whole file held in memory, as [`GgufFile::read`] does a file on disk; `label` names it
    /// in messages and becomes [`GgufFile::path`].
    pub fn from_bytes(label: &Path, bytes: &[u8], options: ReadOptions) -> Result<GgufFile, GgufError> {
        header::read_bytes(label, bytes, options)
    }

    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetadataValue::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetadataValue::as_u64)
    }

    /// `general.architecture` (`llama`, `qwen2`, `gemma3`, …).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// A metadata value of the model's architecture, e.g. `arch_key("block_count")` reads
    /// `llama.block_count` for a llama model.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get_u64(&format!("{arch}.{suffix}"))
    }

    /// Exact parameter count: the number of elements of all tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::element_count).fold(0, u64::saturating_add)
    }

    /// The quantization as llama.cpp names it (`Q4_K_M`, …), from `general.file_type`; without that key,
    /// the most common quantized tensor type (or `F16`/`F32` for an unquantized file).
    pub fn quantization(&self) -> String {
        if let Some(name) = self.get_u64("general.file_type").and_then(file_type_name) {
            return name.to_string();
        }
        let histogram = self.tensor_type_histogram();
        histogram
            .iter()
            .filter(|(t, _)| t.is_quantized())
            .max_by_key(|(_, count)| **count)
            .or_else(|| histogram.iter().max_by_key(|(_, count)| **count))
            .map(|(t, _)| t.name())
            .unwrap_or_else(|| "unknown".to_string())
    }

    /// How many tensors there are of each type.
    pub fn tensor_type_histogram(&self) -> BTreeMap<GgmlType, usize> {
        let mut histogram = BTreeMap::new();
        for tensor in &self.tensors {
            *histogram.entry(tensor.ggml_type).or_insert(0) += 1;
        }
        histogram
    }
}

/// llama.cpp's `llama_ftype` names for `general.file_type`.
fn file_type_name(file_type: u64) -> Option<&'static str> {
    Some(match file_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4_MOE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a tiny but complete GGUF v3 file: two metadata keys and one F32 tensor of 4 elements.
    fn tiny_gguf(truncate_by: usize) -> tempfile_path::TempPath {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"GGUF");
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes()); // tensors
        bytes.extend_from_slice(&2u64.to_le_bytes()); // kv
        let key = |b: &mut Vec<u8>, k: &str| {
            b.extend_from_slice(&(k.len() as u64).to_le_bytes());
            b.extend_from_slice(k.as_bytes());
        };
        key(&mut bytes, "general.architecture");
        bytes.extend_from_slice(&8u32.to_le_bytes());
        key(&mut bytes, "llama");
        key(&mut bytes, "tokenizer.ggml.tokens");
        bytes.extend_from_slice(&9u32.to_le_bytes());
        bytes.extend_from_slice(&8u32.to_le_bytes());
        bytes.extend_from_slice(&2u64.to_le_bytes());
        key(&mut bytes, "a");
        key(&mut bytes, "bc");
        key(&mut bytes, "w");
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&4u64.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes()); // F32
        bytes.extend_from_slice(&0u64.to_le_bytes());
        while bytes.len() % 32 != 0 {
            bytes.push(0);
        }
        bytes.extend_from_slice(&[0u8; 16]);
        bytes.truncate(bytes.len() - truncate_by);
        tempfile_path::TempPath::with_bytes(&bytes)
    }

    /// A minimal temporary-file helper, to keep this crate free of dev-dependencies.
    mod tempfile_path {
        use std::path::PathBuf;
        pub struct TempPath(pub PathBuf);
        impl TempPath {
            pub fn with_bytes(bytes: &[u8]) -> TempPath {
                use std::sync::atomic::{AtomicU32, Ordering};
                static COUNTER: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "velollm-gguf-test-{}-{}.gguf",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, bytes).unwrap();
                TempPath(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let file = tiny_gguf(0);
        let gguf = GgufFile::read(&file.0, ReadOptions { keep_arrays: true }).unwrap();
        assert_eq!(gguf.version, 3);
        assert_eq!(gguf.architecture(), Some("llama"));
        let tokens = gguf.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap();
        assert_eq!(tokens, &[MetadataValue::String("a".into()), MetadataValue::String("bc".into())]);
        assert_eq!(gguf.tensors.len(), 1);
        assert_eq!(gguf.parameter_count(), 4);
        assert_eq!(gguf.quantization(), "F32");
        assert_eq!(gguf.data_offset % 32, 0);
    }

    #[test]
    fn skipped_arrays_keep_their_length() {
        let file = tiny_gguf(0);
        let gguf = GgufFile::read(&file.0, ReadOptions::default()).unwrap();
        assert_eq!(gguf.get("tokenizer.ggml.tokens"), Some(&MetadataValue::Array { len: 2, items: None }));
    }

    #[test]
    fn detects_truncation_in_tensor_data() {
        let file = tiny_gguf(1);
        match GgufFile::read(&file.0, ReadOptions::default()) {
            Err(GgufError::Truncated { expected, actual, .. }) => assert_eq!(expected, actual + 1),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn rejects_foreign_and_missing_files() {
        let foreign = tempfile_path::TempPath::with_bytes(b"PK\x03\x04 not a model");
        assert!(matches!(GgufFile::read(&foreign.0, ReadOptions::default()), Err(GgufError::NotGguf { .. })));
        let empty = tempfile_path::TempPath::with_bytes(b"");
        assert!(matches!(GgufFile::read(&empty.0, ReadOptions::default()), Err(GgufError::NotGguf { .. })));
        let missing = Path::new("/nonexistent/velollm/model.gguf");
        assert!(matches!(GgufFile::read(missing, ReadOptions::default()), Err(GgufError::NotFound(_))));
        assert!(matches!(
            GgufFile::read(&std::env::temp_dir(), ReadOptions::default()),
            Err(GgufError::IsDirectory(_))
        ));
    }
}
