//! The report as data: which rows are one model, which parameters vary, and for every section of the page what it
//! shows — built from the rows alone, with no SVG or HTML, so it can be tested as data. One file per section:
//! `tiles.rs` (header and tiles), `compare.rs` (what changed), `sweeps.rs`, `placements.rs` (where the layers
//! ran), `backends.rs`, `latency.rs` (per-token latency), `load.rs` (load profiles), `tables.rs` (every row). lib.rs only draws it ([`crate::svg`],
//! [`crate::html`]): every number on the page is computed here, lib.rs formats it.
//!
//! Two rules make rows of different tools sit together honestly:
//! - a parameter varies only among the rows that record it: llama-bench records some twenty parameters velollm
//!   does not (`cpu_mask`, `poll`, …), and a parameter one side does not record is not a difference;
//! - a model is the same when its file is ([`velollm_results::ModelId::same_model`]: the same sha256, Ollama
//!   digest, or file name and parameter count), and is shown under one name: the one velollm read from the file
//!   (`general.name`) rather than llama-bench's description (`llama 256M Q4_1`).

use velollm_results::{Entry, Metric, Run};

mod backends;
mod compare;
mod latency;
mod load;
pub(crate) mod placements;
mod sweeps;
mod tables;
mod tiles;

pub use backends::*;
pub use compare::*;
pub use latency::*;
pub use load::*;
pub use placements::*;
pub use sweeps::*;
pub use tables::*;
pub use tiles::*;

/// Parameters in the order their sweeps are shown, with how an axis names them.
const PARAMETER_NAMES: [(&str, &str); 11] = [
    ("n_gpu_layers", "layers offloaded to the GPU (n_gpu_layers)"),
    ("n_threads", "threads (n_threads)"),
    ("n_batch", "batch size (n_batch)"),
    ("n_ubatch", "micro-batch size (n_ubatch)"),
    ("n_ctx", "context size (n_ctx)"),
    ("flash_attn", "flash attention"),
    ("type_k", "K cache type"),
    ("type_v", "V cache type"),
    ("split_mode", "split mode"),
    ("main_gpu", "main GPU"),
    ("use_mmap", "memory-mapped model"),
];

/// How an axis names a parameter.
pub fn axis_name(parameter: &str) -> String {
    PARAMETER_NAMES.iter().find(|(p, _)| *p == parameter).map_or_else(|| parameter.to_string(), |(_, n)| n.to_string())
}

/// How a table or a legend names a parameter (llama-bench's column headers).
pub fn short_name(parameter: &str) -> &str {
    match parameter {
        "n_gpu_layers" => "ngl",
        "n_threads" => "threads",
        "n_batch" => "n_batch",
        "n_ubatch" => "n_ubatch",
        "flash_attn" => "fa",
        other => other,
    }
}

/// A file's name as the page shows it, with its selection.
pub fn file_label(run: &Run) -> String {
    let file = run
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| run.path.display().to_string());
    match &run.selection {
        Some(selection) => format!("{file} [{selection}]"),
        None => file,
    }
}

/// A row with the file it came from and the name of its model on the page.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub run: usize,
    pub entry: &'a Entry,
    /// One name per model file across every file of the page (see the module's rules).
    pub model: String,
}

impl Item<'_> {
    /// Mean, sample standard deviation and count of a metric's samples.
    pub fn mean_sd(&self, metric: Metric) -> Option<(f64, Option<f64>, usize)> {
        let values = self.entry.samples.get(&metric)?;
        let m = velollm_compare::Moments::of(values)?;
        Some((m.mean, m.stddev, m.n))
    }
}

/// Every row of every file, each with its model's one name: rows are grouped by
/// [`velollm_results::ModelId::same_model`] (each row joins the first group whose first row is the same model),
/// and a group is named by its first velollm row (the name read from the file), else by its first row.
pub fn items(runs: &[Run]) -> Vec<Item<'_>> {
    let entries: Vec<(usize, &Entry)> =
        runs.iter().enumerate().flat_map(|(run, r)| r.entries.iter().map(move |e| (run, e))).collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of = Vec::with_capacity(entries.len());
    for (index, (_, entry)) in entries.iter().enumerate() {
        match groups.iter().position(|g| entries[g[0]].1.model.same_model(&entry.model)) {
            Some(g) => {
                groups[g].push(index);
                group_of.push(g);
            }
            None => {
                groups.push(vec![index]);
                group_of.push(groups.len() - 1);
            }
        }
    }
    let named: Vec<&Entry> = groups
        .iter()
        .map(|g| {
            let first = g.iter().find(|&&i| entries[i].1.tool == velollm_results::Tool::Velollm).unwrap_or(&g[0]);
            entries[*first].1
        })
        .collect();
    // Two files under one name (a model's Q4 and Q8 files share `general.name`) are two models: their file
    // names tell them apart.
    let names: Vec<String> = named
        .iter()
        .map(|e| {
            let shared = named.iter().filter(|o| o.model.label == e.model.label).count() > 1;
            if shared {
                format!("{} ({})", e.model.label, e.model.file_name)
            } else {
                e.model.label.clone()
            }
        })
        .collect();
    entries
        .iter()
        .zip(group_of)
        .map(|(&(run, entry), group)| Item { run, entry, model: names[group].clone() })
        .collect()
}

/// What tells rows apart in a label: the file, the model, the backend and the parameters whose values differ
/// among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dims {
    pub run: bool,
    pub model: bool,
    pub backend: bool,
    /// Parameters that vary among the rows that record them, in the order of the sweeps.
    pub parameters: Vec<String>,
}

impl Dims {
    /// The dimensions along which `items` differ, leaving out the parameter `except` (a chart's x axis).
    pub fn of(items: &[&Item], runs: &[Run], except: Option<&str>) -> Dims {
        let differs = |values: Vec<String>| values.iter().any(|v| *v != values[0]);
        let mut parameters: Vec<String> = Vec::new();
        for item in items {
            for name in item.entry.parameters.keys() {
                if Some(name.as_str()) == except || parameters.contains(name) {
                    continue;
                }
                // Only the rows that record the parameter: a row without it (another tool's) is no difference.
                let recorded: Vec<String> =
                    items.iter().filter_map(|i| i.entry.parameters.get(name).cloned()).collect();
                if differs(recorded) {
                    parameters.push(name.clone());
                }
            }
        }
        parameters.sort_by_key(|p| PARAMETER_NAMES.iter().position(|(n, _)| n == p).unwrap_or(usize::MAX));
        Dims {
            run: runs.len() > 1 && differs(items.iter().map(|i| i.run.to_string()).collect()),
            model: differs(items.iter().map(|i| i.model.clone()).collect()),
            backend: differs(items.iter().map(|i| i.entry.backend.clone()).collect()),
            parameters,
        }
    }

    /// The row's values along these dimensions: `file · model · threads 2`; a parameter the row does not record
    /// is left out of its label.
    pub fn label(&self, item: &Item, runs: &[Run]) -> String {
        let mut parts = Vec::new();
        if self.run {
            parts.push(file_label(&runs[item.run]));
        }
        if self.model {
            parts.push(item.model.clone());
        }
        if self.backend {
            parts.push(item.entry.backend.clone());
        }
        for p in &self.parameters {
            if let Some(value) = item.entry.parameters.get(p) {
                parts.push(format!("{} {value}", short_name(p)));
            }
        }
        parts.join(" · ")
    }

    /// The dimensions in words (`file`, `model`, `threads`, …).
    pub fn words(&self) -> Vec<String> {
        let mut words = Vec::new();
        if self.run {
            words.push("file".to_string());
        }
        if self.model {
            words.push("model".into());
        }
        if self.backend {
            words.push("backend".into());
        }
        words.extend(self.parameters.iter().map(|p| short_name(p).to_string()));
        words
    }
}

/// A parameter's values in the order an axis shows them: numbers ascending (`all` last), else as first seen.
pub fn order_values(values: &mut [String]) {
    let number = |v: &str| if v == "all" { Some(f64::INFINITY) } else { v.parse::<f64>().ok() };
    if values.iter().all(|v| number(v).is_some()) {
        values.sort_by(|a, b| number(a).unwrap().total_cmp(&number(b).unwrap()));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use velollm_fixtures::{token_samples_at, Row};
    use velollm_results::{read_file, read_str};

    /// llama-bench's rows (its documented `-o json` layout, crates/velollm-compare/tests/data: pp512 and tg128 at
    /// 2 threads, tg128 at 1, SmolLM2-135M-Instruct.Q4_1.gguf) beside velollm's rows of the same file.
    pub(crate) fn llama_bench_beside_velollm(velollm_model_path: &str) -> Vec<Run> {
        let data =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../velollm-compare/tests/data/llama-bench.json");
        let llama_bench = read_file(&data).unwrap();
        let row = |n_prompt: u64, n_gen: u32, threads: u32, rates: &[f64]| {
            Row::tokens(n_prompt, n_gen, 0, token_samples_at(n_prompt, n_gen, rates))
                .threads(threads)
                .model("SmolLM2 135M Instruct", velollm_model_path, Some("ab12"))
                .to_json()
        };
        let rows = [
            row(512, 0, 2, &[1040.0, 1050.0, 1060.0]),
            row(0, 128, 2, &[58.0, 58.2, 57.9]),
            row(0, 128, 1, &[33.0, 33.4, 33.1]),
        ];
        let mut velollm = read_str(&serde_json::to_string(&rows).unwrap()).unwrap();
        velollm.path = "velollm.json".into();
        vec![llama_bench, velollm]
    }

    #[test]
    fn the_same_file_is_one_model_under_the_name_velollm_read_from_it() {
        let runs = llama_bench_beside_velollm("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let items = items(&runs);
        assert_eq!(items.len(), 6);
        assert_eq!(runs[0].entries[0].model.label, "llama ?B Q4_1", "llama-bench's own description");
        assert!(items.iter().all(|i| i.model == "SmolLM2 135M Instruct"), "one model, velollm's name for it");
        let all: Vec<&Item> = items.iter().collect();
        assert!(!Dims::of(&all, &runs, None).model);
        // Another file is another model, however alike its name.
        let runs = llama_bench_beside_velollm("models/SmolLM2-135M-Instruct.Q8_0.gguf");
        let other = super::items(&runs);
        let names: Vec<&str> = other.iter().map(|i| i.model.as_str()).collect();
        assert_eq!(names[..3], ["llama ?B Q4_1"; 3]);
        assert_eq!(names[3..], ["SmolLM2 135M Instruct"; 3]);
        assert!(Dims::of(&other.iter().collect::<Vec<_>>(), &runs, None).model);
        // Two files that share a name inside are told apart by their file names.
        let mut q8 = runs[1].clone();
        for e in &mut q8.entries {
            e.model.label = "llama ?B Q4_1".into();
        }
        let runs = vec![runs[0].clone(), q8];
        let names: Vec<String> = super::items(&runs).into_iter().map(|i| i.model).collect();
        assert_eq!(names[0], "llama ?B Q4_1 (SmolLM2-135M-Instruct.Q4_1.gguf)");
        assert_eq!(names[5], "llama ?B Q4_1 (SmolLM2-135M-Instruct.Q8_0.gguf)");
    }

    #[test]
    fn a_parameter_one_side_does_not_record_does_not_vary() {
        let runs = llama_bench_beside_velollm("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let items = items(&runs);
        let all: Vec<&Item> = items.iter().collect();
        // llama-bench records cpu_mask, poll, no_kv_offload, … and velollm n_ctx, devices, …: none of them varies;
        // the threads do.
        assert!(runs[0].entries[0].parameters.contains_key("cpu_mask"));
        assert!(!runs[1].entries[0].parameters.contains_key("cpu_mask"));
        let dims = Dims::of(&all, &runs, None);
        assert_eq!(dims.parameters, ["n_threads"]);
        assert!(dims.run && !dims.backend);
        assert_eq!(dims.label(&items[0], &runs), "llama-bench.json · threads 2");
    }
}
