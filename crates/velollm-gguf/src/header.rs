//! Parsing of the GGUF header, with the rules of llama.cpp's own reader (`ggml/src/gguf.cpp`) and a few more.
//!
//! Every count, length, dimension, size and offset comes from the file, so each is checked before it is used:
//! arithmetic is checked, nothing is allocated for a count before the rest of the file is known to be able to
//! hold that many items, and nothing recurses (arrays of arrays are refused, as llama.cpp refuses them). A file
//! that breaks a rule gets a [`HeaderProblem`] naming the key or tensor and the byte where it was found.
//! docs/gguf.md lists the rules.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::{GgmlType, GgufError, GgufFile, MetadataValue, ReadOptions, TensorInfo};

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 2..=3;
/// The data alignment without a `general.alignment` key.
const DEFAULT_ALIGNMENT: u64 = 32;
pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";
/// llama.cpp's `GGUF_MAX_STRING_LENGTH` and `GGUF_MAX_ARRAY_ELEMENTS`.
const MAX_STRING_BYTES: u64 = 1 << 30;
const MAX_ARRAY_ITEMS: u64 = 1 << 30;
/// ggml's `GGML_MAX_DIMS`, and `GGML_MAX_NAME` (64 bytes with the terminating NUL).
const MAX_DIMS: u32 = 4;
const MAX_TENSOR_NAME_BYTES: usize = 63;
/// ggml counts elements in an `int64_t`.
const MAX_ELEMENTS: u64 = i64::MAX as u64;
/// The smallest encodings of a metadata entry (key length, a one-byte key, value type, a one-byte value) and of a
/// tensor info (name length, dimension count, type, offset): a count the rest of the file cannot hold at these
/// sizes is refused before anything is allocated for it.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// The file is read through a buffer of at most this size (and never larger than the file).
const MAX_BUFFER_BYTES: u64 = 1 << 20;

/// What is wrong with a header that breaks a rule of the format (docs/gguf.md). Each names the metadata key or
/// tensor concerned, quoted and escaped (a name from the file may hold a newline, and the message stays one
/// line); [`GgufError::Invalid`] adds the file and the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    #[error("metadata key #{index} is empty")]
    EmptyKey { index: u64 },
    #[error("metadata key {key:?} is given twice")]
    DuplicateKey { key: String },
    #[error("metadata {key:?} has unknown value type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("metadata {key:?} is an array of arrays, which GGUF readers refuse")]
    NestedArray { key: String },
    #[error("{place}: a string of {len} bytes is over GGUF's limit of 2^30")]
    StringTooLong { place: String, len: u64 },
    #[error("metadata {key:?}: an array of {len} items is over GGUF's limit of 2^30")]
    ArrayTooLong { key: String, len: u64 },
    #[error("metadata general.alignment must be a u32, not {found}")]
    AlignmentNotU32 { found: &'static str },
    #[error("metadata general.alignment {value} is not a power of two")]
    AlignmentNotPowerOfTwo { value: u32 },
    #[error("tensor #{index}: a name of {len} bytes is longer than ggml's {MAX_TENSOR_NAME_BYTES}")]
    TensorNameTooLong { index: u64, len: u64 },
    #[error("tensor {name:?} is declared twice")]
    DuplicateTensor { name: String },
    #[error("tensor {name:?} has {n_dims} dimensions (ggml allows at most {MAX_DIMS})")]
    TooManyDimensions { name: String, n_dims: u32 },
    #[error("tensor {name:?}: dimension {index} is {value}, negative as ggml reads it")]
    NegativeDimension { name: String, index: usize, value: u64 },
    #[error("tensor {name:?}: shape {dims:?} has more elements than ggml can count (2^63 - 1)")]
    TooManyElements { name: String, dims: Vec<u64> },
    #[error("tensor {name:?} has unknown ggml type id {type_id}")]
    UnknownTensorType { name: String, type_id: u32 },
    #[error("tensor {name:?}: rows of {row} elements are not whole {type_name} blocks of {block}")]
    PartialBlock { name: String, row: u64, type_name: String, block: u64 },
    #[error("tensor {name:?}: its size in bytes overflows")]
    SizeOverflow { name: String },
    #[error("tensor {name:?} is at data offset {offset}, but must start where the previous one ends, at {expected}")]
    MisplacedTensor { name: String, offset: u64, expected: u64 },
}

/// Parses the header of the file at `path` (`file_bytes` long).
pub(crate) fn read_file(path: &Path, file_bytes: u64, options: ReadOptions) -> Result<GgufFile, GgufError> {
    let file = File::open(path).map_err(|source| GgufError::Io { path: path.to_path_buf(), source })?;
    // A small file gets a small buffer: the reader never allocates beyond what the file could fill.
    let buffer_bytes = file_bytes.min(MAX_BUFFER_BYTES) as usize;
    parse(BufReader::with_capacity(buffer_bytes, file), path, file_bytes, options)
}

/// Parses a whole file held in memory; `label` names it in messages.
pub(crate) fn read_bytes(label: &Path, bytes: &[u8], options: ReadOptions) -> Result<GgufFile, GgufError> {
    parse(bytes, label, bytes.len() as u64, options)
}

/// Where the header's bytes come from. Reads and skips stay within the file: [`HeaderReader`] checks each
/// against the file's length first.
trait Source {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()>;
    fn skip(&mut self, bytes: u64) -> io::Result<()>;
}

impl Source for BufReader<File> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        Read::read_exact(self, buf)
    }

    /// Within the buffer this only moves the cursor; beyond it, one seek. (`seek` on a `BufReader` would throw
    /// the buffer away: skipping a 49k-token vocabulary that way took seconds.)
    fn skip(&mut self, bytes: u64) -> io::Result<()> {
        let bytes = i64::try_from(bytes).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        self.seek_relative(bytes)
    }
}

impl Source for &[u8] {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        Read::read_exact(self, buf)
    }

    fn skip(&mut self, bytes: u64) -> io::Result<()> {
        match usize::try_from(bytes) {
            Ok(n) if n <= self.len() => {
                *self = &self[n..];
                Ok(())
            }
            _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
    }
}

/// Where a string is read, for messages.
#[derive(Clone, Copy)]
enum Place<'a> {
    Key(u64),
    Value(&'a str),
    TensorName(u64),
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Key(index) => write!(f, "metadata key #{index}"),
            Place::Value(key) => write!(f, "metadata {key:?}"),
            Place::TensorName(index) => write!(f, "tensor #{index}"),
        }
    }
}

/// GGUF metadata value types; an array's items may be any of them but an array.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ScalarType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    U64,
    I64,
    F64,
}

const ARRAY_TYPE_ID: u32 = 9;

impl ScalarType {
    fn from_id(id: u32) -> Option<ScalarType> {
        Some(match id {
            0 => ScalarType::U8,
            1 => ScalarType::I8,
            2 => ScalarType::U16,
            3 => ScalarType::I16,
            4 => ScalarType::U32,
            5 => ScalarType::I32,
            6 => ScalarType::F32,
            7 => ScalarType::Bool,
            8 => ScalarType::String,
            10 => ScalarType::U64,
            11 => ScalarType::I64,
            12 => ScalarType::F64,
            _ => return None,
        })
    }

    /// Bytes of a value of this type, `None` for a string (its length comes first).
    fn fixed_bytes(self) -> Option<u64> {
        match self {
            ScalarType::U8 | ScalarType::I8 | ScalarType::Bool => Some(1),
            ScalarType::U16 | ScalarType::I16 => Some(2),
            ScalarType::U32 | ScalarType::I32 | ScalarType::F32 => Some(4),
            ScalarType::U64 | ScalarType::I64 | ScalarType::F64 => Some(8),
            ScalarType::String => None,
        }
    }

    /// The fewest bytes a value of this type takes: an empty string is its 8-byte length.
    fn min_bytes(self) -> u64 {
        self.fixed_bytes().unwrap_or(8)
    }
}

/// Reads the header sequentially. The position is tracked here rather than asked of the source, and every read
/// or skip is first checked against the file's length, so a length from the file can neither run past its end
/// nor make anything allocate beyond it.
struct HeaderReader<'a, S> {
    source: S,
    pos: u64,
    path: &'a Path,
    file_bytes: u64,
    keep_arrays: bool,
}

type Parsed<T> = Result<T, GgufError>;

fn parse<S: Source>(source: S, path: &Path, file_bytes: u64, options: ReadOptions) -> Parsed<GgufFile> {
    let mut reader = HeaderReader { source, pos: 0, path, file_bytes, keep_arrays: options.keep_arrays };
    let version = reader.magic_and_version()?;
    let tensor_count = reader.u64()?;
    let kv_count = reader.u64()?;
    reader.ensure_counts_fit(tensor_count, kv_count)?;

    let (metadata, alignment_at) = reader.metadata(kv_count)?;
    let alignment = alignment(&metadata).map_err(|problem| reader.invalid(alignment_at, problem))?;
    let (tensors, data_bytes) = reader.tensor_infos(tensor_count, alignment)?;

    // llama.cpp starts the data section at the next multiple of the alignment, but only when there are tensors.
    let header_end = reader.pos;
    let data_offset = if tensors.is_empty() { header_end } else { align_up(header_end, alignment) };
    let expected = data_offset.saturating_add(data_bytes);
    if expected > file_bytes {
        return Err(GgufError::Truncated { path: path.to_path_buf(), expected, actual: file_bytes });
    }
    Ok(GgufFile { path: path.to_path_buf(), version, file_bytes, metadata, tensors, data_offset })
}

/// `general.alignment`: absent (32), or a u32 power of two, as llama.cpp requires. candle takes other integer
/// types and divides by the value, so a 0 panicked it.
fn alignment(metadata: &BTreeMap<String, MetadataValue>) -> Result<u64, HeaderProblem> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(MetadataValue::U32(value)) if value.is_power_of_two() => Ok(u64::from(*value)),
        Some(MetadataValue::U32(value)) => Err(HeaderProblem::AlignmentNotPowerOfTwo { value: *value }),
        Some(other) => Err(HeaderProblem::AlignmentNotU32 { found: other.type_name() }),
    }
}

/// `offset` rounded up to a multiple of `alignment` (a power of two), saturating: a result that does not fit
/// is past the end of any file anyway.
fn align_up(offset: u64, alignment: u64) -> u64 {
    offset.checked_next_multiple_of(alignment).unwrap_or(u64::MAX)
}

impl<S: Source> HeaderReader<'_, S> {
    fn invalid(&self, at: u64, problem: HeaderProblem) -> GgufError {
        GgufError::Invalid { path: self.path.to_path_buf(), at, problem }
    }

    fn truncated(&self) -> GgufError {
        GgufError::TruncatedHeader { path: self.path.to_path_buf(), actual: self.file_bytes }
    }

    fn remaining(&self) -> u64 {
        self.file_bytes - self.pos
    }

    /// Refuses a read of `bytes` that would run past the end of the file.
    fn ensure_remaining(&self, bytes: u64) -> Parsed<()> {
        if bytes > self.remaining() {
            return Err(self.truncated());
        }
        Ok(())
    }

    fn source_error(&self, e: io::Error) -> GgufError {
        // The length was checked first, so an early end means the file shrank while being read.
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.truncated()
        } else {
            GgufError::Io { path: self.path.to_path_buf(), source: e }
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Parsed<()> {
        self.ensure_remaining(buf.len() as u64)?;
        self.source.read_exact(buf).map_err(|e| self.source_error(e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, bytes: u64) -> Parsed<()> {
        self.ensure_remaining(bytes)?;
        self.source.skip(bytes).map_err(|e| self.source_error(e))?;
        self.pos += bytes;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Parsed<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self) -> Parsed<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Parsed<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn magic_and_version(&mut self) -> Parsed<u32> {
        if self.file_bytes < GGUF_MAGIC.len() as u64 {
            return Err(GgufError::NotGguf {
                path: self.path.to_path_buf(),
                found: "(file shorter than 4 bytes)".into(),
            });
        }
        let magic: [u8; 4] = self.bytes()?;
        if &magic != GGUF_MAGIC {
            return Err(GgufError::NotGguf {
                path: self.path.to_path_buf(),
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let version = self.u32()?;
        if !SUPPORTED_VERSIONS.contains(&version) {
            return Err(GgufError::UnsupportedVersion { path: self.path.to_path_buf(), version });
        }
        Ok(version)
    }

    /// Refuses counts that the rest of the file cannot hold, even at the smallest encodings: a count is what
    /// the tables are sized by, and a file cut short is better told as such before anything is read.
    fn ensure_counts_fit(&self, tensor_count: u64, kv_count: u64) -> Parsed<()> {
        let least = tensor_count
            .checked_mul(MIN_TENSOR_INFO_BYTES)
            .and_then(|tensors| kv_count.checked_mul(MIN_KV_BYTES).and_then(|kvs| tensors.checked_add(kvs)));
        match least {
            Some(least) => self.ensure_remaining(least),
            None => Err(self.truncated()),
        }
    }

    /// A string; its length must fit in the rest of the file (else the file is truncated) and within GGUF's
    /// limit. Invalid UTF-8 is kept lossily: vocabularies hold arbitrary byte pieces.
    fn string(&mut self, place: Place) -> Parsed<String> {
        let at = self.pos;
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(self.invalid(at, HeaderProblem::StringTooLong { place: place.to_string(), len }));
        }
        self.ensure_remaining(len)?;
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf)?;
        Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// The metadata key/values, and the position of `general.alignment` (for its message, if it is wrong).
    fn metadata(&mut self, kv_count: u64) -> Parsed<(BTreeMap<String, MetadataValue>, u64)> {
        let mut metadata = BTreeMap::new();
        let mut alignment_at = self.pos;
        for index in 0..kv_count {
            let key_at = self.pos;
            let key = self.string(Place::Key(index))?;
            if key.is_empty() {
                return Err(self.invalid(key_at, HeaderProblem::EmptyKey { index }));
            }
            if metadata.contains_key(&key) {
                return Err(self.invalid(key_at, HeaderProblem::DuplicateKey { key }));
            }
            if key == ALIGNMENT_KEY {
                alignment_at = key_at;
            }
            let value = self.value(&key)?;
            metadata.insert(key, value);
        }
        Ok((metadata, alignment_at))
    }

    fn value(&mut self, key: &str) -> Parsed<MetadataValue> {
        let at = self.pos;
        let type_id = self.u32()?;
        if type_id == ARRAY_TYPE_ID {
            return self.array(key);
        }
        match ScalarType::from_id(type_id) {
            Some(scalar) => self.scalar(scalar, key),
            None => Err(self.invalid(at, HeaderProblem::UnknownValueType { key: key.to_string(), type_id })),
        }
    }

    fn scalar(&mut self, scalar: ScalarType, key: &str) -> Parsed<MetadataValue> {
        Ok(match scalar {
            ScalarType::U8 => MetadataValue::U8(u8::from_le_bytes(self.bytes()?)),
            ScalarType::I8 => MetadataValue::I8(i8::from_le_bytes(self.bytes()?)),
            ScalarType::U16 => MetadataValue::U16(u16::from_le_bytes(self.bytes()?)),
            ScalarType::I16 => MetadataValue::I16(i16::from_le_bytes(self.bytes()?)),
            ScalarType::U32 => MetadataValue::U32(self.u32()?),
            ScalarType::I32 => MetadataValue::I32(i32::from_le_bytes(self.bytes()?)),
            ScalarType::F32 => MetadataValue::F32(f32::from_le_bytes(self.bytes()?)),
            ScalarType::Bool => MetadataValue::Bool(u8::from_le_bytes(self.bytes()?) != 0),
            ScalarType::String => MetadataValue::String(self.string(Place::Value(key))?),
            ScalarType::U64 => MetadataValue::U64(self.u64()?),
            ScalarType::I64 => MetadataValue::I64(i64::from_le_bytes(self.bytes()?)),
            ScalarType::F64 => MetadataValue::F64(f64::from_le_bytes(self.bytes()?)),
        })
    }

    /// An array (its type id already read). Its items are scalars: an array of arrays is refused here, which is
    /// also why reading never recurses.
    fn array(&mut self, key: &str) -> Parsed<MetadataValue> {
        let item_type_at = self.pos;
        let item_type_id = self.u32()?;
        let item_type = match ScalarType::from_id(item_type_id) {
            Some(item_type) => item_type,
            None if item_type_id == ARRAY_TYPE_ID => {
                return Err(self.invalid(item_type_at, HeaderProblem::NestedArray { key: key.to_string() }))
            }
            None => {
                let problem = HeaderProblem::UnknownValueType { key: key.to_string(), type_id: item_type_id };
                return Err(self.invalid(item_type_at, problem));
            }
        };
        let len_at = self.pos;
        let len = self.u64()?;
        if len > MAX_ARRAY_ITEMS {
            return Err(self.invalid(len_at, HeaderProblem::ArrayTooLong { key: key.to_string(), len }));
        }
        // At most 2^30 items of at most 8 bytes: no overflow. Checked before the items are allocated.
        self.ensure_remaining(len * item_type.min_bytes())?;
        if !self.keep_arrays {
            self.skip_items(item_type, len)?;
            return Ok(MetadataValue::Array { len, items: None });
        }
        let mut items = Vec::with_capacity(len as usize);
        for _ in 0..len {
            items.push(self.scalar(item_type, key)?);
        }
        Ok(MetadataValue::Array { len, items: Some(items) })
    }

    fn skip_items(&mut self, item_type: ScalarType, len: u64) -> Parsed<()> {
        match item_type.fixed_bytes() {
            Some(bytes) => self.skip(len * bytes),
            None => {
                for _ in 0..len {
                    let str_len = self.u64()?;
                    self.skip(str_len)?;
                }
                Ok(())
            }
        }
    }

    /// The tensor infos, and the size of the data section they describe (up to the end of the last tensor).
    fn tensor_infos(&mut self, tensor_count: u64, alignment: u64) -> Parsed<(Vec<TensorInfo>, u64)> {
        // `ensure_counts_fit` bounded the count by the file's size.
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut names = HashSet::with_capacity(tensor_count as usize);
        let mut next_offset = 0u64;
        let mut data_bytes = 0u64;
        for index in 0..tensor_count {
            let (tensor, bytes) = self.tensor_info(index, &mut names)?;
            if tensor.offset != next_offset {
                let offset_at = self.pos - 8;
                let problem =
                    HeaderProblem::MisplacedTensor { name: tensor.name, offset: tensor.offset, expected: next_offset };
                return Err(self.invalid(offset_at, problem));
            }
            // The data ends here; the next tensor starts at the next aligned offset.
            let end = tensor.offset.checked_add(bytes);
            match end.and_then(|end| Some((end, end.checked_next_multiple_of(alignment)?))) {
                Some((end, next)) => (data_bytes, next_offset) = (end, next),
                None => {
                    let offset_at = self.pos - 8;
                    return Err(self.invalid(offset_at, HeaderProblem::SizeOverflow { name: tensor.name }));
                }
            }
            tensors.push(tensor);
        }
        Ok((tensors, data_bytes))
    }

    /// One tensor info and the bytes of its data.
    fn tensor_info(&mut self, index: u64, names: &mut HashSet<String>) -> Parsed<(TensorInfo, u64)> {
        let name_at = self.pos;
        let name = self.string(Place::TensorName(index))?;
        if name.len() > MAX_TENSOR_NAME_BYTES {
            let problem = HeaderProblem::TensorNameTooLong { index, len: name.len() as u64 };
            return Err(self.invalid(name_at, problem));
        }
        if !names.insert(name.clone()) {
            return Err(self.invalid(name_at, HeaderProblem::DuplicateTensor { name }));
        }
        let shape_at = self.pos;
        let dims = self.dims(&name)?;
        let elements = element_count(&name, &dims).map_err(|problem| self.invalid(shape_at, problem))?;
        let type_at = self.pos;
        let ggml_type = GgmlType(self.u32()?);
        let bytes =
            tensor_bytes(&name, &dims, elements, ggml_type).map_err(|problem| self.invalid(type_at, problem))?;
        let offset = self.u64()?;
        Ok((TensorInfo { name, dims, ggml_type, offset }, bytes))
    }

    fn dims(&mut self, name: &str) -> Parsed<Vec<u64>> {
        let at = self.pos;
        let n_dims = self.u32()?;
        if n_dims > MAX_DIMS {
            return Err(self.invalid(at, HeaderProblem::TooManyDimensions { name: name.to_string(), n_dims }));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64()?);
        }
        Ok(dims)
    }
}

/// The element count, refused where ggml's signed 64-bit counts cannot hold a dimension or the product.
/// A zero dimension is allowed, as llama.cpp allows it (the tensor is empty).
fn element_count(name: &str, dims: &[u64]) -> Result<u64, HeaderProblem> {
    if let Some((index, &value)) = dims.iter().enumerate().find(|(_, &d)| d > MAX_ELEMENTS) {
        return Err(HeaderProblem::NegativeDimension { name: name.to_string(), index, value });
    }
    // Multiplied in order like llama.cpp, so a zero after an overflowing prefix does not hide it.
    let mut elements = dims.first().copied().unwrap_or(1);
    for &dim in dims.iter().skip(1) {
        elements = elements
            .checked_mul(dim)
            .filter(|&e| e <= MAX_ELEMENTS)
            .ok_or_else(|| HeaderProblem::TooManyElements { name: name.to_string(), dims: dims.to_vec() })?;
    }
    Ok(elements)
}

/// The bytes of a tensor's data: its type must be one ggml knows, and its rows whole blocks of that type.
fn tensor_bytes(name: &str, dims: &[u64], elements: u64, ggml_type: GgmlType) -> Result<u64, HeaderProblem> {
    let Some((block_elements, _)) = ggml_type.block() else {
        return Err(HeaderProblem::UnknownTensorType { name: name.to_string(), type_id: ggml_type.0 });
    };
    let row = dims.first().copied().unwrap_or(1);
    if !row.is_multiple_of(block_elements) {
        return Err(HeaderProblem::PartialBlock {
            name: name.to_string(),
            row,
            type_name: ggml_type.name(),
            block: block_elements,
        });
    }
    ggml_type.storage_bytes(elements).ok_or_else(|| HeaderProblem::SizeOverflow { name: name.to_string() })
}
