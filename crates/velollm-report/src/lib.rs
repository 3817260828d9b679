//! `velollm report`: one self-contained HTML page of one or more runs, for a person to look at.
//!
//! - at a glance: rows, failures, the best decode and prompt rates and TTFT;
//! - **comparison** (two or more files): every matched metric's change with its 95 % interval, as a forest plot
//!   (velollm-compare's matching and statistics), and the rows without a counterpart;
//! - **sweeps**: tok/s (and TTFT for text tests) against each parameter that varies: the layer-offload curve,
//!   threads, batch and micro-batch, context, flash attention, cache types; one line per combination of the
//!   other parameters, ± one standard deviation, failed rows as red crosses on the axis;
//! - **backends** side by side when a run holds more than one;
//! - **per-token latency**: the distribution of the gaps between tokens (raw token timestamps) and the gap at
//!   each token position, per benchmark;
//! - **load** runs: latency percentiles and throughput against the load profiles (concurrency, arrival rate);
//! - every row in a table, failed rows with their error.
//!
//! The page needs no network and runs no script: the charts are SVG drawn here ([`svg`]), the styles inline.
//! Every data mark carries `data-*` attributes, so a test can count what a browser rendered.

pub mod html;
mod load;
pub mod svg;
pub mod view;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;
use velollm_compare::{compare, select, Comparison, Method, Selector, Verdict};
use velollm_results::{Entry, Metric, Run, Status};

use html::escape;
use svg::{
    Band, Bar, BarChart, Change, FailedMark, Forest, Histogram, LineChart, Marker, Point, Series, DASHES, PALETTE,
};
use view::{axis_name, file_label, short_name, Dims, Item, SweepChart};

/// What the page shows beyond the runs themselves.
#[derive(Debug, Clone)]
pub struct Options {
    pub title: String,
    /// Drawn on the comparison as the gate's threshold (`--fail-if-slower`).
    pub fail_if_slower: Option<f64>,
    /// Left out of the comparison's matching (`--ignore`).
    pub ignore: Vec<String>,
    /// The most per-token latency cards (text tests first).
    pub max_latency_charts: usize,
    /// The comparison's sides by what their rows ran (`--base 'n_threads=1' --new 'n_threads=2'`): the base
    /// file's rows that `base_rows` keeps against each new file's rows that `new_rows` keeps; with one file
    /// and both, two sides of that file (an interleaved sweep's are compared round by round).
    pub base_rows: Option<Selector>,
    pub new_rows: Option<Selector>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            title: "velollm report".into(),
            fail_if_slower: None,
            ignore: Vec::new(),
            max_latency_charts: 12,
            base_rows: None,
            new_rows: None,
        }
    }
}

/// The page for `runs` (the first is the base of any comparison).
pub fn render(runs: &[Run], options: &Options) -> String {
    let items = view::items(runs);
    let mut body = String::new();
    body.push_str(&tiles(&items, runs));
    if runs.len() >= 2 || (options.base_rows.is_some() && options.new_rows.is_some()) {
        body.push_str(&comparisons(runs, options));
    }
    body.push_str(&sweeps(&items, runs));
    body.push_str(&placements(&items, runs));
    body.push_str(&backends(&items));
    body.push_str(&load::section(runs));
    body.push_str(&latencies(&items, runs, options.max_latency_charts));
    body.push_str(&tables(&items, runs));
    let _ = write!(
        body,
        "<footer>Made by velollm report {}. Rates and statistics as docs/metrics.md defines them; error bars are ± one \
         sample standard deviation; comparisons use Welch's t-test and Fieller's 95 % interval (rows of one interleaved \
         run: a paired t-test on per-round log-ratios). This page loads nothing from the network.</footer>",
        env!("CARGO_PKG_VERSION")
    );
    html::page(&options.title, &header(runs, &items, options), &body)
}

fn header(runs: &[Run], items: &[Item], options: &Options) -> String {
    let rows = items.len();
    let mut models: Vec<String> = Vec::new();
    let mut machines: Vec<String> = Vec::new();
    for item in items {
        if !models.contains(&item.model) {
            models.push(item.model.clone());
        }
        if let Some(machine) = machine(item.entry).filter(|m| !machines.contains(m)) {
            machines.push(machine);
        }
    }
    let mut out = format!("<h1>{}</h1><div class=\"sub\">", escape(&options.title));
    let _ = write!(
        out,
        "{rows} row{} from {} file{} · {}",
        if rows == 1 { "" } else { "s" },
        runs.len(),
        if runs.len() == 1 { "" } else { "s" },
        escape(&models.join(", "))
    );
    if !machines.is_empty() {
        let _ = write!(out, " · {}", escape(&machines.join("; ")));
    }
    out.push_str("</div><div class=\"files\">");
    for (i, run) in runs.iter().enumerate() {
        let role = match (runs.len(), i) {
            (1, _) => String::new(),
            (_, 0) => "base: ".into(),
            _ => "new: ".into(),
        };
        let _ = write!(
            out,
            "<span class=\"file\" title=\"{}\">{role}{} ({}, {} rows)</span>",
            escape(&run.path.display().to_string()),
            escape(&file_label(run)),
            run.tools(),
            run.entries.len()
        );
    }
    out.push_str("</div>");
    out
}

/// The machine a row ran on, in a few words (velollm rows only).
fn machine(e: &Entry) -> Option<String> {
    let env = e.source.get("environment")?;
    let cpu = env.get("cpu_model").and_then(Value::as_str)?;
    let cores =
        env.get("cpu_physical_cores").and_then(Value::as_u64).map(|c| format!(", {c} cores")).unwrap_or_default();
    let ram = env
        .get("ram_bytes")
        .and_then(Value::as_u64)
        .map(|b| format!(", {:.0} GiB", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_default();
    Some(format!("{cpu}{cores}{ram}"))
}

fn tile(what: &str, value: &str, unit: &str, how: &str, bad: bool) -> String {
    format!(
        "<div class=\"tile{}\"><div class=\"what\">{}</div><div class=\"value\">{}<small>{}</small></div><div class=\"how\">{}</div></div>",
        if bad { " bad" } else { "" },
        escape(what),
        escape(value),
        escape(unit),
        escape(how)
    )
}

fn tiles(items: &[Item], runs: &[Run]) -> String {
    let count = |s: Status| items.iter().filter(|i| i.entry.status == s).count();
    let (ok, incomplete, failed) = (count(Status::Ok), count(Status::Incomplete), count(Status::Failed));
    let mut out = String::from("<div class=\"tiles\">");
    let mut how = format!("{ok} ok");
    if incomplete > 0 {
        how.push_str(&format!(" · {incomplete} incomplete"));
    }
    if failed > 0 {
        how.push_str(&format!(" · {failed} failed"));
    }
    out.push_str(&tile("Rows", &items.len().to_string(), "", &how, false));
    let all: Vec<&Item> = items.iter().collect();
    let dims = Dims::of(&all, runs, None);
    let describe = |i: &Item| {
        let label = dims.label(i, runs);
        if label.is_empty() {
            format!("{} · {}", i.entry.test.name, i.entry.backend)
        } else {
            format!("{} · {label}", i.entry.test.name)
        }
    };
    let best = |filter: &dyn Fn(&Item) -> bool, metric: Metric, higher: bool| {
        items
            .iter()
            .filter(|i| filter(i) && i.entry.status != Status::Failed)
            .filter_map(|i| i.mean_sd(metric).map(|m| (i, m.0)))
            .max_by(|a, b| if higher { a.1.total_cmp(&b.1) } else { b.1.total_cmp(&a.1) })
    };
    if let Some((i, v)) =
        best(&|i| i.entry.test.kind == "text" || i.entry.test.kind == "tg", Metric::TokensPerSecond, true)
    {
        out.push_str(&tile("Fastest decode", &svg::short(v), " tok/s", &describe(i), false));
    }
    if let Some((i, v)) = best(&|i| i.entry.test.kind == "pp", Metric::TokensPerSecond, true) {
        out.push_str(&tile("Fastest prompt processing", &svg::short(v), " t/s", &describe(i), false));
    } else if let Some((i, v)) = best(&|i| i.entry.test.kind == "text", Metric::PromptTokensPerSecond, true) {
        out.push_str(&tile("Fastest prompt evaluation", &svg::short(v), " tok/s", &describe(i), false));
    }
    if let Some((i, v)) = best(&|i| i.entry.test.kind == "text", Metric::TimeToFirstTokenMs, false) {
        out.push_str(&tile("Lowest time to first token", &svg::short(v), " ms", &describe(i), false));
    }
    if failed > 0 {
        let first = items.iter().find(|i| i.entry.status == Status::Failed).expect("counted above");
        out.push_str(&tile(
            "Failed",
            &failed.to_string(),
            "",
            &format!(
                "first: {} — {}",
                describe(first),
                clip(first.entry.error.as_deref().unwrap_or("no error recorded"), 90)
            ),
            true,
        ));
    }
    out.push_str("</div>");
    out
}

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>().trim_end())
    }
}

fn legend(entries: &[(String, &str)], failed: bool) -> String {
    legend_with_files(entries, &[], failed)
}

/// A legend: a colour per series, a line style per file (when several), and the failed-row mark.
fn legend_with_files(entries: &[(String, &str)], files: &[(String, Option<&str>)], failed: bool) -> String {
    let mut out = String::from("<div class=\"legend\">");
    for (label, color) in entries {
        let _ = write!(out, "<span><i class=\"swatch\" style=\"background:{color}\"></i>{}</span>", escape(label));
    }
    for (file, dash) in files {
        let dash = dash.map(|d| format!(" stroke-dasharray=\"{d}\"")).unwrap_or_default();
        let _ = write!(
            out,
            "<span><svg width=\"26\" height=\"8\" style=\"vertical-align:middle;margin-right:5px\"><line x1=\"1\" x2=\"25\" y1=\"4\" y2=\"4\" stroke=\"#57606a\" stroke-width=\"2\"{dash}/></svg>{}</span>",
            escape(file)
        );
    }
    if failed {
        out.push_str("<span><i class=\"swatch cross\">✕</i>failed</span>");
    }
    out.push_str("</div>");
    out
}

fn sweeps(items: &[Item], runs: &[Run]) -> String {
    let charts = view::sweeps(items, runs);
    if charts.is_empty() {
        return String::new();
    }
    let cards: String = charts.iter().map(|chart| sweep_card(chart, runs)).collect();
    format!(
        "<section id=\"sweeps\"><h2>Parameter sweeps</h2><p class=\"note\">Each chart puts one swept parameter on the \
         x axis; each line is one combination of the other parameters that vary. Points are means with ± one standard \
         deviation; hollow points stopped before all their repetitions; a red ✕ on the axis is a row that failed (hover \
         for its error).</p><div class=\"grid\">{cards}</div></section>"
    )
}

/// Draws one sweep chart of the view-model.
fn sweep_card(chart: &SweepChart, runs: &[Run]) -> String {
    let (parameter, test, metric) = (chart.parameter.as_str(), chart.test.as_str(), chart.metric);
    let colour = |i: usize| PALETTE[i % PALETTE.len()];
    let dash = |run: usize| DASHES[run % DASHES.len()];
    let series: Vec<Series> = chart
        .series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            color: colour(s.colour),
            dash: s.file.and_then(dash),
            points: s
                .points
                .iter()
                .map(|p| {
                    let spread = p.stddev.map(|sd| format!(" ± {}", svg::short(sd))).unwrap_or_default();
                    Point {
                        x: p.category,
                        y: p.mean,
                        err: p.stddev,
                        tooltip: format!(
                            "{}, {} {}: {}{spread} {} (n={}){}",
                            s.label,
                            short_name(parameter),
                            chart.categories[p.category],
                            svg::short(p.mean),
                            metric.label(),
                            p.n,
                            if p.incomplete { ", incomplete" } else { "" }
                        ),
                        incomplete: p.incomplete,
                    }
                })
                .collect(),
        })
        .collect();
    let failed: Vec<FailedMark> = chart
        .failed
        .iter()
        .map(|f| FailedMark {
            x: f.category,
            color: colour(chart.series[f.series].colour),
            tooltip: format!(
                "{}, {} {}: failed — {}",
                chart.series[f.series].label,
                short_name(parameter),
                chart.categories[f.category],
                f.error.as_deref().unwrap_or("no error recorded")
            ),
        })
        .collect();
    let legend_entries: Vec<(String, &str)> =
        chart.colours.iter().enumerate().map(|(i, c)| (c.clone(), colour(i))).collect();
    let files: Vec<(String, Option<&str>)> = chart.files.iter().map(|&r| (file_label(&runs[r]), dash(r))).collect();
    let words = &chart.colour_words;
    let meta = match (words.is_empty(), !chart.files.is_empty()) {
        (true, false) => String::new(),
        (true, true) => "one line style per file".into(),
        (false, false) => format!("one colour per {}", words.join(" × ")),
        (false, true) => format!("one colour per {}, one line style per file", words.join(" × ")),
    };
    let drawn = LineChart {
        label: format!("{test}: {} by {parameter}", metric.label()),
        x_title: axis_name(parameter),
        y_title: chart.y_title.clone(),
        categories: chart.categories.clone(),
        attrs: vec![
            ("data-chart", "sweep".into()),
            ("data-param", parameter.into()),
            ("data-test", test.into()),
            ("data-metric", metric.label().into()),
        ],
        series,
        failed,
    };
    let has_failed = !drawn.failed.is_empty();
    let legend = if legend_entries.len() > 1 || !files.is_empty() || has_failed {
        legend_with_files(if legend_entries.len() > 1 { &legend_entries } else { &[] }, &files, has_failed)
    } else {
        String::new()
    };
    format!(
        "<div class=\"card\"><h3>{} · {} by {}</h3><div class=\"meta\">{}</div>{legend}{}</div>",
        escape(test),
        escape(metric.label()),
        escape(short_name(parameter)),
        escape(&meta),
        drawn.render()
    )
}

/// Layers per device along the layer-offload curve: what llama.cpp placed on the CPU and on each GPU or RPC
/// server at every `n_gpu_layers` value (rows that record their devices, velollm's `effective.devices`).
fn placements(items: &[Item], runs: &[Run]) -> String {
    // (group label, device name, layers, tooltip), in row order; one group per load of the curve.
    let mut groups: Vec<String> = Vec::new();
    let mut devices: Vec<String> = Vec::new();
    let mut bars: Vec<(usize, String, f64, String)> = Vec::new();
    let varying = Dims::of(&items.iter().collect::<Vec<_>>(), runs, None).parameters;
    if !varying.iter().any(|p| p == "n_gpu_layers" || p == "devices" || p == "tensor_split") {
        return String::new();
    }
    for item in items {
        let Some(placed) = item.entry.source["parameters"]["effective"]["devices"].as_array() else { continue };
        if !placed.iter().any(|d| d["backend"].as_str().is_some_and(|b| b != "CPU")) {
            continue;
        }
        let parameters = &item.entry.parameters;
        let mut label = format!("ngl {}", parameters.get("n_gpu_layers").map_or("?", String::as_str));
        for extra in ["devices", "tensor_split"] {
            if varying.iter().any(|p| p == extra) {
                let _ = write!(label, " · {}", parameters.get(extra).map_or("?", String::as_str));
            }
        }
        if groups.contains(&label) {
            continue;
        }
        groups.push(label.clone());
        for device in placed {
            let name = device["name"].as_str().unwrap_or("?").to_string();
            let layers = device["layers"].as_f64().unwrap_or(0.0);
            if !devices.contains(&name) {
                devices.push(name.clone());
            }
            let where_ =
                device["description"].as_str().filter(|d| !d.is_empty()).map(|d| format!(" ({d})")).unwrap_or_default();
            let megabytes = device["model_buffer_bytes"].as_f64().unwrap_or(0.0) / 1e6;
            bars.push((
                groups.len() - 1,
                name.clone(),
                layers,
                format!("{label}: {name}{where_} holds {layers} layers, {} MB of weights", svg::short(megabytes)),
            ));
        }
    }
    if groups.len() < 2 {
        return String::new();
    }
    let chart = BarChart {
        label: "layers per device along the offload curve".into(),
        y_title: "layers".into(),
        groups,
        bars: bars
            .into_iter()
            .map(|(group, name, layers, tooltip)| {
                let index = devices.iter().position(|d| *d == name).unwrap_or(0);
                Bar { group, label: name, color: PALETTE[index % PALETTE.len()], value: layers, err: None, tooltip }
            })
            .collect(),
        attrs: vec![("data-chart", "placement".into())],
    };
    let legend_entries: Vec<(String, &str)> =
        devices.iter().enumerate().map(|(i, d)| (d.clone(), PALETTE[i % PALETTE.len()])).collect();
    format!(
        "<section id=\"placement\"><h2>Where the layers ran</h2><p class=\"note\">For each load of the sweep, the \
         layers llama.cpp assigned to each device (its own per-layer placement): the CPU, local GPUs and RPC servers \
         (hover for the endpoint and the weights each holds).</p><div class=\"grid\"><div class=\"card\"><h3>Layers \
         per device</h3>{}{}</div></div></section>",
        legend(&legend_entries, false),
        chart.render()
    )
}

fn backends(items: &[Item]) -> String {
    let mut names: Vec<String> = Vec::new();
    for i in items {
        if !names.contains(&i.entry.backend) {
            names.push(i.entry.backend.clone());
        }
    }
    if names.len() < 2 {
        return String::new();
    }
    let mut tests: Vec<String> = Vec::new();
    for i in items {
        let backends_with_test: Vec<&String> = names
            .iter()
            .filter(|b| items.iter().any(|j| j.entry.test.name == i.entry.test.name && &j.entry.backend == *b))
            .collect();
        if backends_with_test.len() >= 2 && !tests.contains(&i.entry.test.name) {
            tests.push(i.entry.test.name.clone());
        }
    }
    if tests.is_empty() {
        return String::new();
    }
    let mut cards = String::new();
    let mut several = false;
    for metric in [Metric::TokensPerSecond, Metric::TimeToFirstTokenMs, Metric::PromptTokensPerSecond] {
        let mut bars = Vec::new();
        let mut groups: Vec<String> = Vec::new();
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
                if let Some((mean, sd, n)) = best {
                    several |= candidates.len() > 1;
                    let of = if candidates.len() > 1 {
                        format!(", best of {} rows", candidates.len())
                    } else {
                        String::new()
                    };
                    members.push(Bar {
                        group: 0,
                        label: backend.clone(),
                        color: PALETTE[b % PALETTE.len()],
                        value: mean,
                        err: sd,
                        tooltip: format!("{test} on {backend}: {} {} (n={n}{of})", svg::short(mean), metric.label()),
                    });
                }
            }
            if members.len() >= 2 {
                for mut bar in members {
                    bar.group = groups.len();
                    bars.push(bar);
                }
                groups.push(test.clone());
            }
        }
        if groups.is_empty() {
            continue;
        }
        let chart = BarChart {
            label: format!("{} by backend", metric.label()),
            y_title: metric.label().into(),
            groups,
            bars,
            attrs: vec![("data-chart", "backends".into()), ("data-metric", metric.label().into())],
        };
        let legend_entries: Vec<(String, &str)> =
            names.iter().enumerate().map(|(b, n)| (n.clone(), PALETTE[b % PALETTE.len()])).collect();
        let _ = write!(
            cards,
            "<div class=\"card\"><h3>{} by backend</h3><div class=\"meta\">{}</div>{}{}</div>",
            escape(metric.label()),
            if metric.higher_is_better() { "higher is better" } else { "lower is better" },
            legend(&legend_entries, false),
            chart.render()
        );
    }
    format!(
        "<section id=\"backends\"><h2>Backends side by side</h2><p class=\"note\">The same tests on each engine, mean ± \
         one standard deviation.{}</p><div class=\"grid\">{cards}</div></section>",
        if several { " Where a backend ran a test several times (a sweep), its best row is shown." } else { "" }
    )
}

/// The gaps between consecutive tokens of each iteration, in ms.
fn token_gaps(entry: &Entry) -> Vec<Vec<f64>> {
    let Some(samples) = entry.source.get("samples").and_then(Value::as_array) else { return Vec::new() };
    samples
        .iter()
        .filter_map(|s| s.pointer("/raw/token_times_ns").and_then(Value::as_array))
        .map(|times| {
            let times: Vec<u64> = times.iter().filter_map(Value::as_u64).collect();
            times.windows(2).map(|w| w[1].saturating_sub(w[0]) as f64 / 1e6).collect::<Vec<f64>>()
        })
        .filter(|gaps| gaps.len() >= 2)
        .collect()
}

fn latencies(items: &[Item], runs: &[Run], limit: usize) -> String {
    let mut candidates: Vec<(&Item, Vec<Vec<f64>>)> = items
        .iter()
        .filter(|i| i.entry.status != Status::Failed)
        .map(|i| (i, token_gaps(i.entry)))
        .filter(|(_, gaps)| !gaps.is_empty())
        .collect();
    if candidates.is_empty() {
        return String::new();
    }
    // Text benchmarks first: their latency is what a user of the model feels.
    candidates.sort_by_key(|(i, _)| (i.entry.test.kind != "text", i.run));
    let total = candidates.len();
    candidates.truncate(limit);
    let all: Vec<&Item> = items.iter().collect();
    let dims = Dims::of(&all, runs, None);
    // One colour per backend, as in the backends chart.
    let mut backends: Vec<&str> = Vec::new();
    for i in items {
        if !backends.contains(&i.entry.backend.as_str()) {
            backends.push(&i.entry.backend);
        }
    }
    let mut cards = String::new();
    for (item, gaps) in &candidates {
        let color = PALETTE[backends.iter().position(|b| *b == item.entry.backend).unwrap_or(0) % PALETTE.len()];
        cards.push_str(&latency_card(color, item, gaps, &dims, runs));
    }
    let omitted = if total > limit {
        format!(" {} more rows have token timestamps; the first {limit} are shown.", total - limit)
    } else {
        String::new()
    };
    format!(
        "<section id=\"latency\"><h2>Per-token latency</h2><p class=\"note\">From the raw token timestamps of every timed \
         iteration: how long each token took after the one before it. The histogram pools all gaps (dashed: p50, p90, \
         p99); below it, the gap at each token position (line: median over iterations, band: fastest to slowest).{omitted}</p>\
         <div class=\"grid\">{cards}</div></section>"
    )
}

fn latency_card(color: &'static str, item: &Item, gaps: &[Vec<f64>], dims: &Dims, runs: &[Run]) -> String {
    let mut pooled: Vec<f64> = gaps.iter().flatten().copied().collect();
    pooled.sort_by(f64::total_cmp);
    let p = |q: f64| velollm_core::percentile(&pooled, q);
    let (p50, p90, p99) = (p(50.0), p(90.0), p(99.0));
    let (min, max) = (pooled[0], pooled[pooled.len() - 1]);
    // Equal bins from the fastest gap to the slowest, or to 1.5 × p99 with the rest in an overflow bin, so one
    // stall does not squash the distribution into a single bar.
    let cap = if max > p99 * 1.5 && p99 > min { p99 * 1.5 } else { max };
    // At least ±5 % of the median wide: steady gaps show as one narrow peak, not as noise blown up to fill the axis.
    let median = p50.max(1e-9);
    let (low, high) = if cap - min >= median * 0.1 {
        (min, cap)
    } else {
        let centre = (min + cap) / 2.0;
        ((centre - median * 0.05).max(0.0), centre + median * 0.05)
    };
    let bins = ((pooled.len() as f64).sqrt() * 1.5).ceil().clamp(8.0, 40.0) as usize;
    let width = (high - low) / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|i| low + width * i as f64).collect();
    let mut counts = vec![0usize; bins];
    let mut overflow = 0;
    for &g in &pooled {
        if g > high {
            overflow += 1;
        } else {
            counts[(((g - low) / width) as usize).min(bins - 1)] += 1;
        }
    }
    let label = dims.label(item, runs);
    let title =
        if label.is_empty() { item.entry.test.name.clone() } else { format!("{} · {label}", item.entry.test.name) };
    let histogram = Histogram {
        label: format!("{title}: inter-token latency distribution"),
        x_title: "gap between tokens (ms)".into(),
        edges,
        counts,
        overflow,
        markers: vec![
            Marker { label: "p50".into(), value: p50 },
            Marker { label: "p90".into(), value: p90 },
            Marker { label: "p99".into(), value: p99 },
        ],
        color,
        attrs: vec![
            ("data-chart", "latency".into()),
            ("data-row", item.entry.row.to_string()),
            ("data-gaps", pooled.len().to_string()),
        ],
    };
    let positions = gaps.iter().map(Vec::len).max().unwrap_or(0);
    let values: Vec<(f64, f64, f64)> = (0..positions)
        .map(|k| {
            let mut at: Vec<f64> = gaps.iter().filter_map(|g| g.get(k).copied()).collect();
            at.sort_by(f64::total_cmp);
            (velollm_core::percentile(&at, 50.0), at[0], at[at.len() - 1])
        })
        .collect();
    let band = Band {
        label: format!("{title}: gap at each token position"),
        x_title: "token".into(),
        y_title: "gap (ms)".into(),
        values,
        color,
        attrs: vec![("data-chart", "token-positions".into()), ("data-row", item.entry.row.to_string())],
    };
    let ttft = item
        .mean_sd(Metric::TimeToFirstTokenMs)
        .map(|(m, _, _)| format!("TTFT {} ms · ", svg::short(m)))
        .unwrap_or_default();
    format!(
        "<div class=\"card\"><h3>{}</h3><div class=\"meta\">{ttft}{} iterations · {} gaps · p50 {} ms · p90 {} ms · p99 {} ms · max {} ms</div>{}{}</div>",
        escape(&title),
        gaps.len(),
        pooled.len(),
        svg::short(p50),
        svg::short(p90),
        svg::short(p99),
        svg::short(max),
        histogram.render(),
        band.render()
    )
}

fn comparisons(runs: &[Run], options: &Options) -> String {
    let mut out = String::from(
        "<section id=\"compare\"><h2>What changed</h2><p class=\"note\">Every row of a new file matched to the base row \
         that ran the same test (same test, model, backend and parameters). Each line is one metric: the diamond is the \
         change of the mean, the whiskers its 95 % confidence interval (Fieller); green and red are significant at 5 % \
         (Welch's t-test), grey is not. Rows of one interleaved run are compared round by round instead (paired t-test \
         on the log-ratios; the change of the geometric mean and its t interval), which drift between rounds cannot \
         fool. Right of zero is a higher value: better for rates, worse for times.</p>",
    );
    let pick = |run: &Run, selector: &Option<Selector>| match selector {
        Some(s) => select(run, s),
        None => Ok(run.clone()),
    };
    let news: Vec<&Run> = if runs.len() >= 2 { runs[1..].iter().collect() } else { vec![&runs[0]] };
    let mut ignore = options.ignore.clone();
    for name in velollm_compare::differing_names(options.base_rows.as_ref(), options.new_rows.as_ref()) {
        if !ignore.contains(&name) {
            ignore.push(name);
        }
    }
    let base = match pick(&runs[0], &options.base_rows) {
        Ok(base) => base,
        Err(e) => {
            let _ = write!(out, "<p class=\"error\">--base: {}</p></section>", escape(&e));
            return out;
        }
    };
    for new in news {
        match pick(new, &options.new_rows) {
            Ok(new) => {
                let c = compare(&base, &new, &ignore);
                out.push_str(&comparison_card(&c, &base, &new, options));
            }
            Err(e) => {
                let _ = write!(out, "<p class=\"error\">--new: {}</p>", escape(&e));
            }
        }
    }
    out.push_str("</section>");
    out
}

fn comparison_card(c: &Comparison, base: &Run, new: &Run, options: &Options) -> String {
    let mut varying: Vec<String> = Vec::new();
    for pair in &c.pairs {
        for name in pair.parameters.keys() {
            // Only the pairs that record the parameter: one that does not is no difference (view.rs's rule).
            let values: Vec<&String> = c.pairs.iter().filter_map(|p| p.parameters.get(name)).collect();
            if values.iter().any(|v| *v != values[0]) && !varying.contains(name) {
                varying.push(name.clone());
            }
        }
    }
    let several_models = c.pairs.iter().any(|p| p.model != c.pairs[0].model);
    let several_backends = c.pairs.iter().any(|p| p.backend != c.pairs[0].backend);
    let mut rows = Vec::new();
    let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
    for pair in &c.pairs {
        let mut parts = vec![pair.test.name.clone()];
        if several_models {
            parts.push(pair.model.clone());
        }
        if several_backends {
            parts.push(pair.backend.clone());
        }
        for p in &varying {
            if let Some(value) = pair.parameters.get(p) {
                parts.push(format!("{} {value}", short_name(p)));
            }
        }
        let who = parts.join(" · ");
        if pair.metrics.is_empty() {
            let (detail, why) = match (pair.base_status, pair.new_status) {
                _ if pair.new_invalid.is_some() => {
                    ("invalid in new", format!("invalid in new: {}", pair.new_invalid.as_deref().unwrap_or("?")))
                }
                _ if pair.base_invalid.is_some() => {
                    ("invalid in base", format!("invalid in base: {}", pair.base_invalid.as_deref().unwrap_or("?")))
                }
                (Status::Failed, Status::Failed) => {
                    ("failed in both", format!("failed in both: {}", pair.new_error.as_deref().unwrap_or("?")))
                }
                (_, Status::Failed) => {
                    ("failed in new", format!("failed in new: {}", pair.new_error.as_deref().unwrap_or("?")))
                }
                (Status::Failed, _) => {
                    ("failed in base", format!("failed in base: {}", pair.base_error.as_deref().unwrap_or("?")))
                }
                _ => ("nothing to compare", "no metric both rows measured".to_string()),
            };
            *tally.entry(detail).or_default() += 1;
            rows.push(Change {
                label: who,
                detail: detail.into(),
                change: 0.0,
                interval: None,
                verdict: "failed".into(),
                tooltip: why,
            });
            continue;
        }
        for m in &pair.metrics {
            *tally.entry(m.verdict.word()).or_default() += 1;
            let verdict = match m.verdict {
                Verdict::Faster => "faster",
                Verdict::Slower => "slower",
                Verdict::NoChange => "no_change",
                Verdict::TooFewSamples => "too_few_samples",
                Verdict::DiffersZeroVariance => "differs_zero_variance",
                Verdict::NotComparable => "not_comparable",
            };
            let ci = match (m.ci95_low_percent, m.ci95_high_percent) {
                (Some(a), Some(b)) => format!("95 % CI {a:+.1} … {b:+.1} %"),
                _ => "no bounded interval".into(),
            };
            rows.push(Change {
                label: format!("{who} · {}", m.label),
                detail: format!(
                    "{:+.1} % {}",
                    m.change_percent,
                    match m.verdict {
                        Verdict::NoChange => "",
                        Verdict::DiffersZeroVariance => "differs (no spread, no test)",
                        other => other.word(),
                    }
                ),
                change: m.change_percent,
                interval: m.ci95_low_percent.zip(m.ci95_high_percent),
                verdict: verdict.into(),
                tooltip: format!(
                    "{who} · {}: {} → {} ({:+.1} %, {ci}, p = {}, {}) — {}",
                    m.label,
                    svg::short(m.base.mean),
                    svg::short(m.new.mean),
                    m.change_percent,
                    m.p_value.map_or("-".into(), |p| format!("{p:.3}")),
                    match m.method {
                        Method::Paired => format!("paired over {} rounds", m.log_ratios.map_or(m.base.n, |r| r.n)),
                        Method::Welch => "Welch".to_string(),
                    },
                    m.verdict.word()
                ),
            });
        }
    }
    let mut out = format!(
        "<div class=\"card\" style=\"margin-bottom:16px\"><h3>{} → {}</h3><div class=\"meta\">{} matched · {} only in base · {} only in new</div>",
        escape(&file_label(base)),
        escape(&file_label(new)),
        c.pairs.len(),
        c.only_in_base.len(),
        c.only_in_new.len()
    );
    out.push_str("<div class=\"verdicts\">");
    let order = ["slower", "faster", "no significant change", "too few samples"];
    let mut tally: Vec<(&str, usize)> = tally.into_iter().collect();
    tally.sort_by_key(|(word, _)| order.iter().position(|o| o == word).unwrap_or(order.len()));
    for (word, n) in &tally {
        let class = match *word {
            "faster" => "faster",
            "slower" => "slower",
            _ => "",
        };
        let _ = write!(out, "<span><b class=\"{class}\">{n}</b> {}</span>", escape(word));
    }
    out.push_str("</div>");
    let mut runs: Vec<&str> = c.pairs.iter().filter_map(|p| p.interleaved_run.as_deref()).collect();
    runs.dedup();
    if !runs.is_empty() {
        let paired = c.pairs.iter().filter(|p| p.interleaved_run.is_some()).count();
        let _ = write!(
            out,
            "<p class=\"note\" data-method=\"paired\">{paired} of {} pairs come from one interleaved run ({}) and are compared \
             round by round (paired t-test on log-ratios); the others with Welch's test.</p>",
            c.pairs.len(),
            escape(&runs.join(", "))
        );
    }
    let mut notes: Vec<&str> = c.pairs.iter().filter_map(|p| p.method_note.as_deref()).collect();
    notes.sort();
    notes.dedup();
    for note in notes {
        let _ = write!(out, "<p class=\"note\" data-method=\"welch\">{}</p>", escape(note));
    }
    if !rows.is_empty() {
        let forest = Forest {
            label: format!("changes from {} to {}", file_label(base), file_label(new)),
            rows,
            threshold: options.fail_if_slower,
            attrs: vec![("data-chart", "compare".into()), ("data-new", file_label(new))],
        };
        out.push_str(&forest.render());
    }
    for (title, lonely) in [("Only in the base", &c.only_in_base), ("Only in the new run", &c.only_in_new)] {
        if lonely.is_empty() {
            continue;
        }
        let _ = write!(out, "<ul class=\"unmatched\" data-unmatched=\"{}\">", lonely.len());
        for u in lonely {
            let nearest = u.nearest.as_ref().map(|n| format!(" (nearest: {n})")).unwrap_or_default();
            let _ = write!(out, "<li>{title}: row {} — {}{}</li>", u.row, escape(&u.label), escape(&nearest));
        }
        out.push_str("</ul>");
    }
    out.push_str("</div>");
    out
}

fn tables(items: &[Item], runs: &[Run]) -> String {
    let mut out = String::from("<section id=\"rows\"><h2>Every row</h2>");
    for (r, run) in runs.iter().enumerate() {
        let rows: Vec<&Item> = items.iter().filter(|i| i.run == r).collect();
        if rows.is_empty() {
            continue;
        }
        let dims = Dims::of(&rows, runs, None);
        let _ = write!(
            out,
            "<p class=\"note\">{} — {}{}</p><table data-table=\"rows\"><thead><tr><th>#</th><th>test</th>",
            escape(&run.path.display().to_string()),
            run.tools(),
            run.entries
                .first()
                .and_then(|e| e.build.as_deref())
                .map(|b| format!(", {}", escape(b)))
                .unwrap_or_default()
        );
        if dims.model {
            out.push_str("<th>model</th>");
        }
        if dims.backend {
            out.push_str("<th>backend</th>");
        }
        for p in &dims.parameters {
            let _ = write!(out, "<th>{}</th>", escape(short_name(p)));
        }
        out.push_str("<th>status</th><th class=\"num\">tok/s</th><th class=\"num\">TTFT ms</th><th class=\"num\">prompt tok/s</th><th class=\"num\">n</th><th>notes</th></tr></thead><tbody>");
        for item in rows {
            let e = item.entry;
            let status = match e.status {
                Status::Ok => "ok",
                Status::Incomplete => "incomplete",
                Status::Failed => "failed",
            };
            let _ = write!(out, "<tr class=\"{status}\"><td>{}</td><td>{}</td>", e.row, escape(&e.test.name));
            if dims.model {
                let _ = write!(out, "<td>{}</td>", escape(&item.model));
            }
            if dims.backend {
                let _ = write!(out, "<td>{}</td>", escape(&e.backend));
            }
            for p in &dims.parameters {
                let _ = write!(out, "<td>{}</td>", escape(e.parameters.get(p).map_or("-", String::as_str)));
            }
            let cell = |metric: Metric| match item.mean_sd(metric) {
                Some((m, Some(sd), _)) => format!("{} ± {}", svg::short(m), svg::short(sd)),
                Some((m, None, _)) => svg::short(m),
                None => "–".into(),
            };
            let n = e.samples.get(&Metric::TokensPerSecond).map_or(0, Vec::len);
            let notes = match (&e.error, e.status) {
                (Some(error), _) => format!("<span class=\"error\">{}</span>", escape(error)),
                _ => escape(
                    &e.source
                        .get("warnings")
                        .and_then(Value::as_array)
                        .map(|w| w.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
                        .unwrap_or_default(),
                ),
            };
            let _ = write!(
                out,
                "<td><span class=\"status {status}\">{status}</span></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{n}</td><td>{notes}</td></tr>",
                cell(Metric::TokensPerSecond),
                cell(Metric::TimeToFirstTokenMs),
                cell(Metric::PromptTokensPerSecond)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_interleaved_file_compares_two_combinations_round_by_round() {
        let drift = [1.0, 0.85, 1.12, 0.9, 1.15, 0.95];
        let mut rows = Vec::new();
        for (slot, (threads, gain)) in [(1u32, 1.0), (2, 1.03)].into_iter().enumerate() {
            let rates: Vec<f64> = drift
                .iter()
                .enumerate()
                .map(|(i, d)| 60.0 * gain * d * (1.0 + 0.002 * ((i + slot) % 3) as f64))
                .collect();
            let mut row = Row::tokens(0, 128, 0, token_samples_at(0, 128, &rates)).threads(threads).to_json();
            row["interleaved"] = json!({"run": "r-9", "combinations": 2, "slot": slot});
            rows.push(row);
        }
        let mut run = read_str(&serde_json::to_string(&rows).unwrap()).unwrap();
        run.path = "sweep.json".into();
        let options = Options {
            base_rows: Some(Selector::parse("n_threads=1").unwrap()),
            new_rows: Some(Selector::parse("n_threads=2").unwrap()),
            fail_if_slower: Some(1.0),
            ..Options::default()
        };
        let page = render(std::slice::from_ref(&run), &options);
        assert!(page.contains("sweep.json [n_threads=1] → sweep.json [n_threads=2]"), "{page}");
        assert!(page.contains("data-method=\"paired\"") && page.contains("interleaved run (r-9)"));
        assert!(page.contains("paired over 6 rounds") && page.contains("data-verdict=\"faster\""));
        // Without the selections a single file has no comparison.
        assert!(!render(std::slice::from_ref(&run), &Options::default()).contains("id=\"compare\""));
        // A selection that keeps nothing is said on the page.
        let none = Options { new_rows: Some(Selector::parse("n_threads=8").unwrap()), ..options };
        assert!(render(&[run], &none).contains("--new: &#39;n_threads=8&#39; selects no row"));
    }
    use velollm_fixtures::{text_samples_at, token_samples_at, Row};
    use velollm_results::read_str;

    #[test]
    fn llama_bench_rows_beside_velollm_rows_of_the_same_file_show_one_model_and_no_unrecorded_parameter() {
        // llama-bench's rows in its documented `-o json` layout (SmolLM2-135M-Instruct.Q4_1.gguf, "llama ?B Q4_1")
        // beside velollm's rows of the same file, as `velollm report llama-bench.json velollm.json` reads them.
        let data =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../velollm-compare/tests/data/llama-bench.json");
        let llama_bench = velollm_results::read_file(&data).unwrap();
        let rows: Vec<Value> = [(512, 0, 2, [1040.0, 1050.0]), (0, 128, 2, [58.0, 58.2]), (0, 128, 1, [33.0, 33.4])]
            .iter()
            .map(|&(n_prompt, n_gen, threads, rates)| {
                Row::tokens(n_prompt, n_gen, 0, token_samples_at(n_prompt, n_gen, &rates)).threads(threads).to_json()
            })
            .collect();
        let mut velollm = read_str(&serde_json::to_string(&rows).unwrap()).unwrap();
        velollm.path = "velollm.json".into();
        let page = render(&[llama_bench, velollm], &Options::default());
        // One model, under the name velollm read from the file.
        assert!(page.contains("6 rows from 2 files · SmolLM2 135M Instruct"), "{page}");
        assert!(!page.contains("llama ?B Q4_1"), "llama-bench's description is not a second model");
        // llama-bench's parameters that velollm does not record are not listed as if they varied: not on the
        // sweep's card, legend or series, nor in the comparison's rows.
        for unrecorded in ["cpu_mask", "cpu_strict", "poll", "no_kv_offload", "embeddings"] {
            assert!(!page.contains(&format!("{unrecorded} -")), "{unrecorded} listed as varying");
        }
        assert!(page.contains("data-chart=\"sweep\" data-param=\"n_threads\" data-test=\"tg128\""), "{page}");
        assert!(!page.contains("data-param=\"cpu_mask\""));
    }

    /// Rows with `samples_ts` (and the per-iteration rates) replaced by `values`, threads 1 and 2.
    fn hostile_run(values: &[Value]) -> Run {
        let mut rows = Vec::new();
        for threads in [1, 2] {
            let mut row =
                Row::tokens(0, 128, 0, token_samples_at(0, 128, &[60.0, 61.0, 59.0])).threads(threads).to_json();
            row["samples_ts"] = Value::Array(values.to_vec());
            rows.push(row);
            let mut text =
                Row::text("short", "Hi", 20, text_samples_at(&[50.0, 51.0, 52.0], 20, 30.0)).threads(threads).to_json();
            for (i, v) in values.iter().take(3).enumerate() {
                text["samples"][i]["metrics"]["tokens_per_second"] = v.clone();
                text["samples"][i]["metrics"]["ttft_ms"] = v.clone();
            }
            rows.push(text);
        }
        read_str(&serde_json::to_string(&rows).unwrap()).unwrap()
    }

    #[test]
    fn a_page_of_hostile_values_renders_without_panicking_or_non_finite_coordinates() {
        let lists: Vec<Vec<Value>> = vec![
            vec![],
            vec![json!(60.0)],
            vec![json!(60.0), json!(60.0), json!(60.0)],
            vec![json!(0.0), json!(1.0), json!(2.0)],
            vec![json!(-5.0), json!(1.0), json!(2.0)],
            vec![json!(null), json!(1.0), json!(2.0)],
            vec![json!(1e308), json!(1e308), json!(1e308)],
            vec![json!(f64::MAX), json!(1.0), json!(1.0)],
            vec![json!(1e308), json!(1.0), json!(2.0)],
            vec![json!(1e-308), json!(2e-308), json!(3e-308)],
            vec![json!(5e-324), json!(5e-324), json!(1e-323)],
            vec![json!(59.0), json!(60.0), json!(61.0)],
        ];
        let runs: Vec<Run> = lists.iter().map(|l| hostile_run(l)).collect();
        for a in &runs {
            for b in &runs {
                for threshold in [None, Some(5.0), Some(100.0)] {
                    let options = Options { fail_if_slower: threshold, ..Options::default() };
                    let page = render(&[a.clone(), b.clone()], &options);
                    assert!(page.contains("</html>"));
                    for bad in ["NaN", "=\"inf", "=\"-inf", ",inf", " inf"] {
                        assert!(
                            !page.contains(bad),
                            "{bad} in a page of {:?} and {:?}",
                            a.entries[0].samples,
                            b.entries[0].samples
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_offload_curve_shows_the_layers_of_every_device() {
        let mut rows = Vec::new();
        for (ngl, split) in [(0u32, [31, 0, 0]), (10, [21, 5, 5]), (20, [11, 10, 10])] {
            let mut row = Row::tokens(0, 16, 0, token_samples_at(0, 16, &[40.0, 41.0]))
                .gpu_layers(velollm_core::GpuLayers::Count(ngl))
                .to_json();
            let devices: Vec<Value> = ["CPU", "RPC0", "RPC1"]
                .iter()
                .zip(split)
                .map(|(name, layers)| {
                    json!({"name": name, "backend": if *name == "CPU" { "CPU" } else { "RPC" },
                           "description": if *name == "RPC0" { "127.0.0.1:5001" } else { "" },
                           "layers": layers, "model_buffer_bytes": layers * 3_000_000})
                })
                .collect();
            row["parameters"]["effective"]["devices"] = Value::Array(devices);
            rows.push(row);
        }
        let run = read_str(&serde_json::to_string(&rows).unwrap()).unwrap();
        let page = render(&[run], &Options::default());
        assert!(page.contains("id=\"placement\"") && page.contains("data-chart=\"placement\""));
        assert!(page.contains("ngl 10: RPC0 (127.0.0.1:5001) holds 5 layers, 15.0 MB of weights"));
        assert!(page.contains("ngl 20: CPU holds 11 layers"));
        // Without offload devices (a CPU-only sweep) there is nothing to show.
        let cpu_only: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["parameters"]["effective"]["devices"] = json!([]);
                r
            })
            .collect();
        let page = render(&[read_str(&serde_json::to_string(&cpu_only).unwrap()).unwrap()], &Options::default());
        assert!(!page.contains("id=\"placement\""));
    }
}
