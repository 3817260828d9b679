//! The per-iteration peak resident memory, in a process of its own (VmHWM is process-wide).

use std::time::Instant;

use velollm_hw::telemetry::Telemetry;

#[test]
fn each_iteration_reports_its_own_peak_where_the_kernel_allows_a_reset() {
    let telemetry = Telemetry::none();
    telemetry.begin_iteration(Instant::now());
    let buffer = vec![1u8; 256 << 20];
    std::hint::black_box(&buffer);
    let big = telemetry.end_iteration();
    drop(buffer);
    let big_peak = big.peak_rss_bytes.expect("VmHWM");
    assert!(big_peak >= 256 << 20, "{big_peak}");

    telemetry.begin_iteration(Instant::now());
    let small = telemetry.end_iteration();
    let small_peak = small.peak_rss_bytes.expect("VmHWM");
    if small.peak_rss_reset {
        assert!(small_peak + (128 << 20) < big_peak, "after a reset: {small_peak} vs {big_peak}");
    } else {
        // Without permission to reset, the value is the process's peak so far, and says so.
        assert!(small_peak >= big_peak);
    }
}
