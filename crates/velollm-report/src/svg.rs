//! The charts, drawn as inline SVG: a line chart over categories (a swept parameter's values), grouped bars,
//! a histogram, and a forest plot of changes with their confidence intervals. Every data mark carries `data-*`
//! attributes (and a `<title>` tooltip), so a test can count what a browser rendered.

use std::fmt::Write;

use crate::html::escape;

/// Categorical colours (Tableau 10), distinguishable in print and for most colour-vision deficiencies.
pub const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
pub const FASTER: &str = "#1a7f37";
pub const SLOWER: &str = "#cf222e";
pub const NEUTRAL: &str = "#8c959f";

const WIDTH: f64 = 560.0;
const AXIS: &str = "#8c959f";
const GRID: &str = "#eaeef2";
const TEXT: &str = "#57606a";

/// Round tick values covering `[low, high]`, about `target` of them (steps of 1, 2 or 5 × 10ⁿ). Always at least
/// two finite, increasing ticks: a range that cannot be divided into round steps (NaN, ±∞, a width that
/// overflows or vanishes at the ends of f64's range) gets two ticks spanning its finite part.
pub fn nice_ticks(low: f64, high: f64, target: usize) -> Vec<f64> {
    let ticks = round_ticks(low, high, target);
    let usable = ticks.len() >= 2
        && ticks.iter().all(|t| t.is_finite())
        && ticks.windows(2).all(|w| w[0] < w[1])
        && ticks[1] - ticks[0] > 0.0;
    if usable {
        return ticks;
    }
    let finite = |v: f64| if v.is_finite() { Some(v) } else { None };
    let (low, high) = match (finite(low), finite(high)) {
        (Some(l), Some(h)) if h > l => (l, h),
        (Some(v), _) | (None, Some(v)) => (v, v),
        (None, None) => (0.0, 1.0),
    };
    if high > low {
        return vec![low, high];
    }
    // One value: from zero to it (or from it to zero), or 0 … 1 at zero.
    if low > 0.0 {
        vec![0.0, low]
    } else if low < 0.0 {
        vec![low, 0.0]
    } else {
        vec![0.0, 1.0]
    }
}

fn round_ticks(low: f64, high: f64, target: usize) -> Vec<f64> {
    let (low, high) = if high > low { (low, high) } else { (low - 1.0, low + 1.0) };
    // The 1-2-5 step nearest the raw step (on a log scale: thresholds √2, √10, √50).
    let raw = (high - low) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let error = raw / magnitude;
    let factor = if error >= 50f64.sqrt() {
        10.0
    } else if error >= 10f64.sqrt() {
        5.0
    } else if error >= 2f64.sqrt() {
        2.0
    } else {
        1.0
    };
    let step = factor * magnitude;
    let start = (low / step).floor() * step;
    let mut ticks = Vec::new();
    let mut v = start;
    while v <= high + step * 0.5 {
        ticks.push(if v.abs() < step * 1e-9 { 0.0 } else { v });
        v += step;
        if ticks.len() > 50 {
            break;
        }
    }
    if ticks.last().is_some_and(|&t| t < high) {
        ticks.push(v);
    }
    ticks
}

/// A tick label: no more decimals than the step needs, thousands as `k`.
pub fn tick_label(value: f64, step: f64) -> String {
    if value.abs() >= 10_000.0 && step >= 1000.0 {
        return format!("{}k", trim(value / 1000.0, step / 1000.0));
    }
    trim(value, step)
}

fn trim(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{value:.decimals$}")
}

/// A number for a tooltip or a label: three significant figures, at most two decimals.
pub fn short(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

struct Frame {
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn plot_width(&self) -> f64 {
        WIDTH - self.left - self.right
    }
    fn plot_height(&self) -> f64 {
        self.height - self.top - self.bottom
    }
    /// The x axis's line at `base` and its title centred under the plot.
    fn x_axis(&self, out: &mut String, base: f64, title: &str) {
        let _ = write!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{base:.1}" y2="{base:.1}" stroke="{AXIS}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12" fill="{TEXT}">{}</text>"#,
            self.left,
            WIDTH - self.right,
            self.left + self.plot_width() / 2.0,
            self.height - 6.0,
            escape(title)
        );
    }
}

fn open_svg(out: &mut String, height: f64, attrs: &[(&str, String)], label: &str) {
    open_svg_wide(out, WIDTH, height, attrs, label);
}

/// A chart `width` units wide that is never drawn larger than that (its text keeps its size).
fn open_svg_wide(out: &mut String, width: f64, height: f64, attrs: &[(&str, String)], label: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {width} {height}" style="max-width:{width}px" role="img" aria-label="{}""#,
        escape(label)
    );
    for (name, value) in attrs {
        let _ = write!(out, r#" {name}="{}""#, escape(value));
    }
    out.push('>');
}

/// A y axis from the ticks, with grid lines and the axis title; returns the value → pixel mapping's range.
fn y_axis(out: &mut String, frame: &Frame, ticks: &[f64], title: &str) -> (f64, f64) {
    let (low, high) = match (ticks.first(), ticks.last()) {
        (Some(&low), Some(&high)) if high > low => (low, high),
        _ => (0.0, 1.0),
    };
    let step = if ticks.len() > 1 { ticks[1] - ticks[0] } else { 1.0 };
    let y = |v: f64| frame.top + frame.plot_height() * (1.0 - (v - low) / (high - low));
    for &t in ticks {
        let py = y(t);
        let _ = write!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{py:.1}" y2="{py:.1}" stroke="{GRID}"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="{TEXT}">{}</text>"#,
            frame.left,
            WIDTH - frame.right,
            frame.left - 6.0,
            py + 4.0,
            tick_label(t, step)
        );
    }
    let _ = write!(
        out,
        r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" font-size="12" fill="{TEXT}">{}</text>"#,
        frame.top + frame.plot_height() / 2.0,
        escape(title)
    );
    (low, high)
}

/// One point of a series.
pub struct Point {
    /// Index into the chart's categories.
    pub x: usize,
    pub y: f64,
    /// Half-height of the error bar (± one standard deviation).
    pub err: Option<f64>,
    pub tooltip: String,
    /// Drawn hollow: the row stopped before all its repetitions.
    pub incomplete: bool,
}

pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// A dash pattern for the line (a second file's series beside the first's), or solid.
    pub dash: Option<&'static str>,
    pub points: Vec<Point>,
}

/// Line styles telling files apart: the first solid, then dashed and dotted.
pub const DASHES: [Option<&str>; 4] = [None, Some("7 4"), Some("2 3"), Some("9 3 2 3")];

/// A row that failed, shown as a cross on the x axis at its category.
pub struct FailedMark {
    pub x: usize,
    pub color: &'static str,
    pub tooltip: String,
}

/// Values (y) against the categories of a parameter (x), one line per series.
pub struct LineChart {
    pub label: String,
    pub x_title: String,
    pub y_title: String,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
    pub failed: Vec<FailedMark>,
    pub attrs: Vec<(&'static str, String)>,
}

impl LineChart {
    pub fn render(&self) -> String {
        let frame = Frame { height: 300.0, left: 58.0, right: 18.0, top: 14.0, bottom: 46.0 };
        let top =
            self.series.iter().flat_map(|s| s.points.iter().map(|p| p.y + p.err.unwrap_or(0.0))).fold(0.0f64, f64::max);
        let ticks = nice_ticks(0.0, if top > 0.0 { (top * 1.05).min(f64::MAX) } else { 1.0 }, 5);
        let mut out = String::new();
        open_svg(&mut out, frame.height, &self.attrs, &self.label);
        let (low, high) = y_axis(&mut out, &frame, &ticks, &self.y_title);
        let y = |v: f64| frame.top + frame.plot_height() * (1.0 - (v - low) / (high - low));
        let n = self.categories.len().max(1);
        let band = frame.plot_width() / n as f64;
        let x = |i: usize| frame.left + band * (i as f64 + 0.5);
        let base = frame.top + frame.plot_height();
        let _ = write!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{base:.1}" y2="{base:.1}" stroke="{AXIS}"/>"#,
            frame.left,
            WIDTH - frame.right
        );
        let every = (n as f64 / 12.0).ceil().max(1.0) as usize;
        for (i, c) in self.categories.iter().enumerate() {
            if i % every == 0 || i + 1 == n {
                let _ = write!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{TEXT}">{}</text>"#,
                    x(i),
                    base + 16.0,
                    escape(c)
                );
            }
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12" fill="{TEXT}">{}</text>"#,
            frame.left + frame.plot_width() / 2.0,
            frame.height - 8.0,
            escape(&self.x_title)
        );
        for series in &self.series {
            // A value that is not a finite number has no place on the chart.
            let mut points: Vec<&Point> = series.points.iter().filter(|p| p.y.is_finite()).collect();
            points.sort_by_key(|p| p.x);
            if points.len() > 1 {
                let path: Vec<String> = points.iter().map(|p| format!("{:.1},{:.1}", x(p.x), y(p.y))).collect();
                let dash = series.dash.map(|d| format!(r#" stroke-dasharray="{d}""#)).unwrap_or_default();
                let _ = write!(
                    out,
                    r#"<polyline class="series-line" fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
                    series.color,
                    path.join(" ")
                );
            }
            for p in points {
                let (px, py) = (x(p.x), y(p.y));
                if let Some(err) = p.err.filter(|e| *e > 0.0) {
                    let (y1, y2) = (y(p.y + err), y((p.y - err).max(low)));
                    let _ = write!(
                        out,
                        r#"<path class="error-bar" d="M{px:.1},{y1:.1}V{y2:.1}M{:.1},{y1:.1}H{:.1}M{:.1},{y2:.1}H{:.1}" stroke="{}" stroke-width="1.2" opacity="0.7"/>"#,
                        px - 4.0,
                        px + 4.0,
                        px - 4.0,
                        px + 4.0,
                        series.color
                    );
                }
                let fill = if p.incomplete { "#fff" } else { series.color };
                let _ = write!(
                    out,
                    r#"<circle class="point{}" cx="{px:.1}" cy="{py:.1}" r="4.5" fill="{fill}" stroke="{}" stroke-width="1.5" data-x="{}" data-y="{}" data-series="{}"><title>{}</title></circle>"#,
                    if p.incomplete { " incomplete" } else { "" },
                    series.color,
                    escape(&self.categories[p.x]),
                    p.y,
                    escape(&series.label),
                    escape(&p.tooltip)
                );
            }
        }
        for f in &self.failed {
            let (px, py) = (x(f.x), base - 7.0);
            let _ = write!(
                out,
                r#"<g class="failed-point" data-x="{}"><title>{}</title><path d="M{:.1},{:.1}L{:.1},{:.1}M{:.1},{:.1}L{:.1},{:.1}" stroke="{SLOWER}" stroke-width="2.5" stroke-linecap="round"/><circle cx="{px:.1}" cy="{py:.1}" r="8" fill="none" stroke="{}" stroke-width="1" stroke-dasharray="2 2"/></g>"#,
                escape(&self.categories[f.x]),
                escape(&f.tooltip),
                px - 4.5,
                py - 4.5,
                px + 4.5,
                py + 4.5,
                px - 4.5,
                py + 4.5,
                px + 4.5,
                py - 4.5,
                f.color
            );
        }
        out.push_str("</svg>");
        out
    }
}

/// One bar of a grouped bar chart.
pub struct Bar {
    pub group: usize,
    pub label: String,
    pub color: &'static str,
    pub value: f64,
    pub err: Option<f64>,
    pub tooltip: String,
}

/// Bars side by side per group (a test), one per member (a backend).
pub struct BarChart {
    pub label: String,
    pub y_title: String,
    pub groups: Vec<String>,
    pub bars: Vec<Bar>,
    pub attrs: Vec<(&'static str, String)>,
}

impl BarChart {
    pub fn render(&self) -> String {
        let frame = Frame { height: 280.0, left: 58.0, right: 18.0, top: 14.0, bottom: 40.0 };
        let top = self.bars.iter().map(|b| b.value + b.err.unwrap_or(0.0)).fold(0.0f64, f64::max);
        let ticks = nice_ticks(0.0, if top > 0.0 { (top * 1.05).min(f64::MAX) } else { 1.0 }, 5);
        let mut out = String::new();
        open_svg(&mut out, frame.height, &self.attrs, &self.label);
        let (low, high) = y_axis(&mut out, &frame, &ticks, &self.y_title);
        let y = |v: f64| frame.top + frame.plot_height() * (1.0 - (v - low) / (high - low));
        let base = frame.top + frame.plot_height();
        let groups = self.groups.len().max(1);
        let band = frame.plot_width() / groups as f64;
        for (g, name) in self.groups.iter().enumerate() {
            let members: Vec<&Bar> = self.bars.iter().filter(|b| b.group == g && b.value.is_finite()).collect();
            // Bars at most 90 units wide, so one group does not become two slabs.
            let inner = (band * 0.72).min(90.0 * members.len() as f64);
            let width = inner / members.len().max(1) as f64;
            let start = frame.left + band * g as f64 + (band - inner) / 2.0;
            for (i, bar) in members.iter().enumerate() {
                let bx = start + width * i as f64;
                let by = y(bar.value);
                let _ = write!(
                    out,
                    r#"<rect class="bar" x="{:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" rx="2" fill="{}" data-group="{}" data-member="{}" data-value="{}"><title>{}</title></rect>"#,
                    bx + 1.0,
                    (width - 2.0).max(1.0),
                    (base - by).max(0.0),
                    bar.color,
                    escape(name),
                    escape(&bar.label),
                    bar.value,
                    escape(&bar.tooltip)
                );
                let cx = bx + width / 2.0;
                if let Some(err) = bar.err.filter(|e| *e > 0.0) {
                    let (y1, y2) = (y(bar.value + err), y((bar.value - err).max(0.0)));
                    let _ = write!(
                        out,
                        r##"<path class="error-bar" d="M{cx:.1},{y1:.1}V{y2:.1}M{:.1},{y1:.1}H{:.1}" stroke="#24292f" stroke-width="1.2"/>"##,
                        cx - 4.0,
                        cx + 4.0
                    );
                }
                let _ = write!(
                    out,
                    r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#24292f">{}</text>"##,
                    (by - 5.0 - if bar.err.is_some() { y(0.0) - y(bar.err.unwrap_or(0.0)) } else { 0.0 }).max(10.0),
                    short(bar.value)
                );
            }
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12" fill="{TEXT}">{}</text>"#,
                frame.left + band * (g as f64 + 0.5),
                base + 18.0,
                escape(name)
            );
        }
        let _ = write!(
            out,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{base:.1}" y2="{base:.1}" stroke="{AXIS}"/>"#,
            frame.left,
            WIDTH - frame.right
        );
        out.push_str("</svg>");
        out
    }
}

/// A vertical marker on a histogram (p50, p90, p99).
pub struct Marker {
    pub label: String,
    pub value: f64,
}

/// Counts of values in equal bins.
pub struct Histogram {
    pub label: String,
    pub x_title: String,
    /// Bin edges: `bins.len() + 1` values.
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
    /// Values beyond the last edge, drawn as a last, hatched bin.
    pub overflow: usize,
    pub markers: Vec<Marker>,
    pub color: &'static str,
    pub attrs: Vec<(&'static str, String)>,
}

impl Histogram {
    pub fn render(&self) -> String {
        let frame = Frame { height: 220.0, left: 46.0, right: 14.0, top: 22.0, bottom: 40.0 };
        let top = self.counts.iter().copied().chain([self.overflow]).max().unwrap_or(1).max(1) as f64;
        let ticks = nice_ticks(0.0, top, 4);
        let mut out = String::new();
        open_svg(&mut out, frame.height, &self.attrs, &self.label);
        let (low, high) = y_axis(&mut out, &frame, &ticks, "tokens");
        let y = |v: f64| frame.top + frame.plot_height() * (1.0 - (v - low) / (high - low));
        let base = frame.top + frame.plot_height();
        let slots = self.counts.len() + usize::from(self.overflow > 0);
        let width = frame.plot_width() / slots.max(1) as f64;
        let (first, last) = match (self.edges.first(), self.edges.last()) {
            (Some(&first), Some(&last)) if last > first => (first, last),
            (Some(&first), _) => (first, first + 1.0),
            _ => (0.0, 1.0),
        };
        let x_of = |v: f64| frame.left + (v - first) / (last - first) * width * self.counts.len() as f64;
        for (i, &count) in self.counts.iter().enumerate() {
            let bx = frame.left + width * i as f64;
            let by = y(count as f64);
            let _ = write!(
                out,
                r#"<rect class="bin" x="{:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}" data-from="{}" data-to="{}" data-count="{count}"><title>{}–{} ms: {count} tokens</title></rect>"#,
                bx + 0.5,
                (width - 1.0).max(0.5),
                base - by,
                self.color,
                self.edges.get(i).copied().unwrap_or(first),
                self.edges.get(i + 1).copied().unwrap_or(last),
                short(self.edges.get(i).copied().unwrap_or(first)),
                short(self.edges.get(i + 1).copied().unwrap_or(last)),
            );
        }
        if self.overflow > 0 {
            let bx = frame.left + width * self.counts.len() as f64;
            let by = y(self.overflow as f64);
            let _ = write!(
                out,
                r#"<rect class="bin overflow" x="{:.1}" y="{by:.1}" width="{:.1}" height="{:.1}" fill="{}" opacity="0.45" data-from="{last}" data-count="{}"><title>over {} ms: {} tokens</title></rect>"#,
                bx + 0.5,
                (width - 1.0).max(0.5),
                base - by,
                self.color,
                self.overflow,
                short(last),
                self.overflow
            );
        }
        let xticks = nice_ticks(first, last, 5);
        let step = if xticks.len() > 1 { xticks[1] - xticks[0] } else { 1.0 };
        for t in xticks.iter().filter(|t| **t >= first && **t <= last) {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{TEXT}">{}</text>"#,
                x_of(*t),
                base + 15.0,
                tick_label(*t, step)
            );
        }
        frame.x_axis(&mut out, base, &self.x_title);
        for (i, m) in self.markers.iter().enumerate() {
            let mx = if m.value > last { frame.left + width * (self.counts.len() as f64 + 0.5) } else { x_of(m.value) };
            // Labels stagger downwards; near the right edge they go left of their line.
            let near_right = mx > frame.left + frame.plot_width() * 0.8;
            let (tx, anchor) = if near_right { (mx - 3.0, "end") } else { (mx + 3.0, "start") };
            let _ = write!(
                out,
                r##"<line class="marker" x1="{mx:.1}" x2="{mx:.1}" y1="{:.1}" y2="{base:.1}" stroke="#24292f" stroke-width="1" stroke-dasharray="3 3" data-marker="{}" data-value="{}"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" fill="#24292f" stroke="#fff" stroke-width="3" paint-order="stroke">{} {}</text>"##,
                frame.top - 8.0,
                escape(&m.label),
                m.value,
                frame.top + 2.0 + 11.0 * i as f64,
                escape(&m.label),
                short(m.value)
            );
        }
        out.push_str("</svg>");
        out
    }
}

/// A line through per-position values with a band from the lowest to the highest (token index → gap).
pub struct Band {
    pub label: String,
    pub x_title: String,
    pub y_title: String,
    /// Per position: (middle, low, high).
    pub values: Vec<(f64, f64, f64)>,
    pub color: &'static str,
    pub attrs: Vec<(&'static str, String)>,
}

impl Band {
    pub fn render(&self) -> String {
        let frame = Frame { height: 220.0, left: 46.0, right: 14.0, top: 22.0, bottom: 40.0 };
        let top = self.values.iter().map(|v| v.2).fold(0.0f64, f64::max);
        let ticks = nice_ticks(0.0, if top > 0.0 { (top * 1.05).min(f64::MAX) } else { 1.0 }, 4);
        let mut out = String::new();
        open_svg(&mut out, frame.height, &self.attrs, &self.label);
        let (low, high) = y_axis(&mut out, &frame, &ticks, &self.y_title);
        let y = |v: f64| frame.top + frame.plot_height() * (1.0 - (v - low) / (high - low));
        let n = self.values.len();
        let x = |i: usize| frame.left + frame.plot_width() * if n > 1 { i as f64 / (n - 1) as f64 } else { 0.5 };
        let base = frame.top + frame.plot_height();
        if n > 0 {
            let upper: Vec<String> = (0..n).map(|i| format!("{:.1},{:.1}", x(i), y(self.values[i].2))).collect();
            let lower: Vec<String> = (0..n).rev().map(|i| format!("{:.1},{:.1}", x(i), y(self.values[i].1))).collect();
            let _ = write!(
                out,
                r#"<polygon class="band" points="{} {}" fill="{}" opacity="0.18"/>"#,
                upper.join(" "),
                lower.join(" "),
                self.color
            );
            let middle: Vec<String> = (0..n).map(|i| format!("{:.1},{:.1}", x(i), y(self.values[i].0))).collect();
            let _ = write!(
                out,
                r#"<polyline class="series-line" fill="none" stroke="{}" stroke-width="1.6" points="{}" data-points="{n}"/>"#,
                self.color,
                middle.join(" ")
            );
        }
        let xticks = nice_ticks(1.0, (n + 1) as f64, 5);
        let step = if xticks.len() > 1 { xticks[1] - xticks[0] } else { 1.0 };
        for t in xticks.iter().filter(|t| **t >= 1.0 && **t <= (n + 1) as f64) {
            // Position i holds the gap before token i + 2 (the first token has no gap).
            let i = (*t as usize).saturating_sub(2).min(n.saturating_sub(1));
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{TEXT}">{}</text>"#,
                x(i),
                base + 15.0,
                tick_label(*t, step)
            );
        }
        frame.x_axis(&mut out, base, &self.x_title);
        out.push_str("</svg>");
        out
    }
}

/// One row of a forest plot: a change in per cent with its interval.
pub struct Change {
    pub label: String,
    pub detail: String,
    pub change: f64,
    pub interval: Option<(f64, f64)>,
    /// `faster`, `slower`, `no_change` or `too_few_samples`.
    pub verdict: String,
    pub tooltip: String,
}

/// Changes in per cent against a zero line, with their 95 % intervals.
pub struct Forest {
    pub label: String,
    pub rows: Vec<Change>,
    /// A threshold drawn as dashed lines at ±value (the `--fail-if-slower` percentage).
    pub threshold: Option<f64>,
    pub attrs: Vec<(&'static str, String)>,
}

impl Forest {
    pub fn render(&self) -> String {
        const FOREST_WIDTH: f64 = 1160.0;
        let row_height = 24.0;
        // Labels left of the plot, as wide as the longest needs (about 6.6 units per character at 12 px).
        let longest = self.rows.iter().map(|r| r.label.chars().count()).max().unwrap_or(10) as f64;
        let left = (longest * 6.6 + 24.0).clamp(160.0, 560.0);
        let (right, top) = (190.0, 30.0);
        let height = top + row_height * self.rows.len().max(1) as f64 + 30.0;
        let plot = FOREST_WIDTH - left - right;
        let extent = self
            .rows
            .iter()
            .flat_map(|r| [r.change.abs(), r.interval.map_or(0.0, |(a, b)| a.abs().max(b.abs()))])
            .chain(self.threshold)
            .fold(1.0f64, f64::max)
            .min(200.0)
            * 1.1;
        let ticks = nice_ticks(-extent, extent, 8);
        let (low, high) = (ticks[0], ticks[ticks.len() - 1]);
        let x = |v: f64| left + (v.clamp(low, high) - low) / (high - low) * plot;
        let mut out = String::new();
        open_svg_wide(&mut out, FOREST_WIDTH, height, &self.attrs, &self.label);
        let bottom = top + row_height * self.rows.len().max(1) as f64;
        for i in (0..self.rows.len()).step_by(2) {
            let _ = write!(
                out,
                r##"<rect x="0" y="{:.1}" width="{FOREST_WIDTH}" height="{row_height}" fill="#f6f8fa"/>"##,
                top + row_height * i as f64
            );
        }
        let step = if ticks.len() > 1 { ticks[1] - ticks[0] } else { 1.0 };
        for &t in &ticks {
            let _ = write!(
                out,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{bottom:.1}" stroke="{}" stroke-width="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{TEXT}">{}%</text>"#,
                x(t),
                x(t),
                top,
                if t == 0.0 { AXIS } else { "#d8dee4" },
                if t == 0.0 { 1.5 } else { 0.6 },
                x(t),
                bottom + 16.0,
                if t > 0.0 { format!("+{}", tick_label(t, step)) } else { tick_label(t, step) }
            );
        }
        if let Some(threshold) = self.threshold {
            for t in [-threshold, threshold] {
                let _ = write!(
                    out,
                    r#"<line class="threshold" x1="{:.1}" x2="{:.1}" y1="{top:.1}" y2="{bottom:.1}" stroke="{SLOWER}" stroke-dasharray="4 3" opacity="0.55"/>"#,
                    x(t),
                    x(t),
                );
            }
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{SLOWER}">±{threshold} % gate</text>"#,
                x(threshold),
                top - 8.0
            );
        }
        let _ = write!(
            out,
            r#"<text x="{left:.1}" y="{:.1}" font-size="11" fill="{TEXT}">◀ lower than the base</text><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="{TEXT}">higher than the base ▶</text>"#,
            top - 8.0,
            left + plot,
            top - 8.0
        );
        for (i, row) in self.rows.iter().enumerate() {
            let cy = top + row_height * (i as f64 + 0.5);
            let color = match row.verdict.as_str() {
                "faster" => FASTER,
                "slower" => SLOWER,
                _ => NEUTRAL,
            };
            let _ = write!(
                out,
                r##"<text x="8" y="{:.1}" font-size="12" fill="#24292f">{}</text><text x="{:.1}" y="{:.1}" font-size="12" fill="{color}" font-weight="600">{}</text>"##,
                cy + 4.0,
                escape(&row.label),
                FOREST_WIDTH - right + 14.0,
                cy + 4.0,
                escape(&row.detail)
            );
            let _ = write!(
                out,
                r#"<g class="change" data-verdict="{}" data-change="{}"><title>{}</title>"#,
                escape(&row.verdict),
                row.change,
                escape(&row.tooltip)
            );
            if row.verdict == "failed" {
                let _ = write!(
                    out,
                    r#"<path d="M{:.1},{:.1}l9,9m0,-9l-9,9" stroke="{SLOWER}" stroke-width="2.2" stroke-linecap="round"/></g>"#,
                    x(0.0) - 4.5,
                    cy - 4.5
                );
                continue;
            }
            if let Some((a, b)) = row.interval {
                let _ = write!(
                    out,
                    r#"<path d="M{:.1},{cy:.1}H{:.1}M{:.1},{:.1}V{:.1}M{:.1},{:.1}V{:.1}" stroke="{color}" stroke-width="2"/>"#,
                    x(a),
                    x(b),
                    x(a),
                    cy - 5.0,
                    cy + 5.0,
                    x(b),
                    cy - 5.0,
                    cy + 5.0
                );
            }
            let _ = write!(
                out,
                r##"<rect x="{:.1}" y="{:.1}" width="9" height="9" transform="rotate(45 {:.1} {cy:.1})" fill="{color}" stroke="#fff" stroke-width="1"/></g>"##,
                x(row.change) - 4.5,
                cy - 4.5,
                x(row.change)
            );
        }
        out.push_str("</svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 63.0, 5), [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]);
        assert_eq!(nice_ticks(0.0, 80.0, 5), [0.0, 20.0, 40.0, 60.0, 80.0]);
        assert_eq!(nice_ticks(0.0, 1050.0, 5), [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0, 1200.0]);
        assert_eq!(nice_ticks(-12.0, 12.0, 6), [-15.0, -10.0, -5.0, 0.0, 5.0, 10.0, 15.0]);
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(20000.0, 5000.0), "20k");
    }

    const HOSTILE: [f64; 14] = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        -1.0,
        1e308,
        -1e308,
        f64::MAX,
        1e-308,
        5e-324,
        1.0,
        63.0,
        -12.0,
    ];

    #[test]
    fn ticks_of_any_range_are_at_least_two_finite_increasing_values() {
        for low in HOSTILE {
            for high in HOSTILE {
                for target in [0, 1, 5, 8] {
                    let ticks = nice_ticks(low, high, target);
                    assert!(ticks.len() >= 2, "{low} {high}: {ticks:?}");
                    assert!(ticks.iter().all(|t| t.is_finite()), "{low} {high}: {ticks:?}");
                    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{low} {high}: {ticks:?}");
                    let _ = tick_label(ticks[0], ticks[1] - ticks[0]);
                }
            }
        }
        assert_eq!(nice_ticks(f64::NAN, f64::NAN, 5), [0.0, 1.0]);
        assert_eq!(nice_ticks(0.0, f64::INFINITY, 5), [0.0, 1.0]);
    }

    #[test]
    fn every_chart_draws_hostile_values_without_panicking() {
        for &v in &HOSTILE {
            for &e in &HOSTILE {
                let point = |x: usize| Point { x, y: v, err: Some(e), tooltip: "t".into(), incomplete: x == 1 };
                let line = LineChart {
                    label: "l".into(),
                    x_title: "x".into(),
                    y_title: "y".into(),
                    categories: vec!["1".into(), "2".into()],
                    series: vec![Series {
                        label: "s".into(),
                        color: PALETTE[0],
                        dash: None,
                        points: vec![point(0), point(1)],
                    }],
                    failed: vec![FailedMark { x: 1, color: PALETTE[1], tooltip: "f".into() }],
                    attrs: vec![],
                }
                .render();
                assert!(line.ends_with("</svg>"));
                let bars = BarChart {
                    label: "b".into(),
                    y_title: "y".into(),
                    groups: vec!["g".into()],
                    bars: vec![Bar {
                        group: 0,
                        label: "m".into(),
                        color: PALETTE[0],
                        value: v,
                        err: Some(e),
                        tooltip: "t".into(),
                    }],
                    attrs: vec![],
                }
                .render();
                assert!(bars.ends_with("</svg>"));
                let histogram = Histogram {
                    label: "h".into(),
                    x_title: "x".into(),
                    edges: vec![v, e],
                    counts: vec![3],
                    overflow: 1,
                    markers: vec![Marker { label: "p50".into(), value: v }],
                    color: PALETTE[0],
                    attrs: vec![],
                }
                .render();
                assert!(histogram.ends_with("</svg>"));
                let band = Band {
                    label: "b".into(),
                    x_title: "x".into(),
                    y_title: "y".into(),
                    values: vec![(v, e, v), (e, v, e)],
                    color: PALETTE[0],
                    attrs: vec![],
                }
                .render();
                assert!(band.ends_with("</svg>"));
                let forest = Forest {
                    label: "f".into(),
                    rows: vec![Change {
                        label: "r".into(),
                        detail: "d".into(),
                        change: v,
                        interval: Some((v, e)),
                        verdict: "faster".into(),
                        tooltip: "t".into(),
                    }],
                    threshold: Some(e.abs()),
                    attrs: vec![],
                }
                .render();
                assert!(forest.ends_with("</svg>"));
            }
        }
        // Empty charts too.
        let empty = Histogram {
            label: "h".into(),
            x_title: "x".into(),
            edges: vec![],
            counts: vec![],
            overflow: 0,
            markers: vec![],
            color: PALETTE[0],
            attrs: vec![],
        };
        assert!(empty.render().ends_with("</svg>"));
        let forest = Forest { label: "f".into(), rows: vec![], threshold: None, attrs: vec![] };
        assert!(forest.render().ends_with("</svg>"));
        let line = LineChart {
            label: "l".into(),
            x_title: "x".into(),
            y_title: "y".into(),
            categories: vec![],
            series: vec![],
            failed: vec![],
            attrs: vec![],
        };
        assert!(line.render().ends_with("</svg>"));
    }
}
