//! The telemetry sampler: what the machine did during each timed iteration.
//!
//! ```no_run
//! use std::time::Instant;
//! let telemetry = velollm_hw::telemetry::Telemetry::start(); // NVML when available, else memory only
//! let mut records = Vec::new();
//! for _ in 0..3 {
//!     let start = Instant::now(); // the iteration's own start: token timestamps are relative to it
//!     telemetry.begin_iteration(start);
//!     // ... the timed iteration ...
//!     records.push(telemetry.end_iteration());
//! }
//! let row = velollm_core::RowTelemetry::from_iterations(&records, &[128, 128, 128]);
//! ```
//!
//! One abstraction, two implementations: with NVML and at least one NVIDIA GPU, a background thread reads every
//! GPU every [`SAMPLE_INTERVAL`] while an iteration is open (it sleeps between iterations, so model load and
//! warm-up are neither sampled nor slowed), and the total-energy counters are read at both ends; without, only
//! the process's peak resident memory is recorded. Sample times are nanoseconds since the `start` passed to
//! [`Telemetry::begin_iteration`], the origin of the row's token timestamps.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Device;
use velollm_core::{GpuIterationTelemetry, GpuSample, IterationTelemetry};

/// How often the NVML sampler reads each GPU during an iteration.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(25);

/// Resets the kernel's peak-RSS counter (`VmHWM`) of this process; `false` where not permitted.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `VmHWM` from a `/proc/<pid>/status` text, in bytes.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn peak_rss() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|s| parse_vm_hwm(&s))
}

fn signed_ns_since(origin: Instant, at: Instant) -> i64 {
    match at.checked_duration_since(origin) {
        Some(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        None => -i64::try_from(origin.duration_since(at).as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Records telemetry around timed iterations. Cheap to create; drop it to stop its sampling thread.
pub struct Telemetry {
    nvml: Option<NvmlSampler>,
    window: Mutex<Option<Instant>>,
    rss_reset: Mutex<bool>,
}

impl Telemetry {
    /// NVML when it loads and reports at least one GPU; otherwise the no-op sampler (memory only).
    pub fn start() -> Telemetry {
        let nvml = crate::nvidia::shared().ok().and_then(NvmlSampler::start);
        Telemetry { nvml, window: Mutex::new(None), rss_reset: Mutex::new(false) }
    }

    /// The no-op sampler: no GPU readings, only the process's peak resident memory.
    pub fn none() -> Telemetry {
        Telemetry { nvml: None, window: Mutex::new(None), rss_reset: Mutex::new(false) }
    }

    /// `nvml` or `none`.
    pub fn sampler(&self) -> &'static str {
        if self.nvml.is_some() {
            "nvml"
        } else {
            "none"
        }
    }

    /// Opens an iteration whose token timestamps are relative to `start`: resets the process's peak-RSS
    /// counter, reads the energy counters, takes a first sample and starts the background sampling.
    pub fn begin_iteration(&self, start: Instant) {
        *lock(&self.rss_reset) = reset_peak_rss();
        *lock(&self.window) = Some(start);
        if let Some(nvml) = &self.nvml {
            nvml.begin(start);
        }
    }

    /// Closes the iteration: a last sample, the energy counters again, the peak RSS. Without a matching
    /// [`Telemetry::begin_iteration`] the record is empty (duration 0, no GPU data).
    pub fn end_iteration(&self) -> IterationTelemetry {
        let now = Instant::now();
        let origin = lock(&self.window).take();
        let gpus = match (&self.nvml, origin) {
            (Some(nvml), Some(origin)) => nvml.end(origin),
            _ => Vec::new(),
        };
        IterationTelemetry {
            sampler: self.sampler().to_string(),
            duration_ns: origin.map_or(0, |o| u64::try_from(signed_ns_since(o, now).max(0)).unwrap_or(0)),
            peak_rss_bytes: peak_rss(),
            peak_rss_reset: origin.is_some() && *lock(&self.rss_reset),
            gpus,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct GpuHandle {
    index: u32,
    uuid: Option<String>,
    device: Device<'static>,
}

/// One open iteration's readings.
struct Window {
    origin: Instant,
    samples: Vec<Vec<GpuSample>>,
    energy_start_mj: Vec<Option<u64>>,
}

struct SharedState {
    stop: bool,
    window: Option<Window>,
}

struct Shared {
    gpus: Vec<GpuHandle>,
    state: Mutex<SharedState>,
    wake: Condvar,
}

struct NvmlSampler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Shared {
    fn read(&self, gpu: &GpuHandle, origin: Instant) -> GpuSample {
        let device = &gpu.device;
        let at = Instant::now();
        GpuSample {
            time_ns: signed_ns_since(origin, at),
            vram_used_bytes: device.memory_info().ok().map(|m| m.used),
            power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
            sm_clock_mhz: device.clock_info(Clock::SM).ok(),
            memory_clock_mhz: device.clock_info(Clock::Memory).ok(),
            throttle_reasons: device.current_throttle_reasons().ok().map(|r| r.bits()),
        }
    }

    /// One reading of every GPU, appended to the open window (if it is still the same one).
    fn sample_all(&self, origin: Instant) {
        let readings: Vec<GpuSample> = self.gpus.iter().map(|g| self.read(g, origin)).collect();
        let mut state = lock(&self.state);
        if let Some(window) = state.window.as_mut().filter(|w| w.origin == origin) {
            for (samples, reading) in window.samples.iter_mut().zip(readings) {
                samples.push(reading);
            }
        }
    }
}

impl NvmlSampler {
    fn start(nvml: &'static nvml_wrapper::Nvml) -> Option<NvmlSampler> {
        let count = nvml.device_count().ok()?;
        let gpus: Vec<GpuHandle> = (0..count)
            .filter_map(|index| {
                let device = nvml.device_by_index(index).ok()?;
                Some(GpuHandle { index, uuid: device.uuid().ok(), device })
            })
            .collect();
        if gpus.is_empty() {
            return None;
        }
        let shared = Arc::new(Shared {
            gpus,
            state: Mutex::new(SharedState { stop: false, window: None }),
            wake: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("velollm-telemetry".into())
            .spawn(move || sampling_loop(&for_thread))
            .ok()?;
        Some(NvmlSampler { shared, thread: Some(thread) })
    }

    fn begin(&self, origin: Instant) {
        let energy_start_mj = self.shared.gpus.iter().map(|g| g.device.total_energy_consumption().ok()).collect();
        let first: Vec<Vec<GpuSample>> = self.shared.gpus.iter().map(|g| vec![self.shared.read(g, origin)]).collect();
        lock(&self.shared.state).window = Some(Window { origin, samples: first, energy_start_mj });
        self.shared.wake.notify_all();
    }

    fn end(&self, origin: Instant) -> Vec<GpuIterationTelemetry> {
        self.shared.sample_all(origin);
        let energy_end_mj: Vec<Option<u64>> =
            self.shared.gpus.iter().map(|g| g.device.total_energy_consumption().ok()).collect();
        let Some(window) = lock(&self.shared.state).window.take() else { return Vec::new() };
        let pid = std::process::id();
        self.shared
            .gpus
            .iter()
            .zip(window.samples)
            .zip(window.energy_start_mj.iter().zip(energy_end_mj))
            .map(|((gpu, samples), (start, end))| {
                let counter_joules = match (start, end) {
                    (Some(start), Some(end)) if end >= *start => Some((end - start) as f64 / 1000.0),
                    _ => None,
                };
                let bits = samples.iter().filter_map(|s| s.throttle_reasons).fold(0, |acc, b| acc | b);
                let mut record = GpuIterationTelemetry::from_samples(
                    gpu.index,
                    gpu.uuid.clone(),
                    samples,
                    counter_joules,
                    crate::nvidia::throttle_reason_names(bits),
                );
                record.process_vram_used_bytes = gpu.device.running_compute_processes().ok().and_then(|processes| {
                    processes.iter().find(|p| p.pid == pid).and_then(|p| match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes),
                        UsedGpuMemory::Unavailable => None,
                    })
                });
                record
            })
            .collect()
    }
}

fn sampling_loop(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        if state.stop {
            return;
        }
        match state.window.as_ref().map(|w| w.origin) {
            // Between iterations: sleep until the next one opens (or the sampler stops).
            None => state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
            Some(origin) => {
                drop(state);
                let next = Instant::now() + SAMPLE_INTERVAL;
                shared.sample_all(origin);
                state = lock(&shared.state);
                let wait = next.saturating_duration_since(Instant::now());
                if !wait.is_zero() && !state.stop {
                    state = shared.wake.wait_timeout(state, wait).map(|(s, _)| s).unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
    }
}

impl Drop for NvmlSampler {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_can_be_shared_across_threads_and_awaits() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<Telemetry>();
    }

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\tvelollm\nVmPeak:\t  900 kB\nVmHWM:\t   123456 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(123_456 * 1024));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn signed_times_around_the_origin() {
        let origin = Instant::now();
        let later = origin + Duration::from_millis(3);
        assert_eq!(signed_ns_since(origin, later), 3_000_000);
        assert_eq!(signed_ns_since(later, origin), -3_000_000);
    }

    #[test]
    fn the_no_op_sampler_records_this_iterations_peak_memory() {
        let telemetry = Telemetry::none();
        assert_eq!(telemetry.sampler(), "none");
        let start = Instant::now();
        telemetry.begin_iteration(start);
        // Touch 64 MiB so this iteration's peak is at least that.
        let buffer = vec![1u8; 64 << 20];
        std::hint::black_box(&buffer);
        std::thread::sleep(Duration::from_millis(5));
        let record = telemetry.end_iteration();
        drop(buffer);
        assert_eq!(record.sampler, "none");
        assert!(record.gpus.is_empty());
        assert!(record.duration_ns >= 5_000_000, "{}", record.duration_ns);
        let peak = record.peak_rss_bytes.expect("VmHWM on Linux");
        assert!(peak >= 64 << 20, "peak {peak}");
        // That a reset makes the next iteration's peak small is tested in tests/peak_rss.rs, in a process of its
        // own (other tests here allocate gigabytes concurrently).
    }

    #[test]
    fn without_nvml_start_falls_back_to_the_no_op_sampler() {
        let telemetry = Telemetry::start();
        if crate::nvidia::shared().is_err() {
            assert_eq!(telemetry.sampler(), "none");
        }
        let record = telemetry.end_iteration();
        assert_eq!(record.duration_ns, 0, "no open iteration: empty record");
        assert!(!record.peak_rss_reset);
        telemetry.begin_iteration(Instant::now());
        let record = telemetry.end_iteration();
        let row = velollm_core::RowTelemetry::from_iterations(&[record], &[10]);
        if telemetry.sampler() == "none" {
            assert_eq!(row.joules_per_token, None);
        }
    }
}
