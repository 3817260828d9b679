//! A llama-bench-style markdown table: model, size, parameter count, backend, only the parameters that vary
//! across the rows, the test, and the rate as `mean ± sample stddev` (tokens/s: the decode rate of a text
//! test, llama-bench's t/s of a token test), with TTFT beside it when a text test has one.
//!
//! Cells are escaped for markdown tables: `|` becomes `\|` and line breaks become spaces, so an error message
//! or a model name cannot break the table. A failed row shows its error where the rate would be.

use velollm_core::{BenchmarkResult, RowStatus};

use crate::figures::mean_pm;
use crate::{Exporter, Format};

pub struct MarkdownExporter;

impl Exporter for MarkdownExporter {
    fn format(&self) -> Format {
        Format::Markdown
    }

    fn document(&self, rows: &[BenchmarkResult]) -> String {
        match crate::console::batched_table(rows) {
            // Batched rows also get llama-batched-bench's own table, after the sweep table.
            Some(batched) => format!("{}\n{batched}", table(rows)),
            None => table(rows),
        }
    }
}

/// A parameter column: its header, the value a row asked for, and what the engine applied when it says.
struct Column {
    header: &'static str,
    asked: fn(&BenchmarkResult) -> String,
    did: fn(&BenchmarkResult) -> Option<String>,
}

impl Column {
    /// The requested value, and the effective one beside it when the engine did something else.
    fn cell(&self, row: &BenchmarkResult) -> String {
        let asked = (self.asked)(row);
        match (self.did)(row) {
            Some(did) if did != asked => format!("{asked} ({did})"),
            _ => asked,
        }
    }
}

fn requested(row: &BenchmarkResult) -> &velollm_core::RequestedParams {
    &row.parameters.requested
}

fn effective(row: &BenchmarkResult) -> Option<&velollm_core::EffectiveParams> {
    row.parameters.effective.as_ref()
}

fn nothing(_: &BenchmarkResult) -> Option<String> {
    None
}

const OFFLOADED: Column = Column {
    header: "offloaded",
    asked: |r| match effective(r) {
        Some(e) => match (e.load.n_gpu_layers, e.load.n_layers_total) {
            (Some(done), Some(total)) => format!("{done}/{total}"),
            (Some(done), None) => done.to_string(),
            _ => "?".into(),
        },
        None => "-".into(),
    },
    did: nothing,
};

const PARAMETERS: [Column; 11] = [
    Column { header: "n_gpu_layers", asked: |r| requested(r).load.n_gpu_layers.to_string(), did: nothing },
    Column { header: "split_mode", asked: |r| requested(r).load.split_mode.to_string(), did: nothing },
    Column { header: "main_gpu", asked: |r| requested(r).load.main_gpu.to_string(), did: nothing },
    Column { header: "mmap", asked: |r| u8::from(requested(r).load.use_mmap).to_string(), did: nothing },
    Column {
        header: "n_ctx",
        asked: |r| requested(r).context.n_ctx.to_string(),
        did: |r| effective(r).map(|e| e.context.n_ctx.to_string()),
    },
    Column {
        header: "n_batch",
        asked: |r| requested(r).context.n_batch.to_string(),
        did: |r| effective(r).and_then(|e| e.context.n_batch).map(|b| b.to_string()),
    },
    Column {
        header: "n_ubatch",
        asked: |r| requested(r).context.n_ubatch.to_string(),
        did: |r| effective(r).and_then(|e| e.context.n_ubatch).map(|b| b.to_string()),
    },
    Column { header: "threads", asked: |r| requested(r).context.n_threads.to_string(), did: nothing },
    Column {
        header: "fa",
        asked: |r| requested(r).context.flash_attn.to_string(),
        did: |r| effective(r).and_then(|e| e.context.flash_attn).map(|f| f.to_string()),
    },
    Column { header: "type_k", asked: |r| requested(r).context.type_k.to_string(), did: nothing },
    Column { header: "type_v", asked: |r| requested(r).context.type_v.to_string(), did: nothing },
];

/// Which parameter columns vary across `rows`: a requested value differs, or the engine applied different
/// values (a row that failed before the engine said anything does not make a column vary). The offload
/// column follows `n_gpu_layers`.
fn varying_columns(rows: &[BenchmarkResult]) -> Vec<&'static Column> {
    let differs = |values: Vec<String>| values.iter().any(|v| *v != values[0]);
    let mut varying: Vec<&Column> = PARAMETERS
        .iter()
        .filter(|c| {
            let applied: Vec<String> = rows.iter().filter(|r| (c.did)(r).is_some()).map(|r| c.cell(r)).collect();
            differs(rows.iter().map(|r| (c.asked)(r)).collect()) || (!applied.is_empty() && differs(applied))
        })
        .collect();
    if varying.iter().any(|c| c.header == "n_gpu_layers") {
        varying.push(&OFFLOADED);
    }
    varying
}

/// The rate cell: `mean ± sd` of the row's rate, or why there is none.
fn rate_cell(row: &BenchmarkResult) -> String {
    let rate = mean_pm(row.statistics.tokens_per_second.as_ref(), "");
    match row.status {
        RowStatus::Ok => rate,
        RowStatus::Incomplete => format!("{rate} (incomplete)"),
        RowStatus::Failed => format!("failed: {}", row.error.as_deref().unwrap_or("unknown")),
    }
}

/// Bytes as llama-bench shows a model's size (GiB, or MiB below one GiB).
fn size(bytes: u64) -> String {
    let gib = bytes as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.2} GiB")
    } else {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// A parameter count as llama-bench shows it (`6.74 B`, `134.52 M`).
fn params(count: Option<u64>) -> String {
    match count {
        Some(n) if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        Some(n) => format!("{:.2} M", n as f64 / 1e6),
        None => "?".into(),
    }
}

/// A cell's text made safe inside a markdown table row.
pub fn escape(cell: &str) -> String {
    let one_line = cell.replace("\r\n", " ").replace(['\n', '\r'], " ");
    one_line.replace('|', "\\|").trim().to_string()
}

/// The table for `rows`; empty when there are none.
pub fn table(rows: &[BenchmarkResult]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let columns = varying_columns(rows);
    let ttft = rows.iter().any(|r| r.time_to_first_token_ms.value().is_some());
    let mut header: Vec<String> = vec!["model".into(), "size".into(), "params".into(), "backend".into()];
    header.extend(columns.iter().map(|c| c.header.to_string()));
    header.push("test".into());
    if ttft {
        header.push("TTFT ms".into());
    }
    header.push("t/s".into());
    let mut table: Vec<Vec<String>> = vec![header];
    for row in rows {
        let model = row.model.name.clone().unwrap_or_else(|| row.config.model.clone());
        let model = if row.model.synthetic { format!("{model} (synthetic)") } else { model };
        let bytes = if row.model.bytes > 0 { size(row.model.bytes) } else { "?".into() };
        let mut cells = vec![model, bytes, params(row.model.parameter_count), row.backend.clone()];
        cells.extend(columns.iter().map(|c| c.cell(row)));
        cells.push(row.config.name.clone());
        if ttft {
            cells.push(mean_pm(row.statistics.time_to_first_token_ms.as_ref(), ""));
        }
        cells.push(rate_cell(row));
        table.push(cells.iter().map(|c| escape(c)).collect());
    }
    render(&table, if ttft { 2 } else { 1 })
}

/// Renders rows of cells as a markdown table with aligned columns; the last `numeric` columns are
/// right-aligned, as llama-bench aligns its numbers.
fn render(table: &[Vec<String>], numeric: usize) -> String {
    let n = table[0].len();
    let right = |i: usize| i + numeric >= n;
    let widths: Vec<usize> =
        (0..n).map(|i| table.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0)).collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if right(i) { format!("{c:>w$}", w = widths[i]) } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&table[0]);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| if right(i) { format!("{}:", "-".repeat(w.max(2) - 1)) } else { "-".repeat(w) })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in &table[1..] {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_pipes_and_line_breaks() {
        assert_eq!(escape("a|b"), "a\\|b");
        assert_eq!(escape("two\nlines\r\nthree"), "two lines three");
        assert_eq!(escape(" padded "), "padded");
    }

    #[test]
    fn sizes_and_counts_read_like_llama_bench() {
        assert_eq!(size(3_822_520_320), "3.56 GiB");
        assert_eq!(size(98_362_432), "93.81 MiB");
        assert_eq!(params(Some(6_738_415_616)), "6.74 B");
        assert_eq!(params(Some(134_515_008)), "134.52 M");
        assert_eq!(params(None), "?");
    }
}
