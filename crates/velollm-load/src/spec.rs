//! Load profiles as users give them, and their checks: every bad value is one line naming the flag and the
//! allowed range, before anything is sent.

use velollm_core::{LoadProfile, LoadShape, LoadStop, Slo};

/// The most users (closed loop) or requests in flight (open loop) one velollm process drives: one thread
/// each, so the bound keeps an absurd value from exhausting the machine running the benchmark.
pub const MAX_CONCURRENCY: u32 = 4096;
/// Arrival rates above this are refused (the generator's own cost per request is microseconds: docs/performance.md).
pub const MAX_RATE: f64 = 100_000.0;
pub const MAX_REQUESTS: u64 = 1_000_000;
pub const MAX_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoadSpecError {
    #[error("invalid {flag} value '{value}': {reason}")]
    Invalid { flag: &'static str, value: String, reason: String },
}

fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> LoadSpecError {
    LoadSpecError::Invalid { flag, value: value.to_string(), reason: reason.into() }
}

/// Everything the load flags asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// `--concurrency`: closed-loop users, one profile each.
    pub concurrency: Vec<u32>,
    /// `--request-rate`: open-loop arrival rates (`None` = inf), one profile each.
    pub rates: Vec<Option<f64>>,
    /// `--burstiness`: gamma shape of the arrival gaps (1 = Poisson).
    pub burstiness: f64,
    pub stop: LoadStop,
    /// `--warmup`: untimed requests before each profile's timed ones.
    pub warmup_requests: u32,
    /// `--max-concurrency`: open loop's cap on requests in flight.
    pub max_concurrency: u32,
    pub slo: Option<Slo>,
    /// Fraction of requests that must meet the SLO for a rate to "meet the SLO" (`--sweep`'s verdict).
    pub slo_attainment: f64,
    /// `--sweep`: how many rates between one-at-a-time and flat-out throughput.
    pub sweep: Option<u32>,
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            concurrency: Vec::new(),
            rates: Vec::new(),
            burstiness: 1.0,
            stop: LoadStop::Requests(DEFAULT_REQUESTS),
            warmup_requests: 1,
            max_concurrency: 256,
            slo: None,
            slo_attainment: 0.9,
            sweep: None,
            seed: 0,
        }
    }
}

/// Timed requests per profile without `--requests` or `--duration`.
pub const DEFAULT_REQUESTS: u64 = 32;

impl LoadOptions {
    /// Whether any load flag asked for a load run.
    pub fn is_active(&self) -> bool {
        !self.concurrency.is_empty() || !self.rates.is_empty() || self.sweep.is_some()
    }

    /// The profiles in the order they run: closed loops by concurrency, then open loops by rate.
    pub fn profiles(&self) -> Vec<LoadProfile> {
        let closed = self.concurrency.iter().map(|&concurrency| LoadShape::Closed { concurrency });
        let open = self.rates.iter().map(|&rate| LoadShape::Open { rate, burstiness: self.burstiness });
        closed.chain(open).map(|shape| self.profile(shape)).collect()
    }

    /// A profile of this run's stop rule, warm-up and seed.
    pub fn profile(&self, shape: LoadShape) -> LoadProfile {
        LoadProfile {
            shape,
            stop: self.stop,
            warmup_requests: self.warmup_requests,
            max_concurrency: self.max_concurrency,
            seed: self.seed,
        }
    }

    /// Every value within its range (the parsers check the syntax).
    pub fn validate(&self) -> Result<(), LoadSpecError> {
        for &c in &self.concurrency {
            if c == 0 || c > MAX_CONCURRENCY {
                return Err(invalid("--concurrency", &c.to_string(), format!("must be 1..={MAX_CONCURRENCY}")));
            }
        }
        if self.max_concurrency == 0 || self.max_concurrency > MAX_CONCURRENCY {
            return Err(invalid(
                "--max-concurrency",
                &self.max_concurrency.to_string(),
                format!("must be 1..={MAX_CONCURRENCY}"),
            ));
        }
        if !(self.burstiness.is_finite() && self.burstiness > 0.0 && self.burstiness <= 1000.0) {
            return Err(invalid(
                "--burstiness",
                &self.burstiness.to_string(),
                "must be above 0 and at most 1000 (1 = Poisson)",
            ));
        }
        match self.stop {
            LoadStop::Requests(n) if n == 0 || n > MAX_REQUESTS => {
                return Err(invalid("--requests", &n.to_string(), format!("must be 1..={MAX_REQUESTS}")))
            }
            LoadStop::DurationS(s) if !(s.is_finite() && s > 0.0 && s <= MAX_DURATION_S) => {
                return Err(invalid("--duration", &s.to_string(), "must be above 0 and at most 7 days"))
            }
            _ => {}
        }
        if !(self.slo_attainment > 0.0 && self.slo_attainment <= 1.0) {
            return Err(invalid("--slo-attainment", &self.slo_attainment.to_string(), "must be above 0 and at most 1"));
        }
        if let Some(k) = self.sweep {
            if k == 0 || k > 100 {
                return Err(invalid("--sweep", &k.to_string(), "the number of rates between must be 1..=100"));
            }
        }
        Ok(())
    }
}

/// `--request-rate 1,2.5,inf`: positive rates in requests per second, or `inf` (every request at once).
pub fn parse_rates(text: &str) -> Result<Vec<Option<f64>>, LoadSpecError> {
    let flag = "--request-rate";
    let mut rates = Vec::new();
    for item in text.split(',').map(str::trim) {
        if item.eq_ignore_ascii_case("inf") {
            rates.push(None);
            continue;
        }
        let rate: f64 =
            item.parse().map_err(|_| invalid(flag, item, "expected a number of requests per second or inf"))?;
        if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
            return Err(invalid(flag, item, format!("must be above 0 and at most {MAX_RATE} requests/s, or inf")));
        }
        rates.push(Some(rate));
    }
    Ok(rates)
}

/// `500ms`, `2s`, `1.5s`, `250` (milliseconds) → milliseconds.
pub fn parse_duration_ms(flag: &'static str, text: &str) -> Result<f64, LoadSpecError> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (text, 1.0)
    };
    let value: f64 =
        number.trim().parse().map_err(|_| invalid(flag, text, "expected a time such as 500ms, 2s or 1m"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(invalid(flag, text, "must be a positive time"));
    }
    Ok(value * scale)
}

/// `--slo ttft=500ms,tpot=50ms,e2e=10s`: bounds a request must meet to count towards goodput.
pub fn parse_slo(text: &str) -> Result<Slo, LoadSpecError> {
    let flag = "--slo";
    let mut slo = Slo::default();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) =
            item.split_once('=').ok_or_else(|| invalid(flag, item, "expected KEY=TIME, e.g. ttft=500ms"))?;
        let ms = parse_duration_ms(flag, value)?;
        let slot = match key.trim() {
            "ttft" => &mut slo.ttft_ms,
            "tpot" => &mut slo.tpot_ms,
            "e2e" | "e2el" => &mut slo.e2e_ms,
            other => return Err(invalid(flag, other, "known bounds are ttft, tpot and e2e")),
        };
        *slot = Some(ms);
    }
    if slo == Slo::default() {
        return Err(invalid(flag, text, "give at least one bound, e.g. ttft=500ms"));
    }
    Ok(slo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_inf() {
        assert_eq!(parse_rates("1, 2.5,inf").unwrap(), vec![Some(1.0), Some(2.5), None]);
        assert!(parse_rates("0").is_err());
        assert!(parse_rates("-1").is_err());
        assert!(parse_rates("1e9").unwrap_err().to_string().contains("at most"));
        assert!(parse_rates("nan").is_err());
        assert!(parse_rates("fast").unwrap_err().to_string().starts_with("invalid --request-rate value 'fast'"));
    }

    #[test]
    fn slo_bounds_in_any_unit() {
        let slo = parse_slo("ttft=500ms,tpot=50ms,e2e=2s").unwrap();
        assert_eq!(slo, Slo { ttft_ms: Some(500.0), tpot_ms: Some(50.0), e2e_ms: Some(2000.0) });
        assert_eq!(parse_slo("e2e=1.5s").unwrap().e2e_ms, Some(1500.0));
        assert!(parse_slo("ttft").is_err());
        assert!(parse_slo("latency=1s").unwrap_err().to_string().contains("ttft, tpot and e2e"));
        assert!(parse_slo("ttft=-1ms").is_err());
        assert!(parse_slo("").is_err());
    }

    #[test]
    fn absurd_values_are_refused_with_the_flag() {
        let mut options = LoadOptions { concurrency: vec![1, 100_000], ..LoadOptions::default() };
        assert!(options.validate().unwrap_err().to_string().contains("--concurrency"));
        options.concurrency = vec![0];
        assert!(options.validate().is_err());
        options.concurrency = vec![4];
        assert!(options.validate().is_ok());
        options.stop = LoadStop::Requests(0);
        assert!(options.validate().unwrap_err().to_string().contains("--requests"));
        options.stop = LoadStop::DurationS(f64::INFINITY);
        assert!(options.validate().unwrap_err().to_string().contains("--duration"));
        options.stop = LoadStop::DurationS(2.0);
        options.burstiness = 0.0;
        assert!(options.validate().unwrap_err().to_string().contains("--burstiness"));
    }

    #[test]
    fn profiles_closed_then_open_with_labels() {
        let options = LoadOptions { concurrency: vec![1, 4], rates: vec![Some(2.5), None], ..LoadOptions::default() };
        let labels: Vec<String> = options.profiles().iter().map(LoadProfile::label).collect();
        assert_eq!(labels, ["c1", "c4", "rate2.5", "rate-inf"]);
        assert!(options.is_active());
        assert!(!LoadOptions::default().is_active());
    }
}
