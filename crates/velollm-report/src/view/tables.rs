//! "Every row": a table per file, with the columns that tell its rows apart.

use serde_json::Value;
use velollm_results::{Metric, Run, Status};

use super::{Dims, Item};

#[derive(Debug, Clone, PartialEq)]
pub struct RowTable {
    pub path: String,
    pub tools: &'static str,
    /// The build of the file's first row (llama.cpp's commit, velollm's version), when recorded.
    pub build: Option<String>,
    /// A model column (the file holds several models).
    pub model: bool,
    /// A backend column.
    pub backend: bool,
    /// A column per parameter that varies among the file's rows that record it.
    pub parameters: Vec<String>,
    pub rows: Vec<TableRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub row: usize,
    pub test: String,
    pub model: String,
    pub backend: String,
    /// One per [`RowTable::parameters`]: none where the row does not record the parameter.
    pub values: Vec<Option<String>>,
    pub status: Status,
    /// Mean and standard deviation, absent when the row did not measure it.
    pub tokens_per_second: Option<(f64, Option<f64>)>,
    pub ttft_ms: Option<(f64, Option<f64>)>,
    pub prompt_tokens_per_second: Option<(f64, Option<f64>)>,
    /// Repetitions with a rate.
    pub n: usize,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

/// A table per file that has rows, in file order.
pub fn tables(items: &[Item], runs: &[Run]) -> Vec<RowTable> {
    let mut tables = Vec::new();
    for (r, run) in runs.iter().enumerate() {
        let rows: Vec<&Item> = items.iter().filter(|i| i.run == r).collect();
        if rows.is_empty() {
            continue;
        }
        let dims = Dims::of(&rows, runs, None);
        let mean_sd = |item: &Item, metric| item.mean_sd(metric).map(|(mean, sd, _)| (mean, sd));
        let rows = rows
            .iter()
            .map(|item| {
                let e = item.entry;
                TableRow {
                    row: e.row,
                    test: e.test.name.clone(),
                    model: item.model.clone(),
                    backend: e.backend.clone(),
                    values: dims.parameters.iter().map(|p| e.parameters.get(p).cloned()).collect(),
                    status: e.status,
                    tokens_per_second: mean_sd(item, Metric::TokensPerSecond),
                    ttft_ms: mean_sd(item, Metric::TimeToFirstTokenMs),
                    prompt_tokens_per_second: mean_sd(item, Metric::PromptTokensPerSecond),
                    n: e.samples.get(&Metric::TokensPerSecond).map_or(0, Vec::len),
                    error: e.error.clone(),
                    warnings: e
                        .source
                        .get("warnings")
                        .and_then(Value::as_array)
                        .map(|w| w.iter().filter_map(Value::as_str).map(str::to_string).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        tables.push(RowTable {
            path: run.path.display().to_string(),
            tools: run.tools(),
            build: run.entries.first().and_then(|e| e.build.clone()),
            model: dims.model,
            backend: dims.backend,
            parameters: dims.parameters,
            rows,
        });
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::items;
    use crate::view::tests::llama_bench_beside_velollm;
    use velollm_fixtures::{text_samples_at, token_samples_at, Row};
    use velollm_results::read_str;

    #[test]
    fn a_table_per_file_with_the_columns_that_vary_in_it() {
        let runs = llama_bench_beside_velollm("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let tables = tables(&items(&runs), &runs);
        assert_eq!(tables.len(), 2);
        // llama-bench's own file: its twenty parameters do not vary, the threads do.
        assert_eq!(tables[0].parameters, ["n_threads"]);
        assert_eq!((tables[0].tools, tables[0].model, tables[0].backend), ("llama-bench", false, false));
        let threads: Vec<Option<&str>> = tables[1].rows.iter().map(|r| r.values[0].as_deref()).collect();
        assert_eq!(threads, [Some("2"), Some("2"), Some("1")]);
        let (mean, sd) = tables[1].rows[2].tokens_per_second.unwrap();
        assert!((mean - (33.0 + 33.4 + 33.1) / 3.0).abs() < 1e-6 && sd.is_some());
        assert_eq!((tables[1].rows[2].ttft_ms, tables[1].rows[2].n), (None, 3), "token tests have no TTFT");
    }

    #[test]
    fn a_parameter_a_row_does_not_record_is_absent_not_a_value() {
        // An Ollama row records no thread count; the llama.cpp rows do, and differ.
        let mut ollama = Row::text("short", "Hi", 20, text_samples_at(&[50.0], 20, 30.0)).backend("ollama").to_json();
        ollama["parameters"]["requested"].as_object_mut().unwrap().remove("n_threads");
        let rows = [
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0])).threads(1).to_json(),
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[99.0])).threads(2).warning("throttled").to_json(),
            ollama,
            Row::tokens(64, 0, 0, vec![]).threads(2).failed("out of memory").to_json(),
        ];
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        assert!(!runs[0].entries[2].parameters.contains_key("n_threads"), "{:?}", runs[0].entries[2].parameters);
        let table = &tables(&items(&runs), &runs)[0];
        assert!(table.backend && table.parameters.contains(&"n_threads".to_string()));
        let column = table.parameters.iter().position(|p| p == "n_threads").unwrap();
        let threads: Vec<Option<&str>> = table.rows.iter().map(|r| r.values[column].as_deref()).collect();
        assert_eq!(threads, [Some("1"), Some("2"), None, Some("2")]);
        assert_eq!(table.rows[1].warnings, ["throttled"]);
        assert_eq!((table.rows[3].status, table.rows[3].error.as_deref()), (Status::Failed, Some("out of memory")));
        assert_eq!(table.rows[3].tokens_per_second, None);
    }
}
