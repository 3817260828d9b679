//! Two independent samples compared: Welch's t-test (unequal variances, Welch–Satterthwaite degrees of
//! freedom) for the verdict, and Fieller's interval for the ratio of the means, with the same degrees of
//! freedom, for the 95 % confidence interval of the change in per cent. Because both use the same statistic,
//! the interval excludes 0 % exactly when the test is significant at 5 %. Two rows of one interleaved run are
//! compared round by round instead: a paired t-test on the log-ratios of their repetitions ([`paired`]).
//! docs/metrics.md states the formulas.

use serde::Serialize;

/// Mean, sample standard deviation and count of one side's samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Moments {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1); absent for a single value.
    pub stddev: Option<f64>,
}

impl Moments {
    /// The mean and sample standard deviation exactly as a result row's statistics compute them.
    pub fn of(values: &[f64]) -> Option<Moments> {
        velollm_core::Summary::of(values).map(|s| Moments { n: s.n, mean: s.mean, stddev: s.stddev })
    }

    /// No spread at all: two or more values, all equal to within rounding (`s ≤ 10⁻¹²·|mean|`).
    pub fn no_spread(&self) -> bool {
        self.stddev.is_some_and(|s| s <= NO_SPREAD * self.mean.abs())
    }

    /// The squared standard error of the mean, `s² / n`.
    fn variance_of_mean(&self) -> Option<f64> {
        // Moments built by hand may say anything: a spread needs two values.
        self.stddev.filter(|_| self.n >= 2).map(|s| s * s / self.n as f64)
    }
}

/// A relative spread at or below this is rounding, not measurement: no test is possible (a sample standard
/// deviation of 10⁻¹⁶ would otherwise make any difference "significant" with p ≈ 0).
pub const NO_SPREAD: f64 = 1e-12;

/// What Welch's test and Fieller's interval say about `new` against `base`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Welch {
    /// `(mean_new − mean_base) / √(s²_new/n_new + s²_base/n_base)`.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// 95 % confidence interval of `mean_new / mean_base − 1`, in per cent; absent when it is unbounded (the
    /// base mean is not itself distinguishable from zero).
    pub ci95_percent: Option<(f64, f64)>,
}

/// Welch's test and Fieller's interval; `None` when either side has fewer than two samples, when neither side
/// has any spread (there is nothing to test with: the caller says whether the means differ), or when the
/// values are so extreme that the statistic is not a finite number.
pub fn welch(base: &Moments, new: &Moments) -> Option<Welch> {
    let (vb, vn) = (base.variance_of_mean()?, new.variance_of_mean()?);
    let (b, a) = (base.mean, new.mean);
    let se2 = vb + vn;
    if (base.no_spread() && new.no_spread()) || se2 == 0.0 || !se2.is_finite() || !a.is_finite() || !b.is_finite() {
        return None;
    }
    let t = (a - b) / se2.sqrt();
    let df = welch_satterthwaite(vb, base.n, vn, new.n);
    if !t.is_finite() || !df.is_finite() || df <= 0.0 {
        return None;
    }
    let p_value = two_sided_p(t, df);
    let q = t_quantile_975(df);
    let ci = fieller(a, vn, b, vb, q).filter(|(low, high)| low.is_finite() && high.is_finite());
    Some(Welch { t, df, p_value, ci95_percent: ci })
}

/// The statistic for "the ratio of the means is `rho`": `T(ρ) = (ȳ − ρx̄) / √(v_y + ρ²v_x)`, with Welch's
/// degrees of freedom (those of the test and of Fieller's interval, so the gate agrees with the interval).
pub fn welch_ratio_t(base: &Moments, new: &Moments, rho: f64) -> Option<(f64, f64)> {
    let test = welch(base, new)?;
    let (vb, vn) = (base.variance_of_mean()?, new.variance_of_mean()?);
    let t = (new.mean - rho * base.mean) / (vn + rho * rho * vb).sqrt();
    t.is_finite().then_some((t, test.df))
}

/// A paired comparison: repetition `i` of the base and of the new row were measured in the same round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Paired {
    /// Rounds compared (pairs).
    pub n: usize,
    /// Mean `d̄` of the log-ratios `dᵢ = ln(newᵢ / baseᵢ)`.
    pub mean_log_ratio: f64,
    /// Their sample standard deviation `s_d` (n − 1).
    pub sd_log_ratio: f64,
    /// `d̄ / (s_d / √n)`.
    pub t: f64,
    /// `n − 1`.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `(exp(d̄) − 1) · 100`: the change of the geometric mean, in per cent.
    pub change_percent: f64,
    /// `(exp(d̄ ∓ q·s_d/√n) − 1) · 100` with `q = t₀.₉₇₅,ₙ₋₁`.
    pub ci95_percent: (f64, f64),
}

/// The log-ratios `ln(newᵢ / baseᵢ)` of paired values, and their mean and sample standard deviation; `None`
/// with fewer than two pairs, a value that is not positive and finite, or a non-finite result.
pub fn log_ratio_moments(base: &[f64], new: &[f64]) -> Option<(usize, f64, f64)> {
    if base.len() != new.len() || base.len() < 2 {
        return None;
    }
    let valid = |v: &f64| v.is_finite() && *v > 0.0;
    if !base.iter().chain(new).all(valid) {
        return None;
    }
    let d: Vec<f64> = base.iter().zip(new).map(|(b, a)| a.ln() - b.ln()).collect();
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n as f64;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    (mean.is_finite() && sd.is_finite()).then_some((n, mean, sd))
}

/// The paired t-test on log-ratios; `None` where [`log_ratio_moments`] is, when every round has the same
/// log-ratio to within rounding (`s_d ≤ 10⁻¹²`: nothing to test with), or when the change is too extreme to be a finite number.
pub fn paired(base: &[f64], new: &[f64]) -> Option<Paired> {
    let (n, mean, sd) = log_ratio_moments(base, new)?;
    if sd <= NO_SPREAD {
        return None;
    }
    let se = sd / (n as f64).sqrt();
    let t = mean / se;
    let df = (n - 1) as f64;
    if !t.is_finite() {
        return None;
    }
    let q = t_quantile_975(df);
    let percent = |x: f64| x.exp_m1() * 100.0;
    let (change, low, high) = (percent(mean), percent(mean - q * se), percent(mean + q * se));
    if !(change.is_finite() && low.is_finite() && high.is_finite()) {
        return None;
    }
    Some(Paired {
        n,
        mean_log_ratio: mean,
        sd_log_ratio: sd,
        t,
        df,
        p_value: two_sided_p(t, df),
        change_percent: change,
        ci95_percent: (low, high),
    })
}

/// `P(T_ν ≤ t)` for Student's t with `df` degrees of freedom.
pub fn student_cdf(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return f64::NAN;
    }
    let tail = two_sided_p(t, df) / 2.0;
    if t < 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// `(v₁ + v₂)² / (v₁²/(n₁ − 1) + v₂²/(n₂ − 1))` for squared standard errors `vᵢ` of samples of size `nᵢ`.
pub fn welch_satterthwaite(v1: f64, n1: usize, v2: f64, n2: usize) -> f64 {
    let denominator = v1 * v1 / (n1 - 1) as f64 + v2 * v2 / (n2 - 1) as f64;
    (v1 + v2).powi(2) / denominator
}

/// Fieller's interval for `a/b` (independent estimates with squared standard errors `va`, `vb`, critical value
/// `q`), as the per-cent change `(ρ − 1)·100`: the `ρ` with `(a − ρb)² ≤ q²(va + ρ²vb)`.
fn fieller(a: f64, va: f64, b: f64, vb: f64, q: f64) -> Option<(f64, f64)> {
    let q2 = q * q;
    let denominator = b * b - q2 * vb;
    if denominator <= 0.0 {
        return None;
    }
    let discriminant = a * a * vb + b * b * va - q2 * va * vb;
    let root = q * discriminant.max(0.0).sqrt();
    let low = (a * b - root) / denominator;
    let high = (a * b + root) / denominator;
    Some(((low - 1.0) * 100.0, (high - 1.0) * 100.0))
}

/// Two-sided p-value of Student's t with `df` degrees of freedom: `P(|T| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2)`.
pub fn two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return 0.0;
    }
    regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// The 0.975 quantile of Student's t for any positive (also fractional) `df`, by bisection on [`two_sided_p`].
pub fn t_quantile_975(df: f64) -> f64 {
    let mut high = 2.0;
    while two_sided_p(high, df) > 0.05 && high < 1e12 {
        high *= 2.0;
    }
    let mut low = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        if two_sided_p(mid, df) > 0.05 {
            low = mid;
        } else {
            high = mid;
        }
        if high - low <= 1e-12 * high {
            break;
        }
    }
    0.5 * (low + high)
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, nine coefficients; relative error below 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function `I_x(a, b)`, from its continued fraction (evaluated with Lentz's
/// method), using the symmetry `I_x(a, b) = 1 − I_{1−x}(b, a)` where the fraction converges faster.
pub fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - (a + b) * x / (a + 1.0));
    let mut h = d;
    for m in 1..=500 {
        let m = m as f64;
        // Even step: m(b − m)x / ((a + 2m − 1)(a + 2m)).
        let even = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 / guard(1.0 + even * d);
        c = guard(1.0 + even / c);
        h *= d * c;
        // Odd step: −(a + m)(a + b + m)x / ((a + 2m)(a + 2m + 1)).
        let odd = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 / guard(1.0 + odd * d);
        c = guard(1.0 + odd / c);
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn student_t_has_its_closed_forms() {
        // df = 1 (Cauchy): p = 1 − 2/π·atan(t); df = 2: p = 1 − t/√(t² + 2).
        for t in [0.1, 0.5, 1.0, 2.0, 5.0, 30.0] {
            let cauchy = 1.0 - 2.0 / std::f64::consts::PI * f64::atan(t);
            assert!(close(two_sided_p(t, 1.0), cauchy, 1e-12), "df 1, t {t}");
            let two = 1.0 - t / (t * t + 2.0).sqrt();
            assert!(close(two_sided_p(t, 2.0), two, 1e-12), "df 2, t {t}");
        }
        assert_eq!(two_sided_p(0.0, 7.0), 1.0);
        assert_eq!(two_sided_p(f64::INFINITY, 7.0), 0.0);
    }

    #[test]
    fn quantiles_match_the_tables_and_core() {
        assert!(close(t_quantile_975(1.0), 12.7062, 1e-4));
        assert!(close(t_quantile_975(4.0), 2.7764, 1e-4));
        assert!(close(t_quantile_975(10.0), 2.2281, 1e-4));
        assert!(close(t_quantile_975(1e6), 1.95997, 1e-4));
        for df in 1..=60 {
            let core = velollm_core::student_t_975(df);
            assert!(close(t_quantile_975(df as f64), core, 6e-4), "df {df}");
        }
        // Fractional degrees of freedom lie between their neighbours.
        let q = t_quantile_975(5.5);
        assert!(q < t_quantile_975(5.0) && q > t_quantile_975(6.0));
        assert!(close(two_sided_p(q, 5.5), 0.05, 1e-10));
    }

    #[test]
    fn welch_by_hand() {
        // a = 1..5 (mean 3, s² 2.5), b = 2,4,…,10 (mean 6, s² 10): v = 0.5 and 2, t = 3/√2.5,
        // df = 2.5² / (0.5²/4 + 2²/4) = 5.882…
        let base = Moments::of(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let new = Moments::of(&[2.0, 4.0, 6.0, 8.0, 10.0]).unwrap();
        let w = welch(&base, &new).unwrap();
        assert!(close(w.t, 3.0 / 2.5f64.sqrt(), 1e-12));
        assert!(close(w.df, 6.25 / 1.0625, 1e-12));
        // Published value for t = 1.8974, df = 5.88: p ≈ 0.1076.
        assert!(close(w.p_value, 0.1076, 5e-4), "{}", w.p_value);
        let (low, high) = w.ci95_percent.unwrap();
        assert!(low < 0.0 && high > 0.0, "not significant, so the interval holds 0 %: {low} … {high}");
    }

    #[test]
    fn the_interval_excludes_zero_exactly_when_the_test_is_significant() {
        let base = [100.0, 101.0, 99.0, 100.5, 99.5];
        for shift in [0.0, 0.5, 1.0, 1.2, 1.5, 2.0, 5.0, -1.3, -10.0] {
            let new: Vec<f64> = base.iter().map(|v| v + shift + (v - 100.0) * 0.3).collect();
            let w = welch(&Moments::of(&base).unwrap(), &Moments::of(&new).unwrap()).unwrap();
            let (low, high) = w.ci95_percent.unwrap();
            let excludes_zero = low > 0.0 || high < 0.0;
            assert_eq!(excludes_zero, w.p_value < 0.05, "shift {shift}: p {} CI {low} … {high}", w.p_value);
        }
    }

    #[test]
    fn fieller_is_the_ratio_interval() {
        // Tight samples around 100 and 90: the change is −10 % and the interval is narrow around it.
        let base = Moments { n: 10, mean: 100.0, stddev: Some(1.0) };
        let new = Moments { n: 10, mean: 90.0, stddev: Some(1.0) };
        let w = welch(&base, &new).unwrap();
        let (low, high) = w.ci95_percent.unwrap();
        assert!(low < -10.0 && high > -10.0 && high - low < 2.5, "{low} … {high}");
        assert!(w.p_value < 1e-10);
        // A base mean indistinguishable from zero gives no bounded interval.
        let base = Moments { n: 3, mean: 1.0, stddev: Some(5.0) };
        assert!(welch(&base, &new).unwrap().ci95_percent.is_none());
    }

    #[test]
    fn degenerate_samples() {
        let one = Moments::of(&[5.0]).unwrap();
        let two = Moments::of(&[5.0, 6.0]).unwrap();
        assert!(welch(&one, &two).is_none(), "a single sample has no spread to test with");
        // No spread on either side: there is nothing to test with (the caller says whether the means differ).
        let flat = Moments::of(&[5.0, 5.0]).unwrap();
        assert!(welch(&flat, &flat).is_none());
        let higher = Moments::of(&[6.0, 6.0]).unwrap();
        assert!(welch(&flat, &higher).is_none());
        // Spread on one side only: Welch's test still works, with that side's n − 1 degrees of freedom.
        let spread = Moments::of(&[5.8, 6.0, 6.2]).unwrap();
        let w = welch(&flat, &spread).unwrap();
        assert!(close(w.df, 2.0, 1e-12), "{}", w.df);
        assert!(close(w.t, 1.0 / (0.04f64 / 3.0).sqrt(), 1e-9));
        assert!(w.p_value > 0.0 && w.p_value < 0.05, "{}", w.p_value);
        let (low, high) = w.ci95_percent.unwrap();
        assert!(low > 0.0 && low < 20.0 && high > 20.0, "{low} … {high}");
        let w = welch(&spread, &flat).unwrap();
        assert!(close(w.df, 2.0, 1e-12) && w.t < 0.0);
    }

    #[test]
    fn paired_by_hand() {
        // Log-ratios ln 1.1, ln 1.2, ln 1.0: d̄ = ln(1.32)/3, the geometric mean's change is 1.32^(1/3) − 1.
        let base = [10.0, 10.0, 20.0];
        let new = [11.0, 12.0, 20.0];
        let p = paired(&base, &new).unwrap();
        let d = [1.1f64.ln(), 1.2f64.ln(), 0.0];
        let mean = d.iter().sum::<f64>() / 3.0;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!(close(p.mean_log_ratio, mean, 1e-15) && close(p.sd_log_ratio, sd, 1e-15));
        assert!(close(p.t, mean / (sd / 3f64.sqrt()), 1e-12));
        assert_eq!(p.df, 2.0);
        assert!(close(p.change_percent, (1.32f64.powf(1.0 / 3.0) - 1.0) * 100.0, 1e-10));
        let half = t_quantile_975(2.0) * sd / 3f64.sqrt();
        assert!(close(p.ci95_percent.0, ((mean - half).exp() - 1.0) * 100.0, 1e-9));
        assert!(close(p.ci95_percent.1, ((mean + half).exp() - 1.0) * 100.0, 1e-9));
        assert!(close(p.p_value, two_sided_p(p.t, 2.0), 0.0));
        // The interval excludes 0 % exactly when p < 0.05.
        for k in 0..60 {
            let new: Vec<f64> =
                base.iter().enumerate().map(|(i, b)| b * (1.0 + 0.002 * k as f64 + 0.01 * i as f64)).collect();
            let p = paired(&base, &new).unwrap();
            assert_eq!(p.ci95_percent.0 > 0.0 || p.ci95_percent.1 < 0.0, p.p_value < 0.05, "{p:?}");
        }
        // The same ratio in every round: no spread, no test.
        assert!(paired(&base, &[20.0, 20.0, 40.0]).is_none());
        assert!(paired(&[1.0], &[2.0]).is_none());
        assert!(paired(&[1.0, 2.0], &[2.0]).is_none());
    }

    #[test]
    fn student_cdf_is_symmetric() {
        for df in [1.0, 2.5, 9.0, 1e4] {
            for t in [-40.0, -2.0, -0.3, 0.0, 0.3, 2.0, 40.0] {
                assert!(close(student_cdf(t, df) + student_cdf(-t, df), 1.0, 1e-12), "df {df} t {t}");
            }
            assert!(close(student_cdf(-t_quantile_975(df), df), 0.025, 1e-9));
        }
        assert_eq!(student_cdf(f64::NEG_INFINITY, 3.0), 0.0);
        assert_eq!(student_cdf(f64::INFINITY, 3.0), 1.0);
    }

    /// Every hostile value on either side: no panic, and every number that comes out is finite.
    #[test]
    fn hostile_values_never_panic_nor_leak_non_finite_numbers() {
        let hostile = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            -1.0,
            1e308,
            -1e308,
            1e-308,
            f64::MIN_POSITIVE / 4.0,
            f64::MAX,
            1.0,
        ];
        let mut lists: Vec<Vec<f64>> = vec![vec![], vec![1.0], vec![1.0, 1.0], vec![1.0, 2.0, 3.0]];
        for &h in &hostile {
            lists.push(vec![h]);
            lists.push(vec![h, h]);
            lists.push(vec![h, 1.0, 2.0]);
            lists.push(vec![h, 1e308, 1e308]);
            lists.push(vec![h, 1e-308, 2e-308]);
        }
        let finite = |x: f64| x.is_finite();
        for a in &lists {
            for b in &lists {
                if let (Some(ma), Some(mb)) = (Moments::of(a), Moments::of(b)) {
                    if let Some(w) = welch(&ma, &mb) {
                        assert!(finite(w.t) && finite(w.df) && (0.0..=1.0).contains(&w.p_value), "{a:?} {b:?} {w:?}");
                        if let Some((low, high)) = w.ci95_percent {
                            assert!(finite(low) && finite(high), "{a:?} {b:?}");
                        }
                    }
                    if let Some((t, df)) = welch_ratio_t(&ma, &mb, 0.95) {
                        assert!(finite(t) && finite(df));
                    }
                }
                if a.len() == b.len() {
                    if let Some(p) = paired(a, b) {
                        assert!(finite(p.t) && (0.0..=1.0).contains(&p.p_value), "{a:?} {b:?} {p:?}");
                        assert!(finite(p.change_percent) && finite(p.ci95_percent.0) && finite(p.ci95_percent.1));
                    }
                }
            }
        }
        // Moments built by hand that no sample list gives: no test, no panic.
        for (n, stddev) in [(0, Some(1.0)), (1, Some(1.0)), (0, None), (2, Some(f64::NAN)), (3, Some(-1.0))] {
            for mean in [f64::NAN, 0.0, 1.0, f64::INFINITY] {
                let odd = Moments { n, mean, stddev };
                let fine = Moments::of(&[1.0, 2.0, 3.0]).unwrap();
                for w in [welch(&odd, &fine), welch(&fine, &odd), welch(&odd, &odd)].into_iter().flatten() {
                    assert!(w.t.is_finite() && w.df.is_finite() && (0.0..=1.0).contains(&w.p_value), "{odd:?} {w:?}");
                }
            }
        }
        for df in [0.5, 1.0, 1e-3, 1e9] {
            for t in hostile {
                let p = two_sided_p(t, df);
                assert!(p.is_nan() == t.is_nan(), "t {t} df {df}: {p}");
            }
        }
    }
}
