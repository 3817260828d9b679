//! Decode efficiency: how close a decode rate comes to the memory-bandwidth roofline (docs/metrics.md).
//!
//! Generating one token reads every weight the forward pass touches at least once, so
//! `bytes of weights per token × tokens/s` is a lower bound on the memory traffic of decode and cannot exceed
//! the memory bandwidth. The ratio of the two is the fraction of the roofline a setup reaches.

use serde::{Deserialize, Serialize};

use crate::HardwareInfo;

/// `bytes_per_token × tokens_per_second ÷ bandwidth_bytes_per_second`, as a fraction (0.62 = 62 % of the
/// roofline). `None` when an input is not a positive finite number.
pub fn decode_efficiency(bytes_per_token: u64, tokens_per_second: f64, bandwidth_bytes_per_second: f64) -> Option<f64> {
    let valid = |v: f64| v.is_finite() && v > 0.0;
    if bytes_per_token == 0 || !valid(tokens_per_second) || !valid(bandwidth_bytes_per_second) {
        return None;
    }
    Some(bytes_per_token as f64 * tokens_per_second / bandwidth_bytes_per_second)
}

/// The decode efficiency of a result row, with its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeEfficiency {
    /// Bytes of weights read per generated token (`velollm_gguf::GgufFile::weight_bytes_per_token`).
    pub bytes_per_token: u64,
    /// The decode rate the efficiency is computed for.
    pub tokens_per_second: f64,
    /// `bytes_per_token × tokens_per_second`, in GB/s (10⁹ bytes/s).
    pub achieved_gb_per_s: f64,
    /// The bandwidth the rate is compared with, in GB/s.
    pub bandwidth_gb_per_s: f64,
    /// Where that bandwidth comes from, e.g. `measured read (velollm detect --bandwidth)` or
    /// `NVML theoretical, GPU 0`.
    pub bandwidth_source: String,
    /// The decode rate the roofline allows: `bandwidth ÷ bytes_per_token`.
    pub roofline_tokens_per_second: f64,
    /// `100 × achieved ÷ bandwidth`.
    pub percent_of_roofline: f64,
}

impl DecodeEfficiency {
    /// `None` when an input is not a positive finite number (nothing to compare).
    pub fn new(
        bytes_per_token: u64,
        tokens_per_second: f64,
        bandwidth_bytes_per_second: f64,
        bandwidth_source: impl Into<String>,
    ) -> Option<DecodeEfficiency> {
        let fraction = decode_efficiency(bytes_per_token, tokens_per_second, bandwidth_bytes_per_second)?;
        Some(DecodeEfficiency {
            bytes_per_token,
            tokens_per_second,
            achieved_gb_per_s: bytes_per_token as f64 * tokens_per_second / 1e9,
            bandwidth_gb_per_s: bandwidth_bytes_per_second / 1e9,
            bandwidth_source: bandwidth_source.into(),
            roofline_tokens_per_second: bandwidth_bytes_per_second / bytes_per_token as f64,
            percent_of_roofline: 100.0 * fraction,
        })
    }
}

/// The bandwidth a run reads its weights at (docs/metrics.md), in bytes/s, and where it comes from:
/// - nothing offloaded (`layers_offloaded == 0`): the measured CPU roofline, when `velollm detect --bandwidth` has
///   measured one (`hardware.memory_bandwidth`);
/// - every layer offloaded: the theoretical bandwidth of the GPU, when exactly one GPU reports it (with several,
///   a token passes through them in turn and no single figure bounds it);
/// - a partial offload: none (the weights come from two memories at once).
pub fn roofline_bandwidth(hardware: &HardwareInfo, layers_offloaded: u32, layers_total: u32) -> Option<(f64, String)> {
    if layers_offloaded == 0 {
        let b = hardware.memory_bandwidth.as_ref()?;
        return Some((
            b.roofline_bytes_per_second(),
            format!("measured memory bandwidth (velollm detect --bandwidth, {})", b.measured_at),
        ));
    }
    if layers_offloaded < layers_total {
        return None;
    }
    let mut gpus = hardware.gpus.iter().filter(|g| g.theoretical_bandwidth_gb_per_s.is_some());
    let gpu = gpus.next()?;
    if gpus.next().is_some() {
        return None;
    }
    Some((
        gpu.theoretical_bandwidth_gb_per_s? * 1e9,
        format!("theoretical bandwidth of GPU {} ({})", gpu.index, gpu.name.as_deref().unwrap_or("unnamed")),
    ))
}

impl DecodeEfficiency {
    /// [`DecodeEfficiency::new`] against [`roofline_bandwidth`]; `None` when no bandwidth applies.
    pub fn for_run(
        bytes_per_token: u64,
        tokens_per_second: f64,
        hardware: &HardwareInfo,
        layers_offloaded: u32,
        layers_total: u32,
    ) -> Option<DecodeEfficiency> {
        let (bandwidth, source) = roofline_bandwidth(hardware, layers_offloaded, layers_total)?;
        DecodeEfficiency::new(bytes_per_token, tokens_per_second, bandwidth, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BandwidthMeasurement, GpuInfo, GpuSource, GpuVendor};

    #[test]
    fn the_bandwidth_follows_where_the_weights_live() {
        let mut hw = HardwareInfo::default();
        assert_eq!(roofline_bandwidth(&hw, 0, 30), None, "nothing measured");
        hw.memory_bandwidth = Some(BandwidthMeasurement {
            measured_at: "2026-11-28T17:00:00Z".into(),
            copy_gb_per_s: 20.0,
            triad_gb_per_s: 18.0,
            read_gb_per_s: 25.0,
            array_bytes: 1 << 30,
            threads: 2,
            repetitions: 5,
            machine: "m".into(),
        });
        let (cpu, source) = roofline_bandwidth(&hw, 0, 30).unwrap();
        assert_eq!(cpu, 25e9);
        assert!(source.starts_with("measured"));
        let mut gpu = GpuInfo::new(0, GpuVendor::Nvidia, GpuSource::Nvml);
        gpu.theoretical_bandwidth_gb_per_s = Some(1008.0);
        hw.gpus.push(gpu.clone());
        assert_eq!(roofline_bandwidth(&hw, 31, 31).unwrap().0, 1008e9);
        assert_eq!(roofline_bandwidth(&hw, 20, 31), None, "partial offload");
        hw.gpus.push(gpu);
        assert_eq!(roofline_bandwidth(&hw, 31, 31), None, "two GPUs");
        let e = DecodeEfficiency::for_run(100_000_000, 100.0, &hw, 0, 31).unwrap();
        assert!((e.percent_of_roofline - 40.0).abs() < 1e-9);
    }

    #[test]
    fn hand_checked_example() {
        // 4 GB of weights per token at 20 tok/s = 80 GB/s, against 100 GB/s: 80 %.
        let e = DecodeEfficiency::new(4_000_000_000, 20.0, 100e9, "measured").unwrap();
        assert!((e.achieved_gb_per_s - 80.0).abs() < 1e-9);
        assert!((e.bandwidth_gb_per_s - 100.0).abs() < 1e-9);
        assert!((e.percent_of_roofline - 80.0).abs() < 1e-9);
        assert!((e.roofline_tokens_per_second - 25.0).abs() < 1e-9);
        assert_eq!(decode_efficiency(4_000_000_000, 20.0, 100e9), Some(0.8));
    }

    #[test]
    fn nothing_to_compare_is_absent() {
        assert_eq!(decode_efficiency(0, 20.0, 1e9), None);
        assert_eq!(decode_efficiency(1, 0.0, 1e9), None);
        assert_eq!(decode_efficiency(1, f64::NAN, 1e9), None);
        assert_eq!(decode_efficiency(1, 1.0, 0.0), None);
        assert!(DecodeEfficiency::new(1, 1.0, -1.0, "x").is_none());
    }
}
