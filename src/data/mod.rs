//! Datasets for training and benchmarks: IDX (MNIST and its kin), CIFAR-10/100 binary
//! batches, folders of class folders of PNG/JPEG images, and `.npy` pairs.
//!
//! Rules:
//! - Every example is stored channels-first as `[C, H, W]` ([`Split::dims`]): IDX images are
//!   `[1, H, W]`, CIFAR `[3, 32, 32]`, images `[1 or 3, H, W]`, a `.npy` feature matrix
//!   `[N, D]` is `[D, 1, 1]` (so per-channel normalization is per feature). Values stay as
//!   stored (bytes or floats); [`Normalization`] and augmentation are applied per batch
//!   ([`batch::batch`]).
//! - The format is detected from `--data PATH` ([`detect`]) unless given (`--format`);
//!   detection that finds nothing, or two candidates, is an error naming what it looked for.
//! - `--data` absent or `mnist`: MNIST is looked up ([`find_mnist`]) in `$TRITON_DATA`,
//!   `./data`, `../shared/data` (each as the folder or its `mnist` folder). The sample shipped
//!   in the repository (`data/mnist-sample`, [`sample_dir`]) is never found that way: a caller
//!   that can do with it asks by [`find_mnist_or_sample`] and says so.
//! - Labels are checked against the class count the format gives (CIFAR, image folders);
//!   IDX and `.npy` have `max label + 1` classes ([`Dataset::classes_known`] is false).
//! - Loaders never panic on a file: every defect is a [`DataError`] naming the file and what
//!   was expected.

pub mod batch;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod norm;
pub mod npy;

use std::path::{Path, PathBuf};

pub use batch::{Augment, batch, fit};
pub use idx::IdxError;
pub use norm::{Normalization, Normalize};

/// Stored example values.
#[derive(Clone, Debug, PartialEq)]
pub enum Pixels {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

impl Pixels {
    pub fn is_bytes(&self) -> bool {
        matches!(self, Pixels::U8(_))
    }

    pub fn len(&self) -> usize {
        match self {
            Pixels::U8(v) => v.len(),
            Pixels::F32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as stored (a byte as 0..=255).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            Pixels::U8(v) => f32::from(v[i]),
            Pixels::F32(v) => v[i],
        }
    }

    fn gather(&self, per: usize, indices: &[usize]) -> Pixels {
        match self {
            Pixels::U8(v) => Pixels::U8(indices.iter().flat_map(|&i| &v[i * per..(i + 1) * per]).copied().collect()),
            Pixels::F32(v) => Pixels::F32(indices.iter().flat_map(|&i| &v[i * per..(i + 1) * per]).copied().collect()),
        }
    }
}

/// One split: examples of `dims` (`[C, H, W]`) values each, and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub pixels: Pixels,
    pub labels: Vec<u32>,
    pub dims: [usize; 3],
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per example.
    pub fn example_len(&self) -> usize {
        self.dims.iter().product()
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Split {
        Split {
            pixels: self.pixels.gather(self.example_len(), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            dims: self.dims,
        }
    }

    /// The first `n` examples.
    pub fn take(&self, n: usize) -> Split {
        self.select(&(0..n.min(self.len())).collect::<Vec<_>>())
    }

    /// `[C, H, W]` as text: `1x28x28`, or `784 features`.
    pub fn describe_dims(&self) -> String {
        describe_dims(self.dims)
    }

    /// The largest label plus one (0 when empty).
    pub fn label_span(&self) -> usize {
        self.labels.iter().max().map_or(0, |m| *m as usize + 1)
    }
}

pub fn describe_dims(dims: [usize; 3]) -> String {
    match dims {
        [d, 1, 1] => format!("{d} features"),
        [c, h, w] => format!("{c}x{h}x{w}"),
    }
}

/// A dataset format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Format {
    /// IDX files (MNIST, Fashion-MNIST, EMNIST, KMNIST): `*train-images*`, `*train-labels*`,
    /// `*t10k-*` or `*test-*` images and labels, raw or `.gz`.
    Idx,
    /// CIFAR-10 binary batches: `data_batch_*.bin` and `test_batch.bin`.
    Cifar10,
    /// CIFAR-100 binary files `train.bin` and `test.bin`, fine labels (100 classes).
    Cifar100,
    /// CIFAR-100 with its coarse labels (20 superclasses).
    Cifar100Coarse,
    /// A folder of class folders of PNG/JPEG images (`train/` and `test/`, or one folder).
    Folder,
    /// `train_x.npy` + `train_y.npy` (and `test_x.npy` + `test_y.npy`).
    Npy,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Idx => "IDX",
            Format::Cifar10 => "CIFAR-10",
            Format::Cifar100 => "CIFAR-100 (fine labels)",
            Format::Cifar100Coarse => "CIFAR-100 (coarse labels)",
            Format::Folder => "image folder",
            Format::Npy => ".npy pairs",
        }
    }
}

/// A dataset read from disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub format: Format,
    /// The folder it was read from.
    pub dir: PathBuf,
    pub train: Split,
    /// The held-out split, when the dataset has one.
    pub test: Option<Split>,
    pub classes: usize,
    /// Whether the format fixes the class count (CIFAR, folders), rather than the labels.
    pub classes_known: bool,
    /// Class names when the dataset has them (folder names, CIFAR's meta files).
    pub class_names: Vec<String>,
    /// Things worth telling the user (files skipped, conversions made).
    pub notes: Vec<String>,
}

impl Dataset {
    /// A one-line description: `CIFAR-10 from D: 50,000 training and 10,000 test examples of 3x32x32, 10 classes`.
    pub fn describe(&self) -> String {
        let test = self.test.as_ref().map_or(String::from("no test split"), |t| format!("{} test", t.len()));
        format!(
            "{} from {}: {} training and {test} examples of {}, {} classes",
            self.format.name(),
            self.dir.display(),
            self.train.len(),
            self.train.describe_dims(),
            self.classes
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("MNIST not found; looked for train-images-idx3-ubyte[.gz] and the three other IDX files in:\n{}\n(a 2,000-image sample ships with Triton: --data data/mnist-sample)", .0.iter().map(|p| format!("  {}", p.display())).collect::<Vec<_>>().join("\n"))]
    NotFound(Vec<PathBuf>),
    #[error(transparent)]
    Idx(#[from] IdxError),
    #[error("`{images}` holds {n_images} images but `{labels}` holds {n_labels} labels")]
    Count { images: String, labels: String, n_images: usize, n_labels: usize },
    #[error("`{path}`: {what}")]
    Shape { path: String, what: String },
    #[error("the model's input {input} does not fit the dataset's examples ({examples}): {why}")]
    Input { input: String, examples: String, why: String },
    #[error(
        "cannot tell the format of `{path}`: {what} (give --format idx|cifar10|cifar100|cifar100-coarse|folder|npy)"
    )]
    Detect { path: String, what: String },
    #[error("cannot read `{path}`: {why}")]
    Io { path: String, why: String },
    #[error("the weights file's metadata: {0}")]
    Metadata(String),
    #[error("{0}")]
    Usage(String),
}

pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |e| DataError::Io { path: path.display().to_string(), why: e.to_string() }
}

pub(crate) fn shape_error(path: &Path, what: impl Into<String>) -> DataError {
    DataError::Shape { path: path.display().to_string(), what: what.into() }
}

/// Which format the dataset at `dir` is in, from the files it holds; an error when it holds
/// nothing any format reads, or files of two formats.
pub fn detect(dir: &Path) -> Result<Format, DataError> {
    let mut found = Vec::new();
    if idx::files(dir).is_ok() {
        found.push(Format::Idx);
    }
    if dir.join("data_batch_1.bin").is_file() {
        found.push(Format::Cifar10);
    }
    if dir.join("train.bin").is_file() {
        found.push(Format::Cifar100);
    }
    if dir.join("train_x.npy").is_file() {
        found.push(Format::Npy);
    }
    if found.is_empty() && folder::looks_like(dir) {
        found.push(Format::Folder);
    }
    match found[..] {
        [one] => Ok(one),
        [] => Err(DataError::Detect {
            path: dir.display().to_string(),
            what: "it holds no IDX files (train-images-*), no CIFAR batches (data_batch_1.bin, train.bin), no train_x.npy, and no class folders of PNG/JPEG images".into(),
        }),
        _ => Err(DataError::Detect {
            path: dir.display().to_string(),
            what: format!("it holds files of {}", found.iter().map(|f| f.name()).collect::<Vec<_>>().join(" and ")),
        }),
    }
}

/// Where the dataset `--data` names is: a folder, the folder of a named file, or a known
/// sub-folder (`mnist/`, `cifar-10-batches-bin/`, `cifar-100-binary/`).
fn resolve(path: &Path) -> Result<PathBuf, DataError> {
    if path.is_file() {
        return Ok(path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf));
    }
    if !path.is_dir() {
        return Err(DataError::Io { path: path.display().to_string(), why: "no such file or folder".into() });
    }
    for sub in ["mnist", "cifar-10-batches-bin", "cifar-100-binary"] {
        let s = path.join(sub);
        if s.is_dir() && detect(path).is_err() && detect(&s).is_ok() {
            return Ok(s);
        }
    }
    Ok(path.to_path_buf())
}

/// Reads the dataset `--data` names (`None` or `mnist`: MNIST, looked up), in `format` or the
/// detected one. A dataset without a test split is split by the trainer ([`crate::train::splits`]).
pub fn load(data: Option<&str>, format: Option<Format>) -> Result<Dataset, DataError> {
    let dir = match data {
        None | Some("mnist") => find_mnist(None)?,
        Some(p) => resolve(Path::new(p))?,
    };
    let format = match format {
        Some(f) => f,
        None => detect(&dir)?,
    };
    let ds = match format {
        Format::Idx => idx::load(&dir)?,
        Format::Cifar10 => cifar::load10(&dir)?,
        Format::Cifar100 => cifar::load100(&dir, false)?,
        Format::Cifar100Coarse => cifar::load100(&dir, true)?,
        Format::Folder => folder::load(&dir)?,
        Format::Npy => npy::load(&dir)?,
    };
    if ds.train.is_empty() {
        return Err(shape_error(&dir, "the training split holds no examples"));
    }
    Ok(ds)
}

/// Where MNIST is, following the lookup order in the module docs.
pub fn find_mnist(data: Option<&str>) -> Result<PathBuf, DataError> {
    let mut looked = Vec::new();
    let mut candidates = Vec::new();
    let named = |root: PathBuf| [root.join("mnist"), root];
    match data {
        Some(x) if x != "mnist" => candidates.extend(named(PathBuf::from(x))),
        _ => {
            if let Some(env) = std::env::var_os("TRITON_DATA") {
                candidates.extend(named(PathBuf::from(env)));
            }
            candidates.extend(named(PathBuf::from("data")));
            candidates.extend(named(PathBuf::from("../shared/data")));
        }
    }
    for c in candidates {
        if idx::is_mnist(&c) {
            return Ok(c);
        }
        looked.push(c);
    }
    Err(DataError::NotFound(looked))
}

/// The MNIST sample shipped with Triton (`data/mnist-sample`), looked for under the current
/// folder, then under the source tree the binary was built from.
pub fn sample_dir() -> Option<PathBuf> {
    let rel = Path::new("data").join("mnist-sample");
    [rel.clone(), Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel)].into_iter().find(|d| idx::is_mnist(d))
}

/// Whether `dir` is the shipped sample (not the full dataset).
pub fn is_sample(dir: &Path) -> bool {
    dir.ends_with(Path::new("data").join("mnist-sample"))
}

/// [`find_mnist`] with the default lookup, else the shipped sample ([`sample_dir`]).
pub fn find_mnist_or_sample() -> Result<PathBuf, DataError> {
    find_mnist(None).or_else(|e| sample_dir().ok_or(e))
}

/// Reads MNIST (or any IDX dataset) from `dir`.
pub fn load_mnist(dir: &Path) -> Result<Dataset, DataError> {
    idx::load(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_dataset_lists_where_it_looked() {
        let dir = tempfile::tempdir().expect("temp");
        let err = find_mnist(Some(dir.path().to_str().expect("utf-8"))).expect_err("empty folder");
        let text = err.to_string();
        assert!(text.contains("MNIST not found") && text.contains(&dir.path().display().to_string()), "{text}");
        let err = load(Some(dir.path().to_str().expect("utf-8")), None).expect_err("empty folder");
        assert!(matches!(err, DataError::Detect { .. }), "{err}");
        assert!(err.to_string().contains("--format"), "{err}");
    }

    #[test]
    fn two_formats_in_one_folder_are_ambiguous() {
        let dir = tempfile::tempdir().expect("temp");
        std::fs::write(dir.path().join("data_batch_1.bin"), [0u8; 3073]).expect("write");
        std::fs::write(dir.path().join("train_x.npy"), b"x").expect("write");
        let err = detect(dir.path()).expect_err("ambiguous");
        assert!(err.to_string().contains("CIFAR-10 and .npy pairs"), "{err}");
    }
}
