//! Parsing of the GGUF header (format versions 2 and 3).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::GgmlType;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// No real metadata string or array comes near this; a larger length means the header is corrupt, and
/// refusing it keeps a damaged file from making us allocate gigabytes.
const MAX_REASONABLE_LENGTH: u64 = 1 << 30;

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
    #[error("corrupt GGUF header in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
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
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
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
    /// Reads and checks the header of `path`: magic, version, metadata, tensor infos, and that the file is
    /// long enough to hold every tensor the header declares.
    pub fn read(path: &Path, options: ReadOptions) -> Result<GgufFile, GgufError> {
        let io_err = |source: io::Error| GgufError::Io { path: path.to_path_buf(), source };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(GgufError::NotFound(path.to_path_buf())),
            Err(e) => return Err(io_err(e)),
        };
        if meta.is_dir() {
            return Err(GgufError::IsDirectory(path.to_path_buf()));
        }
        let file_bytes = meta.len();
        let file = File::open(path).map_err(io_err)?;
        let mut reader = HeaderReader {
            inner: BufReader::with_capacity(1 << 20, file),
            pos: 0,
            path,
            file_bytes,
            keep_arrays: options.keep_arrays,
        };

        let mut magic = [0u8; 4];
        reader.read_exact_or_corrupt(&mut magic, "magic")?;
        if &magic != GGUF_MAGIC {
            return Err(GgufError::NotGguf {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let version = reader.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version });
        }
        let tensor_count = reader.length("tensor count")?;
        let kv_count = reader.length("metadata count")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = reader.string()?;
            let value_type = reader.u32()?;
            let value = reader.value(value_type)?;
            metadata.insert(key, value);
        }

        let mut tensors = Vec::with_capacity(tensor_count.min(1 << 16) as usize);
        for _ in 0..tensor_count {
            let name = reader.string()?;
            let n_dims = reader.u32()?;
            if n_dims > 8 {
                return Err(reader.corrupt(format!("tensor {name} claims {n_dims} dimensions")));
            }
            let dims = (0..n_dims).map(|_| reader.u64()).collect::<Result<Vec<_>, _>>()?;
            let ggml_type = GgmlType(reader.u32()?);
            let offset = reader.u64()?;
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }

        let alignment = metadata
            .get("general.alignment")
            .and_then(MetadataValue::as_u64)
            .filter(|a| *a > 0)
            .unwrap_or(DEFAULT_ALIGNMENT);
        let header_end = reader.pos;
        let data_offset = header_end.div_ceil(alignment) * alignment;

        let file = GgufFile { path: path.to_path_buf(), version, file_bytes, metadata, tensors, data_offset };
        let expected = file.required_bytes();
        if expected > file_bytes {
            return Err(GgufError::Truncated { path: path.to_path_buf(), expected, actual: file_bytes });
        }
        Ok(file)
    }

    /// The smallest file size that holds every tensor whose type this reader knows.
    fn required_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .map(|t| {
                let bytes = t.ggml_type.storage_bytes(t.element_count()).unwrap_or(0);
                self.data_offset.saturating_add(t.offset).saturating_add(bytes)
            })
            .max()
            .unwrap_or(self.data_offset)
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
        self.tensors.iter().map(TensorInfo::element_count).sum()
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

/// Reads the header sequentially through a large buffer. The position is tracked here rather than asked of
/// the file: `stream_position` and `seek` on a `BufReader` are system calls that also throw the buffer away,
/// which made skipping a 49k-token vocabulary take seconds.
struct HeaderReader<'a> {
    inner: BufReader<File>,
    pos: u64,
    path: &'a Path,
    file_bytes: u64,
    keep_arrays: bool,
}

impl HeaderReader<'_> {
    fn corrupt(&self, reason: String) -> GgufError {
        GgufError::Corrupt { path: self.path.to_path_buf(), reason }
    }

    fn read_exact_or_corrupt(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        self.pos += buf.len() as u64;
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                if what == "magic" {
                    GgufError::NotGguf { path: self.path.to_path_buf(), found: "(file shorter than 4 bytes)".into() }
                } else {
                    GgufError::TruncatedHeader { path: self.path.to_path_buf(), actual: self.file_bytes }
                }
            } else {
                GgufError::Io { path: self.path.to_path_buf(), source: e }
            }
        })
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.read_exact_or_corrupt(&mut buf, "header")?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A count or length, rejected when no real file could hold it. A length that merely runs past the end
    /// of this file is a truncation, found when the reading gets there.
    fn length(&mut self, what: &str) -> Result<u64, GgufError> {
        let len = self.u64()?;
        if len > MAX_REASONABLE_LENGTH {
            return Err(self.corrupt(format!("{what} {len} is implausibly large")));
        }
        Ok(len)
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.length("string length")?;
        if self.pos.saturating_add(len) > self.file_bytes {
            return Err(GgufError::TruncatedHeader { path: self.path.to_path_buf(), actual: self.file_bytes });
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact_or_corrupt(&mut buf, "string")?;
        // Vocabularies hold arbitrary byte pieces; keep them lossily rather than reject the file.
        Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    fn skip(&mut self, bytes: u64) -> Result<(), GgufError> {
        if self.pos.saturating_add(bytes) > self.file_bytes {
            return Err(GgufError::TruncatedHeader { path: self.path.to_path_buf(), actual: self.file_bytes });
        }
        // Within the buffer this only moves the cursor; beyond it, one seek.
        self.inner
            .seek_relative(bytes as i64)
            .map_err(|e| GgufError::Io { path: self.path.to_path_buf(), source: e })?;
        self.pos += bytes;
        Ok(())
    }

    fn value(&mut self, value_type: u32) -> Result<MetadataValue, GgufError> {
        Ok(match value_type {
            0 => MetadataValue::U8(u8::from_le_bytes(self.array()?)),
            1 => MetadataValue::I8(i8::from_le_bytes(self.array()?)),
            2 => MetadataValue::U16(u16::from_le_bytes(self.array()?)),
            3 => MetadataValue::I16(i16::from_le_bytes(self.array()?)),
            4 => MetadataValue::U32(self.u32()?),
            5 => MetadataValue::I32(i32::from_le_bytes(self.array()?)),
            6 => MetadataValue::F32(f32::from_le_bytes(self.array()?)),
            7 => MetadataValue::Bool(u8::from_le_bytes(self.array()?) != 0),
            8 => MetadataValue::String(self.string()?),
            9 => {
                let item_type = self.u32()?;
                let len = self.length("array length")?;
                if self.keep_arrays {
                    let items = (0..len).map(|_| self.value(item_type)).collect::<Result<Vec<_>, _>>()?;
                    MetadataValue::Array { len, items: Some(items) }
                } else {
                    self.skip_values(item_type, len)?;
                    MetadataValue::Array { len, items: None }
                }
            }
            10 => MetadataValue::U64(self.u64()?),
            11 => MetadataValue::I64(i64::from_le_bytes(self.array()?)),
            12 => MetadataValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(self.corrupt(format!("unknown metadata value type {other}"))),
        })
    }

    fn skip_values(&mut self, item_type: u32, len: u64) -> Result<(), GgufError> {
        let fixed_size = match item_type {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        match fixed_size {
            Some(size) => self.skip(len * size),
            None => {
                for _ in 0..len {
                    match item_type {
                        8 => {
                            let str_len = self.length("string length")?;
                            self.skip(str_len)?;
                        }
                        _ => {
                            self.value(item_type)?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
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
