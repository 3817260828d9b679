//! Exporters: each output format is one file here, and the console's summary views.
//!
//! - [`json`]: the guide's JSON array, written atomically after every finished row;
//! - [`jsonl`]: one row per line, appended and flushed as each row finishes;
//! - [`outputs`]: every `-o` of a run, with failures reported at once and a fallback file at the end;
//! - [`console`]: the guide's summary, the backend comparison and the sweep table.

pub mod console;
mod files;
pub mod json;
pub mod jsonl;
pub mod outputs;

pub use json::JsonFile;
pub use jsonl::JsonlFile;
pub use outputs::{Format, Outputs, Saved};

/// Why results could not be written. One line each.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write results to {path}: {reason}")]
    Unwritable { path: String, reason: String },
    #[error("cannot tell the format of {path} from its extension '{extension}' (known: .json, .jsonl)")]
    UnknownFormat { path: String, extension: String },
}
