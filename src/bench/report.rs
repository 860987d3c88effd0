//! The report of a benchmark run: every figure it measured, the single source of every output
//! (terminal tables, Markdown, plots, JSON, the comparison with a baseline).

use super::*;

/// The two things compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Fp32,
    Ternary,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Fp32, Side::Ternary];

    pub fn precision(self) -> Precision {
        match self {
            Side::Fp32 => Precision::Fp32,
            Side::Ternary => Precision::Ternary,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Side::Fp32 => "FP32",
            Side::Ternary => "ternary",
        }
    }
}

/// Measurement settings, as recorded in the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub opt: String,
    pub batch_sizes: Vec<usize>,
    pub threads: usize,
    pub warmup: usize,
    pub iters: usize,
    pub max_seconds_per_case: f64,
    pub seed: u64,
}

/// Where one side's weights came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WeightsInfo {
    pub side: Side,
    /// The file, or `None` for seeded initialisation.
    pub path: Option<String>,
    /// The precision the file was trained at (its metadata), if it says.
    pub trained_precision: Option<String>,
    pub normalize: String,
    /// The normalization recorded in the file's metadata (absent: unit).
    #[serde(default)]
    pub normalization: Option<crate::data::Normalization>,
    /// A remark for the reader (e.g. FP32 running ternary-trained latent weights).
    pub note: Option<String>,
}

impl WeightsInfo {
    pub fn trained(&self) -> bool {
        self.path.is_some()
    }
}

/// Accuracy of one side: measured, or why not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SideAccuracy {
    Measured(Classification),
    NotApplicable(String),
}

impl SideAccuracy {
    pub fn measured(&self) -> Option<&Classification> {
        match self {
            SideAccuracy::Measured(c) => Some(c),
            SideAccuracy::NotApplicable(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    /// The dataset and split, when one was used.
    pub dataset: Option<String>,
    pub fp32: SideAccuracy,
    pub ternary: SideAccuracy,
}

impl Accuracy {
    pub fn side(&self, s: Side) -> &SideAccuracy {
        match s {
            Side::Fp32 => &self.fp32,
            Side::Ternary => &self.ternary,
        }
    }

    /// FP32 accuracy minus ternary accuracy, in percentage points.
    pub fn delta_pp(&self) -> Option<f64> {
        Some(100.0 * (self.fp32.measured()?.accuracy - self.ternary.measured()?.accuracy))
    }
}

/// One latency case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyCase {
    pub side: Side,
    pub threads: usize,
    pub batch: usize,
    pub stats: Latency,
    pub per_example_ms: f64,
    /// Examples per second (from the median).
    pub throughput: f64,
    /// Every timed call, ms, in the order measured.
    #[serde(default)]
    pub samples_ms: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Size {
    /// Trainable elements (weights and params).
    pub parameters: u64,
    /// Elements of ternary weights.
    pub ternary_weights: u64,
    /// Every weight, param and buffer as f32.
    pub fp32_bytes: u64,
    pub fp32_artifact_bytes: usize,
    pub ternary_artifact_bytes: usize,
    /// `fp32_bytes / ternary_artifact_bytes`.
    pub compression: f64,
    /// Machine code in the ternary artifact.
    pub code_bytes: usize,
    /// Packed trits in the ternary artifact.
    pub trit_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryCase {
    pub side: Side,
    /// Compiling the model (no cache); the same in every case of a side.
    pub compile: Option<Peak>,
    /// Loading the artifact and running it at `batch`, all threads.
    pub inference: Option<Peak>,
    pub batch: usize,
    /// Scratch buffers the runtime keeps between calls at `batch`.
    pub arena_bytes: usize,
    /// Whether the peaks were measured in a process of their own (else in the benchmark's).
    pub isolated: bool,
}

/// Compile speed and runtime latency of one -O level.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompileCase {
    pub side: Side,
    pub opt: String,
    pub lines: usize,
    pub cold_ms: f64,
    pub warm_ms: f64,
    pub cold_samples: usize,
    pub warm_samples: usize,
    /// Every cold and warm compile, ms, in the order measured.
    #[serde(default)]
    pub cold_ms_samples: Vec<f64>,
    #[serde(default)]
    pub warm_ms_samples: Vec<f64>,
    pub ms_per_line: f64,
    /// Cold over warm.
    pub cache_speedup: f64,
    /// Median latency, one thread, at batch 1 and at `batch`.
    pub latency_b1_ms: f64,
    pub batch: usize,
    pub latency_batch_ms: f64,
}

/// Everything `triton bench` measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format: u32,
    pub model: String,
    pub file: String,
    /// blake3 of every source file read.
    pub source_blake3: String,
    pub unix_time: u64,
    pub wall_seconds: f64,
    pub machine: Machine,
    pub settings: Settings,
    pub weights: Vec<WeightsInfo>,
    pub accuracy: Accuracy,
    pub latency: Vec<LatencyCase>,
    pub size: Size,
    pub memory: Vec<MemoryCase>,
    pub compile: Vec<CompileCase>,
    pub scaling: Option<scaling::Scaling>,
    pub targets: Vec<Outcome>,
    /// Cases not measured, with the reason.
    #[serde(default)]
    pub skipped: Vec<String>,
}

impl Report {
    /// The latency case of `side`, `threads`, `batch`.
    pub fn latency_of(&self, side: Side, threads: usize, batch: usize) -> Option<&LatencyCase> {
        self.latency.iter().find(|c| c.side == side && c.threads == threads && c.batch == batch)
    }

    /// FP32 over ternary median latency.
    pub fn speedup(&self, threads: usize, batch: usize) -> Option<f64> {
        let f = self.latency_of(Side::Fp32, threads, batch)?;
        let t = self.latency_of(Side::Ternary, threads, batch)?;
        Some(f.stats.median_ms / t.stats.median_ms)
    }

    /// Thread counts measured, ascending.
    pub fn thread_counts(&self) -> Vec<usize> {
        let mut t: Vec<usize> = self.latency.iter().map(|c| c.threads).collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    pub fn weights_of(&self, side: Side) -> Option<&WeightsInfo> {
        self.weights.iter().find(|w| w.side == side)
    }
}
