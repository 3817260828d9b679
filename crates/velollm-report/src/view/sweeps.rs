//! The sweep charts: for each parameter that varies and each test, which charts, which series, which points.

use velollm_results::{Entry, Metric, Run, Status};

use super::{order_values, Dims, Item};

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
    use crate::view::items;
    use crate::view::tests::llama_bench_beside_velollm;
    use velollm_fixtures::{token_samples_at, Row};
    use velollm_results::read_str;

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
