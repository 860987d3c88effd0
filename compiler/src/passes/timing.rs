//! Wall time per pass (Cranelift's `timing.rs` idea): every pass runs under a guard that adds
//! its elapsed time to a [`Timings`] table, which `--timing` prints.

use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timings {
    pub entries: Vec<(String, Duration)>,
}

impl Timings {
    pub fn new() -> Timings {
        Timings::default()
    }

    /// Runs `f`, recording its wall time under `name` (times add up when a name repeats).
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.add(name, start.elapsed());
        out
    }

    pub fn add(&mut self, name: &str, d: Duration) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some((_, t)) => *t += d,
            None => self.entries.push((name.to_string(), d)),
        }
    }

    pub fn total(&self) -> Duration {
        self.entries.iter().map(|(_, d)| *d).sum()
    }

    pub fn get(&self, name: &str) -> Option<Duration> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }
}
