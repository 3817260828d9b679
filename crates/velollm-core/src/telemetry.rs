//! Telemetry recorded around timed iterations: GPU energy, power, VRAM, temperature, clocks and throttle reasons
//! (NVML), and the process's peak resident memory (any machine). docs/metrics.md states the formulas.
//!
//! `velollm-hw`'s sampler produces one [`IterationTelemetry`] per timed iteration; [`RowTelemetry::from_iterations`]
//! condenses them for a result row. Model load and warm-up are outside every iteration, so they are in none of
//! these figures. Sample times are nanoseconds since the iteration's own start, the origin of the row's token
//! timestamps, so samples and tokens line up.

use serde::{Deserialize, Serialize};

/// One reading of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// Nanoseconds since the iteration's start (negative for a reading taken just before it).
    pub time_ns: i64,
    pub vram_used_bytes: Option<u64>,
    /// `nvmlDeviceGetPowerUsage` (on recent GPUs a one-second moving average, so short peaks are smoothed).
    pub power_watts: Option<f64>,
    pub temperature_c: Option<u32>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    /// NVML's clock throttle reason bits (`nvmlDeviceGetCurrentClocksThrottleReasons`).
    pub throttle_reasons: Option<u64>,
}

/// Where a GPU's energy figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    /// The difference of NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, Volta and newer)
    /// read at the iteration's start and end: exact.
    Counter,
    /// The trapezoid integral of the sampled power (GPUs without the counter): an estimate.
    PowerIntegral,
}

/// One GPU during one iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuIterationTelemetry {
    pub index: u32,
    pub uuid: Option<String>,
    pub energy_joules: Option<f64>,
    pub energy_source: Option<EnergySource>,
    /// Device-wide VRAM in use (all processes), the highest sample.
    pub peak_vram_used_bytes: Option<u64>,
    /// This process's VRAM at the end of the iteration (`nvmlDeviceGetComputeRunningProcesses`); absent where
    /// NVML cannot see the process (inside a container, whose PIDs differ from the host's).
    pub process_vram_used_bytes: Option<u64>,
    /// Time-weighted mean of the sampled power (trapezoids over the samples ÷ their time span).
    pub avg_power_watts: Option<f64>,
    pub peak_power_watts: Option<f64>,
    pub max_temperature_c: Option<u32>,
    pub min_sm_clock_mhz: Option<u32>,
    pub max_sm_clock_mhz: Option<u32>,
    pub min_memory_clock_mhz: Option<u32>,
    pub max_memory_clock_mhz: Option<u32>,
    /// Every throttle reason seen in any sample, by NVML's name (`sw_power_cap`, `hw_thermal_slowdown`, …).
    pub throttle_reasons: Vec<String>,
    pub samples: Vec<GpuSample>,
}

impl GpuIterationTelemetry {
    /// Aggregates `samples` (any order). `counter_joules` is the energy counter's difference when the GPU has
    /// one; otherwise the energy is the power integral, when at least two samples carry power.
    pub fn from_samples(
        index: u32,
        uuid: Option<String>,
        mut samples: Vec<GpuSample>,
        counter_joules: Option<f64>,
        throttle_reasons: Vec<String>,
    ) -> GpuIterationTelemetry {
        samples.sort_by_key(|s| s.time_ns);
        let power: Vec<(i64, f64)> = samples.iter().filter_map(|s| s.power_watts.map(|p| (s.time_ns, p))).collect();
        let integral = power_integral_joules(&power);
        let span_s = match (power.first(), power.last()) {
            (Some(first), Some(last)) if last.0 > first.0 => Some((last.0 - first.0) as f64 / 1e9),
            _ => None,
        };
        let avg_power_watts = match (integral, span_s) {
            (Some(joules), Some(span)) => Some(joules / span),
            _ => power.first().map(|p| p.1).filter(|_| power.len() == 1),
        };
        let (energy_joules, energy_source) = match counter_joules {
            Some(joules) => (Some(joules), Some(EnergySource::Counter)),
            None => (integral, integral.map(|_| EnergySource::PowerIntegral)),
        };
        let max_of = |f: fn(&GpuSample) -> Option<u32>| samples.iter().filter_map(f).max();
        let min_of = |f: fn(&GpuSample) -> Option<u32>| samples.iter().filter_map(f).min();
        GpuIterationTelemetry {
            index,
            uuid,
            energy_joules,
            energy_source,
            peak_vram_used_bytes: samples.iter().filter_map(|s| s.vram_used_bytes).max(),
            process_vram_used_bytes: None,
            avg_power_watts,
            peak_power_watts: power.iter().map(|p| p.1).max_by(f64::total_cmp),
            max_temperature_c: max_of(|s| s.temperature_c),
            min_sm_clock_mhz: min_of(|s| s.sm_clock_mhz),
            max_sm_clock_mhz: max_of(|s| s.sm_clock_mhz),
            min_memory_clock_mhz: min_of(|s| s.memory_clock_mhz),
            max_memory_clock_mhz: max_of(|s| s.memory_clock_mhz),
            throttle_reasons,
            samples,
        }
    }
}

/// Trapezoid integral of `(time_ns, watts)` points sorted by time, in joules; `None` below two points.
pub fn power_integral_joules(points: &[(i64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    Some(points.windows(2).map(|w| (w[1].0 - w[0].0) as f64 / 1e9 * (w[0].1 + w[1].1) / 2.0).sum())
}

/// Telemetry of one timed iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationTelemetry {
    /// `nvml` or `none` (no NVIDIA GPU, or NVML unavailable: only the process's memory is recorded).
    pub sampler: String,
    /// From the iteration's start to the end of the telemetry window (`end_iteration`).
    pub duration_ns: u64,
    /// The process's peak resident set (`VmHWM` in `/proc/self/status`) at the end of the iteration.
    pub peak_rss_bytes: Option<u64>,
    /// Whether the peak was reset at the iteration's start (`/proc/self/clear_refs` ← `5`), making it this
    /// iteration's peak; `false` means it is the process's peak so far (model load included).
    pub peak_rss_reset: bool,
    pub gpus: Vec<GpuIterationTelemetry>,
}

/// One GPU over all timed iterations of a result row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRowTelemetry {
    pub index: u32,
    pub uuid: Option<String>,
    /// Sum over iterations; `None` when any iteration lacks it.
    pub energy_joules: Option<f64>,
    /// `Counter` when every iteration had the counter, else `PowerIntegral`.
    pub energy_source: Option<EnergySource>,
    /// Duration-weighted mean of the iterations' average power.
    pub avg_power_watts: Option<f64>,
    pub peak_power_watts: Option<f64>,
    pub peak_vram_used_bytes: Option<u64>,
    pub process_vram_used_bytes: Option<u64>,
    pub max_temperature_c: Option<u32>,
    pub min_sm_clock_mhz: Option<u32>,
    pub max_sm_clock_mhz: Option<u32>,
    pub throttle_reasons: Vec<String>,
}

/// Telemetry of a result row: totals over its timed iterations, and each iteration's own record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowTelemetry {
    pub sampler: String,
    /// Tokens the test counts, summed over iterations (as passed to [`RowTelemetry::from_iterations`]).
    pub tokens: u64,
    /// Sum of the iterations' durations.
    pub duration_ns: u64,
    /// The highest per-iteration peak resident set.
    pub peak_rss_bytes: Option<u64>,
    /// Every iteration's peak was reset at its start (see [`IterationTelemetry::peak_rss_reset`]).
    pub peak_rss_reset: bool,
    /// All GPUs' energy over all iterations; `None` without a GPU energy figure for every GPU and iteration.
    pub energy_joules: Option<f64>,
    /// `energy_joules ÷ tokens`.
    pub joules_per_token: Option<f64>,
    /// `tokens ÷ energy_joules`.
    pub tokens_per_joule: Option<f64>,
    pub gpus: Vec<GpuRowTelemetry>,
    pub iterations: Vec<IterationTelemetry>,
}

impl RowTelemetry {
    /// Totals over `iterations`; `tokens_per_iteration[i]` is the number of tokens iteration `i` counts
    /// (generated tokens for decode tests, prompt tokens for prompt tests, both for combined tests). When the two
    /// slices differ in length the energy per token is left absent rather than guessed.
    pub fn from_iterations(iterations: &[IterationTelemetry], tokens_per_iteration: &[u64]) -> RowTelemetry {
        let tokens: u64 = tokens_per_iteration.iter().sum();
        let counts_match = tokens_per_iteration.len() == iterations.len();
        let sampler = iterations.first().map(|i| i.sampler.clone()).unwrap_or_else(|| "none".to_string());

        let mut indices: Vec<u32> = iterations.iter().flat_map(|i| i.gpus.iter().map(|g| g.index)).collect();
        indices.sort_unstable();
        indices.dedup();
        let gpus: Vec<GpuRowTelemetry> = indices
            .iter()
            .map(|&index| {
                // (duration, this GPU's record) per iteration; an iteration missing the GPU has no energy for it.
                let per_iteration: Vec<(u64, Option<&GpuIterationTelemetry>)> =
                    iterations.iter().map(|it| (it.duration_ns, it.gpus.iter().find(|g| g.index == index))).collect();
                let records: Vec<&GpuIterationTelemetry> = per_iteration.iter().filter_map(|p| p.1).collect();
                let energy_joules = per_iteration
                    .iter()
                    .map(|(_, g)| g.and_then(|g| g.energy_joules))
                    .collect::<Option<Vec<f64>>>()
                    .map(|e| e.iter().sum());
                let energy_source = energy_joules.map(|_| {
                    if records.iter().all(|g| g.energy_source == Some(EnergySource::Counter)) {
                        EnergySource::Counter
                    } else {
                        EnergySource::PowerIntegral
                    }
                });
                let weighted: Vec<(f64, f64)> = per_iteration
                    .iter()
                    .filter_map(|(d, g)| g.and_then(|g| g.avg_power_watts).map(|p| (*d as f64, p)))
                    .collect();
                let weight: f64 = weighted.iter().map(|w| w.0).sum();
                let avg_power_watts = (weight > 0.0).then(|| weighted.iter().map(|(d, p)| d * p).sum::<f64>() / weight);
                let mut throttle_reasons: Vec<String> =
                    records.iter().flat_map(|g| g.throttle_reasons.iter().cloned()).collect();
                throttle_reasons.sort();
                throttle_reasons.dedup();
                GpuRowTelemetry {
                    index,
                    uuid: records.iter().find_map(|g| g.uuid.clone()),
                    energy_joules,
                    energy_source,
                    avg_power_watts,
                    peak_power_watts: records.iter().filter_map(|g| g.peak_power_watts).max_by(f64::total_cmp),
                    peak_vram_used_bytes: records.iter().filter_map(|g| g.peak_vram_used_bytes).max(),
                    process_vram_used_bytes: records.iter().filter_map(|g| g.process_vram_used_bytes).max(),
                    max_temperature_c: records.iter().filter_map(|g| g.max_temperature_c).max(),
                    min_sm_clock_mhz: records.iter().filter_map(|g| g.min_sm_clock_mhz).min(),
                    max_sm_clock_mhz: records.iter().filter_map(|g| g.max_sm_clock_mhz).max(),
                    throttle_reasons,
                }
            })
            .collect();

        let energy_joules = if gpus.is_empty() {
            None
        } else {
            gpus.iter().map(|g| g.energy_joules).collect::<Option<Vec<f64>>>().map(|e| e.iter().sum())
        };
        let per_token = energy_joules.filter(|_| counts_match && tokens > 0);
        RowTelemetry {
            sampler,
            tokens,
            duration_ns: iterations.iter().map(|i| i.duration_ns).sum(),
            peak_rss_bytes: iterations.iter().filter_map(|i| i.peak_rss_bytes).max(),
            peak_rss_reset: !iterations.is_empty() && iterations.iter().all(|i| i.peak_rss_reset),
            energy_joules,
            joules_per_token: per_token.map(|j| j / tokens as f64),
            tokens_per_joule: per_token.filter(|j| *j > 0.0).map(|j| tokens as f64 / j),
            gpus,
            iterations: iterations.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time_ms: i64, watts: f64, vram_mib: u64) -> GpuSample {
        GpuSample {
            time_ns: time_ms * 1_000_000,
            vram_used_bytes: Some(vram_mib << 20),
            power_watts: Some(watts),
            temperature_c: Some(60 + (time_ms / 100) as u32),
            sm_clock_mhz: Some(2000 - time_ms as u32),
            memory_clock_mhz: Some(10_000),
            throttle_reasons: Some(0),
        }
    }

    fn gpu(counter: Option<f64>) -> GpuIterationTelemetry {
        // 100 W for 0.5 s then 200 W for 0.5 s, ramping linearly between 500 ms and 600 ms.
        let samples =
            vec![sample(600, 200.0, 1000), sample(0, 100.0, 900), sample(500, 100.0, 950), sample(1000, 200.0, 990)];
        GpuIterationTelemetry::from_samples(0, Some("GPU-x".into()), samples, counter, vec!["sw_power_cap".into()])
    }

    #[test]
    fn power_integral_is_a_trapezoid_sum() {
        assert_eq!(power_integral_joules(&[(0, 100.0)]), None);
        // 0.5 s × 100 W + 0.1 s × 150 W + 0.4 s × 200 W = 50 + 15 + 80 = 145 J.
        let g = gpu(None);
        assert!((g.energy_joules.unwrap() - 145.0).abs() < 1e-9);
        assert_eq!(g.energy_source, Some(EnergySource::PowerIntegral));
        assert!((g.avg_power_watts.unwrap() - 145.0).abs() < 1e-9); // over 1 s
        assert_eq!(g.peak_power_watts, Some(200.0));
        assert_eq!(g.peak_vram_used_bytes, Some(1000 << 20));
        assert_eq!(g.max_temperature_c, Some(70));
        assert_eq!((g.min_sm_clock_mhz, g.max_sm_clock_mhz), (Some(1000), Some(2000)));
        assert_eq!(g.samples[0].time_ns, 0, "samples are sorted by time");
    }

    #[test]
    fn the_counter_wins_over_the_integral() {
        let g = gpu(Some(150.0));
        assert_eq!(g.energy_joules, Some(150.0));
        assert_eq!(g.energy_source, Some(EnergySource::Counter));
    }

    #[test]
    fn row_totals_and_energy_per_token() {
        let iteration = |joules: f64, rss: u64| IterationTelemetry {
            sampler: "nvml".into(),
            duration_ns: 1_000_000_000,
            peak_rss_bytes: Some(rss),
            peak_rss_reset: true,
            gpus: vec![gpu(Some(joules))],
        };
        let row = RowTelemetry::from_iterations(&[iteration(100.0, 10), iteration(50.0, 30)], &[100, 50]);
        assert_eq!(row.tokens, 150);
        assert_eq!(row.energy_joules, Some(150.0));
        assert_eq!(row.joules_per_token, Some(1.0));
        assert_eq!(row.tokens_per_joule, Some(1.0));
        assert_eq!(row.peak_rss_bytes, Some(30));
        assert!(row.peak_rss_reset);
        assert_eq!(row.duration_ns, 2_000_000_000);
        assert_eq!(row.gpus.len(), 1);
        assert_eq!(row.gpus[0].energy_source, Some(EnergySource::Counter));
        assert!((row.gpus[0].avg_power_watts.unwrap() - 145.0).abs() < 1e-9);
        assert_eq!(row.gpus[0].throttle_reasons, vec!["sw_power_cap".to_string()]);
        assert_eq!(row.iterations.len(), 2);

        // Mismatched token counts: no energy per token rather than a wrong one.
        let row = RowTelemetry::from_iterations(&[iteration(100.0, 10)], &[100, 50]);
        assert_eq!(row.energy_joules, Some(100.0));
        assert_eq!(row.joules_per_token, None);
    }

    #[test]
    fn without_a_gpu_only_memory_is_recorded() {
        let iteration = IterationTelemetry {
            sampler: "none".into(),
            duration_ns: 5,
            peak_rss_bytes: Some(7),
            peak_rss_reset: false,
            gpus: vec![],
        };
        let row = RowTelemetry::from_iterations(&[iteration], &[10]);
        assert_eq!(row.energy_joules, None);
        assert_eq!(row.joules_per_token, None);
        assert_eq!(row.peak_rss_bytes, Some(7));
        assert!(!row.peak_rss_reset);
        let json = serde_json::to_value(&row).unwrap();
        assert!(json["joules_per_token"].is_null());
        assert_eq!(json["sampler"], "none");
    }
}
