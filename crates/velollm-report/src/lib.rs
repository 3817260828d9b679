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
//! Each section is computed first as data in [`view`] (unit-tested there: which charts, series, points, columns)
//! and only drawn here; lib.rs formats numbers and writes HTML, it decides nothing.
//!
//! The page needs no network and runs no script: the charts are SVG drawn here ([`svg`]), the styles inline.
//! Every data mark carries `data-*` attributes, so a test can count what a browser rendered.

pub mod html;
mod load;
pub mod svg;
pub mod trend;
pub mod view;

use std::fmt::Write;

use velollm_compare::{Selector, Verdict};
use velollm_results::{Run, Status};

use html::escape;
use svg::{
    Band, Bar, BarChart, Change, FailedMark, Forest, Histogram, LineChart, Marker, Point, Series, DASHES, PALETTE,
};
use view::{
    axis_name, file_label, short_name, Backends, ChangeKind, ChangeLine, ComparisonCard, Comparisons, Header,
    Latencies, LatencyCard, Placements, RowTable, SweepChart, Tile, TileValue,
};

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
    /// `velollm report --history`: the history's trends, drawn after the runs.
    pub history: Option<trend::HistoryView>,
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
            history: None,
        }
    }
}

/// The page for `runs` (the first is the base of any comparison).
pub fn render(runs: &[Run], options: &Options) -> String {
    let items = view::items(runs);
    let mut body = String::new();
    // `velollm report --history` alone draws the history only.
    if !runs.is_empty() {
        body.push_str(&tiles(&view::tiles(&items, runs)));
        if runs.len() >= 2 || (options.base_rows.is_some() && options.new_rows.is_some()) {
            let view = view::comparisons(runs, options.base_rows.as_ref(), options.new_rows.as_ref(), &options.ignore);
            body.push_str(&comparisons(&view, options.fail_if_slower));
        }
        body.push_str(&sweeps(&view::sweeps(&items, runs), runs));
        if let Some(view) = view::placements(&items, runs) {
            body.push_str(&placements(&view));
        }
        if let Some(view) = view::backends(&items) {
            body.push_str(&backends(&view));
        }
        if let Some(view) = view::load(&items, runs) {
            body.push_str(&load::section(&view));
        }
        if let Some(view) = view::latencies(&items, runs, options.max_latency_charts) {
            body.push_str(&latencies(&view, options.max_latency_charts));
        }
        body.push_str(&tables(&view::tables(&items, runs)));
    }
    if let Some(history) = &options.history {
        body.push_str(&trend::history_section(history));
    }
    let _ = write!(
        body,
        "<footer>Made by velollm report {}. Rates and statistics as docs/metrics.md defines them; error bars are ± one \
         sample standard deviation; comparisons use Welch's t-test and Fieller's 95 % interval (rows of one interleaved \
         run: a paired t-test on per-round log-ratios). This page loads nothing from the network.</footer>",
        env!("CARGO_PKG_VERSION")
    );
    html::page(&options.title, &header(&view::header(&items, runs), options), &body)
}

fn header(view: &Header, options: &Options) -> String {
    let rows = view.rows;
    let mut out = format!("<h1>{}</h1><div class=\"sub\">", escape(&options.title));
    if view.files.is_empty() {
        if let Some(history) = &options.history {
            let _ = write!(out, "{}</div>", escape(&history.source));
            return out;
        }
    }
    let _ = write!(
        out,
        "{rows} row{} from {} file{} · {}",
        if rows == 1 { "" } else { "s" },
        view.files.len(),
        if view.files.len() == 1 { "" } else { "s" },
        escape(&view.models.join(", "))
    );
    if !view.machines.is_empty() {
        let _ = write!(out, " · {}", escape(&view.machines.join("; ")));
    }
    out.push_str("</div><div class=\"files\">");
    for file in &view.files {
        let role = file.role.map(|r| format!("{r}: ")).unwrap_or_default();
        let _ = write!(
            out,
            "<span class=\"file\" title=\"{}\">{role}{} ({}, {} rows)</span>",
            escape(&file.path),
            escape(&file.label),
            file.tools,
            file.rows
        );
    }
    out.push_str("</div>");
    out
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

fn tiles(view: &[Tile]) -> String {
    let mut out = String::from("<div class=\"tiles\">");
    for t in view {
        let value = match t.value {
            TileValue::Count(n) => n.to_string(),
            TileValue::Measured(v) => svg::short(v),
        };
        out.push_str(&tile(t.what, &value, t.unit, &t.how, t.bad));
    }
    out.push_str("</div>");
    out
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

fn sweeps(charts: &[SweepChart], runs: &[Run]) -> String {
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

/// Layers per device along the layer-offload curve.
fn placements(view: &Placements) -> String {
    let colour = |device: usize| PALETTE[device % PALETTE.len()];
    let chart = BarChart {
        label: "layers per device along the offload curve".into(),
        y_title: "layers".into(),
        groups: view.groups.clone(),
        bars: view
            .bars
            .iter()
            .map(|b| {
                let name = &view.devices[b.device];
                let location = b.location.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
                let weights =
                    b.weight_megabytes.map(|mb| format!(", {} MB of weights", svg::short(mb))).unwrap_or_default();
                Bar {
                    group: b.group,
                    label: name.clone(),
                    color: colour(b.device),
                    value: b.layers,
                    err: None,
                    tooltip: format!("{}: {name}{location} holds {} layers{weights}", view.groups[b.group], b.layers),
                }
            })
            .collect(),
        attrs: vec![("data-chart", "placement".into())],
    };
    let legend_entries: Vec<(String, &str)> =
        view.devices.iter().enumerate().map(|(i, d)| (d.clone(), colour(i))).collect();
    format!(
        "<section id=\"placement\"><h2>Where the layers ran</h2><p class=\"note\">For each load of the sweep, the \
         layers llama.cpp assigned to each device (its own per-layer placement): the CPU, local GPUs and RPC servers \
         (hover for the endpoint and the weights each holds).</p><div class=\"grid\"><div class=\"card\"><h3>Layers \
         per device</h3>{}{}</div></div></section>",
        legend(&legend_entries, false),
        chart.render()
    )
}

fn backends(view: &Backends) -> String {
    let colour = |backend: usize| PALETTE[backend % PALETTE.len()];
    let mut cards = String::new();
    for c in &view.charts {
        let metric = c.metric;
        let bars = c
            .bars
            .iter()
            .map(|b| {
                let (test, backend) = (&c.tests[b.test], &view.backends[b.backend]);
                let of = if b.rows > 1 { format!(", best of {} rows", b.rows) } else { String::new() };
                Bar {
                    group: b.test,
                    label: backend.clone(),
                    color: colour(b.backend),
                    value: b.mean,
                    err: b.stddev,
                    tooltip: format!("{test} on {backend}: {} {} (n={}{of})", svg::short(b.mean), metric.label(), b.n),
                }
            })
            .collect();
        let chart = BarChart {
            label: format!("{} by backend", metric.label()),
            y_title: metric.label().into(),
            groups: c.tests.clone(),
            bars,
            attrs: vec![("data-chart", "backends".into()), ("data-metric", metric.label().into())],
        };
        let legend_entries: Vec<(String, &str)> =
            view.backends.iter().enumerate().map(|(b, n)| (n.clone(), colour(b))).collect();
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
        if view.best_of_several { " Where a backend ran a test several times (a sweep), its best row is shown." } else { "" }
    )
}

fn latencies(view: &Latencies, limit: usize) -> String {
    let cards: String = view.cards.iter().map(latency_card).collect();
    let omitted = if view.omitted > 0 {
        format!(" {} more rows have token timestamps; the first {limit} are shown.", view.omitted)
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

fn latency_card(card: &LatencyCard) -> String {
    let color = PALETTE[card.colour % PALETTE.len()];
    let title = &card.title;
    let max = card.pooled[card.pooled.len() - 1];
    let histogram = Histogram {
        label: format!("{title}: inter-token latency distribution"),
        x_title: "gap between tokens (ms)".into(),
        edges: card.histogram.edges.clone(),
        counts: card.histogram.counts.clone(),
        overflow: card.histogram.overflow,
        markers: vec![
            Marker { label: "p50".into(), value: card.p50 },
            Marker { label: "p90".into(), value: card.p90 },
            Marker { label: "p99".into(), value: card.p99 },
        ],
        color,
        attrs: vec![
            ("data-chart", "latency".into()),
            ("data-row", card.row.to_string()),
            ("data-gaps", card.pooled.len().to_string()),
        ],
    };
    let band = Band {
        label: format!("{title}: gap at each token position"),
        x_title: "token".into(),
        y_title: "gap (ms)".into(),
        values: card.positions.clone(),
        color,
        attrs: vec![("data-chart", "token-positions".into()), ("data-row", card.row.to_string())],
    };
    let ttft = card.ttft_ms.map(|m| format!("TTFT {} ms · ", svg::short(m))).unwrap_or_default();
    format!(
        "<div class=\"card\"><h3>{}</h3><div class=\"meta\">{ttft}{} iterations · {} gaps · p50 {} ms · p90 {} ms · p99 {} ms · max {} ms</div>{}{}</div>",
        escape(title),
        card.iterations,
        card.pooled.len(),
        svg::short(card.p50),
        svg::short(card.p90),
        svg::short(card.p99),
        svg::short(max),
        histogram.render(),
        band.render()
    )
}

fn comparisons(view: &Comparisons, threshold: Option<f64>) -> String {
    let mut out = String::from(
        "<section id=\"compare\"><h2>What changed</h2><p class=\"note\">Every row of a new file matched to the base row \
         that ran the same test (same test, model, backend and parameters). Each line is one metric: the diamond is the \
         change of the mean, the whiskers its 95 % confidence interval (Fieller); green and red are significant at 5 % \
         (Welch's t-test), grey is not. Rows of one interleaved run are compared round by round instead (paired t-test \
         on the log-ratios; the change of the geometric mean and its t interval), which drift between rounds cannot \
         fool. Right of zero is a higher value: better for rates, worse for times.</p>",
    );
    match view {
        Comparisons::BaseError(e) => {
            let _ = write!(out, "<p class=\"error\">--base: {}</p>", escape(e));
        }
        Comparisons::Cards(cards) => {
            for card in cards {
                match card {
                    Ok(card) => out.push_str(&comparison_card(card, threshold)),
                    Err(e) => {
                        let _ = write!(out, "<p class=\"error\">--new: {}</p>", escape(e));
                    }
                }
            }
        }
    }
    out.push_str("</section>");
    out
}

/// The forest plot's line of one change.
fn change_line(line: &ChangeLine) -> Change {
    let who = &line.who;
    match &line.change {
        ChangeKind::NotCompared { detail, why } => Change {
            label: who.clone(),
            detail: detail.to_string(),
            change: 0.0,
            interval: None,
            verdict: "failed".into(),
            tooltip: why.clone(),
        },
        ChangeKind::Measured { metric, base_mean, new_mean, change_percent, interval, p_value, method, verdict } => {
            let class = match verdict {
                Verdict::Faster => "faster",
                Verdict::Slower => "slower",
                Verdict::NoChange => "no_change",
                Verdict::TooFewSamples => "too_few_samples",
                Verdict::DiffersZeroVariance => "differs_zero_variance",
                Verdict::NotComparable => "not_comparable",
            };
            let ci = match interval {
                Some((a, b)) => format!("95 % CI {a:+.1} … {b:+.1} %"),
                None => "no bounded interval".into(),
            };
            Change {
                label: format!("{who} · {metric}"),
                detail: format!(
                    "{change_percent:+.1} % {}",
                    match verdict {
                        Verdict::NoChange => "",
                        Verdict::DiffersZeroVariance => "differs (no spread, no test)",
                        other => other.word(),
                    }
                ),
                change: *change_percent,
                interval: *interval,
                verdict: class.into(),
                tooltip: format!(
                    "{who} · {metric}: {} → {} ({change_percent:+.1} %, {ci}, p = {}, {method}) — {}",
                    svg::short(*base_mean),
                    svg::short(*new_mean),
                    p_value.map_or("-".into(), |p| format!("{p:.3}")),
                    verdict.word()
                ),
            }
        }
    }
}

fn comparison_card(c: &ComparisonCard, threshold: Option<f64>) -> String {
    let mut out = format!(
        "<div class=\"card\" style=\"margin-bottom:16px\"><h3>{} → {}</h3><div class=\"meta\">{} matched · {} only in base · {} only in new</div>",
        escape(&c.base),
        escape(&c.new),
        c.matched,
        c.only_in_base.len(),
        c.only_in_new.len()
    );
    out.push_str("<div class=\"verdicts\">");
    for (word, n) in &c.tally {
        let class = match *word {
            "faster" => "faster",
            "slower" => "slower",
            _ => "",
        };
        let _ = write!(out, "<span><b class=\"{class}\">{n}</b> {}</span>", escape(word));
    }
    out.push_str("</div>");
    if let Some((paired, runs)) = &c.paired {
        let _ = write!(
            out,
            "<p class=\"note\" data-method=\"paired\">{paired} of {} pairs come from one interleaved run ({}) and are compared \
             round by round (paired t-test on log-ratios); the others with Welch's test.</p>",
            c.matched,
            escape(&runs.join(", "))
        );
    }
    for note in &c.method_notes {
        let _ = write!(out, "<p class=\"note\" data-method=\"welch\">{}</p>", escape(note));
    }
    if !c.changes.is_empty() {
        let forest = Forest {
            label: format!("changes from {} to {}", c.base, c.new),
            rows: c.changes.iter().map(change_line).collect(),
            threshold,
            attrs: vec![("data-chart", "compare".into()), ("data-new", c.new.clone())],
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

fn tables(view: &[RowTable]) -> String {
    let mut out = String::from("<section id=\"rows\"><h2>Every row</h2>");
    for table in view {
        let _ = write!(
            out,
            "<p class=\"note\">{} — {}{}</p><table data-table=\"rows\"><thead><tr><th>#</th><th>test</th>",
            escape(&table.path),
            table.tools,
            table.build.as_deref().map(|b| format!(", {}", escape(b))).unwrap_or_default()
        );
        if table.model {
            out.push_str("<th>model</th>");
        }
        if table.backend {
            out.push_str("<th>backend</th>");
        }
        for p in &table.parameters {
            let _ = write!(out, "<th>{}</th>", escape(short_name(p)));
        }
        out.push_str("<th>status</th><th class=\"num\">tok/s</th><th class=\"num\">TTFT ms</th><th class=\"num\">prompt tok/s</th><th class=\"num\">n</th><th>notes</th></tr></thead><tbody>");
        for row in &table.rows {
            let status = match row.status {
                Status::Ok => "ok",
                Status::Incomplete => "incomplete",
                Status::Failed => "failed",
            };
            let _ = write!(out, "<tr class=\"{status}\"><td>{}</td><td>{}</td>", row.row, escape(&row.test));
            if table.model {
                let _ = write!(out, "<td>{}</td>", escape(&row.model));
            }
            if table.backend {
                let _ = write!(out, "<td>{}</td>", escape(&row.backend));
            }
            for value in &row.values {
                match value {
                    Some(value) => {
                        let _ = write!(out, "<td>{}</td>", escape(value));
                    }
                    // Not a value: the row's tool does not record the parameter, so the cell stays empty rather
                    // than show a dash that reads like one.
                    None => out.push_str("<td class=\"absent\" title=\"not recorded by this row\"></td>"),
                }
            }
            let cell = |value: Option<(f64, Option<f64>)>| match value {
                Some((m, Some(sd))) => format!("{} ± {}", svg::short(m), svg::short(sd)),
                Some((m, None)) => svg::short(m),
                None => "–".into(),
            };
            let notes = match &row.error {
                Some(error) => format!("<span class=\"error\">{}</span>", escape(error)),
                None => escape(&row.warnings.join("; ")),
            };
            let _ = write!(
                out,
                "<td><span class=\"status {status}\">{status}</span></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{notes}</td></tr>",
                cell(row.tokens_per_second),
                cell(row.ttft_ms),
                cell(row.prompt_tokens_per_second),
                row.n
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
    use serde_json::{json, Value};

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
    fn a_table_cell_of_a_parameter_the_row_does_not_record_is_empty_not_a_dash() {
        // An Ollama row records no thread count; the llama.cpp rows record two.
        let mut ollama = Row::text("short", "Hi", 20, text_samples_at(&[50.0], 20, 30.0)).backend("ollama").to_json();
        ollama["parameters"]["requested"].as_object_mut().unwrap().remove("n_threads");
        let rows = [
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[90.0])).threads(1).to_json(),
            Row::tokens(0, 16, 0, token_samples_at(0, 16, &[99.0])).threads(2).to_json(),
            ollama,
        ];
        let page = render(&[read_str(&serde_json::to_string(&rows).unwrap()).unwrap()], &Options::default());
        assert!(page.contains("<th>threads</th>"), "{page}");
        assert_eq!(page.matches("<td class=\"absent\" title=\"not recorded by this row\"></td>").count(), 1);
        assert!(!page.contains("<td>-</td>"));
    }

    #[test]
    fn the_offload_curve_shows_the_layers_of_every_device() {
        let rows =
            crate::view::placements::tests::offload_rows(&[(0, [31, 0, 0]), (10, [21, 5, 5]), (20, [11, 10, 10])]);
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
