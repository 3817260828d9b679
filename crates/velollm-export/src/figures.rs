//! How a figure is written in text, shared by the console view and the markdown table (which the console's
//! sweep table reuses): kept apart so that neither module imports the other both ways.

use velollm_core::Summary;

/// `mean ± sd unit`, or `n/a`.
pub fn mean_pm(summary: Option<&Summary>, unit: &str) -> String {
    match summary {
        Some(s) => match s.stddev {
            Some(sd) => format!("{:.1} ± {:.1}{unit}", s.mean, sd),
            None => format!("{:.1}{unit}", s.mean),
        },
        None => "n/a".to_string(),
    }
}
