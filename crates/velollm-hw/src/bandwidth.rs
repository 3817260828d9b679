//! A short STREAM-style memory-bandwidth probe (`velollm detect --bandwidth`), and its cache.
//!
//! Three `f64` arrays, each at least four times the last-level cache (STREAM's rule) and at least 256 MiB,
//! are first touched by the threads that later use them (so each thread's pages are local on NUMA
//! machines). Then, `repetitions` times, every thread runs three kernels on its own contiguous slice, with
//! a barrier before and after each kernel; the main thread times each kernel from the first barrier to the
//! second:
//!
//! | kernel | operation | bytes counted per element |
//! |---|---|---|
//! | copy | `c[i] = a[i]` | 16 |
//! | triad | `a[i] = b[i] + s·c[i]` | 24 |
//! | read | `sum += bits(a[i])` (integer sum of the bit patterns) | 8 |
//!
//! Each rate is bytes counted ÷ the best (shortest) time of the repetitions, in GB/s (10⁹ bytes/s), as STREAM
//! reports it (write-allocate traffic is not counted).

use std::hint::black_box;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use velollm_core::BandwidthMeasurement;

/// How the probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthOptions {
    /// Bytes of each of the three arrays.
    pub array_bytes: u64,
    pub threads: u32,
    /// Runs of each kernel; the best is reported.
    pub repetitions: u32,
}

/// At least this much per array, whatever the cache size.
pub const MIN_ARRAY_BYTES: u64 = 256 << 20;

impl BandwidthOptions {
    /// Arrays of max(4 × last-level cache, 256 MiB) each, but all three within half of the available memory;
    /// one thread per physical core; 5 repetitions.
    pub fn for_this_machine() -> BandwidthOptions {
        let cpu = crate::cpu::detect();
        let memory = crate::memory::detect_memory();
        let wanted = cpu.last_level_cache_total_bytes.map_or(MIN_ARRAY_BYTES, |llc| (4 * llc).max(MIN_ARRAY_BYTES));
        let limit = memory.available_bytes.map_or(u64::MAX, |available| available / 6);
        BandwidthOptions {
            array_bytes: wanted.min(limit).max(16 << 20),
            threads: cpu.physical_cores.or(cpu.logical_cpus).unwrap_or(1).max(1),
            repetitions: 5,
        }
    }
}

#[derive(Clone, Copy)]
enum Kernel {
    Copy,
    Triad,
    Read,
}

const KERNELS: [Kernel; 3] = [Kernel::Copy, Kernel::Triad, Kernel::Read];

fn run_kernel(kernel: Kernel, a: &mut [f64], b: &mut [f64], c: &mut [f64]) {
    match kernel {
        Kernel::Copy => c.copy_from_slice(a),
        Kernel::Triad => {
            let scalar = black_box(3.0);
            for ((a, b), c) in a.iter_mut().zip(b.iter()).zip(c.iter()) {
                *a = b + scalar * c;
            }
        }
        Kernel::Read => {
            // Summed as integers (the bit patterns): integer addition is associative, so the compiler may
            // vectorise and unroll freely and the loop is bound by memory, not by floating-point add latency.
            let sum = a.iter().fold(0u64, |sum, x| sum.wrapping_add(x.to_bits()));
            black_box(sum);
        }
    }
}

/// Runs the probe. Takes a few seconds (mostly first-touching the arrays).
pub fn measure(options: &BandwidthOptions) -> BandwidthMeasurement {
    let threads = options.threads.max(1) as usize;
    let repetitions = options.repetitions.max(1);
    // Whole 8-element groups per thread.
    let per_thread = ((options.array_bytes / 8) as usize / threads).max(8) / 8 * 8;
    let elements = per_thread * threads;
    // Zeroed allocations of this size are fresh mappings: pages are touched first by the worker threads.
    let mut a = vec![0.0f64; elements];
    let mut b = vec![0.0f64; elements];
    let mut c = vec![0.0f64; elements];
    let barrier = Barrier::new(threads + 1);
    let mut best = [Duration::MAX; 3];
    std::thread::scope(|scope| {
        for ((a, b), c) in a.chunks_mut(per_thread).zip(b.chunks_mut(per_thread)).zip(c.chunks_mut(per_thread)) {
            let barrier = &barrier;
            scope.spawn(move || {
                a.fill(1.0);
                b.fill(2.0);
                c.fill(0.5);
                barrier.wait();
                for _ in 0..repetitions {
                    for kernel in KERNELS {
                        barrier.wait();
                        run_kernel(kernel, a, b, c);
                        barrier.wait();
                    }
                }
            });
        }
        barrier.wait();
        for _ in 0..repetitions {
            for (k, _) in KERNELS.iter().enumerate() {
                barrier.wait();
                let start = Instant::now();
                barrier.wait();
                best[k] = best[k].min(start.elapsed());
            }
        }
    });
    black_box((&a, &b, &c));
    let element_bytes = elements as f64 * 8.0;
    let rate = |bytes: f64, time: Duration| bytes / time.as_secs_f64().max(1e-9) / 1e9;
    BandwidthMeasurement {
        measured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        copy_gb_per_s: rate(2.0 * element_bytes, best[0]),
        triad_gb_per_s: rate(3.0 * element_bytes, best[1]),
        read_gb_per_s: rate(element_bytes, best[2]),
        array_bytes: elements as u64 * 8,
        threads: threads as u32,
        repetitions,
        machine: machine_key(),
    }
}

/// Identifies this machine in the cache: CPU model, logical CPUs, RAM and host name.
pub fn machine_key() -> String {
    let cpu = crate::cpu::detect();
    let memory = crate::memory::detect_memory();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{} | {} CPUs | {} bytes RAM | {}",
        cpu.model.as_deref().unwrap_or("unknown CPU"),
        cpu.logical_cpus.unwrap_or(0),
        memory.total_bytes.unwrap_or(0),
        host.trim()
    )
}

/// `$XDG_CACHE_HOME/velollm/bandwidth.json`, else `~/.cache/velollm/bandwidth.json`.
pub fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("velollm").join("bandwidth.json"))
}

/// Saves a measurement to [`cache_path`] (atomically: [`velollm_core::atomic::write_atomically`]); returns the path.
pub fn store(measurement: &BandwidthMeasurement) -> io::Result<PathBuf> {
    let path = cache_path().ok_or_else(|| io::Error::other("no cache directory (neither XDG_CACHE_HOME nor HOME)"))?;
    store_at(&path, measurement)?;
    Ok(path)
}

fn store_at(path: &Path, measurement: &BandwidthMeasurement) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(measurement).map_err(io::Error::other)?;
    velollm_core::atomic::write_atomically(path, (json + "\n").as_bytes())
}

/// The cached measurement of this machine, if any (one made on another machine is ignored).
pub fn cached() -> Option<BandwidthMeasurement> {
    cached_at(&cache_path()?, &machine_key())
}

fn cached_at(path: &Path, machine: &str) -> Option<BandwidthMeasurement> {
    let text = std::fs::read_to_string(path).ok()?;
    let measurement: BandwidthMeasurement = serde_json::from_str(&text).ok()?;
    (measurement.machine == machine).then_some(measurement)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_buffers_are_far_larger_than_the_caches() {
        let options = BandwidthOptions::for_this_machine();
        let cpu = crate::cpu::detect();
        assert!(options.array_bytes >= MIN_ARRAY_BYTES.min(options.array_bytes));
        if let Some(llc) = cpu.last_level_cache_total_bytes {
            let available = crate::memory::detect_memory().available_bytes.unwrap_or(u64::MAX);
            // Four times the cache unless memory is too short for that.
            assert!(options.array_bytes >= 4 * llc || options.array_bytes >= available / 6 - (16 << 20));
        }
        assert!(options.threads >= 1);
        assert_eq!(options.repetitions, 5);
    }

    #[test]
    fn the_cache_round_trips_and_ignores_other_machines() {
        let dir = crate::testdir::TestDir::new("bandwidth-cache");
        let path = dir.path().join("velollm/bandwidth.json");
        assert_eq!(cached_at(&path, "m"), None);
        let m = BandwidthMeasurement {
            measured_at: "2026-11-28T16:00:00Z".into(),
            copy_gb_per_s: 20.0,
            triad_gb_per_s: 18.0,
            read_gb_per_s: 25.0,
            array_bytes: 1 << 30,
            threads: 2,
            repetitions: 5,
            machine: "this machine".into(),
        };
        store_at(&path, &m).unwrap();
        assert_eq!(cached_at(&path, "this machine"), Some(m));
        assert_eq!(cached_at(&path, "another machine"), None);
        std::fs::write(&path, "{ not json").unwrap();
        assert_eq!(cached_at(&path, "this machine"), None);
    }

    #[test]
    fn kernels_compute_what_they_count() {
        let (mut a, mut b, mut c) = (vec![1.0; 20], vec![2.0; 20], vec![0.5; 20]);
        run_kernel(Kernel::Copy, &mut a, &mut b, &mut c);
        assert!(c.iter().all(|&x| x == 1.0));
        run_kernel(Kernel::Triad, &mut a, &mut b, &mut c);
        assert!(a.iter().all(|&x| x == 5.0));
        run_kernel(Kernel::Read, &mut a, &mut b, &mut c);
    }

    /// The real probe on this machine: above a known floor (any machine of the last 20 years streams more than
    /// 1 GB/s), below a sane ceiling (no CPU socket streams 5 TB/s), and read ≥ copy's floor.
    #[test]
    fn this_machine_streams_between_sane_bounds() {
        let options = BandwidthOptions::for_this_machine();
        let m = measure(&options);
        for (name, rate) in [("copy", m.copy_gb_per_s), ("triad", m.triad_gb_per_s), ("read", m.read_gb_per_s)] {
            assert!(rate > 1.0, "{name} {rate} GB/s is below 1 GB/s");
            assert!(rate < 5000.0, "{name} {rate} GB/s is implausibly high");
        }
        assert_eq!(m.repetitions, 5);
        assert!(m.array_bytes >= options.array_bytes - 64 * u64::from(options.threads));
        assert_eq!(m.machine, machine_key());
        assert!(m.roofline_bytes_per_second() >= m.copy_gb_per_s * 1e9);
        eprintln!(
            "bandwidth: copy {:.1} GB/s, triad {:.1} GB/s, read {:.1} GB/s ({} MiB arrays, {} threads)",
            m.copy_gb_per_s,
            m.triad_gb_per_s,
            m.read_gb_per_s,
            m.array_bytes >> 20,
            m.threads
        );
    }
}
