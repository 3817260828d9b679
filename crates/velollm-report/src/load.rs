//! Load runs (`--concurrency`, `--request-rate`, `--sweep`): latency against the load, and throughput against
//! it, one pair of charts per (file, test, model, backend), the profiles on the x axis in the order they ran.
//! Drawing only: what is drawn is [`crate::view::load`].

use crate::html::escape;
use crate::svg::{LineChart, Point, Series, PALETTE};
use crate::view::{LoadGroup, LoadSeries, LoadView};

/// The load section: a latency and a throughput card per group.
pub(crate) fn section(view: &LoadView) -> String {
    let mut cards = String::new();
    for group in &view.groups {
        cards.push_str(&card(group, &group.latency, "latency", "Latency against load", "ms"));
        cards.push_str(&card(group, &group.throughput, "throughput", "Throughput against load", "per second"));
    }
    format!(
        "<section id=\"load\"><h2>Load</h2><p class=\"note\">Each load row is one profile (c4: four requests in flight, \
         a closed loop; rate2: Poisson arrivals at 2 requests/s; rate-inf: all at once), in the order they ran. \
         Latencies are percentiles over the profile's requests; throughputs are over the run's duration \
         (docs/metrics.md, \"Load runs\"). Hover a point for its value.</p><div class=\"grid\">{cards}</div></section>"
    )
}

fn card(group: &LoadGroup, metrics: &[LoadSeries], kind: &str, title: &str, unit: &str) -> String {
    if metrics.is_empty() {
        return String::new();
    }
    let series: Vec<Series> = metrics
        .iter()
        .enumerate()
        .map(|(i, s)| Series {
            label: s.label.to_string(),
            color: PALETTE[i % PALETTE.len()],
            dash: None,
            points: s
                .points
                .iter()
                .map(|&(x, y)| Point {
                    x,
                    y,
                    err: None,
                    tooltip: format!("{}: {} {}", group.profiles[x], s.label, crate::svg::short(y)),
                    incomplete: false,
                })
                .collect(),
        })
        .collect();
    let entries: Vec<(String, &str)> = series.iter().map(|s| (s.label.clone(), s.color)).collect();
    let legend = crate::legend(&entries, false);
    let key = &group.key;
    let chart = LineChart {
        label: format!("{key}: {title}"),
        x_title: "load profile".into(),
        y_title: unit.into(),
        categories: group.profiles.clone(),
        attrs: vec![("data-chart", format!("load-{kind}")), ("data-test", key.clone())],
        series,
        failed: Vec::new(),
    };
    format!("<div class=\"card\"><h3>{} · {}</h3>{legend}{}</div>", escape(key), escape(title), chart.render())
}
