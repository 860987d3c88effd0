//! Timing loops and the compiled models they time.
//!
//! Rules:
//! - A case warms up for `warmup` calls and at least [`WARMUP_MIN`] (at most a quarter of its
//!   time budget, at least one call), then
//!   `iters` timed calls, stopping early once the budget is spent but never below
//!   [`MIN_SAMPLES`] timed calls. Reports say how many samples each figure has.
//! - FP32 and ternary are timed together ([`time_models`]): blocks of calls alternate.
//! - Inputs are deterministic values in [-1, 1), the same for FP32 and ternary.
//! - Compiles go through [`build_artifact`], as `triton compile` does; cold compiles use a fresh,
//!   empty cache folder each time and warm ones a folder already holding the model, both without
//!   this process's in-memory cache, so a warm compile costs what a new `triton compile` would.

use std::path::Path;
use std::time::{Duration, Instant};

use ndarray::{ArrayD, IxDyn};
use triton_runtime::Model;

use super::stats::{self, Latency};
use crate::artifact::{Build, build_artifact};
use crate::cache::Cache;
use crate::compile::{CompileError, Options};

/// Timed calls every case has, whatever its budget.
pub const MIN_SAMPLES: usize = 3;

/// How long and how often to time one case.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub warmup: usize,
    pub iters: usize,
    pub max: Duration,
}

impl Budget {
    /// The same budget with the time and counts scaled by `f` (counts at least one).
    pub fn scaled(self, f: f64) -> Budget {
        Budget {
            warmup: ((self.warmup as f64 * f) as usize).max(1),
            iters: ((self.iters as f64 * f) as usize).max(MIN_SAMPLES),
            max: self.max.mul_f64(f),
        }
    }
}

/// A deterministic input in [-1, 1) of `shape`.
pub fn input(shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let mut x = ArrayD::<f32>::zeros(IxDyn(shape));
    x.iter_mut().zip(values).for_each(|(d, v)| *d = v);
    x
}

/// The model's inputs at batch size `batch`.
pub fn inputs(model: &Model, batch: usize) -> Vec<ArrayD<f32>> {
    model.inputs().iter().map(|(_, s)| input(&s.eval(batch))).collect()
}

/// Warm-up lasts at least this long (within its share of the budget), however many calls that
/// takes: a hundred 10 us calls are over before the CPU has settled (the first latency case of
/// a run measured 15 us where later ones measured 8 us for the same model).
pub const WARMUP_MIN: Duration = Duration::from_millis(50);

/// Whether warm-up goes on after `calls` calls taking `elapsed`: at least one call, then until
/// `warmup` calls and [`WARMUP_MIN`] are both done, but never past `cap` (its share of the budget).
fn warming(calls: usize, elapsed: Duration, warmup: usize, cap: Duration) -> bool {
    calls == 0 || (elapsed < cap && (calls < warmup || elapsed < WARMUP_MIN))
}

/// Times `models` (one, or FP32 and ternary) at batch `batch`, alternating between them in
/// blocks: warm-up of all, then in turn a block of calls of each, until each has
/// `budget.iters` samples or `budget.max` of its own time (never below [`MIN_SAMPLES`]). Slow
/// drifts of the machine (frequency, neighbours) then fall on all alike. A block lasts about
/// [`BLOCK`]; with several models, a block of more than one call starts with an untimed one, so
/// another model's turn does not leave this one with cold caches: the figures are hot-loop
/// latencies, as for a single model.
pub fn time_models(models: &[&Model], batch: usize, budget: Budget) -> Result<Vec<Timed>, String> {
    let n = models.len();
    let inputs: Vec<Vec<ArrayD<f32>>> = models.iter().map(|m| inputs(m, batch)).collect();
    let views: Vec<Vec<_>> = inputs.iter().map(|x| x.iter().map(|a| a.view()).collect()).collect();
    let call = |i: usize| -> Result<Duration, String> {
        let t = Instant::now();
        models[i].run(&views[i]).map(std::hint::black_box).map_err(|e| e.to_string())?;
        Ok(t.elapsed())
    };
    // Warm-up (a quarter of each model's budget), and the shortest call of each as the estimate
    // of a call's time.
    let start = Instant::now();
    let mut fastest = vec![Duration::MAX; n];
    let mut calls = 0;
    while warming(calls, start.elapsed(), budget.warmup, budget.max * n as u32 / 4) {
        for (i, f) in fastest.iter_mut().enumerate() {
            *f = (*f).min(call(i)?);
        }
        calls += 1;
    }
    let block: Vec<usize> =
        fastest.iter().map(|f| (BLOCK.as_secs_f64() / f.as_secs_f64().max(1e-9)).clamp(1.0, 64.0) as usize).collect();
    let want = budget.iters.max(MIN_SAMPLES);
    let mut samples = vec![Vec::new(); n];
    let mut spent = vec![Duration::ZERO; n];
    let done = |s: &[Vec<f64>], spent: &[Duration]| {
        s.iter().all(|v| v.len() >= want)
            || (s.iter().all(|v| v.len() >= MIN_SAMPLES) && spent.iter().max().is_some_and(|m| *m >= budget.max))
    };
    while !done(&samples, &spent) {
        for i in 0..n {
            if n > 1 && block[i] > 1 {
                call(i)?;
            }
            for _ in 0..block[i] {
                if samples[i].len() >= want {
                    break;
                }
                let e = call(i)?;
                spent[i] += e;
                samples[i].push(e.as_secs_f64());
            }
        }
    }
    samples
        .into_iter()
        .map(|v| {
            let stats = Latency::of(&v).ok_or_else(|| "no samples".to_string())?;
            Ok(Timed { stats, samples_ms: v.iter().map(|s| s * 1e3).collect() })
        })
        .collect()
}

/// One model's figures from [`time_models`]: the summary and every timed call (ms, in order).
#[derive(Clone, Debug)]
pub struct Timed {
    pub stats: Latency,
    pub samples_ms: Vec<f64>,
}

/// About how long one model's turn lasts in [`time_models`].
pub const BLOCK: Duration = Duration::from_millis(10);

/// Cold and warm compile times of one configuration, in milliseconds.
#[derive(Debug)]
pub struct CompileTimes {
    pub cold_ms: Vec<f64>,
    pub warm_ms: Vec<f64>,
    /// The (last cold) build.
    pub build: Build,
}

/// Compiles `cold` times into fresh cache folders and `warm` times from a filled one.
pub fn compile_times(
    file: &Path,
    opts: &Options,
    scratch: &Path,
    cold: usize,
    warm: usize,
) -> Result<CompileTimes, CompileError> {
    let io = |e: std::io::Error| CompileError::Io(format!("cannot make a scratch cache folder: {e}"));
    let mut cold_ms = Vec::new();
    let mut last = None;
    let mut dir = scratch.to_path_buf();
    for _ in 0..cold.max(1) {
        dir = tempfile::tempdir_in(scratch).map_err(io)?.keep();
        let t = Instant::now();
        let build = build_artifact(file, opts, &Cache::disk_only(&dir))?;
        cold_ms.push(t.elapsed().as_secs_f64() * 1e3);
        last = Some(build);
    }
    let mut warm_ms = Vec::new();
    for _ in 0..warm {
        let t = Instant::now();
        let build = build_artifact(file, opts, &Cache::disk_only(&dir))?;
        warm_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if build.hit.is_none() {
            return Err(CompileError::Internal("a warm compile missed the cache it had just filled".into()));
        }
    }
    let build = last.ok_or_else(|| CompileError::Internal("no cold compile ran".into()))?;
    Ok(CompileTimes { cold_ms, warm_ms, build })
}

/// The median of a non-empty sample (0 when empty).
pub fn median_of(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    stats::median(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_scale_but_keep_minimums() {
        let b = Budget { warmup: 100, iters: 1000, max: Duration::from_secs(2) };
        let s = b.scaled(0.001);
        assert_eq!((s.warmup, s.iters), (1, MIN_SAMPLES));
        assert_eq!(b.scaled(0.5).max, Duration::from_secs(1));
    }

    #[test]
    fn warm_up_takes_its_calls_and_its_minimum_time_within_its_cap() {
        let ms = Duration::from_millis;
        let cap = ms(250);
        assert!(warming(0, ms(1000), 100, cap), "always one call");
        assert!(!warming(1, ms(1000), 100, cap), "past the cap");
        assert!(warming(50, ms(60), 100, cap), "calls to go");
        assert!(warming(100, ms(10), 100, cap), "time to go");
        assert!(!warming(100, ms(60), 100, cap), "both done");
        assert!(!warming(5, ms(10), 100, Duration::ZERO), "a zero budget warms one call");
    }

    #[test]
    fn inputs_are_deterministic_and_bounded() {
        let a = input(&[2, 3, 5]);
        assert_eq!(a, input(&[2, 3, 5]));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_eq!(a.shape(), [2, 3, 5]);
    }
}
