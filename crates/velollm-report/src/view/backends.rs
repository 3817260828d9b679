//! "Backends side by side": for each test that two backends or more ran, each backend's best row, per metric.

use velollm_results::{Metric, Status};

use super::Item;

#[derive(Debug, Clone, PartialEq)]
pub struct Backends {
    /// Every backend of the page, in the order first seen (a colour each, also on the latency cards).
    pub backends: Vec<String>,
    /// One chart per metric that two backends measured on one test.
    pub charts: Vec<BackendChart>,
    /// Some backend ran some test several times (a sweep): its best row stands for it.
    pub best_of_several: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendChart {
    pub metric: Metric,
    /// The tests with two bars or more, in the order first seen.
    pub tests: Vec<String>,
    pub bars: Vec<BackendBar>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendBar {
    /// Index into [`BackendChart::tests`].
    pub test: usize,
    /// Index into [`Backends::backends`].
    pub backend: usize,
    pub mean: f64,
    pub stddev: Option<f64>,
    pub n: usize,
    /// How many rows of the test and backend measured the metric (the bar is the best of them).
    pub rows: usize,
}

/// Every backend of the page, in the order first seen.
pub fn backend_names(items: &[Item]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for i in items {
        if !names.contains(&i.entry.backend) {
            names.push(i.entry.backend.clone());
        }
    }
    names
}

/// The backends section, or none when the page has one backend or no test that two of them ran. Failed rows
/// have no bar; a metric's best is its highest mean (rates) or lowest (times).
pub fn backends(items: &[Item]) -> Option<Backends> {
    let names = backend_names(items);
    if names.len() < 2 {
        return None;
    }
    let mut tests: Vec<String> = Vec::new();
    for i in items {
        let backends_with_test = names
            .iter()
            .filter(|b| items.iter().any(|j| j.entry.test.name == i.entry.test.name && &j.entry.backend == *b));
        if backends_with_test.count() >= 2 && !tests.contains(&i.entry.test.name) {
            tests.push(i.entry.test.name.clone());
        }
    }
    if tests.is_empty() {
        return None;
    }
    let mut charts = Vec::new();
    let mut best_of_several = false;
    for metric in [Metric::TokensPerSecond, Metric::TimeToFirstTokenMs, Metric::PromptTokensPerSecond] {
        let mut chart = BackendChart { metric, tests: Vec::new(), bars: Vec::new() };
        for test in &tests {
            let mut members = Vec::new();
            for (b, backend) in names.iter().enumerate() {
                let candidates: Vec<(f64, Option<f64>, usize)> = items
                    .iter()
                    .filter(|i| {
                        &i.entry.test.name == test && &i.entry.backend == backend && i.entry.status != Status::Failed
                    })
                    .filter_map(|i| i.mean_sd(metric))
                    .collect();
                let best = candidates.iter().copied().max_by(|a, c| {
                    if metric.higher_is_better() {
                        a.0.total_cmp(&c.0)
                    } else {
                        c.0.total_cmp(&a.0)
                    }
                });
                if let Some((mean, stddev, n)) = best {
                    best_of_several |= candidates.len() > 1;
                    members.push(BackendBar { test: 0, backend: b, mean, stddev, n, rows: candidates.len() });
                }
            }
            if members.len() >= 2 {
                let index = chart.tests.len();
                chart.bars.extend(members.into_iter().map(|bar| BackendBar { test: index, ..bar }));
                chart.tests.push(test.clone());
            }
        }
        if !chart.tests.is_empty() {
            charts.push(chart);
        }
    }
    Some(Backends { backends: names, charts, best_of_several })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::items;
    use velollm_fixtures::{text_samples_at, token_samples_at, Row};
    use velollm_results::read_str;

    #[test]
    fn a_bar_per_backend_and_test_that_two_backends_ran_the_best_of_a_sweep() {
        let rows = [
            Row::text("short", "Hi", 20, text_samples_at(&[50.0, 52.0], 20, 30.0))
                .backend("llamacpp")
                .threads(1)
                .to_json(),
            Row::text("short", "Hi", 20, text_samples_at(&[60.0, 62.0], 20, 25.0))
                .backend("llamacpp")
                .threads(2)
                .to_json(),
            Row::text("short", "Hi", 20, text_samples_at(&[40.0, 42.0], 20, 35.0)).backend("candle").to_json(),
            // Only llama.cpp ran tg16: no bars; candle's failed pp64 has none either.
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0, 91.0])).backend("llamacpp").to_json(),
            Row::tokens(64, 0, 0, token_samples_at(64, 0, &[900.0])).backend("llamacpp").to_json(),
            Row::tokens(64, 0, 0, vec![]).backend("candle").failed("unsupported").to_json(),
        ];
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        let view = backends(&items(&runs)).expect("two backends ran `short`");
        assert_eq!(view.backends, ["llamacpp", "candle"]);
        assert!(view.best_of_several);
        let metrics: Vec<Metric> = view.charts.iter().map(|c| c.metric).collect();
        assert_eq!(metrics, [Metric::TokensPerSecond, Metric::TimeToFirstTokenMs, Metric::PromptTokensPerSecond]);
        for chart in &view.charts {
            assert_eq!(chart.tests, ["short"], "pp64 failed on candle: one bar is no comparison");
        }
        // The rates come back from token timestamps in whole nanoseconds: equal to 1e-6.
        let rate: Vec<(usize, i64, usize)> =
            view.charts[0].bars.iter().map(|b| (b.backend, (b.mean * 1e3).round() as i64, b.rows)).collect();
        assert_eq!(rate, [(0, 61_000, 2), (1, 41_000, 1)], "llama.cpp's faster row");
        let ttft = &view.charts[1].bars;
        assert!(ttft[0].mean < 30.0, "the lower TTFT is llama.cpp's best: {ttft:?}");
    }

    #[test]
    fn one_backend_has_no_backends_section() {
        let rows = [Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0])).to_json()];
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        assert_eq!(backends(&items(&runs)), None);
    }
}
