//! The history section of `velollm report --history`: a metric over time and builds, one chart per test
//! configuration with one line per machine, and the same test across machines. The caller (the CLI, from
//! velollm-history) supplies the points; this module only draws them.

use std::fmt::Write;

use crate::html::escape;
use crate::svg::{Bar, BarChart, LineChart, Point, Series, PALETTE};

/// One measured value of a configuration, in a run.
#[derive(Debug, Clone)]
pub struct TrendValue {
    pub machine: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    pub run: i64,
    pub value: f64,
    /// The build that ran it (software fingerprint, or llama-bench's commit).
    pub build: String,
    /// The build differs from this machine's previous point of the configuration.
    pub build_changed: bool,
}

/// A configuration followed over time: `model · test · backend · parameters`, with the test alone for the
/// across-machines view.
#[derive(Debug, Clone)]
pub struct TrendConfiguration {
    pub label: String,
    pub test: String,
    pub values: Vec<TrendValue>,
}

/// What the history section shows.
#[derive(Debug, Clone, Default)]
pub struct HistoryView {
    /// The metric's name and unit, as the axis says it (`tokens/s`).
    pub metric: String,
    /// Where the points came from (the history file), in words.
    pub source: String,
    pub configurations: Vec<TrendConfiguration>,
    /// At most this many trend charts (the configurations with the most runs first).
    pub max_charts: usize,
}

fn short_time(time: &str) -> String {
    // 2026-12-06T10:02:03.123Z → 12-06 10:02
    time.get(5..16).map(|t| t.replace('T', " ")).unwrap_or_else(|| time.to_string())
}

/// The section's HTML, or nothing when there are no points.
pub fn history_section(view: &HistoryView) -> String {
    let mut configurations: Vec<&TrendConfiguration> =
        view.configurations.iter().filter(|c| !c.values.is_empty()).collect();
    if configurations.is_empty() {
        return format!(
            "<section id=\"history\"><h2>History</h2><p class=\"note\">{} holds no row with {} yet.</p></section>",
            escape(&view.source),
            escape(&view.metric)
        );
    }
    let total = configurations.len();
    configurations.sort_by_key(|c| std::cmp::Reverse(c.values.len()));
    configurations.truncate(view.max_charts.max(1));
    let mut cards = String::new();
    for configuration in &configurations {
        cards.push_str(&trend_card(configuration, &view.metric));
    }
    let across = across_machines(&view.configurations, &view.metric);
    format!(
        "<section id=\"history\"><h2>History: {} over time and builds</h2><p class=\"note\">From {}: each chart \
         follows one configuration (model, test, backend, parameters) across runs, one line per machine; a ◆ in a \
         point's run label marks a build (velollm, llama.cpp, drivers, kernel) different from that machine's previous \
         point. {} of {} configurations shown (those with the most runs).</p><div class=\"grid\">{cards}</div>{across}</section>",
        escape(&view.metric),
        escape(&view.source),
        configurations.len(),
        total
    )
}

fn trend_card(configuration: &TrendConfiguration, metric: &str) -> String {
    let mut values: Vec<&TrendValue> = configuration.values.iter().collect();
    values.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.run.cmp(&b.run)));
    let mut runs: Vec<(i64, String)> = Vec::new();
    for v in &values {
        if !runs.iter().any(|(r, _)| *r == v.run) {
            let changed = values.iter().any(|w| w.run == v.run && w.build_changed);
            runs.push((v.run, format!("{}{} #{}", if changed { "◆ " } else { "" }, short_time(&v.started_at), v.run)));
        }
    }
    let mut machines: Vec<String> = Vec::new();
    for v in &values {
        if !machines.contains(&v.machine) {
            machines.push(v.machine.clone());
        }
    }
    let series: Vec<Series> = machines
        .iter()
        .enumerate()
        .map(|(i, machine)| Series {
            label: machine.clone(),
            color: PALETTE[i % PALETTE.len()],
            dash: None,
            points: values
                .iter()
                .filter(|v| &v.machine == machine)
                .map(|v| Point {
                    x: runs.iter().position(|(r, _)| *r == v.run).unwrap_or(0),
                    y: v.value,
                    err: None,
                    tooltip: format!(
                        "{machine} · run {} · {} · {:.2} {metric} · build {}{}",
                        v.run,
                        v.started_at,
                        v.value,
                        v.build,
                        if v.build_changed { " (changed)" } else { "" }
                    ),
                    incomplete: false,
                })
                .collect(),
        })
        .collect();
    let chart = LineChart {
        label: format!("{}: {metric} over runs", configuration.label),
        x_title: "run (start, UTC)".into(),
        y_title: metric.to_string(),
        categories: runs.into_iter().map(|(_, label)| label).collect(),
        series,
        failed: Vec::new(),
        attrs: vec![("data-chart", "history-trend".into()), ("data-test", configuration.test.clone())],
    };
    let legend: Vec<(String, &str)> =
        machines.iter().enumerate().map(|(i, m)| (m.clone(), PALETTE[i % PALETTE.len()])).collect();
    format!(
        "<div class=\"card\"><h3>{}</h3><div class=\"meta\">{} point{}</div>{}{}</div>",
        escape(&configuration.label),
        values.len(),
        if values.len() == 1 { "" } else { "s" },
        if machines.len() > 1 { crate::legend(&legend, false) } else { String::new() },
        chart.render()
    )
}

/// Per test, each machine's latest value of that test's configurations, side by side; only where a test ran
/// on two machines or more.
fn across_machines(configurations: &[TrendConfiguration], metric: &str) -> String {
    let mut groups: Vec<String> = Vec::new();
    let mut bars: Vec<Bar> = Vec::new();
    let mut machines: Vec<String> = Vec::new();
    for c in configurations {
        let mut latest: Vec<&TrendValue> = Vec::new();
        for v in &c.values {
            match latest.iter_mut().find(|l| l.machine == v.machine) {
                Some(l) if l.started_at < v.started_at => *l = v,
                Some(_) => {}
                None => latest.push(v),
            }
        }
        if latest.len() < 2 {
            continue;
        }
        let group = groups.len();
        groups.push(c.label.clone());
        for v in latest {
            if !machines.contains(&v.machine) {
                machines.push(v.machine.clone());
            }
            let index = machines.iter().position(|m| *m == v.machine).unwrap_or(0);
            bars.push(Bar {
                group,
                label: v.machine.clone(),
                color: PALETTE[index % PALETTE.len()],
                value: v.value,
                err: None,
                tooltip: format!("{} · {} · run {} · {:.2} {metric}", c.label, v.machine, v.run, v.value),
            });
        }
    }
    if groups.is_empty() {
        return String::new();
    }
    let chart = BarChart {
        label: format!("{metric}: the same test across machines"),
        y_title: metric.to_string(),
        groups,
        bars,
        attrs: vec![("data-chart", "history-machines".into())],
    };
    let legend: Vec<(String, &str)> =
        machines.iter().enumerate().map(|(i, m)| (m.clone(), PALETTE[i % PALETTE.len()])).collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "<h3>The same test across machines</h3><p class=\"note\">Each machine's latest run of a configuration that \
         ran on more than one machine.</p><div class=\"grid\"><div class=\"card\">{}{}</div></div>",
        crate::legend(&legend, false),
        chart.render()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(machine: &str, run: i64, value: f64, build: &str, changed: bool) -> TrendValue {
        TrendValue {
            machine: machine.into(),
            started_at: format!("2026-12-0{run}T10:00:00.000Z"),
            run,
            value,
            build: build.into(),
            build_changed: changed,
        }
    }

    #[test]
    fn one_chart_per_configuration_a_changed_build_marked_and_machines_side_by_side() {
        let view = HistoryView {
            metric: "tokens/s".into(),
            source: "the history h.db".into(),
            configurations: vec![
                TrendConfiguration {
                    label: "SmolLM2 · tg128 · llamacpp".into(),
                    test: "tg128".into(),
                    values: vec![
                        value("laptop", 1, 50.0, "aaaa", false),
                        value("laptop", 2, 40.0, "bbbb", true),
                        value("server", 3, 90.0, "cccc", false),
                    ],
                },
                TrendConfiguration {
                    label: "SmolLM2 · pp512 · llamacpp".into(),
                    test: "pp512".into(),
                    values: vec![value("laptop", 1, 900.0, "aaaa", false)],
                },
            ],
            max_charts: 24,
        };
        let html = history_section(&view);
        assert_eq!(html.matches("data-chart=\"history-trend\"").count(), 2);
        assert!(html.contains(">◆ 12-02 10:00 #2</text>"), "run 2 changed the build: {html}");
        assert_eq!(
            html.matches(">◆ ").count(),
            1,
            "the first point has nothing to change from, run 3 is another machine"
        );
        // tg128 ran on two machines: their latest values side by side; pp512 on one only.
        assert_eq!(html.matches("data-chart=\"history-machines\"").count(), 1);
        assert!(html.contains("SmolLM2 · tg128 · llamacpp · laptop · run 2 · 40.00 tokens/s"));
        assert!(html.contains("SmolLM2 · tg128 · llamacpp · server · run 3 · 90.00 tokens/s"));
        assert!(!html.contains("pp512 · llamacpp · laptop · run 1 · 900.00 tokens/s"));

        let limited = history_section(&HistoryView { max_charts: 1, ..view.clone() });
        assert_eq!(limited.matches("data-chart=\"history-trend\"").count(), 1, "the configuration with the most runs");
        assert!(limited.contains("1 of 2 configurations shown"));

        let empty = history_section(&HistoryView { configurations: Vec::new(), ..view });
        assert!(empty.contains("holds no row with tokens/s yet"));
    }
}
