//! Which machine and which build measured a run.
//!
//! The hardware fingerprint changes only when the hardware does (a new GPU, more RAM, another CPU); the
//! software fingerprint changes with velollm's version or commit, llama.cpp's build, the compiled backends
//! and features, the CPU flags ggml may use, the OS or the kernel. What changes from one minute to the next
//! (load, governor, temperature, free memory) is [`VolatileContext`]: recorded with each run, never part of
//! either identity. Each fingerprint is the first 16 hex digits of the sha256 of its inputs as canonical JSON
//! (keys sorted, as `serde_json` writes a struct's fields in declaration order and these structs never reorder).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use velollm_core::HardwareInfo;

/// What the hardware fingerprint is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardwareIdentity {
    pub cpu_model: Option<String>,
    pub physical_cores: Option<u32>,
    pub logical_cpus: Option<u32>,
    pub sockets: Option<u32>,
    /// RAM rounded to the nearest GiB: the kernel's MemTotal moves by a few MiB between boots (reserved
    /// memory, firmware), which is not another machine.
    pub ram_gib: Option<u64>,
    pub gpus: Vec<GpuIdentity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuIdentity {
    pub name: Option<String>,
    /// VRAM rounded to the nearest GiB, like RAM.
    pub vram_gib: Option<u64>,
    pub pci_id: Option<String>,
    /// The kernel driver's name (`nvidia`, `amdgpu`); its version is software.
    pub driver: Option<String>,
}

/// What the software fingerprint is made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftwareIdentity {
    pub velollm_version: String,
    pub velollm_git_commit: Option<String>,
    /// llama.cpp's version and commit, as the engine reports them (`None` in a build without llama.cpp).
    pub llama_cpp_version: Option<String>,
    /// llama.cpp's system info line (the CPU features its ggml build uses).
    pub llama_cpp_build: Option<String>,
    /// The backends compiled into this velollm (`llamacpp`, `candle`, `ollama`).
    pub backends: Vec<String>,
    /// The cargo features of this build that change what runs (`cuda`, `dynamic-backends`).
    pub features: Vec<String>,
    /// The CPU's SIMD flags (what ggml and candle may use).
    pub cpu_flags: Vec<String>,
    /// GPU driver versions (NVIDIA's driver and CUDA driver version).
    pub gpu_drivers: Vec<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
}

/// What is recorded with a run but identifies nothing: it explains a number, it does not group it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolatileContext {
    pub load_average_1m: Option<f64>,
    pub cpu_governor: Option<String>,
    /// The hottest thermal zone, °C.
    pub max_temperature_c: Option<f64>,
    pub memory_available_bytes: Option<u64>,
    /// The virtualisation the CPU reports (`hypervisor` flag), or `None` on bare metal / unknown.
    pub virtualized: Option<bool>,
}

/// The machine as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineIdentity {
    /// `--machine NAME`, by default the host name.
    pub alias: String,
    /// An app-specific hash of the OS machine id ([`machine_key`]); never the id itself.
    pub machine_key: Option<String>,
    pub hardware: HardwareIdentity,
}

fn round_gib(bytes: u64) -> u64 {
    const GIB: u64 = 1 << 30;
    (bytes + GIB / 2) / GIB
}

impl HardwareIdentity {
    pub fn from_hardware(hardware: &HardwareInfo) -> HardwareIdentity {
        HardwareIdentity {
            cpu_model: hardware.cpu.model.clone(),
            physical_cores: hardware.cpu.physical_cores,
            logical_cpus: hardware.cpu.logical_cpus,
            sockets: hardware.cpu.sockets,
            ram_gib: hardware.memory.total_bytes.map(round_gib),
            gpus: hardware
                .gpus
                .iter()
                .map(|gpu| GpuIdentity {
                    name: gpu.name.clone(),
                    vram_gib: gpu.vram_total_bytes.map(round_gib),
                    pci_id: gpu.pci_id.clone(),
                    driver: gpu.kernel_driver.clone(),
                })
                .collect(),
        }
    }

    pub fn fingerprint(&self) -> String {
        fingerprint_of(self)
    }
}

impl SoftwareIdentity {
    /// The software identity of this process: `velollm_version`, `velollm_git_commit`, the engine's version
    /// and build line and the build's features come from the caller (the CLI knows them); the rest from
    /// `hardware`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        velollm_version: &str,
        velollm_git_commit: Option<&str>,
        llama_cpp_version: Option<String>,
        llama_cpp_build: Option<String>,
        features: Vec<String>,
        hardware: &HardwareInfo,
    ) -> SoftwareIdentity {
        let mut gpu_drivers: Vec<String> = hardware
            .gpus
            .iter()
            .flat_map(|g| {
                [
                    g.driver_version.as_ref().map(|v| format!("driver {v}")),
                    g.cuda_driver_version.as_ref().map(|v| format!("cuda {v}")),
                ]
            })
            .flatten()
            .collect();
        gpu_drivers.sort();
        gpu_drivers.dedup();
        let mut cpu_flags = hardware.cpu.simd.clone();
        cpu_flags.sort();
        let mut backends = hardware.backends.clone();
        backends.sort();
        let mut features = features;
        features.sort();
        SoftwareIdentity {
            velollm_version: velollm_version.to_string(),
            velollm_git_commit: velollm_git_commit.map(str::to_string),
            llama_cpp_version,
            llama_cpp_build,
            backends,
            features,
            cpu_flags,
            gpu_drivers,
            os: hardware.os.name.clone(),
            kernel: hardware.os.kernel.clone(),
        }
    }

    pub fn fingerprint(&self) -> String {
        fingerprint_of(self)
    }
}

fn fingerprint_of<T: Serialize>(value: &T) -> String {
    let canonical = serde_json::to_string(value).unwrap_or_default();
    hex(&Sha256::digest(canonical.as_bytes()))[..16].to_string()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OS machine id (`/etc/machine-id`, else D-Bus's copy) hashed with a velollm-specific prefix, so the
/// value stored cannot be matched against the raw id other programs see or send (systemd's
/// `sd_id128_get_machine_app_specific` follows the same idea). `None` where the OS has no machine id.
pub fn machine_key() -> Option<String> {
    let raw = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())?;
    Some(machine_key_of(&raw))
}

/// [`machine_key`] of a given raw id.
pub fn machine_key_of(raw_machine_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"velollm-history machine key v1\0");
    hasher.update(raw_machine_id.trim().as_bytes());
    hex(&hasher.finalize())[..32].to_string()
}

impl VolatileContext {
    /// What this machine is doing now (Linux's /proc and /sys; each value absent where unreadable).
    pub fn now(memory_available_bytes: Option<u64>) -> VolatileContext {
        let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string());
        let load_average_1m =
            read("/proc/loadavg").and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
        let cpu_governor = read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").filter(|s| !s.is_empty());
        let max_temperature_c = std::fs::read_dir("/sys/class/thermal")
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| read(&entry.path().join("temp").to_string_lossy()))
            .filter_map(|millidegrees| millidegrees.parse::<f64>().ok())
            .map(|m| m / 1000.0)
            .fold(None, |max: Option<f64>, t| Some(max.map_or(t, |m| m.max(t))));
        let virtualized = read("/proc/cpuinfo").map(|text| {
            text.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
        });
        VolatileContext { load_average_1m, cpu_governor, max_temperature_c, memory_available_bytes, virtualized }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_key_is_not_the_raw_id_and_is_stable() {
        let raw = "0123456789abcdef0123456789abcdef";
        let key = machine_key_of(raw);
        assert_eq!(key, machine_key_of(&format!("{raw}\n")));
        assert_ne!(key, raw);
        assert!(!key.contains(raw) && !raw.contains(&key));
        assert_ne!(key, machine_key_of("another machine"));
        if let Some(real) = machine_key() {
            let raw = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
            assert!(raw.trim().is_empty() || !real.contains(raw.trim()));
        }
    }

    #[test]
    fn ram_is_rounded_to_the_nearest_gib() {
        assert_eq!(round_gib(24 * (1 << 30) - 40 * (1 << 20)), 24);
        assert_eq!(round_gib(0), 0);
    }
}
