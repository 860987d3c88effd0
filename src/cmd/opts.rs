//! Command-line options shared by every command that takes a model (`compile`, `run`,
//! `train`, `bench`): one `#[derive(clap::Args)]` set flattened into each.
//!
//! Rules:
//! - One default optimization level everywhere: [`DEFAULT_OPT`], one -O parser.
//! - A command words an option's help for itself where its meaning differs (`train`'s
//!   `--weights` is where training starts) with clap's `mut_arg`, never with a second flag.
//! - Options keep whether the user gave them (`Option`), so a command that cannot apply one
//!   (a compiled artifact has its weights, precision and level built in) refuses it by name
//!   instead of ignoring it.

use std::path::PathBuf;

use triton_compiler::driver;
use triton_compiler::interp::Precision;
use triton_compiler::passes::OptLevel;

/// The optimization level of every command when `-O` is not given.
pub const DEFAULT_OPT: u8 = 3;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrecisionArg {
    Fp32,
    Ternary,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Precision {
        match p {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Ternary => Precision::Ternary,
        }
    }
}

/// How a `.tri` model is compiled: weights, precision, level, which model.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ModelOpts {
    /// Weights (.safetensors) named like the model's parameters [default: `<stem>.safetensors`
    /// beside the model, else seeded initialisation; stderr says which].
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Seed of the initialisation used when there is no weights file [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// fp32 runs the latent full-precision weights; ternary quantizes them [default: ternary].
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Optimization level, 0-3 [default: 3].
    #[arg(short = 'O', value_parser = clap::value_parser!(u8).range(0..=3))]
    pub opt: Option<u8>,
    /// At -O3, keep the activations of ternary layers in f32 instead of int8.
    #[arg(long)]
    pub f32_activations: bool,
    /// Which model, when the file defines several.
    #[arg(long)]
    pub model: Option<String>,
    /// Worker threads (0 or absent: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ModelOpts {
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(0)
    }

    pub fn precision(&self) -> Precision {
        self.precision.unwrap_or(PrecisionArg::Ternary).into()
    }

    pub fn opt(&self) -> u8 {
        self.opt.unwrap_or(DEFAULT_OPT)
    }

    pub fn level(&self) -> OptLevel {
        OptLevel::from_number(self.opt()).unwrap_or(OptLevel::O3)
    }

    /// Worker threads; 0 means every core.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or(0)
    }

    /// Sizes rayon's global pool to `--threads` (when given and not 0); call before any
    /// parallel work.
    pub fn init_thread_pool(&self) {
        if let Some(n) = self.threads.filter(|n| *n > 0) {
            // Only fails when a pool already exists, which it does not before the command runs.
            let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
        }
    }

    /// Refuses the options in `names` that were given, saying why they cannot apply here.
    pub fn refuse(&self, names: &[&str], why: &str) -> Result<(), String> {
        let given: Vec<&str> = self.given().into_iter().filter(|g| names.contains(g)).collect();
        match given.as_slice() {
            [] => Ok(()),
            [one] => Err(format!("{one} cannot apply: {why}")),
            many => Err(format!("{} cannot apply: {why}", many.join(", "))),
        }
    }

    /// The driver's settings for these options.
    pub fn settings(&self, verify_each: bool, shapes: std::collections::BTreeMap<String, i64>) -> driver::Settings {
        driver::Settings {
            level: self.level(),
            verify_each,
            int8_activations: !self.f32_activations,
            precision: self.precision(),
            model: self.model.clone(),
            shapes,
        }
    }

    /// The options given on the command line, as the user spelled them (for refusals).
    pub fn given(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let flags = [
            (self.weights.is_some(), "--weights"),
            (self.seed.is_some(), "--seed"),
            (self.precision.is_some(), "--precision"),
            (self.opt.is_some(), "-O"),
            (self.f32_activations, "--f32-activations"),
            (self.model.is_some(), "--model"),
        ];
        for (on, name) in flags {
            if on {
                out.push(name);
            }
        }
        out
    }
}

/// `--seed` chooses a seeded initialisation: with a weights file it cannot apply.
pub fn seed_applies(m: &ModelOpts, choice: &triton::weights::Choice) -> Result<(), String> {
    match (m.seed, choice.path()) {
        (Some(_), Some(p)) => Err(format!(
            "--seed cannot apply: the weights come from `{}` (the seed only initialises a model without a weights file)",
            p.display()
        )),
        _ => Ok(()),
    }
}

/// Where a dataset is and in which format (`train`, `quantize`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DataOpts {
    /// The dataset: a folder (or a file in it) of IDX files, CIFAR-10/100 binary batches,
    /// class folders of PNG/JPEG images, or train_x.npy/train_y.npy pairs; or `mnist` to
    /// search $TRITON_DATA, ./data and ../shared/data [default: mnist].
    #[arg(long)]
    pub data: Option<String>,
    /// The dataset's format [default: detected from the files].
    #[arg(long, value_enum)]
    pub format: Option<triton::data::Format>,
}
