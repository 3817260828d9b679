//! CSV: a header line, then one line per row with every column of [`crate::flat`].
//!
//! RFC 4180: lines end with CRLF; a field holding a comma, a double quote, a line break or leading/trailing
//! spaces is put in double quotes, with its double quotes doubled. Absent values are empty fields; booleans are
//! `true`/`false`; lists (samples, devices) are one comma-separated, quoted field.

use velollm_core::BenchmarkResult;

use crate::flat::{cells, Cell, COLUMNS};
use crate::{Appending, Exporter, Format};

pub struct CsvExporter;

/// One field, quoted when RFC 4180 requires it.
pub fn field(value: &str) -> String {
    let needs_quotes =
        value.contains([',', '"', '\r', '\n']) || value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']);
    if needs_quotes {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn cell(cell: &Cell) -> String {
    match cell {
        Cell::Null => String::new(),
        Cell::Int(v) => v.to_string(),
        Cell::Real(v) => v.to_string(),
        Cell::Bool(v) => v.to_string(),
        Cell::Text(s) => field(s),
    }
}

impl Exporter for CsvExporter {
    fn format(&self) -> Format {
        Format::Csv
    }

    fn document(&self, rows: &[BenchmarkResult]) -> String {
        self.concatenate(rows)
    }

    fn appending(&self) -> Option<&dyn Appending> {
        Some(self)
    }
}

impl Appending for CsvExporter {
    fn prelude(&self) -> String {
        let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        format!("{}\r\n", names.join(","))
    }

    fn record(&self, row: &BenchmarkResult) -> String {
        let fields: Vec<String> = cells(row).iter().map(cell).collect();
        format!("{}\r\n", fields.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_rfc_4180_requires() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field("cr\r"), "\"cr\r\"");
        assert_eq!(field(" padded"), "\" padded\"");
        assert_eq!(field("a|b"), "a|b");
        assert_eq!(field(""), "");
    }
}
