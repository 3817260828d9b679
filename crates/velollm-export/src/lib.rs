//! Exporters: each output format is one file here.
//!
//! - [`json`]: the guide's JSON array, written atomically after every finished benchmark;
//! - [`console`]: the guide's console view, drawn from runner events.

pub mod console;
pub mod json;

pub use console::ConsoleReporter;
pub use json::{ExportError, JsonFile};
