//! Exporters: every output format of `velollm benchmark` is one small file here, behind one trait.
//!
//! An [`Exporter`] turns finished rows into a document. Formats that grow one record per row (JSON Lines, CSV,
//! SQL) also implement [`Appending`], so a file in that format is appended to and flushed to disk as each row
//! finishes and survives a crash with every finished row; the others (the guide's JSON array, the markdown
//! table, whose columns depend on every row) are rewritten atomically after each row.
//!
//! - [`json`]: the guide's JSON array (docs/result.schema.json);
//! - [`jsonl`]: the same objects, one per line;
//! - [`csv`]: every row flattened to one line of the columns in [`flat`] (RFC 4180 quoting);
//! - [`sql`]: `CREATE TABLE IF NOT EXISTS` and one `INSERT` per row of the same columns, for `sqlite3`;
//! - [`markdown`]: a llama-bench-style table showing only the parameters that vary;
//! - [`console`]: the guide's summary and the backend comparison (the terminal view, not a file format);
//! - [`outputs`]: every `-o` of a run (and `--format` on stdout): written as rows finish, failures said at
//!   once, retried at the end, then saved to a fallback file.
//!
//! The live progress display and the collection of rows are the CLI's; this crate only formats and writes.

pub mod console;
pub mod csv;
pub mod figures;
mod files;
pub mod flat;
pub mod json;
pub mod jsonl;
pub mod markdown;
pub mod outputs;
pub mod sql;

use std::path::Path;

use velollm_core::BenchmarkResult;

pub use files::{check_writable, write_atomically};
pub use outputs::{Outputs, Saved};

/// One output format: a document made of result rows.
pub trait Exporter: Send + Sync {
    fn format(&self) -> Format;

    /// The whole document for `rows`: what a file in this format holds, and what `--format` prints.
    fn document(&self, rows: &[BenchmarkResult]) -> String;

    /// Formats made of one self-contained record per row, which can be appended as rows finish.
    fn appending(&self) -> Option<&dyn Appending> {
        None
    }
}

/// A format whose document is a prelude followed by one record per row: `document(rows) == prelude() +
/// record(rows[0]) + record(rows[1]) + …`. A file cut after any record is still a valid document.
pub trait Appending {
    /// What opens the document (CSV's header line, SQL's `CREATE TABLE`); may be empty.
    fn prelude(&self) -> String;
    /// One row, ending with its line break.
    fn record(&self, row: &BenchmarkResult) -> String;

    /// The prelude and every record, the whole document.
    fn concatenate(&self, rows: &[BenchmarkResult]) -> String {
        let mut out = self.prelude();
        for row in rows {
            out.push_str(&self.record(row));
        }
        out
    }
}

/// The formats velollm writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The guide's JSON array of rows.
    Json,
    /// One JSON row per line.
    Jsonl,
    /// One comma-separated line per row, with a header line.
    Csv,
    /// SQLite statements: a table and one insert per row.
    Sql,
    /// A llama-bench-style markdown table.
    Markdown,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Json, Format::Jsonl, Format::Csv, Format::Sql, Format::Markdown];

    /// The format's usual name (also its file extension): `json`, `jsonl`, `csv`, `sql`, `md`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Sql => "sql",
            Format::Markdown => "md",
        }
    }

    /// The format a file's extension names.
    pub fn of_path(path: &Path) -> Result<Format, ExportError> {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        extension.as_deref().and_then(Format::of_name).ok_or_else(|| ExportError::UnknownFormat {
            path: path.display().to_string(),
            extension: extension.unwrap_or_default(),
        })
    }

    /// A format by name or extension (`md` and `markdown`, `jsonl` and `ndjson`, `sql` and `sqlite`).
    pub fn of_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            "sql" | "sqlite" => Some(Format::Sql),
            "md" | "markdown" => Some(Format::Markdown),
            _ => None,
        }
    }

    /// This format's exporter.
    pub fn exporter(self) -> Box<dyn Exporter> {
        match self {
            Format::Json => Box::new(json::JsonExporter),
            Format::Jsonl => Box::new(jsonl::JsonlExporter),
            Format::Csv => Box::new(csv::CsvExporter),
            Format::Sql => Box::new(sql::SqlExporter::default()),
            Format::Markdown => Box::new(markdown::MarkdownExporter),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Why results could not be written. One line each.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write results to {path}: {reason}")]
    Unwritable { path: String, reason: String },
    #[error(
        "cannot tell the format of {path} from its extension '{extension}' (known: .json, .jsonl, .csv, .sql, .md)"
    )]
    UnknownFormat { path: String, extension: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_extension_and_name() {
        for format in Format::ALL {
            let path = format!("out.{}", format.name());
            assert_eq!(Format::of_path(Path::new(&path)).unwrap(), format);
            assert_eq!(Format::of_name(format.name()), Some(format));
            assert_eq!(format.exporter().format(), format);
        }
        assert_eq!(Format::of_path(Path::new("R.JSONL")).unwrap(), Format::Jsonl);
        assert_eq!(Format::of_name("markdown"), Some(Format::Markdown));
        let err = Format::of_path(Path::new("out.txt")).unwrap_err().to_string();
        assert!(err.contains("'txt'") && err.contains(".sql"), "{err}");
        let err = Format::of_path(Path::new("results")).unwrap_err().to_string();
        assert!(err.contains("extension ''"), "{err}");
    }

    #[test]
    fn only_record_formats_append() {
        let appending: Vec<Format> = Format::ALL.into_iter().filter(|f| f.exporter().appending().is_some()).collect();
        assert_eq!(appending, [Format::Jsonl, Format::Csv, Format::Sql]);
    }
}
