//! SQL for SQLite: `CREATE TABLE IF NOT EXISTS` with every column of [`crate::flat`], then one `INSERT` per
//! row, so `sqlite3 results.db < results.sql` loads a run, and loading several runs into one database appends
//! their rows to the same table. Each statement is complete on its own lines (no transaction spans rows), so
//! a file cut by a crash still loads with every finished row.
//!
//! Strings are single-quoted with single quotes doubled; a NUL character, which a literal cannot hold, is
//! spliced in with `char(0)`. Absent values are `NULL`, booleans 0/1, non-finite numbers `NULL`.

use velollm_core::BenchmarkResult;

use crate::flat::{cells, Cell, COLUMNS};
use crate::{Appending, Exporter, Format};

/// The table llama-bench's SQL output would call `llama_bench`.
pub const DEFAULT_TABLE: &str = "velollm";

pub struct SqlExporter {
    pub table: String,
}

impl Default for SqlExporter {
    fn default() -> Self {
        SqlExporter { table: DEFAULT_TABLE.to_string() }
    }
}

/// A string literal that SQLite reads back as exactly `value`.
pub fn literal(value: &str) -> String {
    let parts: Vec<String> = value.split('\0').map(|part| format!("'{}'", part.replace('\'', "''"))).collect();
    parts.join(" || char(0) || ")
}

fn value(cell: &Cell) -> String {
    match cell {
        Cell::Null => "NULL".into(),
        Cell::Int(v) => v.to_string(),
        Cell::Real(v) if v.is_finite() => {
            // Always with a decimal point or exponent, so SQLite keeps it a REAL.
            let text = v.to_string();
            if text.contains(['.', 'e', 'E']) {
                text
            } else {
                format!("{text}.0")
            }
        }
        Cell::Real(_) => "NULL".into(),
        Cell::Bool(v) => u8::from(*v).to_string(),
        Cell::Text(s) => literal(s),
    }
}

impl Exporter for SqlExporter {
    fn format(&self) -> Format {
        Format::Sql
    }

    fn document(&self, rows: &[BenchmarkResult]) -> String {
        self.concatenate(rows)
    }

    fn appending(&self) -> Option<&dyn Appending> {
        Some(self)
    }
}

impl Appending for SqlExporter {
    fn prelude(&self) -> String {
        let columns: Vec<String> = COLUMNS.iter().map(|c| format!("  {} {}", c.name, c.sql_type.name())).collect();
        format!("CREATE TABLE IF NOT EXISTS {} (\n{}\n);\n", self.table, columns.join(",\n"))
    }

    fn record(&self, row: &BenchmarkResult) -> String {
        let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
        let values: Vec<String> = cells(row).iter().map(value).collect();
        format!("INSERT INTO {} ({}) VALUES ({});\n", self.table, names.join(", "), values.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_nul() {
        assert_eq!(literal("plain"), "'plain'");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("''"), "''''''");
        assert_eq!(literal("a\0b"), "'a' || char(0) || 'b'");
        assert_eq!(literal("two\nlines; DROP TABLE x; --"), "'two\nlines; DROP TABLE x; --'");
    }

    #[test]
    fn numbers_keep_their_type() {
        assert_eq!(value(&Cell::Real(75.0)), "75.0");
        assert_eq!(value(&Cell::Real(0.5)), "0.5");
        assert_eq!(value(&Cell::Real(f64::NAN)), "NULL");
        assert_eq!(value(&Cell::Int(-3)), "-3");
        assert_eq!(value(&Cell::Bool(true)), "1");
        assert_eq!(value(&Cell::Null), "NULL");
    }
}
