//! Resident memory of this process, for the peak-RSS figures.
//!
//! Rules: Linux only (`/proc/self/status`; elsewhere every figure is `None`). A phase's peak is
//! measured by resetting the kernel's high-water mark (`/proc/self/clear_refs`, value 5) before
//! it and reading `VmHWM` after it; when the reset is refused the peak is the process's peak so
//! far, and [`Phase::finish`] says so.

use serde::{Deserialize, Serialize};

/// Peak resident memory of one phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Peak resident set of the whole process during the phase.
    pub peak_bytes: u64,
    /// That peak minus the resident set when the phase began: what the phase added.
    pub added_bytes: u64,
    /// Whether the high-water mark was reset at the start (else `peak_bytes` may predate it).
    pub exact: bool,
}

fn status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix(field))?;
    line.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse().ok()
}

/// Current resident set in bytes.
pub fn rss() -> Option<u64> {
    status_kib("VmRSS").map(|k| k * 1024)
}

/// A phase being measured.
#[derive(Debug)]
pub struct Phase {
    start_rss: Option<u64>,
    reset: bool,
}

impl Phase {
    pub fn start() -> Phase {
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        Phase { start_rss: rss(), reset }
    }

    pub fn finish(self) -> Option<Peak> {
        let peak = status_kib("VmHWM")? * 1024;
        let start = self.start_rss?;
        Some(Peak { peak_bytes: peak, added_bytes: peak.saturating_sub(start), exact: self.reset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_phase_that_touches_memory_adds_to_the_peak() {
        let phase = Phase::start();
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let peak = phase.finish().expect("linux reports memory");
        drop(big);
        assert!(peak.added_bytes >= 60 << 20, "{peak:?}");
        assert!(peak.peak_bytes >= peak.added_bytes);
    }
}
