//! The report as data: which rows are one model, which parameters vary, and for the sweep charts which charts,
//! which series and which points — built from the rows alone, with no SVG or HTML, so it can be tested as data.
//! lib.rs draws it ([`crate::svg`], [`crate::html`]).
//!
//! Two rules make rows of different tools sit together honestly:
//! - a parameter varies only among the rows that record it: llama-bench records some twenty parameters velollm
//!   does not (`cpu_mask`, `poll`, …), and a parameter one side does not record is not a difference;
//! - a model is the same when its file is ([`velollm_results::ModelId::same_model`]: the same sha256, Ollama
//!   digest, or file name and parameter count), and is shown under one name: the one velollm read from the file
//!   (`general.name`) rather than llama-bench's description (`llama 256M Q4_1`).

use velollm_results::{Entry, Metric, Run, Status};

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

/// One sweep chart: a metric of one test against one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepChart {
    pub parameter: String,
    pub test: String,
    pub metric: Metric,
    /// The y axis: `t/s` (token tests), `decode tok/s` (text tests) or the metric's label.
    pub y_title: String,
    /// The parameter's values, in axis order.
    pub categories: Vec<String>,
    /// One line per combination of the other dimensions that vary (one per file, too, when several files).
    pub series: Vec<SweepSeries>,
    /// Rows that failed, on the axis at their value.
    pub failed: Vec<FailedPoint>,
    /// The colours' meaning: one per combination of the other parameters (not the file), in colour order.
    pub colours: Vec<String>,
    /// When the lines come from several files: those files (a line style each), by position in `runs`.
    pub files: Vec<usize>,
    /// What a colour stands for, in words (`threads × fa`); empty when one colour says it all.
    pub colour_words: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepSeries {
    /// The line's name: its values along the dimensions that vary (the test's name when none does).
    pub label: String,
    /// Index into [`SweepChart::colours`].
    pub colour: usize,
    /// The file its rows came from, when the chart shows several files (a line style).
    pub file: Option<usize>,
    pub points: Vec<SweepPoint>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SweepPoint {
    /// Index into [`SweepChart::categories`].
    pub category: usize,
    pub mean: f64,
    pub stddev: Option<f64>,
    pub n: usize,
    /// The row stopped before all its repetitions.
    pub incomplete: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailedPoint {
    pub category: usize,
    /// Index into [`SweepChart::series`].
    pub series: usize,
    pub error: Option<String>,
}

/// The y axis of a rate: llama-bench's `t/s` for token tests, the decode rate for text tests.
pub fn rate_word(entry: &Entry) -> &'static str {
    if entry.test.kind == "text" {
        "decode tok/s"
    } else {
        "t/s"
    }
}

/// Every sweep chart of the page: for each parameter that varies, for each test whose rows take two values of
/// it or more, tok/s (and TTFT when a text test has it).
pub fn sweeps(items: &[Item], runs: &[Run]) -> Vec<SweepChart> {
    let all: Vec<&Item> = items.iter().collect();
    let mut charts = Vec::new();
    for parameter in &Dims::of(&all, runs, None).parameters {
        let mut tests: Vec<String> = Vec::new();
        for i in items.iter().filter(|i| i.entry.parameters.contains_key(parameter)) {
            if !tests.contains(&i.entry.test.name) {
                tests.push(i.entry.test.name.clone());
            }
        }
        for test in &tests {
            let rows: Vec<&Item> = items
                .iter()
                .filter(|i| &i.entry.test.name == test && i.entry.parameters.contains_key(parameter))
                .collect();
            let mut categories: Vec<String> = Vec::new();
            for i in &rows {
                let v = &i.entry.parameters[parameter];
                if !categories.contains(v) {
                    categories.push(v.clone());
                }
            }
            if categories.len() < 2 {
                continue;
            }
            order_values(&mut categories);
            let mut metrics = vec![Metric::TokensPerSecond];
            if rows.iter().any(|i| i.entry.samples.contains_key(&Metric::TimeToFirstTokenMs)) {
                metrics.push(Metric::TimeToFirstTokenMs);
            }
            for metric in metrics {
                charts.push(sweep_chart(&rows, runs, parameter, test, &categories, metric));
            }
        }
    }
    charts
}

fn sweep_chart(
    rows: &[&Item],
    runs: &[Run],
    parameter: &str,
    test: &str,
    categories: &[String],
    metric: Metric,
) -> SweepChart {
    let dims = Dims::of(rows, runs, Some(parameter));
    // A colour per combination of the other parameters; a line style per file.
    let colour_dims = Dims { run: false, ..dims.clone() };
    let mut colours: Vec<String> = Vec::new();
    let mut series: Vec<SweepSeries> = Vec::new();
    let mut failed = Vec::new();
    for item in rows {
        let colour = colour_dims.label(item, runs);
        let colour = if colour.is_empty() { test.to_string() } else { colour };
        let colour = colours.iter().position(|c| *c == colour).unwrap_or_else(|| {
            colours.push(colour);
            colours.len() - 1
        });
        let label = dims.label(item, runs);
        let label = if label.is_empty() { test.to_string() } else { label };
        let index = series.iter().position(|s| s.label == label).unwrap_or_else(|| {
            series.push(SweepSeries { label, colour, file: dims.run.then_some(item.run), points: vec![] });
            series.len() - 1
        });
        let category =
            categories.iter().position(|c| *c == item.entry.parameters[parameter]).expect("a category per value");
        if item.entry.status == Status::Failed {
            failed.push(FailedPoint { category, series: index, error: item.entry.error.clone() });
            continue;
        }
        let Some((mean, stddev, n)) = item.mean_sd(metric) else { continue };
        series[index].points.push(SweepPoint {
            category,
            mean,
            stddev,
            n,
            incomplete: item.entry.status == Status::Incomplete,
        });
    }
    let mut files: Vec<usize> = if dims.run { rows.iter().map(|i| i.run).collect() } else { Vec::new() };
    files.sort();
    files.dedup();
    SweepChart {
        parameter: parameter.to_string(),
        test: test.to_string(),
        metric,
        y_title: if metric == Metric::TokensPerSecond { rate_word(rows[0].entry) } else { metric.label() }.to_string(),
        categories: categories.to_vec(),
        series,
        failed,
        colours,
        files,
        colour_words: colour_dims.words(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use velollm_fixtures::{token_samples_at, Row};
    use velollm_results::{read_file, read_str};

    /// llama-bench's rows (its documented `-o json` layout, crates/velollm-compare/tests/data: pp512 and tg128 at
    /// 2 threads, tg128 at 1, SmolLM2-135M-Instruct.Q4_1.gguf) beside velollm's rows of the same file.
    fn llama_bench_beside_velollm(velollm_model_path: &str) -> Vec<Run> {
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

    #[test]
    fn the_sweep_view_has_one_chart_with_a_line_per_file() {
        let runs = llama_bench_beside_velollm("models/SmolLM2-135M-Instruct.Q4_1.gguf");
        let items = items(&runs);
        let charts = sweeps(&items, &runs);
        // pp512 ran at one thread count only: no sweep. tg128 at 1 and 2, in both files: one chart (token tests
        // have no TTFT).
        assert_eq!(charts.len(), 1, "{charts:#?}");
        let chart = &charts[0];
        assert_eq!((chart.parameter.as_str(), chart.test.as_str()), ("n_threads", "tg128"));
        assert_eq!((chart.metric, chart.y_title.as_str()), (Metric::TokensPerSecond, "t/s"));
        assert_eq!(chart.categories, ["1", "2"]);
        assert_eq!(chart.files, [0, 1]);
        assert_eq!(chart.colours, ["tg128"], "nothing but the file tells the lines apart");
        assert!(chart.colour_words.is_empty());
        let labels: Vec<&str> = chart.series.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["llama-bench.json", "velollm.json"]);
        assert_eq!(chart.series[1].file, Some(1));
        let points = |s: &SweepSeries| s.points.iter().map(|p| (p.category, p.n, p.incomplete)).collect::<Vec<_>>();
        // llama-bench's rows are tg128 at 2 threads (5 repetitions) then at 1 (3).
        assert_eq!(points(&chart.series[0]), [(1, 5, false), (0, 3, false)]);
        assert_eq!(points(&chart.series[1]), [(1, 3, false), (0, 3, false)]);
        let velollm_at_one = chart.series[1].points[1].mean;
        assert!((velollm_at_one - (33.0 + 33.4 + 33.1) / 3.0).abs() < 1e-6, "{velollm_at_one}");
        assert!(chart.failed.is_empty());
    }

    #[test]
    fn a_failed_row_is_a_failed_point_of_its_line() {
        let rows = [
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[60.0, 61.0])).threads(1).to_json(),
            Row::tokens(0, 16, 0, vec![]).threads(2).failed("out of memory").to_json(),
        ];
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        let items = items(&runs);
        let charts = sweeps(&items, &runs);
        assert_eq!(charts.len(), 1);
        assert_eq!(charts[0].series.len(), 1);
        assert_eq!(charts[0].series[0].points.len(), 1);
        assert_eq!(charts[0].failed, [FailedPoint { category: 1, series: 0, error: Some("out of memory".into()) }]);
    }
}
