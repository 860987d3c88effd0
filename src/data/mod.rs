//! Datasets for training and benchmarks: MNIST from its four IDX files.
//!
//! Rules:
//! - Lookup ([`find_mnist`]): `--data X` names a folder holding the files, or a folder with an
//!   `mnist` folder inside, or the dataset's name; then `$TRITON_DATA`, `./data`,
//!   `../shared/data` (each as the folder or its `mnist` folder). A dataset that is not found
//!   is an error listing every place looked at.
//! - The MNIST sample shipped in the repository (`data/mnist-sample`: 2,000 training and 1,000
//!   test images, [`sample_dir`]) is never found by that lookup: a caller that can do with it
//!   (benchmark accuracy, tests) asks for it by [`find_mnist_or_sample`] and says so.
//! - Files may be gzip-compressed (`*.gz`) or raw; images and labels must agree in count and
//!   labels must be digits.
//! - Pixels are kept as bytes; [`Normalize`] and random shifts are applied per batch.

pub mod idx;

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::Rng;

pub use idx::IdxError;

/// One split: `count` images of `rows x cols` bytes and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// The first `n` examples.
    pub fn take(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: self.images[..n * self.pixels()].to_vec(),
            labels: self.labels[..n].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// MNIST's two splits and where they were read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Mnist {
    pub dir: PathBuf,
    pub train: Split,
    pub test: Split,
}

pub const CLASSES: usize = 10;

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
    #[error("the model's input {shape:?} holds {want} values per example; the images are {rows}x{cols}")]
    Input { shape: Vec<usize>, want: usize, rows: usize, cols: usize },
}

const FILES: [(&str, &str); 2] =
    [("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")];

/// The file `name` in `dir`, compressed or not.
fn file_in(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)].into_iter().find(|p| p.is_file())
}

fn has_mnist(dir: &Path) -> bool {
    FILES.iter().all(|(i, l)| file_in(dir, i).is_some() && file_in(dir, l).is_some())
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
        if has_mnist(&c) {
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
    [rel.clone(), Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel)].into_iter().find(|d| has_mnist(d))
}

/// Whether `dir` is the shipped sample (not the full dataset).
pub fn is_sample(dir: &Path) -> bool {
    dir.ends_with(Path::new("data").join("mnist-sample"))
}

/// [`find_mnist`] with the default lookup, else the shipped sample ([`sample_dir`]).
pub fn find_mnist_or_sample() -> Result<PathBuf, DataError> {
    find_mnist(None).or_else(|e| sample_dir().ok_or(e))
}

fn split(dir: &Path, images: &str, labels: &str) -> Result<Split, DataError> {
    let (ip, lp) = (file_in(dir, images), file_in(dir, labels));
    let (Some(ip), Some(lp)) = (ip, lp) else { return Err(DataError::NotFound(vec![dir.to_path_buf()])) };
    let im = idx::read(&ip)?;
    let lb = idx::read(&lp)?;
    let shape_err = |p: &Path, what: String| DataError::Shape { path: p.display().to_string(), what };
    if im.dims.len() != 3 {
        return Err(shape_err(&ip, format!("images must be [count, rows, cols], got {:?}", im.dims)));
    }
    if lb.dims.len() != 1 {
        return Err(shape_err(&lp, format!("labels must be [count], got {:?}", lb.dims)));
    }
    if im.dims[0] != lb.dims[0] {
        return Err(DataError::Count {
            images: ip.display().to_string(),
            labels: lp.display().to_string(),
            n_images: im.dims[0],
            n_labels: lb.dims[0],
        });
    }
    if let Some(bad) = lb.data.iter().position(|l| *l as usize >= CLASSES) {
        return Err(shape_err(&lp, format!("label {bad} is {}, expected 0..9", lb.data[bad])));
    }
    Ok(Split { images: im.data, labels: lb.data, rows: im.dims[1], cols: im.dims[2] })
}

/// Reads MNIST from `dir`.
pub fn load_mnist(dir: &Path) -> Result<Mnist, DataError> {
    let train = split(dir, FILES[0].0, FILES[0].1)?;
    let test = split(dir, FILES[1].0, FILES[1].1)?;
    Ok(Mnist { dir: dir.to_path_buf(), train, test })
}

/// How pixel bytes become model inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Normalize {
    /// `p / 255`, in [0, 1].
    Unit,
    /// `(p / 255 - 0.1307) / 0.3081`, MNIST's mean and standard deviation.
    Standard,
}

impl Normalize {
    pub fn apply(self, p: u8) -> f32 {
        let x = f32::from(p) / 255.0;
        match self {
            Normalize::Unit => x,
            Normalize::Standard => (x - 0.1307) / 0.3081,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Normalize::Unit => "unit",
            Normalize::Standard => "standard",
        }
    }

    pub fn from_name(s: &str) -> Option<Normalize> {
        match s {
            "unit" => Some(Normalize::Unit),
            "standard" => Some(Normalize::Standard),
            _ => None,
        }
    }
}

/// Examples `indices` of `split` as a batch shaped `[B, ..shape]` (the model's input shape with
/// its batch dimension left out; its element count must be `rows * cols`), each image shifted
/// by up to `shift` pixels in each direction (zero-filled) when `rng` is given.
pub fn batch(
    split: &Split,
    indices: &[usize],
    shape: &[usize],
    norm: Normalize,
    shift: usize,
    mut rng: Option<&mut ChaCha8Rng>,
) -> Result<(ArrayD<f32>, Vec<usize>), DataError> {
    let (rows, cols, px) = (split.rows, split.cols, split.pixels());
    let want: usize = shape.iter().product();
    if want != px {
        return Err(DataError::Input { shape: shape.to_vec(), want, rows, cols });
    }
    let mut data = Vec::with_capacity(indices.len() * px);
    let mut labels = Vec::with_capacity(indices.len());
    let zero = norm.apply(0);
    for &i in indices {
        let img = &split.images[i * px..(i + 1) * px];
        let (dy, dx) = match rng.as_deref_mut() {
            Some(r) if shift > 0 => {
                let span = (2 * shift + 1) as u32;
                ((r.next_u32() % span) as isize - shift as isize, (r.next_u32() % span) as isize - shift as isize)
            }
            _ => (0, 0),
        };
        for y in 0..rows as isize {
            for x in 0..cols as isize {
                let (sy, sx) = (y - dy, x - dx);
                let inside = sy >= 0 && sx >= 0 && (sy as usize) < rows && (sx as usize) < cols;
                data.push(if inside { norm.apply(img[sy as usize * cols + sx as usize]) } else { zero });
            }
        }
        labels.push(split.labels[i] as usize);
    }
    let mut full = vec![indices.len()];
    full.extend_from_slice(shape);
    let x = ArrayD::from_shape_vec(IxDyn(&full), data).map_err(|_| DataError::Input {
        shape: shape.to_vec(),
        want,
        rows,
        cols,
    })?;
    Ok((x, labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    fn tiny() -> Split {
        Split { images: (0..2 * 9).map(|v| v as u8 * 10).collect(), labels: vec![3, 7], rows: 3, cols: 3 }
    }

    #[test]
    fn batches_normalise_reshape_and_shift() {
        let s = tiny();
        let (x, y) = batch(&s, &[1, 0], &[9], Normalize::Unit, 0, None).unwrap();
        assert_eq!(x.shape(), [2, 9]);
        assert_eq!(y, [7, 3]);
        assert_eq!(x[[0, 0]], 90.0 / 255.0);
        let (x4, _) = batch(&s, &[0], &[1, 3, 3], Normalize::Standard, 0, None).unwrap();
        assert_eq!(x4.shape(), [1, 1, 3, 3]);
        assert!((x4[[0, 0, 0, 0]] - (0.0 - 0.1307) / 0.3081).abs() < 1e-6);
        // Shifts move pixels and fill with the normalised zero; every shift keeps the label.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut moved = false;
        for _ in 0..20 {
            let (xs, ys) = batch(&s, &[0], &[9], Normalize::Unit, 1, Some(&mut rng)).unwrap();
            assert_eq!(ys, [3]);
            let sum: f32 = xs.iter().sum();
            assert!(sum <= x.slice(ndarray::s![1, ..]).sum() + 1e-6);
            moved |= xs.slice(ndarray::s![0, ..]) != x.slice(ndarray::s![1, ..]);
        }
        assert!(moved, "random shifts move the image");
    }

    #[test]
    fn a_missing_dataset_lists_where_it_looked() {
        let dir = tempfile::tempdir().expect("temp");
        let err = find_mnist(Some(dir.path().to_str().expect("utf-8"))).expect_err("empty folder");
        let text = err.to_string();
        assert!(text.contains("MNIST not found") && text.contains(&dir.path().display().to_string()), "{text}");
    }

    #[test]
    fn label_and_image_counts_must_agree() {
        let dir = tempfile::tempdir().expect("temp");
        let idx = |dims: &[u32], data: &[u8]| {
            let mut out = vec![0, 0, 8, dims.len() as u8];
            for d in dims {
                out.extend_from_slice(&d.to_be_bytes());
            }
            out.extend_from_slice(data);
            out
        };
        for (i, l) in FILES {
            std::fs::write(dir.path().join(i), idx(&[2, 2, 2], &[0; 8])).expect("write");
            std::fs::write(dir.path().join(l), idx(&[3], &[1, 2, 3])).expect("write");
        }
        assert_eq!(find_mnist(Some(dir.path().to_str().expect("utf-8"))).expect("found"), dir.path());
        let err = load_mnist(dir.path()).expect_err("count mismatch");
        assert!(matches!(err, DataError::Count { n_images: 2, n_labels: 3, .. }), "{err}");
        for (_, l) in FILES {
            std::fs::write(dir.path().join(l), idx(&[2], &[1, 12])).expect("write");
        }
        assert!(load_mnist(dir.path()).expect_err("bad label").to_string().contains("label 1 is 12"));
    }
}
