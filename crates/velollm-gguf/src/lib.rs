//! A defensive reader (and a writer) for GGUF files (llama.cpp's model format).
//!
//! velollm reads the header itself, before any engine touches the file, for two reasons:
//! - a missing, foreign or truncated file gets a precise one-line error instead of whatever the engine does
//!   with it (llama.cpp may print pages of logs, candle may panic);
//! - the model identity recorded with every result (architecture, quantization, parameter count) comes from
//!   the file itself, identically for every backend.
//!
//! The writer ([`GgufWriter`], [`PendingFile`]) produces files this reader and llama.cpp accept; velollm uses it
//! for synthetic models of real architectures (`velollm synth`).
//!
//! The reader parses only the header: metadata key/values and tensor infos. Tensor data is never read, but its
//! extent is computed from the tensor shapes and types so that a file cut short is detected. It is at least as
//! strict as llama.cpp's own reader and never panics, recurses or allocates beyond the file's size on a crafted
//! file (docs/gguf.md lists its rules; `tests/fuzz_reader.rs` mutates real headers to hold it to that).

mod ggml_type;
mod header;
mod reader;
mod weights;
mod writer;

pub use ggml_type::GgmlType;
pub use header::HeaderProblem;
pub use reader::{GgufError, GgufFile, MetadataValue, ReadOptions, TensorInfo};
pub use weights::WeightBytesPerToken;
pub use writer::{GgufWriter, Layout, PendingFile, TensorData, WriteError, WriteOptions};
