//! Spread statistics over per-iteration values (docs/metrics.md states the formulas).

use serde::{Deserialize, Serialize};

/// Summary of a set of per-iteration values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    /// Sample standard deviation (divisor n − 1); absent for a single value.
    pub stddev: Option<f64>,
    pub min: f64,
    pub max: f64,
    /// 95 % confidence interval of the mean (Student t, n − 1 degrees of freedom); absent for a single value.
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
}

impl Summary {
    /// Summarises `values`; `None` when there are none (a metric never measured is absent, not zero).
    pub fn of(values: &[f64]) -> Option<Summary> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        let (stddev, ci95_low, ci95_high) = if n >= 2 {
            let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let stddev = variance.sqrt();
            let half_width = student_t_975(n - 1) * stddev / (n as f64).sqrt();
            (Some(stddev), Some(mean - half_width), Some(mean + half_width))
        } else {
            (None, None, None)
        };
        Some(Summary { n, mean, median, stddev, min: sorted[0], max: sorted[n - 1], ci95_low, ci95_high })
    }

    /// Coefficient of variation (stddev / mean), when both are defined.
    pub fn relative_stddev(&self) -> Option<f64> {
        self.stddev.filter(|_| self.mean != 0.0).map(|s| s / self.mean)
    }
}

/// The 0.975 quantile of Student's t distribution with `df` degrees of freedom (two-sided 95 %).
///
/// Exact table values (to 3 decimals) for 1–30 degrees of freedom; beyond that the Cornish–Fisher
/// expansion around the normal quantile, which is within 1e-4 of the exact value for df > 30.
pub fn student_t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    assert!(df > 0, "Student t needs at least one degree of freedom");
    if df <= TABLE.len() {
        return TABLE[df - 1];
    }
    let z: f64 = 1.959_963_984_540_054;
    let v = df as f64;
    z + (z.powi(3) + z) / (4.0 * v)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * v * v)
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * v.powi(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn known_values() {
        // Values with a hand-checked answer: mean 5, sample variance 32/7.
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.n, 8);
        assert!(close(s.mean, 5.0, 1e-12));
        assert!(close(s.median, 4.5, 1e-12));
        assert!(close(s.stddev.unwrap(), (32.0f64 / 7.0).sqrt(), 1e-12));
        assert_eq!((s.min, s.max), (2.0, 9.0));
        // t(0.975, 7) = 2.365; half width = 2.365 * 2.13809 / sqrt(8) = 1.78777
        let half = 2.365 * (32.0f64 / 7.0).sqrt() / 8f64.sqrt();
        assert!(close(s.ci95_low.unwrap(), 5.0 - half, 1e-9));
        assert!(close(s.ci95_high.unwrap(), 5.0 + half, 1e-9));
        assert!(close(half, 1.78777, 1e-4));
    }

    #[test]
    fn odd_count_median_and_single_value() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.0);
        assert!(close(s.stddev.unwrap(), 1.0, 1e-12));
        let one = Summary::of(&[7.5]).unwrap();
        assert_eq!((one.mean, one.median, one.min, one.max), (7.5, 7.5, 7.5, 7.5));
        assert_eq!((one.stddev, one.ci95_low, one.ci95_high), (None, None, None));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn student_t_matches_tables() {
        assert_eq!(student_t_975(1), 12.706);
        assert_eq!(student_t_975(4), 2.776);
        // Published values: df 40 → 2.0211, df 60 → 2.0003, df 120 → 1.9799.
        assert!(close(student_t_975(40), 2.0211, 2e-4));
        assert!(close(student_t_975(60), 2.0003, 2e-4));
        assert!(close(student_t_975(120), 1.9799, 2e-4));
        // The expansion joins the table smoothly at 30/31.
        assert!(student_t_975(31) < student_t_975(30));
        assert!(close(student_t_975(31), 2.0395, 2e-4));
    }
}
