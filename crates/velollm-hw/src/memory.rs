//! System memory from `/proc/meminfo`, and the operating system.

use std::fs;

use velollm_core::{MemoryDetails, OsDetails};

/// Parses `/proc/meminfo` (values in kB, which the kernel means as KiB).
pub fn parse_meminfo(text: &str) -> MemoryDetails {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kib * 1024)
        })
    };
    MemoryDetails {
        total_bytes: field("MemTotal"),
        available_bytes: field("MemAvailable"),
        swap_total_bytes: field("SwapTotal"),
        swap_free_bytes: field("SwapFree"),
    }
}

/// This machine's memory.
pub fn detect_memory() -> MemoryDetails {
    fs::read_to_string("/proc/meminfo").map(|t| parse_meminfo(&t)).unwrap_or_default()
}

/// `PRETTY_NAME` of an `/etc/os-release` text.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// This machine's operating system.
pub fn detect_os() -> OsDetails {
    OsDetails {
        name: fs::read_to_string("/etc/os-release").ok().and_then(|t| parse_os_release(&t)),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        arch: std::env::consts::ARCH.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_meminfo() {
        let m = parse_meminfo(include_str!("../tests/fixtures/meminfo-24g-noswap.txt"));
        assert_eq!(m.total_bytes, Some(24_684_092 * 1024));
        assert_eq!(m.available_bytes, Some(23_211_924 * 1024));
        assert_eq!(m.swap_total_bytes, Some(0));
        assert_eq!(m.swap_free_bytes, Some(0));
        let m = parse_meminfo(include_str!("../tests/fixtures/meminfo-swap.txt"));
        assert_eq!(m.swap_total_bytes, Some(8_388_604 * 1024));
        assert_eq!(m.swap_free_bytes, Some(8_001_020 * 1024));
        // `SwapCached` must not be read as `SwapTotal`'s prefix, nor missing fields invented.
        let m = parse_meminfo("MemTotal: 100 kB\nSwapCached: 5 kB\n");
        assert_eq!(m.total_bytes, Some(102_400));
        assert_eq!((m.available_bytes, m.swap_total_bytes), (None, None));
    }

    #[test]
    fn os_release_pretty_name() {
        assert_eq!(
            parse_os_release("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(parse_os_release("NAME=x\n"), None);
    }

    #[test]
    fn this_machine_has_sane_memory() {
        let m = detect_memory();
        let total = m.total_bytes.expect("MemTotal");
        assert!((256 << 20..=64 << 40).contains(&total), "{total}");
        let available = m.available_bytes.expect("MemAvailable");
        assert!(available > 0 && available <= total);
        let os = detect_os();
        assert!(!os.arch.is_empty());
        assert!(os.kernel.is_some());
    }
}
