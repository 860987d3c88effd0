//! The training settings a command line gives, and the defaults that adapt to the dataset.
//!
//! Rules:
//! - Every setting the user gives is used as given; only absent ones take defaults, and every
//!   default that depends on the dataset is reported ([`Resolved::adapted`]), never silent.
//! - Small datasets (fewer than [`SMALL`] training examples) overfit with the large-dataset
//!   defaults; they get more epochs, weight decay, label smoothing and (for images) random
//!   shifts: epochs `150,000 / examples` (10 to 100), weight decay 0.2, label smoothing 0.1,
//!   `crop:2` for images of at least 8x8. The figures behind the values are in
//!   docs/training.md.

use triton_compiler::interp::Precision;

use super::{OptimConfig, OptimizerKind, Schedule, TrainConfig};
use crate::data::{Augment, Normalize, Split};

/// Below this many training examples a dataset is small.
pub const SMALL: usize = 10_000;

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected an integer >= 1, got `{s}`")),
    }
}

fn parse_positive(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a finite number > 0, got `{s}`")),
    }
}

fn parse_decay(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a finite number >= 0, got `{s}`")),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a fraction in [0, 1), got `{s}`")),
    }
}

fn parse_smoothing(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number in [0, 1), got `{s}`")),
    }
}

/// `triton train`'s settings, each `None` when not given.
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
pub struct Flags {
    /// Passes over the training examples (at least 1) [default: 10; below 10,000 examples
    /// 150,000 / examples, at most 100].
    #[arg(long, value_parser = parse_count)]
    pub epochs: Option<usize>,
    /// Examples per step (at least 1) [default: 128].
    #[arg(long, value_parser = parse_count)]
    pub batch_size: Option<usize>,
    /// Base learning rate (a finite number > 0) [default: 0.002].
    #[arg(long, value_parser = parse_positive, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// [default: adam]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Weight decay of weights (decoupled for Adam, L2 for SGD); biases are not decayed
    /// [default: 0; 0.2 below 10,000 examples].
    #[arg(long, value_parser = parse_decay, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// [default: cosine]
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    /// How values become inputs (recorded in the weights file's metadata) [default: dataset,
    /// each channel's mean and deviation over the training split].
    #[arg(long, value_enum)]
    pub normalize: Option<Normalize>,
    /// Image augmentation: none, or crop[:PIXELS] (random crop with zero padding), flip
    /// (horizontal), comma-separated [default: none; crop:2 for images below 10,000 examples].
    #[arg(long, conflicts_with = "shift")]
    pub augment: Option<String>,
    /// Random shifts of up to this many pixels (the same as --augment crop:N).
    #[arg(long)]
    pub shift: Option<usize>,
    /// Label smoothing of the loss, in [0, 1) [default: 0; 0.1 below 10,000 examples].
    #[arg(long, value_parser = parse_smoothing)]
    pub label_smoothing: Option<f32>,
    /// Train on the first N training examples only (at least 1).
    #[arg(long, value_parser = parse_count)]
    pub subset: Option<usize>,
    /// Share of the training examples held out for validation and keep-best, in [0, 1)
    /// [default: 10% up to 5,000 examples; none below 200].
    #[arg(long, value_parser = parse_fraction)]
    pub val_fraction: Option<f64>,
    /// Stop after this many epochs without a better validation accuracy.
    #[arg(long, value_parser = parse_count)]
    pub patience: Option<usize>,
}

/// A configuration and what was adapted to the dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub config: TrainConfig,
    /// `setting value` for every default chosen by dataset size.
    pub adapted: Vec<String>,
}

/// The run's configuration for `train` (the dataset's training split, before any subset).
pub fn resolve(f: &Flags, train: &Split, precision: Precision, seed: u64) -> Result<Resolved, String> {
    let n = f.subset.map_or(train.len(), |s| s.min(train.len()));
    let small = n < SMALL;
    let [_, h, w] = train.dims;
    let image = h >= 8 && w >= 8;
    let mut adapted = Vec::new();
    let mut pick = |name: &str, given: Option<String>, large: String, small_v: String| -> String {
        match given {
            Some(v) => v,
            None if small && small_v != large => {
                adapted.push(format!("{name} {small_v}"));
                small_v
            }
            None => large,
        }
    };
    let small_epochs = (150_000 / n.max(1)).clamp(10, 100);
    let epochs: usize = pick("--epochs", f.epochs.map(|e| e.to_string()), "10".into(), small_epochs.to_string())
        .parse()
        .map_err(|_| "--epochs".to_string())?;
    let weight_decay: f32 = pick("--weight-decay", f.weight_decay.map(|v| v.to_string()), "0".into(), "0.2".into())
        .parse()
        .map_err(|_| "--weight-decay".to_string())?;
    let label_smoothing: f32 =
        pick("--label-smoothing", f.label_smoothing.map(|v| v.to_string()), "0".into(), "0.1".into())
            .parse()
            .map_err(|_| "--label-smoothing".to_string())?;
    let augment_text = match (&f.augment, f.shift) {
        (Some(a), _) => Some(a.clone()),
        (None, Some(0)) => Some("none".into()),
        (None, Some(s)) => Some(format!("crop:{s}")),
        (None, None) => None,
    };
    let small_aug = if image { "crop:2" } else { "none" };
    let augment_text = pick("--augment", augment_text, "none".into(), small_aug.into());
    let augment = Augment::parse(&augment_text, (h.min(w) / 8).max(1))?;
    Ok(Resolved {
        config: TrainConfig {
            epochs,
            batch_size: f.batch_size.unwrap_or(128),
            lr: f.lr.unwrap_or(2e-3),
            optim: OptimConfig::new(f.optimizer.unwrap_or(OptimizerKind::Adam), weight_decay),
            schedule: f.schedule.unwrap_or(Schedule::Cosine),
            precision,
            seed,
            normalize: f.normalize.unwrap_or(Normalize::Dataset),
            augment,
            label_smoothing,
            subset: f.subset,
            val_fraction: f.val_fraction,
            patience: f.patience,
            fixed_normalization: None,
        },
        adapted,
    })
}
