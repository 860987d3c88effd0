//! Latency statistics of a sample of run times.
//!
//! Rules:
//! - Percentiles are nearest-rank on the sorted sample (p50 of an even sample is the mean of the
//!   two middle values), so every reported percentile is a time that was measured or the
//!   midpoint of two.
//! - The 95% confidence interval of the mean uses Student's t with n - 1 degrees of freedom; it
//!   is absent below two samples.

use serde::{Deserialize, Serialize};

/// Summary of one latency case, in milliseconds per call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: usize,
    pub mean_ms: f64,
    pub median_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub stddev_ms: f64,
    /// Half-width of the 95% confidence interval of the mean (`None` below two samples).
    pub ci95_ms: Option<f64>,
}

impl Latency {
    /// Summarises call times in seconds; `None` for an empty sample.
    pub fn of(seconds: &[f64]) -> Option<Latency> {
        if seconds.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = seconds.iter().map(|s| s * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let mean = ms.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { ms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        let sd = var.sqrt();
        Some(Latency {
            samples: n,
            mean_ms: mean,
            median_ms: median(&ms),
            p95_ms: percentile(&ms, 95.0),
            p99_ms: percentile(&ms, 99.0),
            min_ms: ms[0],
            max_ms: ms[n - 1],
            stddev_ms: sd,
            ci95_ms: (n > 1).then(|| t95(n - 1) * sd / (n as f64).sqrt()),
        })
    }

    /// Milliseconds per example at batch size `batch` (median call over the batch).
    pub fn per_example_ms(&self, batch: usize) -> f64 {
        self.median_ms / batch.max(1) as f64
    }

    /// Examples per second at batch size `batch` (from the median call).
    pub fn throughput(&self, batch: usize) -> f64 {
        if self.median_ms > 0.0 { batch as f64 * 1e3 / self.median_ms } else { f64::INFINITY }
    }
}

/// The median of a sorted, non-empty sample.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// Nearest-rank percentile `p` (0..=100) of a sorted, non-empty sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom.
pub fn t95(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        31..=60 => 2.042 - (df - 30) as f64 * (2.042 - 2.000) / 30.0,
        61..=120 => 2.000 - (df - 60) as f64 * (2.000 - 1.980) / 60.0,
        _ => 1.960,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_known_sample() {
        // 1..=100 ms.
        let s: Vec<f64> = (1..=100).map(|v| f64::from(v) / 1e3).collect();
        let l = Latency::of(&s).expect("non-empty");
        assert_eq!(l.samples, 100);
        assert!((l.mean_ms - 50.5).abs() < 1e-9);
        assert!((l.median_ms - 50.5).abs() < 1e-9);
        assert!((l.p95_ms - 95.0).abs() < 1e-9);
        assert!((l.p99_ms - 99.0).abs() < 1e-9);
        assert!((l.min_ms - 1.0).abs() < 1e-9 && (l.max_ms - 100.0).abs() < 1e-9);
        // sd of 1..=100 is sqrt(841.666..) = 29.011; t(99) ~ 1.984.
        assert!((l.stddev_ms - 29.0115).abs() < 1e-3, "{}", l.stddev_ms);
        let ci = l.ci95_ms.expect("n > 1");
        assert!((ci - 1.984 * 29.0115 / 10.0).abs() < 0.01, "{ci}");
        assert!((l.throughput(8) - 8e3 / 50.5).abs() < 1e-9);
        assert!((l.per_example_ms(2) - 25.25).abs() < 1e-9);
    }

    #[test]
    fn order_does_not_matter_and_tiny_samples_have_no_interval() {
        let a = Latency::of(&[0.003, 0.001, 0.002]).expect("non-empty");
        let b = Latency::of(&[0.001, 0.002, 0.003]).expect("non-empty");
        assert_eq!(a, b);
        assert!((a.median_ms - 2.0).abs() < 1e-12);
        let one = Latency::of(&[0.004]).expect("non-empty");
        assert_eq!(one.ci95_ms, None);
        assert_eq!(one.p99_ms, 4.0);
        assert!(Latency::of(&[]).is_none());
    }

    #[test]
    fn t_quantiles_fall_towards_the_normal_one() {
        assert!((t95(1) - 12.706).abs() < 1e-9);
        let mut last = f64::INFINITY;
        for df in 1..200 {
            assert!(t95(df) <= last && t95(df) >= 1.96, "df {df}");
            last = t95(df);
        }
    }
}
