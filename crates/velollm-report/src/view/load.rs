//! "Load" (`--concurrency`, `--request-rate`, `--sweep`): for each (test, model, backend, and file when the page
//! has several) that ran load profiles, latency percentiles and throughputs against the profiles, in the order
//! they ran.

use serde_json::Value;
use velollm_results::Run;

use super::{file_label, Item};

#[derive(Debug, Clone, PartialEq)]
pub struct LoadView {
    pub groups: Vec<LoadGroup>,
}

/// The load rows of one test, model and backend (and file): one latency chart and one throughput chart.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadGroup {
    /// `test · model · backend[ · file]`.
    pub key: String,
    /// The profiles' labels (`c4`, `rate2`, `rate-inf`), in the order they ran: the charts' x axis.
    pub profiles: Vec<String>,
    /// Only the series with at least one point.
    pub latency: Vec<LoadSeries>,
    pub throughput: Vec<LoadSeries>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadSeries {
    pub label: &'static str,
    /// (index into [`LoadGroup::profiles`], value); a profile that did not measure the metric has no point.
    pub points: Vec<(usize, f64)>,
}

/// (series label, JSON pointer into the row's `load` object); milliseconds.
const LATENCIES: [(&str, &str); 5] = [
    ("TTFT p50", "/ttft_ms/p50"),
    ("TTFT p99", "/ttft_ms/p99"),
    ("TPOT p50", "/tpot_ms/p50"),
    ("ITL p50", "/itl_ms/p50"),
    ("E2E p50", "/e2e_ms/p50"),
];
/// Per second.
const THROUGHPUTS: [(&str, &str); 3] = [
    ("output tokens/s", "/output_tokens_per_second"),
    ("requests/s", "/request_throughput"),
    ("goodput (requests/s within the SLO)", "/goodput"),
];

/// The load section, or none when no row is a load row (a row with a `load` object, named `TEST @ PROFILE`:
/// the reader's [`velollm_results::TestId::load_profile`]).
pub fn load(items: &[Item], runs: &[Run]) -> Option<LoadView> {
    let mut rows: Vec<(String, Vec<(String, &Value)>)> = Vec::new();
    for item in items {
        let Some(profile) = &item.entry.test.load_profile else { continue };
        let Some(record) = item.entry.source.get("load").filter(|l| l.is_object()) else { continue };
        let name = &item.entry.test.name;
        let test = name.strip_suffix(&format!(" @ {profile}")).unwrap_or(name);
        let mut key = format!("{test} · {} · {}", item.model, item.entry.backend);
        if runs.len() > 1 {
            key.push_str(" · ");
            key.push_str(&file_label(&runs[item.run]));
        }
        match rows.iter_mut().find(|(k, _)| *k == key) {
            Some((_, profiles)) => profiles.push((profile.to_string(), record)),
            None => rows.push((key, vec![(profile.to_string(), record)])),
        }
    }
    if rows.is_empty() {
        return None;
    }
    let groups = rows
        .into_iter()
        .map(|(key, profiles)| LoadGroup {
            latency: series(&profiles, &LATENCIES),
            throughput: series(&profiles, &THROUGHPUTS),
            profiles: profiles.into_iter().map(|(label, _)| label).collect(),
            key,
        })
        .collect();
    Some(LoadView { groups })
}

fn series(profiles: &[(String, &Value)], metrics: &[(&'static str, &str)]) -> Vec<LoadSeries> {
    metrics
        .iter()
        .map(|(label, pointer)| LoadSeries {
            label,
            points: profiles
                .iter()
                .enumerate()
                .filter_map(|(x, (_, record))| Some((x, record.pointer(pointer).and_then(Value::as_f64)?)))
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::items;
    use serde_json::json;
    use velollm_core::{LoadProfile, LoadShape, LoadStop};
    use velollm_fixtures::{token_samples_at, Row};
    use velollm_results::read_str;

    /// A tg16 row turned into the load row of one profile, as the runner names it (`tg16 @ c4`).
    fn load_row(shape: LoadShape, mut record: Value) -> Value {
        let profile =
            LoadProfile { shape, stop: LoadStop::Requests(8), warmup_requests: 1, max_concurrency: 64, seed: 1 };
        let mut row = Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0])).backend("openai").to_json();
        row["config"]["name"] = json!(format!("tg16 @ {}", profile.label()));
        record["profile"] = serde_json::to_value(profile).unwrap();
        row["load"] = record;
        row
    }

    #[test]
    fn a_latency_and_a_throughput_chart_per_test_with_a_point_per_profile_that_measured_it() {
        let rows = [
            load_row(
                LoadShape::Closed { concurrency: 1 },
                json!({"ttft_ms": {"p50": 20.0, "p99": 30.0}, "e2e_ms": {"p50": 200.0},
                       "output_tokens_per_second": 80.0, "request_throughput": 5.0}),
            ),
            // Every request failed at c4: no latencies, a throughput of zero requests.
            load_row(LoadShape::Closed { concurrency: 4 }, json!({"request_throughput": 0.0})),
            load_row(
                LoadShape::Open { rate: Some(2.0), burstiness: 1.0 },
                json!({"ttft_ms": {"p50": 25.0, "p99": 60.0}, "e2e_ms": {"p50": 250.0},
                       "output_tokens_per_second": 70.0, "request_throughput": 2.0, "goodput": 1.5}),
            ),
            // Not a load row: no section of its own.
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0])).to_json(),
        ];
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        let view = load(&items(&runs), &runs).expect("three load rows");
        assert_eq!(view.groups.len(), 1, "one test, model and backend");
        let group = &view.groups[0];
        assert!(group.key.starts_with("tg16 · ") && group.key.ends_with(" · openai"), "{}", group.key);
        assert_eq!(group.profiles, ["c1", "c4", "rate2"]);
        let latency: Vec<(&str, Vec<(usize, f64)>)> =
            group.latency.iter().map(|s| (s.label, s.points.clone())).collect();
        assert_eq!(
            latency,
            [
                ("TTFT p50", vec![(0, 20.0), (2, 25.0)]),
                ("TTFT p99", vec![(0, 30.0), (2, 60.0)]),
                ("E2E p50", vec![(0, 200.0), (2, 250.0)]),
            ],
            "no TPOT or ITL series: no profile measured them"
        );
        let throughput: Vec<(&str, Vec<(usize, f64)>)> =
            group.throughput.iter().map(|s| (s.label, s.points.clone())).collect();
        assert_eq!(
            throughput,
            [
                ("output tokens/s", vec![(0, 80.0), (2, 70.0)]),
                ("requests/s", vec![(0, 5.0), (1, 0.0), (2, 2.0)]),
                ("goodput (requests/s within the SLO)", vec![(2, 1.5)]),
            ]
        );
    }

    #[test]
    fn no_load_rows_no_load_section() {
        let rows = [Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0])).to_json()];
        let runs = vec![read_str(&serde_json::to_string(&rows).unwrap()).unwrap()];
        assert_eq!(load(&items(&runs), &runs), None);
    }
}
