//! The guide's JSON output: an array of result rows (docs/result.schema.json), pretty-printed.

use velollm_core::BenchmarkResult;

use crate::{Exporter, Format};

pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn format(&self) -> Format {
        Format::Json
    }

    fn document(&self, rows: &[BenchmarkResult]) -> String {
        // Serialising plain data into a string cannot fail (no maps with non-string keys, no I/O).
        let mut text = serde_json::to_string_pretty(rows).expect("result rows serialise");
        text.push('\n');
        text
    }
}
