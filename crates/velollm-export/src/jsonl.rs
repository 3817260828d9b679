//! JSON Lines: one complete row object per line (llama-bench's `-o jsonl` shape), so a file cut by a crash or
//! a kill holds every row that finished.

use velollm_core::BenchmarkResult;

use crate::{Appending, Exporter, Format};

pub struct JsonlExporter;

impl Exporter for JsonlExporter {
    fn format(&self) -> Format {
        Format::Jsonl
    }

    fn document(&self, rows: &[BenchmarkResult]) -> String {
        self.concatenate(rows)
    }

    fn appending(&self) -> Option<&dyn Appending> {
        Some(self)
    }
}

impl Appending for JsonlExporter {
    fn prelude(&self) -> String {
        String::new()
    }

    fn record(&self, row: &BenchmarkResult) -> String {
        let mut line = serde_json::to_string(row).expect("result rows serialise");
        line.push('\n');
        line
    }
}
