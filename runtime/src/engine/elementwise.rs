//! Steps that are not products: batch norm, unary and binary element-wise steps, concat and
//! relayout, each into a pooled buffer of the arena.
//!
//! Rules:
//! - Every value is computed with the interpreter's f32 operations in the same order (the
//!   semantics are `crate::ops`), so these steps are bit-exact.
//! - Shapes are physical: a binary step broadcasts physical shapes (the compiler permutes
//!   constants read against channels-last values), axes are physical axes.
//! - Results are standard-layout arrays in pooled buffers, whatever layout ndarray would give
//!   (a concat along an inner axis, say), so every reader may take `as_slice()`.

use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Zip};

use super::arena::Arena;
use super::plan::Layout;
use super::{RunError, internal, shaped};
use crate::ops::{BinaryOp, UnaryOp};

/// Copies `a` in logical (row-major) order into `dst` of the same length.
pub(crate) fn copy_into(dst: &mut [f32], a: &ArrayViewD<'_, f32>) {
    match a.as_slice() {
        Some(s) => dst.copy_from_slice(s),
        None => dst.iter_mut().zip(a.iter()).for_each(|(d, v)| *d = *v),
    }
}

/// `x` with its axes reordered (result axis `i` is axis `perm[i]`), into a pooled buffer: rows
/// of the last result axis copied with their source stride (a contiguous copy when the last
/// axis stays last, as attention's head splits keep it), the outer index advanced by a counter.
pub(crate) fn permute(si: usize, x: &ArrayD<f32>, perm: &[usize], arena: &mut Arena) -> Result<ArrayD<f32>, RunError> {
    let r = x.ndim();
    if perm.len() != r || !(0..r).all(|a| perm.contains(&a)) {
        return Err(internal(si, format!("permutation {perm:?} of a rank-{r} value")));
    }
    let x = x.as_standard_layout();
    let src = x.as_slice().ok_or_else(|| internal(si, "permutation input not contiguous"))?;
    let shape: Vec<usize> = perm.iter().map(|a| x.shape()[*a]).collect();
    let mut src_strides = vec![1usize; r];
    for a in (0..r.saturating_sub(1)).rev() {
        src_strides[a] = src_strides[a + 1] * x.shape()[a + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|a| src_strides[*a]).collect();
    let mut buf = arena.f32_overwritten(src.len());
    if r == 0 || src.is_empty() {
        buf.copy_from_slice(src);
        return shaped(si, &shape, buf);
    }
    let (n, step) = (shape[r - 1], strides[r - 1]);
    let mut idx = vec![0usize; r - 1];
    let mut base = 0usize;
    for row in buf.chunks_exact_mut(n.max(1)) {
        if step == 1 {
            row.copy_from_slice(&src[base..base + n]);
        } else {
            row.iter_mut().enumerate().for_each(|(j, d)| *d = src[base + j * step]);
        }
        // The next row: advance the counter over the outer result axes.
        for a in (0..r - 1).rev() {
            idx[a] += 1;
            base += strides[a];
            if idx[a] < shape[a] {
                break;
            }
            base -= strides[a] * shape[a];
            idx[a] = 0;
        }
    }
    shaped(si, &shape, buf)
}

/// `a` copied into a pooled buffer (standard layout).
pub(crate) fn pooled_copy(si: usize, a: &ArrayViewD<'_, f32>, arena: &mut Arena) -> Result<ArrayD<f32>, RunError> {
    let mut buf = arena.f32_overwritten(a.len());
    copy_into(&mut buf, a);
    shaped(si, a.shape(), buf)
}

/// Inference batch norm along physical axis `axis`: `(x - mean) * (1 / sqrt(var + eps)) * gamma
/// + beta`, the interpreter's order.
pub(crate) fn batch_norm(
    si: usize,
    x: &ArrayD<f32>,
    vecs: [Option<&ArrayD<f32>>; 4],
    eps: f32,
    axis: usize,
    arena: &mut Arena,
) -> Result<ArrayD<f32>, RunError> {
    let c =
        *x.shape().get(axis).ok_or_else(|| internal(si, format!("batch norm over axis {axis} of {:?}", x.shape())))?;
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let vec = |a: Option<&ArrayD<f32>>| -> Result<Vec<f32>, RunError> {
        a.and_then(|a| a.as_slice())
            .filter(|v| v.len() == c)
            .map(<[f32]>::to_vec)
            .ok_or_else(|| internal(si, format!("batch-norm vector of another size than {c} channels")))
    };
    let [g, be, m, v] = [vec(vecs[0])?, vec(vecs[1])?, vec(vecs[2])?, vec(vecs[3])?];
    let inv: Vec<f32> = v.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut y = pooled_copy(si, &x.view(), arena)?;
    let ys = y.as_slice_mut().ok_or_else(|| internal(si, "fresh buffer not contiguous"))?;
    if inner == 1 {
        // Channels last: rows of c.
        for row in ys.chunks_mut(c.max(1)) {
            for (k, t) in row.iter_mut().enumerate() {
                *t = (*t - m[k]) * inv[k] * g[k] + be[k];
            }
        }
    } else {
        for (i, run) in ys.chunks_mut(inner).enumerate() {
            let k = i % c;
            run.iter_mut().for_each(|t| *t = (*t - m[k]) * inv[k] * g[k] + be[k]);
        }
    }
    Ok(y)
}

pub(crate) fn unary(si: usize, x: &ArrayD<f32>, op: UnaryOp, arena: &mut Arena) -> Result<ArrayD<f32>, RunError> {
    let mut y = pooled_copy(si, &x.view(), arena)?;
    match y.as_slice_mut() {
        Some(ys) => crate::ops::unary_in_place(op, ys),
        None => y.iter_mut().for_each(|v| *v = op.apply(*v)),
    }
    Ok(y)
}

/// `a op b` with broadcasting over physical shapes.
pub(crate) fn binary(
    si: usize,
    a: &ArrayD<f32>,
    b: &ArrayD<f32>,
    op: BinaryOp,
    arena: &mut Arena,
) -> Result<ArrayD<f32>, RunError> {
    let (ra, rb) = (a.ndim(), b.ndim());
    let rank = ra.max(rb);
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    let shape: Vec<usize> = (0..rank)
        .map(|i| {
            let (x, y) = (dim(a.shape(), i), dim(b.shape(), i));
            if x == y || y == 1 {
                Ok(x)
            } else if x == 1 {
                Ok(y)
            } else {
                Err(internal(si, format!("operands {:?} and {:?} do not broadcast", a.shape(), b.shape())))
            }
        })
        .collect::<Result<_, _>>()?;
    // Fast paths on contiguous values: one operand a trailing block of the other's shape
    // (a scalar, a per-channel vector of a channels-last value, a [T, D] table added to
    // [B, T, D] tokens), repeated over the leading axes.
    if let (Some(xs), Some(ys)) = (a.as_slice(), b.as_slice()) {
        let suffix = |big: &[usize], small: &[usize]| {
            let small: &[usize] = &small[small.iter().take_while(|d| **d == 1).count()..];
            small.len() <= big.len() && big[big.len() - small.len()..] == *small
        };
        if a.shape() == shape.as_slice() && a.shape() != b.shape() && suffix(a.shape(), b.shape()) && !ys.is_empty() {
            let mut buf = arena.f32_overwritten(xs.len());
            for (o, x) in buf.chunks_exact_mut(ys.len()).zip(xs.chunks_exact(ys.len())) {
                o.iter_mut().zip(x.iter().zip(ys)).for_each(|(o, (x, z))| *o = op.apply(*x, *z));
            }
            return shaped(si, &shape, buf);
        }
        if b.shape() == shape.as_slice() && a.shape() != b.shape() && suffix(b.shape(), a.shape()) && !xs.is_empty() {
            let mut buf = arena.f32_overwritten(ys.len());
            for (o, z) in buf.chunks_exact_mut(xs.len()).zip(ys.chunks_exact(xs.len())) {
                o.iter_mut().zip(xs.iter().zip(z)).for_each(|(o, (x, z))| *o = op.apply(*x, *z));
            }
            return shaped(si, &shape, buf);
        }
        let last = *shape.last().unwrap_or(&1);
        let per_last = b.shape().iter().rev().skip(1).all(|d| *d == 1) && ys.len() == last;
        if a.shape() == shape.as_slice() && (a.shape() == b.shape() || per_last) {
            let mut buf = arena.f32_overwritten(xs.len());
            if a.shape() == b.shape() {
                buf.iter_mut().zip(xs.iter().zip(ys)).for_each(|(o, (x, z))| *o = op.apply(*x, *z));
            } else {
                for (o, x) in buf.chunks_exact_mut(last.max(1)).zip(xs.chunks_exact(last.max(1))) {
                    o.iter_mut().zip(x.iter().zip(ys)).for_each(|(o, (x, z))| *o = op.apply(*x, *z));
                }
            }
            return shaped(si, &shape, buf);
        }
    }
    let buf = arena.f32_overwritten(shape.iter().product());
    let mut y = shaped(si, &shape, buf)?;
    let (av, bv) = (a.broadcast(IxDyn(&shape)), b.broadcast(IxDyn(&shape)));
    let (Some(av), Some(bv)) = (av, bv) else {
        return Err(internal(si, format!("operands {:?} and {:?} do not broadcast", a.shape(), b.shape())));
    };
    Zip::from(&mut y).and(&av).and(&bv).for_each(|o, x, z| *o = op.apply(*x, *z));
    Ok(y)
}

/// Concatenation along physical axis `axis`, into one contiguous buffer.
pub(crate) fn concat(
    si: usize,
    views: &[ArrayViewD<'_, f32>],
    axis: usize,
    arena: &mut Arena,
) -> Result<ArrayD<f32>, RunError> {
    let first = views.first().ok_or_else(|| internal(si, "concat of nothing"))?;
    if axis >= first.ndim() {
        return Err(internal(si, format!("concat along axis {axis} of a rank-{} value", first.ndim())));
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for v in views {
        let fits = v.ndim() == shape.len() && (0..shape.len()).all(|i| i == axis || v.shape()[i] == shape[i]);
        if !fits {
            return Err(internal(si, format!("concat of {:?} and {:?} along {axis}", first.shape(), v.shape())));
        }
        shape[axis] += v.shape()[axis];
    }
    let buf = arena.f32_overwritten(shape.iter().product());
    let mut y = shaped(si, &shape, buf)?;
    let mut at = 0;
    for v in views {
        let n = v.shape()[axis];
        y.slice_axis_mut(Axis(axis), (at..at + n).into()).assign(v);
        at += n;
    }
    Ok(y)
}

/// A rank-4 value converted to layout `to`: `[B, C, H, W]` to `[B, H, W, C]` or back.
pub(crate) fn relayout(si: usize, x: &ArrayD<f32>, to: Layout, arena: &mut Arena) -> Result<ArrayD<f32>, RunError> {
    if x.ndim() != 4 {
        return Err(internal(si, format!("relayout of a rank-{} value", x.ndim())));
    }
    let (perm, shape) = match (to, x.shape()) {
        (Layout::Nhwc, &[b, c, h, w]) => ([0, 2, 3, 1], (b, c, h * w)),
        (Layout::Plain, &[b, h, w, c]) => ([0, 3, 1, 2], (b, h * w, c)),
        _ => return Err(internal(si, format!("relayout of a rank-{} value", x.ndim()))),
    };
    let Some(xs) = x.as_slice() else {
        return pooled_copy(si, &x.view().permuted_axes(IxDyn(&perm)), arena);
    };
    // A transpose of each sample's `[r, s]` matrix into `[s, r]`.
    let (b, r, s) = shape;
    let mut buf = arena.f32_overwritten(xs.len());
    if r == 1 || s == 1 {
        // One channel (or one pixel): both layouts are the same order.
        buf.copy_from_slice(xs);
    }
    for (src, dst) in
        xs.chunks_exact((r * s).max(1)).zip(buf.chunks_exact_mut((r * s).max(1))).take(b).filter(|_| r > 1 && s > 1)
    {
        for (i, row) in src.chunks_exact(s.max(1)).enumerate() {
            for (j, v) in row.iter().enumerate() {
                dst[j * r + i] = *v;
            }
        }
    }
    let out_shape: Vec<usize> = perm.iter().map(|a| x.shape()[*a]).collect();
    shaped(si, &out_shape, buf)
}
