//! What machine velollm runs on.
//!
//! Read from Linux's `/proc`, `/sys` and `/etc` files directly, and from NVML (loaded at run time, so the build
//! needs no NVIDIA driver): cheap, and each value that cannot be read is reported as absent rather than guessed.
//!
//! - [`detect`]: the hardware snapshot (`velollm detect`, embedded in result rows);
//! - [`bandwidth`]: a STREAM-style memory-bandwidth probe and its cache;
//! - [`telemetry`]: the sampler the runner opens and closes around each timed iteration.

use std::collections::BTreeSet;
use std::fs;

use velollm_core::{Environment, GpuVendor, HardwareInfo};

pub mod bandwidth;
pub mod cpu;
mod gpu_sysfs;
pub mod memory;
pub mod nvidia;
pub mod telemetry;
#[cfg(test)]
mod testdir;

pub use gpu_sysfs::{pcie_generation, scan as scan_drm};

/// The hardware snapshot of this machine: CPU, memory, OS, every GPU (NVML, then sysfs for AMD, Intel and
/// driverless NVIDIA cards) and the cached memory bandwidth, if one was measured. The backends and engine
/// devices of the build are filled in by `velollm-benchmarks`, which knows them.
pub fn detect() -> HardwareInfo {
    let (mut gpus, nvml) = nvidia::detect();
    let nvml_found_nvidia = !gpus.is_empty();
    gpus.extend(
        gpu_sysfs::scan(std::path::Path::new("/sys/class/drm"))
            .into_iter()
            .filter(|g| !(nvml_found_nvidia && g.vendor == GpuVendor::Nvidia)),
    );
    HardwareInfo {
        cpu: cpu::detect(),
        memory: memory::detect_memory(),
        os: memory::detect_os(),
        gpus,
        nvml,
        backends: Vec::new(),
        engine_devices: Vec::new(),
        memory_bandwidth: bandwidth::cached(),
    }
}

/// velollm's own version.
pub const VELOLLM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit velollm was built from (`-dirty` when tracked files had changes), if known.
pub fn git_commit() -> Option<&'static str> {
    option_env!("VELOLLM_GIT_COMMIT")
}

/// CPU facts from `/proc/cpuinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    pub model: Option<String>,
    pub physical_cores: Option<u32>,
    pub logical_cpus: Option<u32>,
}

impl CpuInfo {
    pub fn detect() -> CpuInfo {
        let from_proc = fs::read_to_string("/proc/cpuinfo").ok().map(|text| CpuInfo::parse(&text));
        let logical_fallback = std::thread::available_parallelism().ok().map(|n| n.get() as u32);
        match from_proc {
            Some(info) => CpuInfo { logical_cpus: info.logical_cpus.or(logical_fallback), ..info },
            None => CpuInfo { model: None, physical_cores: None, logical_cpus: logical_fallback },
        }
    }

    /// Parses `/proc/cpuinfo`. Physical cores are the distinct (physical id, core id) pairs; where a kernel
    /// (some VMs, some architectures) omits those fields, the count is absent rather than guessed.
    pub fn parse(text: &str) -> CpuInfo {
        let mut model = None;
        let mut logical = 0u32;
        let mut cores = BTreeSet::new();
        let mut physical_id = None;
        let mut complete_topology = true;
        for block in text.split("\n\n").filter(|b| b.contains("processor")) {
            logical += 1;
            let mut core_id = None;
            for line in block.lines() {
                let Some((key, value)) = line.split_once(':') else { continue };
                let (key, value) = (key.trim(), value.trim());
                match key {
                    "model name" | "Model" if model.is_none() => model = Some(value.to_string()),
                    "physical id" => physical_id = Some(value.to_string()),
                    "core id" => core_id = Some(value.to_string()),
                    _ => {}
                }
            }
            match core_id {
                Some(core) => {
                    cores.insert((physical_id.clone().unwrap_or_default(), core));
                }
                None => complete_topology = false,
            }
        }
        CpuInfo {
            model,
            physical_cores: (complete_topology && !cores.is_empty()).then_some(cores.len() as u32),
            logical_cpus: (logical > 0).then_some(logical),
        }
    }
}

/// The default thread count for engines, as llama-bench computes its own (`cpu_get_num_math`): the physical
/// core count (hyper-threads share a core's SIMD units, and more threads than cores slows llama.cpp down) and,
/// on a hybrid Intel CPU, only the performance cores (llama.cpp's threads work in lockstep, so an efficiency
/// core holds the others back); else the logical CPU count, else 1.
pub fn default_threads() -> u32 {
    if let Some(cores) = performance_cores(std::path::Path::new("/sys/devices")) {
        return cores;
    }
    let cpu = CpuInfo::detect();
    cpu.physical_cores.or(cpu.logical_cpus).unwrap_or(1).max(1)
}

/// On a hybrid CPU under Linux (`devices/cpu_atom` and `devices/cpu_core` exist, the kernel's two PMUs of
/// Intel's hybrid parts): the physical cores among `cpu_core/cpus`, one per distinct sibling set. llama.cpp
/// finds the same cores by pinning itself to each CPU and asking CPUID for its core type.
fn performance_cores(devices: &std::path::Path) -> Option<u32> {
    fs::read_to_string(devices.join("cpu_atom/cpus")).ok().filter(|t| !t.trim().is_empty())?;
    let list = fs::read_to_string(devices.join("cpu_core/cpus")).ok()?;
    let mut cores = BTreeSet::new();
    for cpu in cpu::parse_cpu_list(list.trim())? {
        let topology = devices.join(format!("system/cpu/cpu{cpu}/topology"));
        let siblings = fs::read_to_string(topology.join("core_cpus_list"))
            .or_else(|_| fs::read_to_string(topology.join("thread_siblings_list")))
            .ok()?;
        let package = fs::read_to_string(topology.join("physical_package_id")).unwrap_or_default();
        cores.insert((package.trim().to_string(), siblings.trim().to_string()));
    }
    u32::try_from(cores.len()).ok().filter(|&n| n > 0)
}

/// The one-minute load average (`/proc/loadavg`): runnable processes, averaged, this process's threads included.
pub fn load_average_1m() -> Option<f64> {
    fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Total RAM from `/proc/meminfo`.
pub fn ram_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn os_name() -> String {
    fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Everything about the machine and velollm's build that a result records; the backend fills in its part.
pub fn environment(backend: &str, backend_version: Option<String>, backend_build: Option<String>) -> Environment {
    let cpu = CpuInfo::detect();
    Environment {
        velollm_version: VELOLLM_VERSION.to_string(),
        velollm_git_commit: git_commit().map(str::to_string),
        backend: backend.to_string(),
        backend_version,
        backend_build,
        cpu_model: cpu.model,
        cpu_physical_cores: cpu.physical_cores,
        cpu_logical_cpus: cpu.logical_cpus,
        ram_bytes: ram_bytes(),
        os: format!("{} ({})", os_name(), std::env::consts::ARCH),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_cpu_defaults_to_its_performance_cores() {
        let dir = testdir::TestDir::new("hybrid");
        // 2 P-cores with two threads each (CPUs 0-3), 4 E-cores (CPUs 4-7).
        dir.write("cpu_core/cpus", "0-3\n");
        dir.write("cpu_atom/cpus", "4-7\n");
        for cpu in 0..8 {
            let siblings = if cpu < 4 { format!("{}-{}", cpu / 2 * 2, cpu / 2 * 2 + 1) } else { cpu.to_string() };
            dir.write(&format!("system/cpu/cpu{cpu}/topology/core_cpus_list"), &siblings);
            dir.write(&format!("system/cpu/cpu{cpu}/topology/physical_package_id"), "0");
        }
        assert_eq!(performance_cores(dir.path()), Some(2));
        // Not hybrid: no efficiency-core PMU, the physical core count applies.
        std::fs::remove_file(dir.path().join("cpu_atom/cpus")).unwrap();
        assert_eq!(performance_cores(dir.path()), None);
    }

    #[test]
    fn counts_physical_cores_from_topology() {
        // Two cores with two hyper-threads each.
        let text = (0..4)
            .map(|i| format!("processor\t: {i}\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: {}\n", i % 2))
            .collect::<Vec<_>>()
            .join("\n");
        let info = CpuInfo::parse(&text);
        assert_eq!(info.model.as_deref(), Some("Test CPU"));
        assert_eq!(info.logical_cpus, Some(4));
        assert_eq!(info.physical_cores, Some(2));
    }

    #[test]
    fn missing_topology_is_absent_not_guessed() {
        let text = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n";
        let info = CpuInfo::parse(text);
        assert_eq!(info.logical_cpus, Some(2));
        assert_eq!(info.physical_cores, None);
    }

    #[test]
    fn detect_describes_this_machine() {
        let hw = detect();
        assert!(hw.cpu.logical_cpus.unwrap_or(0) >= 1);
        assert!(hw.memory.total_bytes.unwrap_or(0) > 0);
        assert_eq!(hw.os.arch, std::env::consts::ARCH);
        if !hw.nvml.available {
            assert!(hw.gpus.iter().all(|g| g.source == velollm_core::GpuSource::Sysfs));
            assert!(hw.nvml.error.is_some());
        }
        let json = serde_json::to_value(&hw).unwrap();
        assert!(json["gpus"].is_array());
    }

    #[test]
    fn this_machine_is_described() {
        let env = environment("llamacpp", None, None);
        assert!(env.cpu_logical_cpus.unwrap_or(0) >= 1);
        assert!(env.ram_bytes.unwrap_or(0) > 0);
        assert!(default_threads() >= 1);
    }
}
