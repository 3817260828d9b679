//! The hardware snapshot (`velollm detect`, and the `hardware` field of every result row).
//!
//! Plain data: `velollm-hw` fills it from `/proc`, `/sys` and NVML, `velollm-benchmarks` adds the backends
//! and engine devices of the build. Every value that could not be read is `None` (or an empty list), never a
//! guess. Units are in the field names: `_bytes`, `_mhz`, `_watts`, `_gb_per_s` (decimal, 10⁹ bytes/s).

use serde::{Deserialize, Serialize};

/// Everything `velollm detect` reports.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HardwareInfo {
    pub cpu: CpuDetails,
    pub memory: MemoryDetails,
    pub os: OsDetails,
    /// Every GPU found: NVIDIA through NVML, AMD and Intel (and NVIDIA without a driver) through sysfs.
    /// Empty on a machine without a GPU; that is not an error.
    pub gpus: Vec<GpuInfo>,
    /// Whether NVML could be loaded, and why not.
    pub nvml: NvmlStatus,
    /// The backends compiled into this build of velollm.
    pub backends: Vec<String>,
    /// The devices the engines themselves see (llama.cpp's ggml backend devices).
    pub engine_devices: Vec<EngineDevice>,
    /// The measured memory bandwidth (`velollm detect --bandwidth`), or the cached measurement.
    pub memory_bandwidth: Option<BandwidthMeasurement>,
}

impl HardwareInfo {
    /// The GPUs of one vendor.
    pub fn gpus_of(&self, vendor: GpuVendor) -> impl Iterator<Item = &GpuInfo> {
        self.gpus.iter().filter(move |g| g.vendor == vendor)
    }

    /// Total VRAM of all GPUs that report it.
    pub fn total_vram_bytes(&self) -> Option<u64> {
        let sizes: Vec<u64> = self.gpus.iter().filter_map(|g| g.vram_total_bytes).collect();
        (!sizes.is_empty()).then(|| sizes.iter().sum())
    }
}

/// The CPU, from `/proc/cpuinfo` and `/sys/devices/system/cpu`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuDetails {
    /// `model name` (x86), or the part name for known arm64 part numbers.
    pub model: Option<String>,
    /// `vendor_id` (x86: GenuineIntel, AuthenticAMD) or the arm64 implementer's name.
    pub vendor: Option<String>,
    pub physical_cores: Option<u32>,
    pub logical_cpus: Option<u32>,
    pub sockets: Option<u32>,
    /// Base (nominal) frequency, where the kernel exposes it (`cpufreq/base_frequency`, intel_pstate).
    pub base_mhz: Option<f64>,
    /// Highest frequency the kernel allows (`cpufreq/cpuinfo_max_freq`).
    pub max_mhz: Option<f64>,
    /// The `cpu MHz` line of `/proc/cpuinfo` for cpu0: its current clock (a VM's nominal one).
    pub reported_mhz: Option<f64>,
    /// Per-instance cache sizes as cpu0 sees them (`cache/index*/size`).
    pub l1d_bytes: Option<u64>,
    pub l2_bytes: Option<u64>,
    pub l3_bytes: Option<u64>,
    /// The last-level cache summed over its distinct instances (all sockets/CCDs): what a bandwidth probe's
    /// buffers must exceed.
    pub last_level_cache_total_bytes: Option<u64>,
    /// The SIMD extensions that matter for inference kernels, as the kernel names them (`avx2`,
    /// `avx512_vnni`, `amx_int8`, …); on arm64 `neon` stands for the kernel's `asimd`.
    pub simd: Vec<String>,
}

/// System memory, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemoryDetails {
    pub total_bytes: Option<u64>,
    /// `MemAvailable`: what can be allocated without swapping.
    pub available_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
    pub swap_free_bytes: Option<u64>,
}

/// The operating system.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OsDetails {
    /// `PRETTY_NAME` from `/etc/os-release`.
    pub name: Option<String>,
    pub kernel: Option<String>,
    /// The CPU architecture velollm was built for (`x86_64`, `aarch64`).
    pub arch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuVendor {
    Nvidia,
    Amd,
    Intel,
}

impl GpuVendor {
    /// From a PCI vendor id (`0x10de`, `0x1002`, `0x8086`).
    pub fn from_pci_id(id: u16) -> Option<GpuVendor> {
        match id {
            0x10de => Some(GpuVendor::Nvidia),
            0x1002 => Some(GpuVendor::Amd),
            0x8086 => Some(GpuVendor::Intel),
            _ => None,
        }
    }
}

impl std::fmt::Display for GpuVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            GpuVendor::Nvidia => "NVIDIA",
            GpuVendor::Amd => "AMD",
            GpuVendor::Intel => "Intel",
        })
    }
}

/// Where a GPU's facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuSource {
    Nvml,
    Sysfs,
}

/// One GPU. NVML fills most fields; sysfs only the vendor, PCI ids, driver, link and (amdgpu) VRAM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// NVML's device index, or the DRM card number for sysfs GPUs.
    pub index: u32,
    pub vendor: GpuVendor,
    pub source: GpuSource,
    pub name: Option<String>,
    pub uuid: Option<String>,
    /// PCI address (`0000:01:00.0`).
    pub pci_bus_id: Option<String>,
    /// PCI `vendor:device` ids (`10de:2684`).
    pub pci_id: Option<String>,
    /// The kernel driver bound to the device (`nvidia`, `amdgpu`, `i915`, `xe`, `nouveau`).
    pub kernel_driver: Option<String>,
    pub vram_total_bytes: Option<u64>,
    pub vram_free_bytes: Option<u64>,
    pub vram_used_bytes: Option<u64>,
    /// The NVIDIA driver version (`550.54.15`).
    pub driver_version: Option<String>,
    /// The CUDA version the driver supports (`12.4`).
    pub cuda_driver_version: Option<String>,
    /// CUDA compute capability (`8.9`).
    pub compute_capability: Option<String>,
    pub pcie_gen_current: Option<u32>,
    pub pcie_width_current: Option<u32>,
    pub pcie_gen_max: Option<u32>,
    pub pcie_width_max: Option<u32>,
    /// The enforced power limit.
    pub power_limit_watts: Option<f64>,
    pub max_sm_clock_mhz: Option<u32>,
    /// NVML's maximum memory clock (`nvmlDeviceGetMaxClockInfo(NVML_CLOCK_MEM)`).
    pub max_memory_clock_mhz: Option<u32>,
    pub memory_bus_width_bits: Option<u32>,
    /// [`theoretical_bandwidth_gb_per_s`] of the two fields above.
    pub theoretical_bandwidth_gb_per_s: Option<f64>,
}

impl GpuInfo {
    /// A GPU with only its identity known; everything else absent.
    pub fn new(index: u32, vendor: GpuVendor, source: GpuSource) -> GpuInfo {
        GpuInfo {
            index,
            vendor,
            source,
            name: None,
            uuid: None,
            pci_bus_id: None,
            pci_id: None,
            kernel_driver: None,
            vram_total_bytes: None,
            vram_free_bytes: None,
            vram_used_bytes: None,
            driver_version: None,
            cuda_driver_version: None,
            compute_capability: None,
            pcie_gen_current: None,
            pcie_width_current: None,
            pcie_gen_max: None,
            pcie_width_max: None,
            power_limit_watts: None,
            max_sm_clock_mhz: None,
            max_memory_clock_mhz: None,
            memory_bus_width_bits: None,
            theoretical_bandwidth_gb_per_s: None,
        }
    }
}

/// Theoretical peak memory bandwidth of a GPU in GB/s (10⁹ bytes/s):
/// `2 × memory clock (Hz) × bus width (bits) / 8`.
///
/// The factor 2 is the double data rate of the clock NVML reports: the formula gives the published figures for
/// HBM (A100 40 GB: 1215 MHz × 5120 bit → 1555 GB/s), GDDR6X (RTX 4090: 10501 MHz × 384 bit → 1008 GB/s) and
/// GDDR6 (T4: 5001 MHz × 256 bit → 320 GB/s) alike, because NVML's memory clock already folds in the
/// memory type's other multipliers.
pub fn theoretical_bandwidth_gb_per_s(memory_clock_mhz: u32, bus_width_bits: u32) -> f64 {
    2.0 * f64::from(memory_clock_mhz) * 1e6 * f64::from(bus_width_bits) / 8.0 / 1e9
}

/// A VRAM size as the card is sold: the reported MiB divided by 1024, rounded to the nearest integer. Drivers
/// report a little less than the nominal size (memory reserved by the driver or ECC): a card reporting
/// 24,564 MiB is a 24 GB card.
pub fn nominal_vram_gb(vram_bytes: u64) -> u64 {
    let gib = vram_bytes as f64 / (1u64 << 30) as f64;
    gib.round() as u64
}

/// NVML's state on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NvmlStatus {
    /// NVML was loaded and initialised.
    pub available: bool,
    /// `nvmlSystemGetNVMLVersion`, when available.
    pub version: Option<String>,
    /// Why NVML is unavailable (no NVIDIA driver is the normal case on machines without an NVIDIA GPU).
    pub error: Option<String>,
}

/// A device as an inference engine sees it (llama.cpp: `ggml_backend_dev_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineDevice {
    /// The velollm backend whose engine reports the device (`llamacpp`).
    pub engine: String,
    /// The engine's backend for the device (`CPU`, `CUDA`, `Vulkan`, `Metal`).
    pub backend: String,
    pub name: String,
    pub description: String,
    /// `cpu`, `gpu`, `igpu`, `accel` or `unknown`.
    pub kind: String,
    pub memory_total_bytes: u64,
    pub memory_free_bytes: u64,
}

/// A STREAM-style measurement of this machine's memory bandwidth (`velollm detect --bandwidth`).
///
/// Rates are bytes moved ÷ time, in GB/s (10⁹ bytes/s), the best of `repetitions` runs of each kernel:
/// copy `c[i] = a[i]` counts 16 bytes per element, triad `a[i] = b[i] + s·c[i]` 24, read (an integer sum of a) 8. Write-allocate
/// traffic is not counted, as in STREAM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandwidthMeasurement {
    /// RFC 3339 time of the measurement.
    pub measured_at: String,
    pub copy_gb_per_s: f64,
    pub triad_gb_per_s: f64,
    pub read_gb_per_s: f64,
    /// Bytes of each of the three arrays.
    pub array_bytes: u64,
    pub threads: u32,
    pub repetitions: u32,
    /// Which machine measured it (CPU model, logical CPUs, RAM, host): a cache written elsewhere, e.g. on a
    /// shared home directory, is not used.
    pub machine: String,
}

impl BandwidthMeasurement {
    /// The bandwidth a decode roofline is measured against: the highest of the three kernels (decode reads
    /// weights, so the read kernel usually sets it).
    pub fn roofline_bytes_per_second(&self) -> f64 {
        self.copy_gb_per_s.max(self.triad_gb_per_s).max(self.read_gb_per_s) * 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_formula_matches_published_figures() {
        // RTX 4090: NVML max memory clock 10501 MHz, 384-bit bus; NVIDIA publishes 1008 GB/s.
        let rtx4090 = theoretical_bandwidth_gb_per_s(10_501, 384);
        assert!((rtx4090 - 1008.1).abs() < 0.1, "{rtx4090}");
        // A100 40 GB (HBM2): 1215 MHz, 5120-bit bus; published 1555 GB/s.
        let a100 = theoretical_bandwidth_gb_per_s(1215, 5120);
        assert!((a100 - 1555.2).abs() < 0.1, "{a100}");
        // T4 (GDDR6): 5001 MHz, 256-bit; published 320 GB/s.
        assert!((theoretical_bandwidth_gb_per_s(5001, 256) - 320.064).abs() < 0.01);
    }

    #[test]
    fn nominal_vram_rounds_reported_sizes() {
        let mib = |m: u64| m << 20;
        assert_eq!(nominal_vram_gb(mib(24_564)), 24);
        assert_eq!(nominal_vram_gb(mib(24_576)), 24);
        assert_eq!(nominal_vram_gb(mib(8_192)), 8);
        assert_eq!(nominal_vram_gb(mib(7_982)), 8);
        assert_eq!(nominal_vram_gb(mib(81_559)), 80);
        assert_eq!(nominal_vram_gb(mib(7_577)), 7); // 7.40 GiB
    }

    #[test]
    fn serialises_with_stable_names() {
        let mut gpu = GpuInfo::new(0, GpuVendor::Nvidia, GpuSource::Nvml);
        gpu.vram_total_bytes = Some(1);
        let info = HardwareInfo { gpus: vec![gpu], ..HardwareInfo::default() };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["gpus"][0]["vendor"], "nvidia");
        assert_eq!(json["gpus"][0]["source"], "nvml");
        assert_eq!(json["gpus"][0]["vram_total_bytes"], 1);
        assert!(json["memory_bandwidth"].is_null());
        let back: HardwareInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back, info);
        assert_eq!(info.total_vram_bytes(), Some(1));
    }
}
