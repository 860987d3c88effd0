//! IDX files (the MNIST format): a big-endian header `0x00 0x00 TYPE RANK`, one u32 per
//! dimension, then the data. Read raw or gzip-compressed (sniffed by the gzip magic).
//!
//! Rules: only unsigned-byte data (type 0x08) is accepted; the data must be exactly as long as
//! the dimensions say. Every failure names the file and what was expected. Images are
//! `[count, rows, cols]` (one channel) or `[count, features]`; labels `[count]`.

use std::io::Read;
use std::path::PathBuf;

use super::{DataError, Dataset, Format, Pixels, Split, shape_error};
use std::path::Path;

/// An IDX tensor of unsigned bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdxError {
    #[error("cannot read `{path}`: {why}")]
    Io { path: String, why: String },
    #[error(
        "`{path}` is not an IDX file: magic number {found:#010x}, expected 0x00000801 (labels) or 0x00000803 (images) of unsigned bytes"
    )]
    Magic { path: String, found: u32 },
    #[error("`{path}` is truncated: its header says {expected} bytes of data, the file has {got}")]
    Truncated { path: String, expected: usize, got: usize },
    #[error("`{path}` has {extra} bytes after the data its header describes")]
    Trailing { path: String, extra: usize },
    #[error("`{path}` has rank {found}, expected {expected}")]
    Rank { path: String, found: usize, expected: usize },
}

/// Parses IDX bytes (already decompressed).
pub fn parse(bytes: &[u8], path: &str) -> Result<Idx, IdxError> {
    let header =
        |n: usize| bytes.get(..n).ok_or(IdxError::Truncated { path: path.into(), expected: n, got: bytes.len() });
    let magic = header(4)?;
    let found = u32::from_be_bytes([magic[0], magic[1], magic[2], magic[3]]);
    let rank = magic[3] as usize;
    if magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || rank == 0 || rank > 4 {
        return Err(IdxError::Magic { path: path.into(), found });
    }
    let head = header(4 + 4 * rank)?;
    let dims: Vec<usize> =
        head[4..].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let len = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap_or(usize::MAX);
    let data = &bytes[4 + 4 * rank..];
    if data.len() < len {
        return Err(IdxError::Truncated { path: path.into(), expected: len, got: data.len() });
    }
    if data.len() > len {
        return Err(IdxError::Trailing { path: path.into(), extra: data.len() - len });
    }
    Ok(Idx { dims, data: data.to_vec() })
}

/// Reads an IDX file, gzip-compressed or raw.
pub fn read(path: &Path) -> Result<Idx, IdxError> {
    let name = path.display().to_string();
    let io = |e: std::io::Error| IdxError::Io { path: name.clone(), why: e.to_string() };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| IdxError::Io { path: name.clone(), why: format!("bad gzip data: {e}") })?;
        out
    } else {
        raw
    };
    parse(&bytes, &name)
}

/// MNIST's four file names (what [`super::find_mnist`] looks for).
const MNIST: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// The file `name` in `dir`, compressed or not.
fn file_in(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(format!("{name}.gz")), dir.join(name)].into_iter().find(|p| p.is_file())
}

/// Whether `dir` holds MNIST's four files under their usual names.
pub fn is_mnist(dir: &Path) -> bool {
    MNIST.iter().all(|n| file_in(dir, n).is_some())
}

/// An IDX dataset's files: training images and labels, and test ones when present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Files {
    pub train: (PathBuf, PathBuf),
    pub test: Option<(PathBuf, PathBuf)>,
}

/// The one file in `dir` whose name (without `.gz`) contains one of `keys`; `.gz` preferred
/// when both are present. Two different names are ambiguous.
fn role(dir: &Path, keys: &[&str]) -> Result<Option<PathBuf>, DataError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    let mut stems: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().to_str().map(|n| n.trim_end_matches(".gz").to_string()))
        .filter(|n| keys.iter().any(|k| n.contains(k)) && !n.ends_with(".npy") && !n.ends_with(".bin"))
        .collect();
    stems.sort();
    stems.dedup();
    match &stems[..] {
        [] => Ok(None),
        [one] => Ok(file_in(dir, one)),
        many => Err(DataError::Detect {
            path: dir.display().to_string(),
            what: format!("several IDX files could be the `{}` file: {}", keys[0], many.join(", ")),
        }),
    }
}

/// The IDX files in `dir`: names containing `train-images` and `train-labels`, and
/// `t10k-images`/`test-images` with `t10k-labels`/`test-labels` (MNIST, Fashion-MNIST, EMNIST's
/// `emnist-letters-train-images-idx3-ubyte`, ...).
pub fn files(dir: &Path) -> Result<Files, DataError> {
    let missing = || DataError::Detect {
        path: dir.display().to_string(),
        what: "no `*train-images*` and `*train-labels*` IDX files".into(),
    };
    let ti = role(dir, &["train-images"])?.ok_or_else(missing)?;
    let tl = role(dir, &["train-labels"])?.ok_or_else(missing)?;
    let test = match (role(dir, &["t10k-images", "test-images"])?, role(dir, &["t10k-labels", "test-labels"])?) {
        (Some(i), Some(l)) => Some((i, l)),
        (None, None) => None,
        (Some(f), None) | (None, Some(f)) => {
            return Err(shape_error(&f, "a test file without its partner (test images need test labels)"));
        }
    };
    Ok(Files { train: (ti, tl), test })
}

fn split(ip: &Path, lp: &Path) -> Result<Split, DataError> {
    let im = read(ip)?;
    let lb = read(lp)?;
    let dims = match im.dims[..] {
        [_, h, w] => [1, h, w],
        [_, d] => [d, 1, 1],
        _ => {
            return Err(shape_error(
                ip,
                format!("images must be [count, rows, cols] or [count, features], got {:?}", im.dims),
            ));
        }
    };
    if lb.dims.len() != 1 {
        return Err(shape_error(lp, format!("labels must be [count], got {:?}", lb.dims)));
    }
    if im.dims[0] != lb.dims[0] {
        return Err(DataError::Count {
            images: ip.display().to_string(),
            labels: lp.display().to_string(),
            n_images: im.dims[0],
            n_labels: lb.dims[0],
        });
    }
    Ok(Split { pixels: Pixels::U8(im.data), labels: lb.data.into_iter().map(u32::from).collect(), dims })
}

/// Reads the IDX dataset in `dir` ([`files`]); its classes are `max label + 1`.
pub fn load(dir: &Path) -> Result<Dataset, DataError> {
    let f = files(dir)?;
    let train = split(&f.train.0, &f.train.1)?;
    let test = f.test.as_ref().map(|(i, l)| split(i, l)).transpose()?;
    if let Some(t) = &test
        && t.dims != train.dims
    {
        return Err(shape_error(
            &f.test.as_ref().map_or_else(PathBuf::new, |p| p.0.clone()),
            format!("test images are {}, training images {}", t.describe_dims(), train.describe_dims()),
        ));
    }
    let classes = train.label_span().max(test.as_ref().map_or(0, Split::label_span));
    let class_names = Vec::new();
    Ok(Dataset {
        format: Format::Idx,
        dir: dir.to_path_buf(),
        train,
        test,
        classes,
        classes_known: false,
        class_names,
        notes: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_dims_and_data_and_names_each_defect() {
        let ok = file(&[2, 3], &[1, 2, 3, 4, 5, 6]);
        assert_eq!(parse(&ok, "a").expect("valid"), Idx { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] });
        let mut bad = ok.clone();
        bad[2] = 0x0d; // float data
        assert!(matches!(parse(&bad, "a"), Err(IdxError::Magic { found: 0x0d02, .. })));
        assert!(matches!(parse(&ok[..9], "a"), Err(IdxError::Truncated { expected: 12, .. })));
        assert!(matches!(parse(&ok[..ok.len() - 1], "a"), Err(IdxError::Truncated { expected: 6, got: 5, .. })));
        let mut long = ok.clone();
        long.push(0);
        assert_eq!(parse(&long, "a"), Err(IdxError::Trailing { path: "a".into(), extra: 1 }));
        assert!(matches!(parse(b"PK\x03\x04", "a"), Err(IdxError::Magic { .. })));
        assert!(parse(&ok, "a").expect("ok").dims.len() == 2);
    }

    #[test]
    fn gzip_and_raw_files_read_the_same() {
        use std::io::Write;
        let dir = tempfile::tempdir().expect("temp");
        let raw = file(&[4], &[9, 8, 7, 6]);
        std::fs::write(dir.path().join("raw"), &raw).expect("write");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&raw).expect("gzip");
        std::fs::write(dir.path().join("raw.gz"), gz.finish().expect("gzip")).expect("write");
        assert_eq!(read(&dir.path().join("raw")), read(&dir.path().join("raw.gz")));
        let mut cut = std::fs::read(dir.path().join("raw.gz")).expect("read");
        cut.truncate(cut.len() / 2);
        std::fs::write(dir.path().join("cut.gz"), cut).expect("write");
        assert!(matches!(read(&dir.path().join("cut.gz")), Err(IdxError::Io { .. })));
        assert!(matches!(read(&dir.path().join("missing")), Err(IdxError::Io { .. })));
    }
}
