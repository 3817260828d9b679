//! NVIDIA GPUs through NVML (`nvml-wrapper`), which loads `libnvidia-ml.so.1` at run time: velollm builds
//! without an NVIDIA driver, and on a machine without one NVML is simply unavailable (`gpus: []`, not an error).
//!
//! Written from NVML's and nvml-wrapper's documentation. On the project's build machines there is no NVIDIA
//! GPU, so only the "NVML unavailable" path is exercised by the tests here.

use std::ffi::OsStr;
use std::sync::OnceLock;

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::Clock;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{cuda_driver_version_major, cuda_driver_version_minor, Device, Nvml};
use velollm_core::{theoretical_bandwidth_gb_per_s, GpuInfo, GpuSource, GpuVendor, NvmlStatus};

/// Environment variable naming the NVML library to load instead of `libnvidia-ml.so.1` (a driver installed
/// outside the loader's path; tests point it at a missing file).
pub const NVML_LIBRARY_ENV: &str = "VELOLLM_NVML_LIBRARY";

/// NVML is initialised once per process and shared by detection and the telemetry sampler.
static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();

pub(crate) fn shared() -> Result<&'static Nvml, &'static str> {
    NVML.get_or_init(|| init(std::env::var_os(NVML_LIBRARY_ENV).as_deref())).as_ref().map_err(String::as_str)
}

/// Loads and initialises NVML from `library` (default `libnvidia-ml.so.1`); the error says why not, in one line.
pub fn init(library: Option<&OsStr>) -> Result<Nvml, String> {
    let mut builder = Nvml::builder();
    if let Some(library) = library {
        builder.lib_path(library);
    }
    builder.init().map_err(|e| describe_error(&e))
}

fn describe_error(error: &NvmlError) -> String {
    match error {
        NvmlError::LibloadingError(e) => format!("no NVIDIA driver (NVML library not loaded: {e})"),
        NvmlError::DriverNotLoaded => "the NVIDIA kernel driver is not loaded".to_string(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_string(),
        other => format!("NVML: {other}"),
    }
}

/// NVML's throttle-reason bits as lowercase names (`sw_power_cap`, `hw_thermal_slowdown`, …).
pub fn throttle_reason_names(bits: u64) -> Vec<String> {
    ThrottleReasons::from_bits_truncate(bits)
        .iter_names()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| name != "none")
        .collect()
}

/// Every NVIDIA GPU NVML reports, and NVML's state.
pub fn detect() -> (Vec<GpuInfo>, NvmlStatus) {
    let nvml = match shared() {
        Ok(nvml) => nvml,
        Err(error) => {
            return (Vec::new(), NvmlStatus { available: false, version: None, error: Some(error.to_string()) })
        }
    };
    let mut status = NvmlStatus { available: true, version: nvml.sys_nvml_version().ok(), error: None };
    let count = match nvml.device_count() {
        Ok(count) => count,
        Err(e) => {
            status.error = Some(describe_error(&e));
            return (Vec::new(), status);
        }
    };
    let driver_version = nvml.sys_driver_version().ok();
    let cuda_driver_version = nvml
        .sys_cuda_driver_version()
        .ok()
        .map(|v| format!("{}.{}", cuda_driver_version_major(v), cuda_driver_version_minor(v)));
    let mut gpus = Vec::new();
    for index in 0..count {
        match nvml.device_by_index(index) {
            Ok(device) => {
                let mut gpu = describe(index, &device);
                gpu.driver_version = driver_version.clone();
                gpu.cuda_driver_version = cuda_driver_version.clone();
                gpus.push(gpu);
            }
            Err(e) => {
                let note = format!("GPU {index}: {}", describe_error(&e));
                status.error = Some(match status.error.take() {
                    Some(previous) => format!("{previous}; {note}"),
                    None => note,
                });
            }
        }
    }
    (gpus, status)
}

/// One device; each query that fails (unsupported on this GPU, no permission) leaves its field absent.
fn describe(index: u32, device: &Device<'_>) -> GpuInfo {
    let mut gpu = GpuInfo::new(index, GpuVendor::Nvidia, GpuSource::Nvml);
    gpu.name = device.name().ok();
    gpu.uuid = device.uuid().ok();
    gpu.kernel_driver = Some("nvidia".to_string());
    if let Ok(pci) = device.pci_info() {
        gpu.pci_bus_id = Some(pci.bus_id);
        // pciDeviceId is (device id << 16) | vendor id.
        gpu.pci_id = Some(format!("{:04x}:{:04x}", pci.pci_device_id & 0xffff, pci.pci_device_id >> 16));
    }
    if let Ok(memory) = device.memory_info() {
        gpu.vram_total_bytes = Some(memory.total);
        gpu.vram_free_bytes = Some(memory.free);
        gpu.vram_used_bytes = Some(memory.used);
    }
    gpu.compute_capability = device.cuda_compute_capability().ok().map(|c| format!("{}.{}", c.major, c.minor));
    gpu.pcie_gen_current = device.current_pcie_link_gen().ok();
    gpu.pcie_width_current = device.current_pcie_link_width().ok();
    gpu.pcie_gen_max = device.max_pcie_link_gen().ok();
    gpu.pcie_width_max = device.max_pcie_link_width().ok();
    gpu.power_limit_watts = device.enforced_power_limit().ok().map(|milliwatts| f64::from(milliwatts) / 1000.0);
    gpu.max_sm_clock_mhz = device.max_clock_info(Clock::SM).ok();
    gpu.max_memory_clock_mhz = device.max_clock_info(Clock::Memory).ok();
    gpu.memory_bus_width_bits = device.memory_bus_width().ok();
    if let (Some(clock), Some(width)) = (gpu.max_memory_clock_mhz, gpu.memory_bus_width_bits) {
        gpu.theoretical_bandwidth_gb_per_s = Some(theoretical_bandwidth_gb_per_s(clock, width));
    }
    gpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_one_line_reason_not_a_panic() {
        let Err(error) = init(Some(OsStr::new("/nonexistent/velollm/libnvidia-ml.so.1"))) else {
            panic!("loading a missing library must fail")
        };
        assert!(error.starts_with("no NVIDIA driver"), "{error}");
        assert!(!error.contains('\n'));
    }

    #[test]
    fn detection_without_nvml_reports_no_gpus_and_why() {
        let (gpus, status) = detect();
        if status.available {
            // A machine with an NVIDIA driver: every GPU has its identity.
            assert!(gpus.iter().all(|g| g.vendor == GpuVendor::Nvidia && g.name.is_some()));
        } else {
            assert!(gpus.is_empty());
            assert!(status.error.is_some());
        }
    }

    #[test]
    fn throttle_reasons_have_names() {
        assert!(throttle_reason_names(0).is_empty());
        let all = throttle_reason_names(u64::MAX);
        for name in ["gpu_idle", "sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown"] {
            assert!(all.iter().any(|n| n == name), "{name} missing from {all:?}");
        }
        let bits = ThrottleReasons::SW_POWER_CAP.bits() | ThrottleReasons::HW_SLOWDOWN.bits();
        assert_eq!(throttle_reason_names(bits), vec!["sw_power_cap", "hw_slowdown"]);
    }
}
