//! Load runs (`--concurrency`, `--request-rate`, `--sweep`): latency against the load, and throughput against
//! it, one pair of charts per (file, test, model, backend), the profiles on the x axis in the order they ran.

use std::fmt::Write;

use serde_json::Value;
use velollm_results::Run;

use crate::html::escape;
use crate::svg::{LineChart, Point, Series, PALETTE};

/// One load row: its profile's label and its `load` object.
struct Profile<'a> {
    label: String,
    load: &'a Value,
}

/// The load section, empty when no row is a load row.
pub(crate) fn section(runs: &[Run]) -> String {
    let mut groups: Vec<(String, Vec<Profile>)> = Vec::new();
    for run in runs {
        for entry in &run.entries {
            let Some(load) = entry.source.get("load").filter(|l| l.is_object()) else { continue };
            let (test, label) = entry.test.name.split_once(" @ ").unwrap_or((entry.test.name.as_str(), "?"));
            let mut key = format!("{test} · {} · {}", entry.model.label, entry.backend);
            if runs.len() > 1 {
                let _ = write!(key, " · {}", run.name());
            }
            let profile = Profile { label: label.to_string(), load };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, profiles)) => profiles.push(profile),
                None => groups.push((key, vec![profile])),
            }
        }
    }
    if groups.is_empty() {
        return String::new();
    }
    let mut cards = String::new();
    for (key, profiles) in &groups {
        cards.push_str(&card(key, profiles, "latency", "Latency against load", "ms", &LATENCIES));
        cards.push_str(&card(key, profiles, "throughput", "Throughput against load", "per second", &THROUGHPUTS));
    }
    format!(
        "<section id=\"load\"><h2>Load</h2><p class=\"note\">Each load row is one profile (c4: four requests in flight, \
         a closed loop; rate2: Poisson arrivals at 2 requests/s; rate-inf: all at once), in the order they ran. \
         Latencies are percentiles over the profile's requests; throughputs are over the run's duration \
         (docs/metrics.md, \"Load runs\"). Hover a point for its value.</p><div class=\"grid\">{cards}</div></section>"
    )
}

/// (series label, JSON pointer into the `load` object).
const LATENCIES: [(&str, &str); 5] = [
    ("TTFT p50", "/ttft_ms/p50"),
    ("TTFT p99", "/ttft_ms/p99"),
    ("TPOT p50", "/tpot_ms/p50"),
    ("ITL p50", "/itl_ms/p50"),
    ("E2E p50", "/e2e_ms/p50"),
];
const THROUGHPUTS: [(&str, &str); 3] = [
    ("output tokens/s", "/output_tokens_per_second"),
    ("requests/s", "/request_throughput"),
    ("goodput (requests/s within the SLO)", "/goodput"),
];

fn card(key: &str, profiles: &[Profile], kind: &str, title: &str, unit: &str, metrics: &[(&str, &str)]) -> String {
    let categories: Vec<String> = profiles.iter().map(|p| p.label.clone()).collect();
    let mut series = Vec::new();
    for (i, (name, pointer)) in metrics.iter().enumerate() {
        let points: Vec<Point> = profiles
            .iter()
            .enumerate()
            .filter_map(|(x, p)| {
                let y = p.load.pointer(pointer).and_then(Value::as_f64)?;
                Some(Point {
                    x,
                    y,
                    err: None,
                    tooltip: format!("{}: {name} {}", p.label, crate::svg::short(y)),
                    incomplete: false,
                })
            })
            .collect();
        if !points.is_empty() {
            series.push(Series { label: name.to_string(), color: PALETTE[i % PALETTE.len()], dash: None, points });
        }
    }
    if series.is_empty() {
        return String::new();
    }
    let entries: Vec<(String, &str)> = series.iter().map(|s| (s.label.clone(), s.color)).collect();
    let legend = crate::legend(&entries, false);
    let chart = LineChart {
        label: format!("{key}: {title}"),
        x_title: "load profile".into(),
        y_title: unit.into(),
        categories,
        attrs: vec![("data-chart", format!("load-{kind}")), ("data-test", key.into())],
        series,
        failed: Vec::new(),
    };
    format!("<div class=\"card\"><h3>{} · {}</h3>{legend}{}</div>", escape(key), escape(title), chart.render())
}
