//! The arrival process's random numbers: a seeded SplitMix64 stream, exponential and gamma variates. Seeded,
//! so a run's arrival times can be reproduced from the seed its row records.

/// SplitMix64 (Steele, Lea and Flood 2014): small, fast, and good enough for arrival gaps.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller; the second value is dropped for simplicity).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Gamma with shape `k` and scale 1 (Marsaglia and Tsang 2000; for k < 1 boosted by U^(1/k)).
    pub fn gamma(&mut self, k: f64) -> f64 {
        if k < 1.0 {
            return self.gamma(k + 1.0) * self.uniform().powf(1.0 / k);
        }
        let d = k - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// A gap between arrivals at `rate` per second with burstiness `k`: gamma of shape k and scale 1/(k·rate),
    /// whose mean is 1/rate whatever k (k = 1 is the exponential gap of a Poisson process; k < 1 burstier,
    /// k > 1 more regular), as vLLM's benchmark draws them.
    pub fn arrival_gap_s(&mut self, rate: f64, burstiness: f64) -> f64 {
        if burstiness == 1.0 {
            return -self.uniform().ln() / rate;
        }
        self.gamma(burstiness) / (burstiness * rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_and_cv(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn gaps_have_mean_one_over_rate_and_the_gamma_spread() {
        // Gamma(k) gaps have coefficient of variation 1/sqrt(k): 1 for Poisson, 2 for k = 0.25, 0.5 for k = 4.
        for (burstiness, cv_expected) in [(1.0, 1.0), (0.25, 2.0), (4.0, 0.5)] {
            let mut rng = Rng::new(7);
            let gaps: Vec<f64> = (0..200_000).map(|_| rng.arrival_gap_s(4.0, burstiness)).collect();
            let (mean, cv) = mean_and_cv(&gaps);
            assert!((mean - 0.25).abs() < 0.25 * 0.02, "burstiness {burstiness}: mean gap {mean}");
            assert!((cv - cv_expected).abs() < cv_expected * 0.03, "burstiness {burstiness}: cv {cv}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_arrivals() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..5).map(|_| rng.arrival_gap_s(1.0, 1.0)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
