//! The CPU: `/proc/cpuinfo` for identity and SIMD flags, `/sys/devices/system/cpu` for topology, frequencies
//! and caches. Parsers take the text or the directory, so they run on captured fixtures in tests.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use velollm_core::CpuDetails;

/// SIMD extensions worth reporting for inference kernels, in the kernel's spelling (x86 `flags`, arm64
/// `Features`). arm64's `asimd` (Advanced SIMD) is NEON and is reported as `neon`.
const SIMD_OF_INTEREST: &[(&str, &str)] = &[
    ("sse4_2", "sse4_2"),
    ("avx", "avx"),
    ("avx2", "avx2"),
    ("fma", "fma"),
    ("f16c", "f16c"),
    ("avx_vnni", "avx_vnni"),
    ("avx512f", "avx512f"),
    ("avx512bw", "avx512bw"),
    ("avx512vl", "avx512vl"),
    ("avx512vbmi", "avx512vbmi"),
    ("avx512_vnni", "avx512_vnni"),
    ("avx512_bf16", "avx512_bf16"),
    ("avx512_fp16", "avx512_fp16"),
    ("amx_tile", "amx_tile"),
    ("amx_int8", "amx_int8"),
    ("amx_bf16", "amx_bf16"),
    ("amx_fp16", "amx_fp16"),
    ("neon", "neon"),
    ("asimd", "neon"),
    ("asimdhp", "asimdhp"),
    ("asimddp", "asimddp"),
    ("i8mm", "i8mm"),
    ("bf16", "bf16"),
    ("sve", "sve"),
    ("sve2", "sve2"),
    ("sme", "sme"),
];

/// arm64 implementer codes (`CPU implementer`), as in the Arm architecture reference manual's MIDR table.
fn arm_implementer(code: u32) -> Option<&'static str> {
    Some(match code {
        0x41 => "ARM",
        0x42 => "Broadcom",
        0x43 => "Cavium",
        0x46 => "Fujitsu",
        0x48 => "HiSilicon",
        0x4e => "NVIDIA",
        0x50 => "APM",
        0x51 => "Qualcomm",
        0x61 => "Apple",
        0x6d => "Microsoft",
        0xc0 => "Ampere",
        _ => return None,
    })
}

/// Names of common arm64 parts (`CPU part`) per implementer; an unknown part leaves the model absent.
fn arm_part(implementer: u32, part: u32) -> Option<&'static str> {
    Some(match (implementer, part) {
        (0x41, 0xd03) => "Cortex-A53",
        (0x41, 0xd04) => "Cortex-A35",
        (0x41, 0xd05) => "Cortex-A55",
        (0x41, 0xd07) => "Cortex-A57",
        (0x41, 0xd08) => "Cortex-A72",
        (0x41, 0xd09) => "Cortex-A73",
        (0x41, 0xd0a) => "Cortex-A75",
        (0x41, 0xd0b) => "Cortex-A76",
        (0x41, 0xd0c) => "Neoverse-N1",
        (0x41, 0xd0d) => "Cortex-A77",
        (0x41, 0xd40) => "Neoverse-V1",
        (0x41, 0xd41) => "Cortex-A78",
        (0x41, 0xd44) => "Cortex-X1",
        (0x41, 0xd46) => "Cortex-A510",
        (0x41, 0xd47) => "Cortex-A710",
        (0x41, 0xd48) => "Cortex-X2",
        (0x41, 0xd49) => "Neoverse-N2",
        (0x41, 0xd4f) => "Neoverse-V2",
        (0x41, 0xd80) => "Cortex-A520",
        (0x41, 0xd81) => "Cortex-A720",
        (0x41, 0xd82) => "Cortex-X4",
        (0x41, 0xd84) => "Neoverse-V3",
        (0x41, 0xd8e) => "Neoverse-N3",
        (0x46, 0x001) => "A64FX",
        (0x48, 0xd01) => "Kunpeng-920",
        (0xc0, 0xac3) => "Ampere-1",
        _ => return None,
    })
}

/// What `/proc/cpuinfo` says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CpuInfoText {
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub logical_cpus: Option<u32>,
    /// Distinct (physical id, core id) pairs, when every processor block has them.
    pub physical_cores: Option<u32>,
    /// Distinct `physical id` values, when present.
    pub sockets: Option<u32>,
    pub reported_mhz: Option<f64>,
    pub simd: Vec<String>,
}

fn parse_hex(value: &str) -> Option<u32> {
    u32::from_str_radix(value.trim().trim_start_matches("0x"), 16).ok()
}

impl CpuInfoText {
    pub fn parse(text: &str) -> CpuInfoText {
        let mut info = CpuInfoText::default();
        let mut logical = 0u32;
        let mut cores = BTreeSet::new();
        let mut packages = BTreeSet::new();
        let mut complete_topology = true;
        let mut flags: Option<BTreeSet<String>> = None;
        let mut arm_parts: Vec<&'static str> = Vec::new();
        let mut arm_vendor = None;
        for block in text.split("\n\n") {
            let fields: Vec<(&str, &str)> =
                block.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim(), v.trim())).collect();
            let get = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            if get("processor").is_none() {
                // Trailing blocks (arm32's `Hardware`/`Model` lines, Raspberry Pi's `Model`).
                if info.model.is_none() {
                    info.model = get("Model").map(str::to_string);
                }
                continue;
            }
            logical += 1;
            if info.model.is_none() {
                info.model = get("model name").or(get("Model")).map(str::to_string);
            }
            if info.vendor.is_none() {
                info.vendor = get("vendor_id").map(str::to_string);
            }
            if info.reported_mhz.is_none() {
                info.reported_mhz = get("cpu MHz").and_then(|v| v.parse().ok());
            }
            if flags.is_none() {
                if let Some(list) = get("flags").or(get("Features")) {
                    flags = Some(list.split_whitespace().map(str::to_string).collect());
                }
            }
            if let (Some(implementer), Some(part)) =
                (get("CPU implementer").and_then(parse_hex), get("CPU part").and_then(parse_hex))
            {
                arm_vendor = arm_vendor.or(arm_implementer(implementer));
                if let Some(name) = arm_part(implementer, part) {
                    if !arm_parts.contains(&name) {
                        arm_parts.push(name);
                    }
                }
            }
            let package = get("physical id");
            if let Some(package) = package {
                packages.insert(package.to_string());
            }
            match get("core id") {
                Some(core) => {
                    cores.insert((package.unwrap_or_default().to_string(), core.to_string()));
                }
                None => complete_topology = false,
            }
        }
        if info.model.is_none() && !arm_parts.is_empty() {
            info.model = Some(arm_parts.join(" + "));
        }
        if info.vendor.is_none() {
            info.vendor = arm_vendor.map(str::to_string);
        }
        info.logical_cpus = (logical > 0).then_some(logical);
        info.physical_cores = (complete_topology && !cores.is_empty()).then_some(cores.len() as u32);
        info.sockets = (!packages.is_empty()).then_some(packages.len() as u32);
        if let Some(flags) = flags {
            for (flag, name) in SIMD_OF_INTEREST {
                if flags.contains(*flag) && !info.simd.iter().any(|s| s == name) {
                    info.simd.push(name.to_string());
                }
            }
        }
        info
    }
}

/// What `/sys/devices/system/cpu` says (topology, frequencies, caches).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CpuSysfs {
    pub physical_cores: Option<u32>,
    pub sockets: Option<u32>,
    pub logical_cpus: Option<u32>,
    pub base_mhz: Option<f64>,
    pub max_mhz: Option<f64>,
    pub l1d_bytes: Option<u64>,
    pub l2_bytes: Option<u64>,
    pub l3_bytes: Option<u64>,
    pub last_level_cache_total_bytes: Option<u64>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A sysfs cache size: `48K`, `2048K`, `32M`, or plain bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let value: u64 = digits.parse().ok()?;
    let multiplier = match unit.trim() {
        "" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    Some(value * multiplier)
}

struct CacheEntry {
    level: u32,
    kind: String,
    size: u64,
    shared_cpus: String,
}

fn caches_of(cpu_dir: &Path) -> Vec<CacheEntry> {
    let Ok(entries) = fs::read_dir(cpu_dir.join("cache")) else { return Vec::new() };
    let mut caches: Vec<CacheEntry> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
        .filter_map(|e| {
            let dir = e.path();
            Some(CacheEntry {
                level: read_trimmed(&dir.join("level"))?.parse().ok()?,
                kind: read_trimmed(&dir.join("type"))?,
                size: parse_size(&read_trimmed(&dir.join("size"))?)?,
                shared_cpus: read_trimmed(&dir.join("shared_cpu_list")).unwrap_or_default(),
            })
        })
        .collect();
    caches.sort_by_key(|c| c.level);
    caches
}

/// A kernel CPU list (`0-3,8,10-11`) as CPU numbers; `None` when it is malformed.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last): (u32, u32) = (first.parse().ok()?, last.parse().ok()?);
                if last < first || last - first > 65_536 {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

fn khz_to_mhz(path: &Path) -> Option<f64> {
    read_trimmed(path)?.parse::<f64>().ok().filter(|v| *v > 0.0).map(|khz| khz / 1000.0)
}

impl CpuSysfs {
    /// Reads `dir` laid out like `/sys/devices/system/cpu` (`cpuN/topology`, `cpuN/cpufreq`, `cpuN/cache`).
    pub fn read(dir: &Path) -> CpuSysfs {
        let mut cpus: Vec<(u32, std::path::PathBuf)> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n: u32 = name.strip_prefix("cpu")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        cpus.sort();
        let mut info = CpuSysfs::default();

        // Topology: a physical core is a distinct set of hardware threads (`core_cpus_list`, older kernels
        // `thread_siblings_list`) within a package; CPUs without readable topology (offline) are left out.
        let mut cores = BTreeSet::new();
        let mut packages = BTreeSet::new();
        let mut online = 0u32;
        for (_, path) in &cpus {
            let topology = path.join("topology");
            let siblings = read_trimmed(&topology.join("core_cpus_list"))
                .or_else(|| read_trimmed(&topology.join("thread_siblings_list")));
            let package = read_trimmed(&topology.join("physical_package_id"));
            if let (Some(siblings), Some(package)) = (siblings, package) {
                online += 1;
                cores.insert((package.clone(), siblings));
                packages.insert(package);
            }
        }
        if online > 0 {
            info.physical_cores = Some(cores.len() as u32);
            info.sockets = Some(packages.len() as u32);
            info.logical_cpus = Some(online);
        }

        if let Some((_, cpu0)) = cpus.first() {
            info.base_mhz = khz_to_mhz(&cpu0.join("cpufreq/base_frequency"));
        }
        // Hybrid CPUs have cores of different maximum clocks: report the highest.
        info.max_mhz =
            cpus.iter().filter_map(|(_, p)| khz_to_mhz(&p.join("cpufreq/cpuinfo_max_freq"))).max_by(f64::total_cmp);

        if let Some((_, cpu0)) = cpus.first() {
            let caches = caches_of(cpu0);
            let find = |level: u32, kinds: &[&str]| {
                caches.iter().find(|c| c.level == level && kinds.contains(&c.kind.as_str())).map(|c| c.size)
            };
            info.l1d_bytes = find(1, &["Data", "Unified"]);
            info.l2_bytes = find(2, &["Unified", "Data"]);
            info.l3_bytes = find(3, &["Unified", "Data"]);
        }
        // The last level summed over its distinct instances (one per socket, CCD or cluster).
        let mut last_level: Option<u32> = None;
        let mut instances: std::collections::BTreeMap<String, u64> = Default::default();
        for (_, path) in &cpus {
            for cache in caches_of(path).into_iter().filter(|c| c.kind != "Instruction") {
                match last_level {
                    Some(level) if cache.level < level => continue,
                    Some(level) if cache.level > level => instances.clear(),
                    _ => {}
                }
                last_level = Some(cache.level);
                let key = if cache.shared_cpus.is_empty() { path.display().to_string() } else { cache.shared_cpus };
                instances.insert(key, cache.size);
            }
        }
        info.last_level_cache_total_bytes = (!instances.is_empty()).then(|| instances.values().sum());
        info
    }
}

/// Combines the two sources: sysfs topology first (it exists on every architecture), `/proc/cpuinfo` where
/// sysfs is silent.
pub fn combine(text: CpuInfoText, sys: CpuSysfs) -> CpuDetails {
    CpuDetails {
        model: text.model,
        vendor: text.vendor,
        physical_cores: sys.physical_cores.or(text.physical_cores),
        logical_cpus: text.logical_cpus.or(sys.logical_cpus),
        sockets: sys.sockets.or(text.sockets),
        base_mhz: sys.base_mhz,
        max_mhz: sys.max_mhz,
        reported_mhz: text.reported_mhz,
        l1d_bytes: sys.l1d_bytes,
        l2_bytes: sys.l2_bytes,
        l3_bytes: sys.l3_bytes,
        last_level_cache_total_bytes: sys.last_level_cache_total_bytes,
        simd: text.simd,
    }
}

/// This machine's CPU.
pub fn detect() -> CpuDetails {
    let text = fs::read_to_string("/proc/cpuinfo").map(|t| CpuInfoText::parse(&t)).unwrap_or_default();
    let sys = CpuSysfs::read(Path::new("/sys/devices/system/cpu"));
    let mut cpu = combine(text, sys);
    if cpu.logical_cpus.is_none() {
        cpu.logical_cpus = std::thread::available_parallelism().ok().map(|n| n.get() as u32);
    }
    cpu
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdir::TestDir;

    const X86: &str = include_str!("../tests/fixtures/cpuinfo-x86_64-xeon-2vcpu.txt");
    const ARM64: &str = include_str!("../tests/fixtures/cpuinfo-arm64-neoverse-n1.txt");

    #[test]
    fn cpu_lists_read_like_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn parses_a_captured_x86_cpuinfo() {
        let info = CpuInfoText::parse(X86);
        assert_eq!(info.model.as_deref(), Some("Intel(R) Xeon(R) Processor"));
        assert_eq!(info.vendor.as_deref(), Some("GenuineIntel"));
        assert_eq!(info.logical_cpus, Some(2));
        assert_eq!(info.physical_cores, Some(2));
        assert_eq!(info.sockets, Some(1));
        assert_eq!(info.reported_mhz, Some(2100.0));
        for flag in ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"] {
            assert!(info.simd.iter().any(|s| s == flag), "{flag} missing from {:?}", info.simd);
        }
        assert!(!info.simd.iter().any(|s| s == "neon"));
    }

    #[test]
    fn parses_an_arm64_cpuinfo() {
        let info = CpuInfoText::parse(ARM64);
        assert_eq!(info.model.as_deref(), Some("Neoverse-N1"));
        assert_eq!(info.vendor.as_deref(), Some("ARM"));
        assert_eq!(info.logical_cpus, Some(4));
        // arm64 cpuinfo has no topology lines: absent, not guessed (sysfs supplies it).
        assert_eq!(info.physical_cores, None);
        assert_eq!(info.reported_mhz, None);
        assert_eq!(info.simd, vec!["neon", "asimdhp", "asimddp"]);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("307200K"), Some(300 << 20));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("12X"), None);
    }

    /// Two sockets × 2 cores × 2 threads, with cpufreq and caches, laid out like sysfs.
    fn sysfs_fixture() -> TestDir {
        let dir = TestDir::new("cpu-sysfs");
        for cpu in 0..8u32 {
            let socket = cpu / 4;
            let core_first = cpu - cpu % 2;
            let base = format!("cpu{cpu}");
            dir.write(&format!("{base}/topology/physical_package_id"), &format!("{socket}\n"));
            dir.write(&format!("{base}/topology/core_cpus_list"), &format!("{}-{}\n", core_first, core_first + 1));
            dir.write(&format!("{base}/cpufreq/base_frequency"), "2100000\n");
            dir.write(&format!("{base}/cpufreq/cpuinfo_max_freq"), if cpu == 5 { "3900000\n" } else { "3500000\n" });
            for (index, level, kind, size, shared) in [
                (0, 1, "Data", "48K", format!("{cpu}")),
                (1, 1, "Instruction", "32K", format!("{cpu}")),
                (2, 2, "Unified", "2048K", format!("{}-{}", core_first, core_first + 1)),
                (3, 3, "Unified", "30M", format!("{}-{}", socket * 4, socket * 4 + 3)),
            ] {
                let cache = format!("{base}/cache/index{index}");
                dir.write(&format!("{cache}/level"), &format!("{level}\n"));
                dir.write(&format!("{cache}/type"), &format!("{kind}\n"));
                dir.write(&format!("{cache}/size"), &format!("{size}\n"));
                dir.write(&format!("{cache}/shared_cpu_list"), &format!("{shared}\n"));
            }
        }
        // An offline CPU has no topology and is not counted.
        dir.write("cpu8/online", "0\n");
        dir.write("cpufreq/policy0/scaling_driver", "intel_pstate\n");
        dir
    }

    #[test]
    fn reads_topology_frequencies_and_caches_from_sysfs() {
        let dir = sysfs_fixture();
        let sys = CpuSysfs::read(dir.path());
        assert_eq!(sys.physical_cores, Some(4));
        assert_eq!(sys.sockets, Some(2));
        assert_eq!(sys.logical_cpus, Some(8));
        assert_eq!(sys.base_mhz, Some(2100.0));
        assert_eq!(sys.max_mhz, Some(3900.0));
        assert_eq!(sys.l1d_bytes, Some(48 << 10));
        assert_eq!(sys.l2_bytes, Some(2 << 20));
        assert_eq!(sys.l3_bytes, Some(30 << 20));
        assert_eq!(sys.last_level_cache_total_bytes, Some(60 << 20));

        // Combined with an arm64 cpuinfo: sysfs supplies what cpuinfo lacks.
        let cpu = combine(CpuInfoText::parse(ARM64), sys);
        assert_eq!(cpu.physical_cores, Some(4));
        assert_eq!(cpu.logical_cpus, Some(4), "cpuinfo's processor count wins");
    }

    #[test]
    fn an_empty_sysfs_leaves_everything_absent() {
        let dir = TestDir::new("cpu-sysfs-empty");
        assert_eq!(CpuSysfs::read(dir.path()), CpuSysfs::default());
        assert_eq!(CpuSysfs::read(&dir.path().join("missing")), CpuSysfs::default());
    }

    #[test]
    fn this_machine_has_a_sane_cpu() {
        let cpu = detect();
        let logical = cpu.logical_cpus.expect("logical CPUs");
        assert!((1..=4096).contains(&logical));
        let physical = cpu.physical_cores.expect("physical cores");
        assert!(physical >= 1 && physical <= logical);
        assert!(cpu.sockets.unwrap_or(1) >= 1);
        if let Some(l1d) = cpu.l1d_bytes {
            assert!((4 << 10..=4 << 20).contains(&l1d), "{l1d}");
        }
        if let Some(llc) = cpu.last_level_cache_total_bytes {
            assert!((64 << 10..=4 << 30).contains(&llc), "{llc}");
        }
        if cfg!(target_arch = "x86_64") {
            assert!(cpu.simd.iter().any(|s| s == "sse4_2"), "{:?}", cpu.simd);
        }
    }
}
