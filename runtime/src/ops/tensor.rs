//! Tensor plumbing with a defined result: slices, embedding lookup (checked ids) and
//! reductions along an axis.

/// Positions `start .. end` along axis `axis` of a row-major `shape`, copied from `x` into
/// `out` (`shape` with that axis `end - start` long).
pub fn slice_axis(x: &[f32], shape: &[usize], axis: usize, start: usize, end: usize, out: &mut [f32]) {
    let inner: usize = shape[axis + 1..].iter().product();
    let len = shape[axis];
    let (run, take) = (len * inner, (end - start) * inner);
    for (src, dst) in x.chunks_exact(run.max(1)).zip(out.chunks_exact_mut(take.max(1))) {
        dst.copy_from_slice(&src[start * inner..end * inner]);
    }
}

/// A token id that names no row of an embedding table: not an integer, or outside
/// `0 .. vocab`. Position `index` of the ids, in row-major order.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("token id {value} (element {index} of the ids) {}", if value.fract() != 0.0 || !value.is_finite() { "is not an integer".to_string() } else { format!("is outside the vocabulary of {vocab} tokens (0 to {})", vocab.saturating_sub(1)) })]
pub struct TokenIdError {
    pub index: usize,
    pub value: f32,
    pub vocab: usize,
}

/// Embedding lookup: `out` row `i` is row `ids[i]` of `table` (`vocab` rows of `dim`). The ids
/// are integers carried in f32 (exact up to 2^24); each is checked before its row is read,
/// so a bad id is an error, never a read outside the table. `out` has `ids.len() * dim`
/// values.
pub fn embedding(ids: &[f32], table: &[f32], dim: usize, out: &mut [f32]) -> Result<(), TokenIdError> {
    let vocab = table.len() / dim.max(1);
    for (index, (&value, row)) in ids.iter().zip(out.chunks_exact_mut(dim.max(1))).enumerate() {
        if !(value >= 0.0 && value < vocab as f32 && value.fract() == 0.0) {
            return Err(TokenIdError { index, value, vocab });
        }
        let r = value as usize * dim;
        row.copy_from_slice(&table[r..r + dim]);
    }
    Ok(())
}

/// The sum (or the mean, `mean`) of `x` along `axis`, which is removed: per output, the values
/// summed in f64 in index order and rounded once (the mean divides the f64 sum first). The
/// interpreter, the training pass and the engine call this, so they agree bit for bit. `None`
/// for an axis out of range.
pub fn reduce_axis(x: &ndarray::ArrayD<f32>, axis: usize, mean: bool) -> Option<ndarray::ArrayD<f32>> {
    if axis >= x.ndim() {
        return None;
    }
    let n = x.shape()[axis].max(1) as f64;
    Some(x.map_axis(ndarray::Axis(axis), |lane| {
        let s = lane.iter().map(|v| f64::from(*v)).sum::<f64>();
        (if mean { s / n } else { s }) as f32
    }))
}
