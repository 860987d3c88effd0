//! `.npy` pairs: `train_x.npy` + `train_y.npy`, and optionally `test_x.npy` + `test_y.npy`.
//!
//! Rules:
//! - x: `[N, ...]` of uint8 or float32 (float64 is read as float32). `[N, D]` is N feature
//!   vectors (`[D, 1, 1]` per example), `[N, H, W]` one-channel images, `[N, C, H, W]`
//!   channels-first images; `[N, H, W, C]` with C of 1, 3 or 4 (and the second axis not) is
//!   channels-last and is transposed (noted).
//! - y: `[N]` of any integer type, every label >= 0. Classes are `max label + 1`.
//! - Train and test examples must have one shape; every defect names the file.

use std::path::Path;

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;

use super::{DataError, Dataset, Format, Pixels, Split, shape_error};

fn bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    crate::files::read_npy_bytes(path).map_err(|why| DataError::Shape { path: path.display().to_string(), what: why })
}

/// Tries `T`; `Ok(None)` when the file holds another dtype.
fn try_read<T: ndarray_npy::ReadableElement>(b: &[u8], path: &Path) -> Result<Option<ArrayD<T>>, DataError> {
    match ArrayD::<T>::read_npy(b) {
        Ok(a) => Ok(Some(a)),
        Err(ndarray_npy::ReadNpyError::WrongDescriptor(_)) => Ok(None),
        Err(e) => Err(shape_error(path, format!("not a readable .npy array: {e}"))),
    }
}

fn descr(b: &[u8], path: &Path) -> String {
    crate::files::npy_header(b, &path.display().to_string()).map(|h| h.descr).unwrap_or_default()
}

/// The examples of `path` as values in channels-first order, with their per-example dims.
fn examples(path: &Path, notes: &mut Vec<String>) -> Result<(Pixels, Vec<usize>, [usize; 3]), DataError> {
    let b = bytes(path)?;
    let (pixels, shape) = if let Some(a) = try_read::<u8>(&b, path)? {
        let shape = a.shape().to_vec();
        let a = channels_first(a, path, notes)?;
        (Pixels::U8(a.iter().copied().collect()), shape)
    } else if let Some(a) = try_read::<f32>(&b, path)? {
        let shape = a.shape().to_vec();
        (Pixels::F32(channels_first(a, path, notes)?.iter().copied().collect()), shape)
    } else if let Some(a) = try_read::<f64>(&b, path)? {
        let shape = a.shape().to_vec();
        (Pixels::F32(channels_first(a.mapv(|v| v as f32), path, notes)?.iter().copied().collect()), shape)
    } else {
        return Err(shape_error(
            path,
            format!("holds `{}` values; expected uint8, float32 or float64", descr(&b, path)),
        ));
    };
    let dims = match shape[..] {
        [_, d] => [d, 1, 1],
        [_, h, w] => [1, h, w],
        [_, c, h, w] if is_channels_last(&shape) => [w, c, h],
        [_, c, h, w] => [c, h, w],
        _ => {
            return Err(shape_error(
                path,
                format!("has shape {shape:?}; expected [N, D], [N, H, W], [N, C, H, W] or [N, H, W, C]"),
            ));
        }
    };
    if let Pixels::F32(v) = &pixels
        && let Some(i) = v.iter().position(|x| !x.is_finite())
    {
        return Err(shape_error(path, format!("value {i} is {}; every value must be finite", v[i])));
    }
    Ok((pixels, shape, dims))
}

fn is_channels_last(shape: &[usize]) -> bool {
    shape.len() == 4 && matches!(shape[3], 1 | 3 | 4) && !matches!(shape[1], 1 | 3 | 4)
}

fn channels_first<T: Clone>(a: ArrayD<T>, path: &Path, notes: &mut Vec<String>) -> Result<ArrayD<T>, DataError> {
    if is_channels_last(a.shape()) {
        notes.push(format!("{} is [N, H, W, C] (channels last): read as [N, C, H, W]", path.display()));
        let mut t = a;
        t.swap_axes(2, 3);
        t.swap_axes(1, 2);
        return Ok(t.as_standard_layout().into_owned());
    }
    if a.ndim() < 2 || a.ndim() > 4 {
        return Err(shape_error(
            path,
            format!("has shape {:?}; expected [N, D], [N, H, W], [N, C, H, W] or [N, H, W, C]", a.shape()),
        ));
    }
    Ok(a)
}

/// Labels of any integer dtype, as u32.
fn labels(path: &Path) -> Result<Vec<u32>, DataError> {
    let b = bytes(path)?;
    macro_rules! attempt {
        ($($t:ty),*) => {$(
            if let Some(a) = try_read::<$t>(&b, path)? {
                if a.ndim() != 1 {
                    return Err(shape_error(path, format!("has shape {:?}; labels must be [N]", a.shape())));
                }
                return a.iter().enumerate().map(|(i, &v)| {
                    u32::try_from(v).map_err(|_| shape_error(path, format!("label {i} is {v}; labels must be integers from 0")))
                }).collect();
            }
        )*};
    }
    attempt!(i64, i32, u8, u16, u32, u64, i16, i8);
    Err(shape_error(
        path,
        format!("holds `{}` values; labels must be integers (int64, int32, uint8, ...)", descr(&b, path)),
    ))
}

fn split(dir: &Path, x: &str, y: &str, notes: &mut Vec<String>) -> Result<Split, DataError> {
    let (xp, yp) = (dir.join(x), dir.join(y));
    if !yp.is_file() {
        return Err(shape_error(&yp, format!("missing: {x} needs its labels in {y}")));
    }
    let (pixels, shape, dims) = examples(&xp, notes)?;
    let labels = labels(&yp)?;
    if labels.len() != shape[0] {
        return Err(DataError::Count {
            images: xp.display().to_string(),
            labels: yp.display().to_string(),
            n_images: shape[0],
            n_labels: labels.len(),
        });
    }
    Ok(Split { pixels, labels, dims })
}

/// Reads the `.npy` pairs in `dir`.
pub fn load(dir: &Path) -> Result<Dataset, DataError> {
    let mut notes = Vec::new();
    let train = split(dir, "train_x.npy", "train_y.npy", &mut notes)?;
    let test =
        if dir.join("test_x.npy").is_file() { Some(split(dir, "test_x.npy", "test_y.npy", &mut notes)?) } else { None };
    if let Some(t) = &test {
        if t.dims != train.dims {
            return Err(shape_error(
                &dir.join("test_x.npy"),
                format!("test examples are {}, training examples {}", t.describe_dims(), train.describe_dims()),
            ));
        }
        if t.pixels.is_bytes() != train.pixels.is_bytes() {
            return Err(shape_error(&dir.join("test_x.npy"), "test and training examples must have one dtype"));
        }
    }
    let classes = train.label_span().max(test.as_ref().map_or(0, Split::label_span));
    Ok(Dataset {
        format: Format::Npy,
        dir: dir.to_path_buf(),
        train,
        test,
        classes,
        classes_known: false,
        class_names: vec![],
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2, Array4};
    use ndarray_npy::WriteNpyExt;

    fn write<A: WriteNpyExt>(path: &Path, a: &A) {
        let mut f = std::fs::File::create(path).expect("create");
        a.write_npy(&mut f).expect("npy");
    }

    #[test]
    fn features_and_channels_last_images_read_channels_first() {
        let dir = tempfile::tempdir().expect("temp");
        let d = dir.path();
        write(&d.join("train_x.npy"), &Array2::<f32>::from_shape_fn((3, 5), |(i, j)| (i * 5 + j) as f32));
        write(&d.join("train_y.npy"), &Array1::<i64>::from(vec![0, 2, 1]));
        let ds = load(d).expect("reads");
        assert_eq!((ds.train.dims, ds.classes, ds.test.is_none()), ([5, 1, 1], 3, true));
        assert_eq!(ds.train.pixels.get(7), 7.0);
        // [N, H, W, C] bytes: transposed, noted.
        write(
            &d.join("test_x.npy"),
            &Array4::<u8>::from_shape_fn((1, 2, 2, 3), |(_, h, w, c)| (c * 10 + h * 2 + w) as u8),
        );
        write(&d.join("test_y.npy"), &Array1::<u8>::from(vec![1]));
        let err = load(d).expect_err("dims differ");
        assert!(err.to_string().contains("test examples are 3x2x2, training examples 5 features"), "{err}");
        write(
            &d.join("train_x.npy"),
            &Array4::<u8>::from_shape_fn((3, 2, 2, 3), |(_, h, w, c)| (c * 10 + h * 2 + w) as u8),
        );
        let ds = load(d).expect("reads");
        assert_eq!(ds.train.dims, [3, 2, 2]);
        let first: Vec<f32> = (0..12).map(|i| ds.train.pixels.get(i)).collect();
        assert_eq!(first, [0., 1., 2., 3., 10., 11., 12., 13., 20., 21., 22., 23.]);
        assert!(ds.notes.iter().any(|n| n.contains("channels last")), "{:?}", ds.notes);
    }

    #[test]
    fn bad_labels_and_counts_are_named() {
        let dir = tempfile::tempdir().expect("temp");
        let d = dir.path();
        write(&d.join("train_x.npy"), &Array2::<u8>::zeros((2, 4)));
        write(&d.join("train_y.npy"), &Array1::<i32>::from(vec![0, -1]));
        assert!(load(d).expect_err("negative").to_string().contains("label 1 is -1"));
        write(&d.join("train_y.npy"), &Array1::<f32>::from(vec![0.0, 1.0]));
        assert!(load(d).expect_err("float").to_string().contains("labels must be integers"));
        write(&d.join("train_y.npy"), &Array1::<i64>::from(vec![0, 1, 1]));
        assert!(matches!(load(d).expect_err("count"), DataError::Count { n_images: 2, n_labels: 3, .. }));
        write(&d.join("train_x.npy"), &Array1::<f32>::zeros(2));
        assert!(load(d).expect_err("rank").to_string().contains("expected [N, D]"));
    }
}
