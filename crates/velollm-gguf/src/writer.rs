//! Writing GGUF files (format version 3), the counterpart of the reader.
//!
//! A [`GgufWriter`] collects metadata and tensor declarations and checks each as it is added (what llama.cpp
//! would refuse, this refuses first, with a reason). [`GgufWriter::layout`] fixes the file: the serialized
//! header and every tensor's offset, so the file's size is known before a byte is written. The tensor data
//! comes from a [`TensorData`] source, asked for pieces of a few MiB that several threads fill while the
//! previous pieces are written; the bytes depend only on the source, never on the thread count.
//!
//! [`PendingFile`] makes the write atomic: the data goes to a temporary file beside the target, which is
//! flushed to disk and renamed over the target only when complete, and removed on any failure. A reader
//! never sees a half-written model.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::header::ALIGNMENT_KEY;
use crate::{GgmlType, MetadataValue, TensorInfo};

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const GGUF_VERSION: u32 = 3;
/// The data alignment every GGUF reader assumes without a `general.alignment` key.
const ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_NAME` is 64 bytes including the terminating NUL.
const MAX_TENSOR_NAME: usize = 63;
/// ggml tensors have at most 4 dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: usize = 4;
/// Tensor data is produced and written in pieces of about this size (whole blocks).
const CHUNK_BYTES: u64 = 4 << 20;

/// Why a GGUF file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("invalid GGUF content: {0}")]
    Invalid(String),
    #[error("cannot write {path}: {reason}")]
    Unwritable { path: PathBuf, reason: String },
    #[error("writing {path} failed: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("interrupted while writing {0}; the partial file was removed")]
    Interrupted(PathBuf),
}

/// Collects the content of a GGUF file: metadata key/values and tensor declarations, in file order.
#[derive(Debug, Clone, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetadataValue)>,
    keys: HashSet<String>,
    tensors: Vec<(String, Vec<u64>, GgmlType)>,
    tensor_names: HashSet<String>,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata key/value. Arrays must carry their items, all of one type.
    pub fn add_metadata(&mut self, key: &str, value: MetadataValue) -> Result<(), WriteError> {
        if key.is_empty() {
            return Err(WriteError::Invalid("empty metadata key".into()));
        }
        if self.keys.contains(key) {
            return Err(WriteError::Invalid(format!("metadata key {key} given twice")));
        }
        check_value(&value).map_err(|reason| WriteError::Invalid(format!("metadata {key}: {reason}")))?;
        if key == ALIGNMENT_KEY && value != MetadataValue::U32(ALIGNMENT as u32) {
            return Err(WriteError::Invalid(format!("metadata {key}: this writer aligns tensor data to {ALIGNMENT}")));
        }
        self.keys.insert(key.to_string());
        self.metadata.push((key.to_string(), value));
        Ok(())
    }

    /// Declares a tensor: `dims` in ggml order (the first dimension is the row, the contiguous one).
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType) -> Result<(), WriteError> {
        let invalid = |reason: String| Err(WriteError::Invalid(format!("tensor {name}: {reason}")));
        if name.is_empty() || name.len() > MAX_TENSOR_NAME {
            return invalid(format!("a name must have 1 to {MAX_TENSOR_NAME} bytes"));
        }
        if self.tensor_names.contains(name) {
            return invalid("declared twice".into());
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return invalid(format!("{} dimensions (ggml allows 1 to {MAX_DIMS})", dims.len()));
        }
        if dims.contains(&0) {
            return invalid(format!("a zero dimension in {dims:?}"));
        }
        let Some((block_elements, _)) = ggml_type.block() else {
            return invalid(format!("unknown ggml type id {}", ggml_type.0));
        };
        if !dims[0].is_multiple_of(block_elements) {
            return invalid(format!(
                "rows of {} elements are not whole {} blocks of {block_elements}",
                dims[0],
                ggml_type.name()
            ));
        }
        let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if elements.and_then(|e| ggml_type.storage_bytes(e)).is_none_or(|bytes| bytes > (1 << 50)) {
            return invalid(format!("{dims:?} is implausibly large"));
        }
        self.tensor_names.insert(name.to_string());
        self.tensors.push((name.to_string(), dims.to_vec(), ggml_type));
        Ok(())
    }

    pub fn metadata(&self) -> &[(String, MetadataValue)] {
        &self.metadata
    }

    /// Fixes the file: serializes the header and places every tensor at an aligned offset.
    pub fn layout(&self) -> Layout {
        let mut tensors = Vec::with_capacity(self.tensors.len());
        let mut offset = 0u64;
        for (name, dims, ggml_type) in &self.tensors {
            tensors.push(TensorInfo { name: name.clone(), dims: dims.clone(), ggml_type: *ggml_type, offset });
            offset = align(offset + tensor_bytes(tensors.last().expect("just pushed")));
        }
        let data_bytes = offset;

        let mut header = Vec::new();
        header.extend_from_slice(GGUF_MAGIC);
        header.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            header.extend_from_slice(&type_id(value).to_le_bytes());
            put_value(&mut header, value);
        }
        for tensor in &tensors {
            put_string(&mut header, &tensor.name);
            header.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for dim in &tensor.dims {
                header.extend_from_slice(&dim.to_le_bytes());
            }
            header.extend_from_slice(&tensor.ggml_type.0.to_le_bytes());
            header.extend_from_slice(&tensor.offset.to_le_bytes());
        }
        let data_offset = align(header.len() as u64);
        header.resize(data_offset as usize, 0);
        Layout { file_bytes: data_offset + data_bytes, tensors, header, data_offset }
    }
}

/// Where everything goes in the file.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The tensors, with offsets relative to the data section (as the reader reports them).
    pub tensors: Vec<TensorInfo>,
    /// The serialized header, padded to the start of the data section.
    pub header: Vec<u8>,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
    /// The size of the complete file.
    pub file_bytes: u64,
}

/// The source of the tensor data.
pub trait TensorData: Sync {
    /// Fills `out` with the bytes of tensor `index` (`tensor` as laid out), starting at byte `start` of that
    /// tensor's data. `start` and `out.len()` are whole blocks of the tensor's type. Called from several
    /// threads, in no particular order; the bytes must depend only on the arguments.
    fn fill(&self, index: usize, tensor: &TensorInfo, start: u64, out: &mut [u8]);
}

/// How to write.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// Threads filling tensor data (at least 1).
    pub threads: usize,
    /// Stop at the next piece when this becomes true.
    pub cancel: Option<&'a AtomicBool>,
}

impl Default for WriteOptions<'_> {
    fn default() -> Self {
        WriteOptions { threads: 1, cancel: None }
    }
}

/// Why writing stopped early.
enum Stop {
    Io(io::Error),
    Cancelled,
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Stop {
        Stop::Io(e)
    }
}

/// One piece of one tensor's data.
struct Chunk {
    tensor: usize,
    start: u64,
    len: u64,
}

impl Layout {
    /// The data pieces in file order: whole blocks, about [`CHUNK_BYTES`] each.
    fn chunks(&self) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        for (index, tensor) in self.tensors.iter().enumerate() {
            let (_, block_bytes) = tensor.ggml_type.block().expect("checked when added");
            let step = (CHUNK_BYTES / block_bytes).max(1) * block_bytes;
            let total = tensor_bytes(tensor);
            let mut start = 0;
            while start < total {
                let len = step.min(total - start);
                chunks.push(Chunk { tensor: index, start, len });
                start += len;
            }
        }
        chunks
    }

    /// Writes the whole file to `out`: header, then the data of every tensor at its offset. The data is
    /// produced by `options.threads` threads while earlier pieces are written.
    pub fn write_to(&self, out: &mut dyn Write, data: &dyn TensorData, options: &WriteOptions) -> io::Result<()> {
        match self.write_inner(out, data, options) {
            Ok(()) => Ok(()),
            Err(Stop::Io(e)) => Err(e),
            Err(Stop::Cancelled) => Err(io::Error::other("cancelled")),
        }
    }

    fn write_inner(&self, out: &mut dyn Write, data: &dyn TensorData, options: &WriteOptions) -> Result<(), Stop> {
        let cancelled = || options.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
        out.write_all(&self.header)?;
        let mut position = self.data_offset;
        let chunks = self.chunks();
        let threads = options.threads.clamp(1, 64).min(chunks.len().max(1));
        let tensors = &self.tensors;
        let chunks = &chunks;
        std::thread::scope(|scope| -> Result<(), Stop> {
            // Worker w fills chunks w, w + threads, …; each hands its buffers over through its own channel, so
            // the writer takes them in file order. Used buffers go back to their worker for reuse.
            let mut filled = Vec::with_capacity(threads);
            let mut recycle = Vec::with_capacity(threads);
            for worker in 0..threads {
                let (filled_tx, filled_rx) = mpsc::sync_channel::<Vec<u8>>(1);
                let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
                filled.push(filled_rx);
                recycle.push(recycle_tx);
                scope.spawn(move || {
                    for chunk in chunks.iter().skip(worker).step_by(threads) {
                        let mut buf = recycle_rx.try_recv().unwrap_or_default();
                        buf.resize(chunk.len as usize, 0);
                        data.fill(chunk.tensor, &tensors[chunk.tensor], chunk.start, &mut buf);
                        if filled_tx.send(buf).is_err() {
                            return; // the writer stopped
                        }
                    }
                });
            }
            for (i, chunk) in chunks.iter().enumerate() {
                if cancelled() {
                    return Err(Stop::Cancelled);
                }
                let buf = filled[i % threads].recv().map_err(|_| io::Error::other("a data thread stopped"))?;
                let at = self.data_offset + tensors[chunk.tensor].offset + chunk.start;
                pad(out, &mut position, at)?;
                out.write_all(&buf)?;
                position += buf.len() as u64;
                let _ = recycle[i % threads].send(buf);
            }
            pad(out, &mut position, self.file_bytes)?;
            Ok(())
        })
    }
}

/// Writes zeros from `position` up to `to`.
fn pad(out: &mut dyn Write, position: &mut u64, to: u64) -> io::Result<()> {
    debug_assert!(to >= *position && to - *position < ALIGNMENT);
    let zeros = [0u8; ALIGNMENT as usize];
    let n = to.saturating_sub(*position) as usize;
    out.write_all(&zeros[..n])?;
    *position = to;
    Ok(())
}

fn align(offset: u64) -> u64 {
    offset.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn tensor_bytes(tensor: &TensorInfo) -> u64 {
    tensor.ggml_type.storage_bytes(tensor.element_count()).expect("checked when added")
}

/// A file being written: a temporary file beside the target, renamed over it once complete.
#[derive(Debug)]
pub struct PendingFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl PendingFile {
    /// Checks that `target` can be written (its directory exists and takes a new file; it is not a
    /// directory or a read-only file) by creating the temporary file now, before any slow work.
    pub fn create(target: &Path) -> Result<PendingFile, WriteError> {
        let fail = |reason: String| WriteError::Unwritable { path: target.to_path_buf(), reason };
        if target.as_os_str().is_empty() {
            return Err(fail("the path is empty".into()));
        }
        if target.is_dir() {
            return Err(fail("it is a directory".into()));
        }
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(fail(format!("{} is not a directory", dir.display()))),
            Err(_) => return Err(fail(format!("directory {} does not exist", dir.display()))),
        }
        if fs::metadata(target).is_ok_and(|m| m.permissions().readonly()) {
            return Err(fail("the file is read-only".into()));
        }
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let temp = dir.join(format!(".{name}.{}.partial", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| fail(format!("directory {} is not writable ({})", dir.display(), short_io(&e))))?;
        Ok(PendingFile { target: target.to_path_buf(), temp, file: Some(file) })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes the file laid out by `layout`, flushes it to disk and renames it over the target. On any
    /// failure or cancellation the temporary file is removed and the target is left as it was.
    pub fn write(mut self, layout: &Layout, data: &dyn TensorData, options: &WriteOptions) -> Result<(), WriteError> {
        let io_fail = |path: &Path, e: io::Error| WriteError::Io { path: path.to_path_buf(), reason: short_io(&e) };
        let file = self.file.take().expect("a pending file is written once");
        let mut out = BufWriter::with_capacity(1 << 20, file);
        match layout.write_inner(&mut out, data, options) {
            Ok(()) => {}
            Err(Stop::Cancelled) => return Err(WriteError::Interrupted(self.target.clone())),
            Err(Stop::Io(e)) => return Err(io_fail(&self.target, e)),
        }
        let file = out.into_inner().map_err(|e| io_fail(&self.target, e.into_error()))?;
        file.sync_all().map_err(|e| io_fail(&self.target, e))?;
        drop(file);
        let temp = std::mem::take(&mut self.temp); // renamed, or removed by `persist` on failure
        velollm_core::atomic::persist(&temp, &self.target).map_err(|e| io_fail(&self.target, e))?;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        self.file = None;
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn short_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn type_id(value: &MetadataValue) -> u32 {
    match value {
        MetadataValue::U8(_) => 0,
        MetadataValue::I8(_) => 1,
        MetadataValue::U16(_) => 2,
        MetadataValue::I16(_) => 3,
        MetadataValue::U32(_) => 4,
        MetadataValue::I32(_) => 5,
        MetadataValue::F32(_) => 6,
        MetadataValue::Bool(_) => 7,
        MetadataValue::String(_) => 8,
        MetadataValue::Array { .. } => 9,
        MetadataValue::U64(_) => 10,
        MetadataValue::I64(_) => 11,
        MetadataValue::F64(_) => 12,
    }
}

/// Arrays must carry their items (the reader may have skipped them), as many as they claim, of one scalar type:
/// llama.cpp (and this crate's reader) refuse arrays of arrays.
fn check_value(value: &MetadataValue) -> Result<(), String> {
    let MetadataValue::Array { len, items } = value else {
        return Ok(());
    };
    let Some(items) = items else {
        return Err("an array read without its items cannot be written".into());
    };
    if *len != items.len() as u64 {
        return Err(format!("an array claims {len} items but has {}", items.len()));
    }
    if let Some(first) = items.first() {
        let first_type = type_id(first);
        if let Some(other) = items.iter().find(|item| type_id(item) != first_type) {
            return Err(format!("an array mixes value types {first_type} and {}", type_id(other)));
        }
    }
    if items.iter().any(|item| matches!(item, MetadataValue::Array { .. })) {
        return Err("an array of arrays cannot be read back".into());
    }
    Ok(())
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, value: &MetadataValue) {
    match value {
        MetadataValue::U8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::Bool(v) => buf.push(u8::from(*v)),
        MetadataValue::String(s) => put_string(buf, s),
        MetadataValue::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetadataValue::Array { items, .. } => {
            let items = items.as_deref().unwrap_or_default();
            // An empty array's item type is not recorded anywhere else; U8 is as good as any.
            let item_type = items.first().map_or(0, type_id);
            buf.extend_from_slice(&item_type.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(buf, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GgufError, GgufFile, ReadOptions};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("velollm-gguf-writer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Every byte is a function of its tensor and absolute position, so misplaced data shows.
    struct Pattern;
    impl TensorData for Pattern {
        fn fill(&self, index: usize, _tensor: &TensorInfo, start: u64, out: &mut [u8]) {
            for (i, b) in out.iter_mut().enumerate() {
                *b = (index as u64 * 31 + start + i as u64) as u8;
            }
        }
    }

    fn sample_writer() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", MetadataValue::String("llama".into())).unwrap();
        w.add_metadata("general.synthetic", MetadataValue::Bool(true)).unwrap();
        w.add_metadata("a.u8", MetadataValue::U8(7)).unwrap();
        w.add_metadata("a.i8", MetadataValue::I8(-7)).unwrap();
        w.add_metadata("a.u16", MetadataValue::U16(65535)).unwrap();
        w.add_metadata("a.i16", MetadataValue::I16(-300)).unwrap();
        w.add_metadata("a.u32", MetadataValue::U32(128256)).unwrap();
        w.add_metadata("a.i32", MetadataValue::I32(-1)).unwrap();
        w.add_metadata("a.f32", MetadataValue::F32(1e-5)).unwrap();
        w.add_metadata("a.u64", MetadataValue::U64(u64::MAX)).unwrap();
        w.add_metadata("a.i64", MetadataValue::I64(i64::MIN)).unwrap();
        w.add_metadata("a.f64", MetadataValue::F64(0.1)).unwrap();
        let strings = vec![MetadataValue::String("Ġthe".into()), MetadataValue::String("".into())];
        w.add_metadata("a.strings", MetadataValue::Array { len: 2, items: Some(strings) }).unwrap();
        let ints = vec![MetadataValue::I32(1), MetadataValue::I32(5)];
        w.add_metadata("a.ints", MetadataValue::Array { len: 2, items: Some(ints) }).unwrap();
        w.add_metadata("a.empty", MetadataValue::Array { len: 0, items: Some(vec![]) }).unwrap();
        w.add_tensor("token_embd.weight", &[64, 10], GgmlType::Q4_0).unwrap();
        w.add_tensor("norm.weight", &[7], GgmlType::F32).unwrap();
        w.add_tensor("q8.weight", &[32, 3], GgmlType::Q8_0).unwrap();
        w.add_tensor("q6k.weight", &[256, 2], GgmlType::Q6_K).unwrap();
        w.add_tensor("f16.weight", &[3, 5], GgmlType::F16).unwrap();
        w
    }

    #[test]
    fn round_trips_through_the_reader() {
        let dir = scratch("roundtrip");
        let path = dir.join("model.gguf");
        let writer = sample_writer();
        let layout = writer.layout();
        let options = WriteOptions { threads: 3, cancel: None };
        PendingFile::create(&path).unwrap().write(&layout, &Pattern, &options).unwrap();

        let read = GgufFile::read(&path, ReadOptions { keep_arrays: true }).unwrap();
        assert_eq!(read.version, 3);
        assert_eq!(read.file_bytes, layout.file_bytes);
        assert_eq!(read.data_offset, layout.data_offset);
        assert_eq!(read.data_offset % ALIGNMENT, 0);
        let expected: Vec<(String, MetadataValue)> = writer.metadata().to_vec();
        let got: Vec<(String, MetadataValue)> = read.metadata.clone().into_iter().collect();
        let mut expected_sorted = expected.clone();
        expected_sorted.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, expected_sorted);
        assert_eq!(read.tensors, layout.tensors);
        assert!(read.tensors.iter().all(|t| t.offset % ALIGNMENT == 0));

        // The data of each tensor is where its info says, and the padding between tensors is zero.
        let bytes = fs::read(&path).unwrap();
        for (index, tensor) in read.tensors.iter().enumerate() {
            let start = (read.data_offset + tensor.offset) as usize;
            let len = tensor.ggml_type.storage_bytes(tensor.element_count()).unwrap() as usize;
            let mut want = vec![0u8; len];
            Pattern.fill(index, tensor, 0, &mut want);
            assert_eq!(&bytes[start..start + len], &want[..], "{}", tensor.name);
            let padded_end = align((start + len) as u64) as usize;
            assert!(bytes[start + len..padded_end].iter().all(|&b| b == 0));
        }
        // No temporary file is left beside the model.
        let names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["model.gguf"]);
    }

    #[test]
    fn the_bytes_do_not_depend_on_the_thread_count() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", MetadataValue::String("llama".into())).unwrap();
        // Large enough for several chunks per tensor.
        w.add_tensor("big", &[4096, 1200], GgmlType::Q8_0).unwrap();
        w.add_tensor("small", &[32], GgmlType::Q4_0).unwrap();
        let layout = w.layout();
        let write = |threads| {
            let mut out = Vec::new();
            layout.write_to(&mut out, &Pattern, &WriteOptions { threads, cancel: None }).unwrap();
            out
        };
        let one = write(1);
        assert_eq!(one.len() as u64, layout.file_bytes);
        assert_eq!(one, write(4));
    }

    #[test]
    fn refuses_what_readers_would_refuse() {
        let mut w = GgufWriter::new();
        w.add_metadata("k", MetadataValue::U8(1)).unwrap();
        let err = |r: Result<(), WriteError>| r.unwrap_err().to_string();
        assert!(err(w.add_metadata("k", MetadataValue::U8(2))).contains("given twice"));
        assert!(err(w.add_metadata("skipped", MetadataValue::Array { len: 3, items: None })).contains("items"));
        let mixed = vec![MetadataValue::U8(1), MetadataValue::String("x".into())];
        assert!(err(w.add_metadata("mixed", MetadataValue::Array { len: 2, items: Some(mixed) })).contains("mixes"));
        let short = vec![MetadataValue::U8(1)];
        assert!(err(w.add_metadata("short", MetadataValue::Array { len: 2, items: Some(short) })).contains("claims"));
        let nested = vec![MetadataValue::Array { len: 1, items: Some(vec![MetadataValue::F32(2.5)]) }];
        let nested = MetadataValue::Array { len: 1, items: Some(nested) };
        assert!(err(w.add_metadata("nested", nested)).contains("array of arrays"));
        assert!(err(w.add_metadata("general.alignment", MetadataValue::U32(64))).contains("aligns"));
        w.add_metadata("general.alignment", MetadataValue::U32(32)).unwrap();
        assert!(err(w.add_tensor("q", &[48, 2], GgmlType::Q4_0)).contains("whole Q4_0 blocks"));
        assert!(err(w.add_tensor("q", &[32, 0], GgmlType::Q4_0)).contains("zero dimension"));
        assert!(err(w.add_tensor("q", &[1, 1, 1, 1, 1], GgmlType::F32)).contains("dimensions"));
        assert!(err(w.add_tensor("q", &[4], GgmlType(999))).contains("unknown ggml type"));
        assert!(err(w.add_tensor(&"n".repeat(64), &[4], GgmlType::F32)).contains("name"));
        w.add_tensor("q", &[4], GgmlType::F32).unwrap();
        assert!(err(w.add_tensor("q", &[4], GgmlType::F32)).contains("declared twice"));
    }

    #[test]
    fn unwritable_targets_are_refused_before_writing() {
        let missing = PendingFile::create(Path::new("/nonexistent-velollm-dir/model.gguf")).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        let dir = scratch("unwritable");
        let is_dir = PendingFile::create(&dir).unwrap_err();
        assert!(is_dir.to_string().contains("is a directory"), "{is_dir}");
        let file = dir.join("file");
        fs::write(&file, b"x").unwrap();
        let under_file = PendingFile::create(&file.join("model.gguf")).unwrap_err();
        assert!(under_file.to_string().contains("is not a directory"), "{under_file}");
    }

    #[test]
    fn a_cancelled_or_dropped_write_leaves_nothing_behind() {
        let dir = scratch("cancel");
        let path = dir.join("model.gguf");
        fs::write(&path, b"previous").unwrap();
        let mut w = GgufWriter::new();
        w.add_tensor("big", &[4096, 2000], GgmlType::Q8_0).unwrap();
        let cancel = AtomicBool::new(true);
        let options = WriteOptions { threads: 2, cancel: Some(&cancel) };
        let err = PendingFile::create(&path).unwrap().write(&w.layout(), &Pattern, &options).unwrap_err();
        assert!(matches!(err, WriteError::Interrupted(_)), "{err}");
        drop(PendingFile::create(&path).unwrap());
        let names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["model.gguf"]);
        assert_eq!(fs::read(&path).unwrap(), b"previous", "the target is untouched");
        // And a truncated copy is what the reader calls truncated.
        let layout = sample_writer().layout();
        let mut bytes = Vec::new();
        layout.write_to(&mut bytes, &Pattern, &WriteOptions::default()).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 40]).unwrap();
        assert!(matches!(GgufFile::read(&path, ReadOptions::default()), Err(GgufError::Truncated { .. })));
    }
}
