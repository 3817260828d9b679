//! GPUs as Linux sysfs shows them (`/sys/class/drm/card*/device`): cheap facts for AMD and Intel GPUs, and for
//! NVIDIA GPUs whose driver (and so NVML) is absent.

use std::fs;
use std::path::Path;

use velollm_core::{GpuInfo, GpuSource, GpuVendor};

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn read_hex_u16(path: &Path) -> Option<u16> {
    u16::from_str_radix(read_trimmed(path)?.trim_start_matches("0x"), 16).ok()
}

/// PCIe generation from a sysfs link speed (`16.0 GT/s PCIe`).
pub fn pcie_generation(speed: &str) -> Option<u32> {
    let gts: f64 = speed.split_whitespace().next()?.parse().ok()?;
    Some(match gts {
        s if s < 3.0 => 1,
        s if s < 6.0 => 2,
        s if s < 10.0 => 3,
        s if s < 20.0 => 4,
        s if s < 40.0 => 5,
        s if s < 80.0 => 6,
        _ => 7,
    })
}

/// Every AMD, Intel or NVIDIA GPU under `drm` (a directory laid out like `/sys/class/drm`), ordered by card
/// number. Connector (`card1-DP-1`) and render (`renderD128`) nodes are skipped, and so are display adapters of
/// other vendors (a VM's virtual VGA).
pub fn scan(drm: &Path) -> Vec<GpuInfo> {
    let mut cards: Vec<(u32, std::path::PathBuf)> = fs::read_dir(drm)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_prefix("card")?.parse().ok()?;
            Some((n, e.path().join("device")))
        })
        .collect();
    cards.sort();
    cards.into_iter().filter_map(|(index, device)| describe(index, &device)).collect()
}

fn describe(index: u32, device: &Path) -> Option<GpuInfo> {
    let vendor_id = read_hex_u16(&device.join("vendor"))?;
    let vendor = GpuVendor::from_pci_id(vendor_id)?;
    let mut gpu = GpuInfo::new(index, vendor, GpuSource::Sysfs);
    let uevent = read_trimmed(&device.join("uevent")).unwrap_or_default();
    let uevent_field =
        |key: &str| uevent.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::to_string);
    gpu.kernel_driver = uevent_field("DRIVER");
    gpu.pci_bus_id = uevent_field("PCI_SLOT_NAME");
    gpu.pci_id = read_hex_u16(&device.join("device")).map(|d| format!("{vendor_id:04x}:{d:04x}"));
    gpu.name = read_trimmed(&device.join("product_name"));
    // amdgpu's memory counters (bytes); i915 and xe have no such files for integrated GPUs.
    gpu.vram_total_bytes = read_trimmed(&device.join("mem_info_vram_total")).and_then(|v| v.parse().ok());
    gpu.vram_used_bytes = read_trimmed(&device.join("mem_info_vram_used")).and_then(|v| v.parse().ok());
    if let (Some(total), Some(used)) = (gpu.vram_total_bytes, gpu.vram_used_bytes) {
        gpu.vram_free_bytes = total.checked_sub(used);
    }
    let link = |file: &str| read_trimmed(&device.join(file));
    gpu.pcie_gen_current = link("current_link_speed").and_then(|s| pcie_generation(&s));
    gpu.pcie_gen_max = link("max_link_speed").and_then(|s| pcie_generation(&s));
    gpu.pcie_width_current = link("current_link_width").and_then(|s| s.parse().ok());
    gpu.pcie_width_max = link("max_link_width").and_then(|s| s.parse().ok());
    Some(gpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/drm")
    }

    #[test]
    fn reads_an_amdgpu_and_an_intel_card() {
        let gpus = scan(&fixture());
        assert_eq!(gpus.len(), 2, "{gpus:#?}");
        let amd = &gpus[0];
        assert_eq!((amd.index, amd.vendor, amd.source), (1, GpuVendor::Amd, GpuSource::Sysfs));
        assert_eq!(amd.kernel_driver.as_deref(), Some("amdgpu"));
        assert_eq!(amd.pci_bus_id.as_deref(), Some("0000:03:00.0"));
        assert_eq!(amd.pci_id.as_deref(), Some("1002:744c"));
        assert_eq!(amd.vram_total_bytes, Some(25_753_026_560));
        assert_eq!(amd.vram_used_bytes, Some(1_306_427_392));
        assert_eq!(amd.vram_free_bytes, Some(25_753_026_560 - 1_306_427_392));
        assert_eq!((amd.pcie_gen_current, amd.pcie_width_current), (Some(4), Some(16)));
        assert_eq!((amd.pcie_gen_max, amd.pcie_width_max), (Some(4), Some(16)));
        assert_eq!(velollm_core::nominal_vram_gb(amd.vram_total_bytes.unwrap()), 24);
        assert_eq!(amd.name, None, "no product_name file: absent, not guessed");

        let intel = &gpus[1];
        assert_eq!((intel.index, intel.vendor), (2, GpuVendor::Intel));
        assert_eq!(intel.kernel_driver.as_deref(), Some("i915"));
        assert_eq!((intel.vram_total_bytes, intel.pcie_gen_current), (None, None));
    }

    #[test]
    fn link_speeds_map_to_generations() {
        assert_eq!(pcie_generation("2.5 GT/s PCIe"), Some(1));
        assert_eq!(pcie_generation("5.0 GT/s PCIe"), Some(2));
        assert_eq!(pcie_generation("8.0 GT/s PCIe"), Some(3));
        assert_eq!(pcie_generation("16.0 GT/s PCIe"), Some(4));
        assert_eq!(pcie_generation("32.0 GT/s PCIe"), Some(5));
        assert_eq!(pcie_generation("64.0 GT/s PCIe"), Some(6));
        assert_eq!(pcie_generation("Unknown"), None);
    }

    #[test]
    fn a_machine_without_drm_has_no_gpus() {
        assert!(scan(Path::new("/nonexistent/velollm/drm")).is_empty());
    }
}
