//! How stored values become model inputs: `(value / divide - mean[c]) / std[c]` per channel.
//!
//! Rules:
//! - Byte data is divided by 255 first (so `unit` maps pixels to [0, 1]); float data is not.
//! - `dataset` computes each channel's mean and standard deviation from the training split it
//!   is given (never from validation or test data); a channel that never varies gets 1.
//! - The normalization a model was trained with is recorded in its weights file's metadata
//!   ([`Normalization::to_metadata`]) under `normalization` (JSON), with the earlier key
//!   `normalize` naming the kind; [`Normalization::from_metadata`] reads either.

use std::collections::HashMap;

use super::{DataError, Split};

/// The normalization asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Normalize {
    /// Bytes as `p / 255`, in [0, 1]; float data as it is.
    Unit,
    /// MNIST's mean and standard deviation: `(p / 255 - 0.1307) / 0.3081`.
    Standard,
    /// Each channel's mean and standard deviation, computed from the training split.
    Dataset,
}

impl Normalize {
    pub fn name(self) -> &'static str {
        match self {
            Normalize::Unit => "unit",
            Normalize::Standard => "standard",
            Normalize::Dataset => "dataset",
        }
    }

    pub fn from_name(s: &str) -> Option<Normalize> {
        [Normalize::Unit, Normalize::Standard, Normalize::Dataset].into_iter().find(|n| n.name() == s)
    }
}

/// A concrete normalization: one mean and deviation per channel (or one for all).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub kind: Normalize,
    /// 255 for byte data, 1 for float data.
    pub divide: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// `kind` for `split`'s values (`dataset`: computed from `split`).
    pub fn of(kind: Normalize, split: &Split) -> Normalization {
        let divide = if split.pixels.is_bytes() { 255.0 } else { 1.0 };
        match kind {
            Normalize::Unit | Normalize::Standard => Normalization::fixed(kind, divide),
            Normalize::Dataset => {
                let (mean, std) = channel_stats(split, divide);
                Normalization { kind, divide, mean, std }
            }
        }
    }

    /// `unit` or `standard` (their constants), for values divided by `divide`.
    fn fixed(kind: Normalize, divide: f32) -> Normalization {
        let (mean, std) = if kind == Normalize::Standard { (0.1307, 0.3081) } else { (0.0, 1.0) };
        Normalization { kind, divide, mean: vec![mean], std: vec![std] }
    }

    /// The value stored as `raw` in channel `c`, normalized.
    #[inline]
    pub fn apply(&self, raw: f32, c: usize) -> f32 {
        let c = if self.mean.len() == 1 { 0 } else { c };
        (raw / self.divide - self.mean[c]) / self.std[c]
    }

    /// Channels this normalization has values for (1: the same for every channel).
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Whether it fits examples of `channels` channels.
    pub fn fits(&self, channels: usize) -> bool {
        self.mean.len() == 1 || self.mean.len() == channels
    }

    /// The metadata entries that record it.
    pub fn to_metadata(&self) -> Vec<(String, String)> {
        let json = serde_json::to_string(self).unwrap_or_default();
        vec![("normalize".into(), self.kind.name().into()), ("normalization".into(), json)]
    }

    /// The normalization recorded in weights metadata: the `normalization` JSON, else the
    /// `normalize` kind (for byte data), else none.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<Option<Normalization>, DataError> {
        if let Some(json) = meta.get("normalization") {
            let n: Normalization = serde_json::from_str(json).map_err(|e| DataError::Metadata(e.to_string()))?;
            let ok = !n.mean.is_empty()
                && n.mean.len() == n.std.len()
                && n.divide.is_finite()
                && n.divide > 0.0
                && n.mean.iter().chain(&n.std).all(|v| v.is_finite())
                && n.std.iter().all(|s| *s > 0.0);
            if !ok {
                return Err(DataError::Metadata(format!(
                    "`normalization` must hold as many finite means as positive deviations, found {json}"
                )));
            }
            return Ok(Some(n));
        }
        match meta.get("normalize").map(|s| (s, Normalize::from_name(s))) {
            None => Ok(None),
            Some((_, Some(k @ (Normalize::Unit | Normalize::Standard)))) => Ok(Some(Normalization::fixed(k, 255.0))),
            Some((s, _)) => Err(DataError::Metadata(format!(
                "`normalize` is `{s}` without the `normalization` entry that says its values; expected unit or standard"
            ))),
        }
    }

    /// One line for messages: `dataset (mean 0.131, std 0.308)`.
    pub fn describe(&self) -> String {
        let list = |v: &[f32]| v.iter().take(4).map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
        let more = if self.mean.len() > 4 { format!(", ... {} channels", self.mean.len()) } else { String::new() };
        format!("{} (mean {}{more}; std {}{more})", self.kind.name(), list(&self.mean), list(&self.std))
    }
}

/// Per-channel mean and (population) standard deviation of `split`'s values divided by `divide`.
fn channel_stats(split: &Split, divide: f32) -> (Vec<f32>, Vec<f32>) {
    let [c, h, w] = split.dims;
    let plane = h * w;
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    let per = split.example_len();
    for i in 0..split.len() {
        for ch in 0..c {
            let (mut s, mut q) = (0f64, 0f64);
            for k in 0..plane {
                let v = f64::from(split.pixels.get(i * per + ch * plane + k)) / f64::from(divide);
                s += v;
                q += v * v;
            }
            sum[ch] += s;
            sq[ch] += q;
        }
    }
    let n = (split.len() * plane).max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| {
            let var = (q / n - m * m).max(0.0);
            if var.sqrt() < 1e-6 { 1.0 } else { var.sqrt() as f32 }
        })
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}
