//! `velollm detect`: the hardware snapshot, as JSON (piped or redirected) or a table (a terminal).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use velollm_core::{nominal_vram_gb, GpuSource, HardwareInfo};
use velollm_hw::bandwidth::{self, BandwidthOptions};

#[derive(Args)]
pub struct DetectArgs {
    /// Output format (default: a table on a terminal, JSON when stdout is a file or a pipe).
    #[arg(long, value_enum)]
    pub format: Option<DetectFormat>,
    /// Also measure the memory bandwidth (STREAM-style copy, triad and read over arrays far larger than the
    /// caches; a few seconds) and cache it for later runs.
    #[arg(long)]
    pub bandwidth: bool,
    /// Also list the devices of these ggml RPC servers (HOST:PORT, comma-separated; `velollm rpc-server`).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub rpc: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetectFormat {
    Json,
    Table,
}

pub fn run(args: DetectArgs) -> anyhow::Result<ExitCode> {
    if let Some(list) = &args.rpc {
        connect_rpc(list)?;
    }
    let mut hardware = velollm_benchmarks::hardware_info();
    if args.bandwidth {
        let options = BandwidthOptions::for_this_machine();
        // Progress goes to stderr: stdout stays valid JSON.
        eprintln!(
            "measuring memory bandwidth: 3 arrays of {} MiB, {} threads, best of {}...",
            options.array_bytes >> 20,
            options.threads,
            options.repetitions
        );
        let measurement = bandwidth::measure(&options);
        match bandwidth::store(&measurement) {
            Ok(path) => eprintln!("cached in {}", path.display()),
            Err(e) => eprintln!("warning: the measurement was not cached: {e}"),
        }
        hardware.memory_bandwidth = Some(measurement);
    }
    let format =
        args.format.unwrap_or(if std::io::stdout().is_terminal() { DetectFormat::Table } else { DetectFormat::Json });
    let text = match format {
        DetectFormat::Json => serde_json::to_string_pretty(&hardware)? + "\n",
        DetectFormat::Table => table(&hardware),
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`velollm detect | head`) is not an error.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "llamacpp")]
fn connect_rpc(list: &str) -> anyhow::Result<()> {
    use velollm_benchmarks::llamacpp_rpc;
    let endpoints = llamacpp_rpc::parse_endpoints(list).map_err(crate::UsageError)?;
    llamacpp_rpc::connect(&endpoints, false).map_err(crate::UsageError)?;
    Ok(())
}

#[cfg(not(feature = "llamacpp"))]
fn connect_rpc(_list: &str) -> anyhow::Result<()> {
    Err(crate::UsageError("--rpc needs llama.cpp, which this build leaves out".into()).into())
}

fn na<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

/// Bytes in binary units (`23.5 GiB`, `48 KiB`).
pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn size(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "n/a".to_string(), binary_size)
}

/// The readable view of the snapshot (a terminal's default).
pub fn table(hw: &HardwareInfo) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut row = |label: &str, text: String| lines.push(format!("{label:<11}{text}"));
    let cpu = &hw.cpu;
    row(
        "CPU",
        format!(
            "{} ({})",
            cpu.model.as_deref().unwrap_or("unknown model"),
            cpu.vendor.as_deref().unwrap_or("unknown vendor")
        ),
    );
    row(
        "",
        format!(
            "{} physical cores, {} logical CPUs, {} socket(s); MHz: base {}, max {}, reported {}",
            na(cpu.physical_cores),
            na(cpu.logical_cpus),
            na(cpu.sockets),
            na(cpu.base_mhz),
            na(cpu.max_mhz),
            na(cpu.reported_mhz)
        ),
    );
    row(
        "",
        format!(
            "caches: L1d {}, L2 {}, L3 {} (last level, all instances: {})",
            size(cpu.l1d_bytes),
            size(cpu.l2_bytes),
            size(cpu.l3_bytes),
            size(cpu.last_level_cache_total_bytes)
        ),
    );
    row("", format!("SIMD: {}", if cpu.simd.is_empty() { "none reported".to_string() } else { cpu.simd.join(" ") }));
    let m = &hw.memory;
    row(
        "Memory",
        format!(
            "{} total, {} available; swap {} ({} free)",
            size(m.total_bytes),
            size(m.available_bytes),
            size(m.swap_total_bytes),
            size(m.swap_free_bytes)
        ),
    );
    row(
        "OS",
        format!(
            "{}, kernel {}, {}",
            hw.os.name.as_deref().unwrap_or("unknown"),
            hw.os.kernel.as_deref().unwrap_or("n/a"),
            hw.os.arch
        ),
    );
    if hw.gpus.is_empty() {
        row("GPUs", "none".to_string());
    }
    for gpu in &hw.gpus {
        let class = gpu.vram_total_bytes.map(|b| format!(" ({} GB class)", nominal_vram_gb(b))).unwrap_or_default();
        let name = match &gpu.name {
            Some(name) => name.clone(),
            None => format!("{} GPU (PCI {})", gpu.vendor, gpu.pci_id.as_deref().unwrap_or("n/a")),
        };
        let source = match gpu.source {
            GpuSource::Nvml => "nvml",
            GpuSource::Sysfs => "sysfs",
        };
        row(&format!("GPU {}", gpu.index), format!("{name}{class} [{source}]"));
        row(
            "",
            format!(
                "VRAM {} total, {} free, {} used; driver {} ({}), CUDA {}, compute capability {}",
                size(gpu.vram_total_bytes),
                size(gpu.vram_free_bytes),
                size(gpu.vram_used_bytes),
                gpu.driver_version.as_deref().unwrap_or("n/a"),
                gpu.kernel_driver.as_deref().unwrap_or("n/a"),
                gpu.cuda_driver_version.as_deref().unwrap_or("n/a"),
                gpu.compute_capability.as_deref().unwrap_or("n/a")
            ),
        );
        row(
            "",
            format!(
                "PCIe gen {} x{} (max gen {} x{}); power limit {} W; memory {} MHz × {} bit → {} GB/s theoretical",
                na(gpu.pcie_gen_current),
                na(gpu.pcie_width_current),
                na(gpu.pcie_gen_max),
                na(gpu.pcie_width_max),
                na(gpu.power_limit_watts),
                na(gpu.max_memory_clock_mhz),
                na(gpu.memory_bus_width_bits),
                na(gpu.theoretical_bandwidth_gb_per_s.map(|b| format!("{b:.0}")))
            ),
        );
    }
    row(
        "NVML",
        match (&hw.nvml.available, &hw.nvml.error) {
            (true, None) => format!("loaded (version {})", hw.nvml.version.as_deref().unwrap_or("n/a")),
            (true, Some(e)) => format!("loaded, with errors: {e}"),
            (false, e) => format!("unavailable: {}", e.as_deref().unwrap_or("unknown reason")),
        },
    );
    row("Backends", if hw.backends.is_empty() { "none".to_string() } else { hw.backends.join(", ") });
    if hw.engine_devices.is_empty() {
        row("Devices", "none reported by the engines".to_string());
    }
    for (i, device) in hw.engine_devices.iter().enumerate() {
        row(
            if i == 0 { "Devices" } else { "" },
            format!(
                "{} {} [{}, {}]: {}, {} free of {}",
                device.engine,
                device.name,
                device.backend,
                device.kind,
                device.description,
                binary_size(device.memory_free_bytes),
                binary_size(device.memory_total_bytes)
            ),
        );
    }
    row(
        "Bandwidth",
        match &hw.memory_bandwidth {
            Some(b) => format!(
                "copy {:.1} GB/s, triad {:.1} GB/s, read {:.1} GB/s (measured {}; 3 × {}, {} threads, best of {})",
                b.copy_gb_per_s,
                b.triad_gb_per_s,
                b.read_gb_per_s,
                b.measured_at,
                binary_size(b.array_bytes),
                b.threads,
                b.repetitions
            ),
            None => "not measured (velollm detect --bandwidth)".to_string(),
        },
    );
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use velollm_core::{GpuInfo, GpuVendor};

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(binary_size(0), "0 B");
        assert_eq!(binary_size(48 << 10), "48 KiB");
        assert_eq!(binary_size(24_564 << 20), "24.0 GiB");
        assert_eq!(binary_size(1536 << 20), "1.5 GiB");
    }

    #[test]
    fn the_table_shows_every_section_and_absent_values_as_na() {
        let mut hw = HardwareInfo::default();
        let mut gpu = GpuInfo::new(0, GpuVendor::Nvidia, GpuSource::Nvml);
        gpu.name = Some("NVIDIA GeForce RTX 4090".into());
        gpu.vram_total_bytes = Some(24_564 << 20);
        gpu.theoretical_bandwidth_gb_per_s = Some(1008.1);
        hw.gpus.push(gpu);
        let text = table(&hw);
        for expected in ["CPU", "Memory", "OS", "GPU 0", "NVIDIA GeForce RTX 4090 (24 GB class) [nvml]", "1008 GB/s"] {
            assert!(text.contains(expected), "{expected} missing:\n{text}");
        }
        assert!(text.contains("Bandwidth  not measured"), "{text}");
        assert!(text.contains("n/a"));
    }
}
