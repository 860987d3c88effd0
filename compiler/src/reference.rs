//! Reference semantics of the window and normalisation ops, shared by the interpreter and
//! the trainer.
//!
//! Rules:
//! - One implementation each of what docs/language.md says: a convolution's columns
//!   ([`im2col`], zero outside the image), pooling ([`pool`]: average divides by the whole
//!   window, padding included; max ignores padding and propagates NaN as the runtime's
//!   `ops::pool_max` does) and inference batch norm ([`batch_norm`]). `interp` and `grad` both
//!   call these; the runtime's kernels are separate implementations the tests compare with.
//! - Written for clarity first; parallel (over the batch, or the planes) and free of
//!   per-element bounds tests where training needs the speed.
//! - Shapes were checked by the verifier; a layout fact that fails is a [`Broken`] error.

use ndarray::{Array2, ArrayD, IxDyn};
use rayon::prelude::*;
use triton_runtime::engine::plan::ConvGeom;

use crate::invariant::{Broken, Invariant};
use crate::ir::{ConvAttrs, PoolAttrs};

/// The geometry of a convolution of an `x` of shape `[B, C, H, W]` by a `w` of shape
/// `[O, C / groups, KH, KW]` (the batch is not part of it).
pub fn conv_geom(x: &[usize], w: &[usize], a: &ConvAttrs) -> ConvGeom {
    let u = |v: i64| v.max(0) as usize;
    let (stride, pad, dil) = (a.stride.map(u), a.padding.map(u), a.dilation.map(u));
    let out = |i: usize, k: usize, d: usize| (i + 2 * pad[d] - dil[d] * (k - 1) - 1) / stride[d].max(1) + 1;
    ConvGeom {
        c: x[1],
        h: x[2],
        w: x[3],
        o: w[0],
        kh: w[2],
        kw: w[3],
        stride,
        pad,
        dil,
        groups: u(a.groups).max(1),
        oh: out(x[2], w[2], 0),
        ow: out(x[3], w[3], 1),
    }
}

/// The input coordinates kernel tap `(u, v)` reads for output pixel `(i, j)`, or `None` when
/// it falls in the padding.
pub fn tap(g: &ConvGeom, i: usize, j: usize, u: usize, v: usize) -> Option<(usize, usize)> {
    let y = (i * g.stride[0] + u * g.dil[0]).checked_sub(g.pad[0]).filter(|y| *y < g.h)?;
    let x = (j * g.stride[1] + v * g.dil[1]).checked_sub(g.pad[1]).filter(|x| *x < g.w)?;
    Some((y, x))
}

/// The columns of a convolution's input `x` (NCHW, row-major, `b` samples):
/// `[B * OH * OW, groups * K]`, row `(n, i, j)` holding for each group in turn the `K` inputs
/// of output pixel `(i, j)` in weight order `(c, u, v)`, zero in the padding. Built in
/// parallel over the batch.
pub fn im2col<T: Copy + Default + Send + Sync>(x: &[T], b: usize, g: &ConvGeom) -> Result<Array2<T>, Broken> {
    let (p, k, plane) = (g.pixels(), g.k(), g.h * g.w);
    let patch = g.groups * k;
    let mut cols = Array2::<T>::default((b * p, patch));
    let out = cols.as_slice_mut().invariant("a fresh array is contiguous")?;
    if x.len() != b * g.c * plane {
        return Err(Broken("the convolution's input has B * C * H * W values"));
    }
    out.par_chunks_mut((p * patch).max(1)).enumerate().for_each(|(n, sample)| {
        let img = &x[n * g.c * plane..(n + 1) * g.c * plane];
        for i in 0..g.oh {
            for j in 0..g.ow {
                let row = &mut sample[(i * g.ow + j) * patch..][..patch];
                let mut col = 0;
                for ch in 0..g.c {
                    for u in 0..g.kh {
                        for v in 0..g.kw {
                            row[col] =
                                tap(g, i, j, u, v).map_or_else(T::default, |(y, z)| img[ch * plane + y * g.w + z]);
                            col += 1;
                        }
                    }
                }
            }
        }
    });
    Ok(cols)
}

/// Pooling over `[B, C, H, W]`. Max pooling also returns, per output, the flat index of the
/// input it took (`usize::MAX` when the window lies in the padding only); average pooling
/// returns no indices.
pub fn pool(x: &ArrayD<f32>, a: &PoolAttrs, max: bool) -> Result<(ArrayD<f32>, Vec<usize>), Broken> {
    let dims = x.shape();
    if dims.len() != 4 {
        return Err(Broken("a pooling input has rank 4"));
    }
    let (b, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let u = |v: i64| v.max(0) as usize;
    let ([kh, kw], [sh, sw], [ph, pw]) = (a.kernel.map(u), a.stride.map(u), a.padding.map(u));
    let out_size = |n: usize, k: usize, s: usize, p: usize| (n + 2 * p).checked_sub(k).map(|r| r / s.max(1) + 1);
    let (oh, ow) = (out_size(h, kh, sh, ph), out_size(w, kw, sw, pw));
    let (oh, ow) = (oh.invariant("the pooling window fits")?, ow.invariant("the pooling window fits")?);
    let x = x.as_standard_layout();
    let xs = x.as_slice().invariant("a standard-layout array is contiguous")?;
    let mut out = vec![0.0f32; b * c * oh * ow];
    let mut arg = if max { vec![usize::MAX; out.len()] } else { Vec::new() };
    // The window rows (columns) inside the image for output row i (column j).
    let inside = |o: usize, s: usize, p: usize, k: usize, n: usize| {
        let start = (o * s) as isize - p as isize;
        let lo = (-start).max(0) as usize;
        let hi = ((n as isize - start).max(0) as usize).min(k);
        (start, lo, hi.max(lo))
    };
    let plane_out = (oh * ow).max(1);
    // Max pooling without padding, the common case: a branch-free maximum (strictly greater
    // replaces, so the first maximum is kept, as below); a plane holding a NaN is redone by
    // the exact loop, which takes the first NaN.
    let fast_max = |plane: usize, out: &mut [f32], arg: &mut [usize]| -> bool {
        let mut nan = false;
        if (kh, kw, sh, sw) == (2, 2, 2, 2) {
            // The usual 2x2 window, unrolled in the same tap order.
            for i in 0..oh {
                for j in 0..ow {
                    let first = (plane * h + 2 * i) * w + 2 * j;
                    let (mut acc, mut best) = (xs[first], first);
                    for idx in [first + 1, first + w, first + w + 1] {
                        let v = xs[idx];
                        nan |= v.is_nan();
                        let gt = v > acc;
                        acc = if gt { v } else { acc };
                        best = if gt { idx } else { best };
                    }
                    nan |= xs[first].is_nan();
                    out[i * ow + j] = acc;
                    arg[i * ow + j] = best;
                }
            }
            return !nan;
        }
        for i in 0..oh {
            for j in 0..ow {
                let first = (plane * h + i * sh) * w + j * sw;
                let (mut acc, mut best) = (xs[first], first);
                for du in 0..kh {
                    let row = first + du * w;
                    for dv in 0..kw {
                        let v = xs[row + dv];
                        nan |= v.is_nan();
                        let gt = v > acc;
                        acc = if gt { v } else { acc };
                        best = if gt { row + dv } else { best };
                    }
                }
                out[i * ow + j] = acc;
                arg[i * ow + j] = best;
            }
        }
        !nan
    };
    let no_padding = ph == 0 && pw == 0 && kh > 0 && kw > 0;
    let one_plane = |plane: usize, out: &mut [f32], arg: &mut [usize]| {
        if max && no_padding && fast_max(plane, out, arg) {
            return;
        }
        for i in 0..oh {
            let (y0, ulo, uhi) = inside(i, sh, ph, kh, h);
            for j in 0..ow {
                let (z0, vlo, vhi) = inside(j, sw, pw, kw, w);
                let o = i * ow + j;
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                let mut best = usize::MAX;
                for du in ulo..uhi {
                    let row = (plane * h + (y0 + du as isize) as usize) * w;
                    for dv in vlo..vhi {
                        let idx = row + (z0 + dv as isize) as usize;
                        let v = xs[idx];
                        if !max {
                            acc += v;
                        } else if best == usize::MAX || (!acc.is_nan() && (v.is_nan() || v > acc)) {
                            // As `ops::pool_max`: the first NaN is taken and kept.
                            acc = v;
                            best = idx;
                        }
                    }
                }
                out[o] = if max { acc } else { acc / (kh * kw) as f32 };
                if max {
                    arg[o] = best;
                }
            }
        }
    };
    if max {
        out.par_chunks_mut(plane_out).zip(arg.par_chunks_mut(plane_out)).enumerate().for_each(|(plane, (o, a))| {
            one_plane(plane, o, a);
        });
    } else {
        out.par_chunks_mut(plane_out).enumerate().for_each(|(plane, o)| one_plane(plane, o, &mut []));
    }
    let y = ArrayD::from_shape_vec(IxDyn(&[b, c, oh, ow]), out).invariant("the pooled tensor has its shape's size")?;
    Ok((y, arg))
}

/// `[C]` values as a tensor that broadcasts over dimension 1 of a rank-`ndim` tensor.
pub fn per_channel(v: &[f32], ndim: usize) -> Result<ArrayD<f32>, Broken> {
    let mut shape = vec![1usize; ndim.max(2)];
    shape[1] = v.len();
    ArrayD::from_shape_vec(IxDyn(&shape), v.to_vec()).invariant("a channel vector has C values")
}

/// Inference batch norm over dimension 1 with running statistics:
/// `(x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn batch_norm(
    x: &ArrayD<f32>,
    gamma: &ArrayD<f32>,
    beta: &ArrayD<f32>,
    mean: &ArrayD<f32>,
    var: &ArrayD<f32>,
    eps: f32,
) -> Result<ArrayD<f32>, Broken> {
    let nd = x.ndim();
    let c = x.shape().get(1).copied().invariant("a batch-norm input has channels (dimension 1)")?;
    if [gamma, beta, mean, var].iter().any(|t| t.len() != c) {
        return Err(Broken("batch-norm parameters have one value per channel"));
    }
    let vec = |t: &ArrayD<f32>| t.iter().copied().collect::<Vec<f32>>();
    let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let (m, g, b) = (per_channel(&vec(mean), nd)?, per_channel(&vec(gamma), nd)?, per_channel(&vec(beta), nd)?);
    Ok((x - &m) * per_channel(&inv, nd)? * g + b)
}

/// The batched product `[..., M, K] x [..., K, N] -> [..., M, N]` of two f32 values, each
/// output summed in f64 and rounded once (the engine's f32 sums differ by rounding only).
pub fn bmm(a: &ArrayD<f32>, b: &ArrayD<f32>) -> Result<ArrayD<f32>, Broken> {
    let r = a.ndim();
    if r < 2 || b.ndim() != r || a.shape()[..r - 2] != b.shape()[..r - 2] || a.shape()[r - 1] != b.shape()[r - 2] {
        return Err(Broken("a batched product's operands agree (checked)"));
    }
    let (m, k, n) = (a.shape()[r - 2], a.shape()[r - 1], b.shape()[r - 1]);
    let batch: usize = a.shape()[..r - 2].iter().product();
    let a3 = a.as_standard_layout().mapv(f64::from).into_shape_with_order((batch, m, k)).invariant("[batch, M, K]")?;
    let b3 = b.as_standard_layout().mapv(f64::from).into_shape_with_order((batch, k, n)).invariant("[batch, K, N]")?;
    let mut out = Vec::with_capacity(batch * m * n);
    for (x, y) in a3.outer_iter().zip(b3.outer_iter()) {
        out.extend(x.dot(&y).iter().map(|v| *v as f32));
    }
    let mut shape = a.shape()[..r - 1].to_vec();
    shape.push(n);
    ArrayD::from_shape_vec(IxDyn(&shape), out).invariant("[..., M, N] values")
}

/// Positions `start .. end` of axis `axis` of `x` (checked bounds).
pub fn slice(x: &ArrayD<f32>, axis: usize, start: usize, end: usize) -> ArrayD<f32> {
    x.slice_axis(ndarray::Axis(axis), (start..end).into()).as_standard_layout().into_owned()
}

/// `x` with rotary position embeddings (`inverse`: the transposed rotation, the gradient;
/// [`triton_runtime::ops::rope`]).
pub fn rope(x: &ArrayD<f32>, theta: f32, inverse: bool) -> ArrayD<f32> {
    let mut y = x.as_standard_layout().into_owned();
    let shape = y.shape().to_vec();
    if let Some(v) = y.as_slice_mut() {
        triton_runtime::ops::rope(v, &shape, theta, inverse);
    }
    y
}

/// Embedding lookup ([`triton_runtime::ops::embedding`]): `[...ids, D]` rows of `table`
/// (`[V, D]`); an id that is not an integer in `0 .. V` is the user's error.
pub fn embedding(ids: &ArrayD<f32>, table: &ArrayD<f32>) -> Result<ArrayD<f32>, crate::interp::RunError> {
    let [_, d] = *table.shape() else { return Err(Broken("an embedding table has rank 2 (checked)").into()) };
    let (ids_c, table_c) = (ids.as_standard_layout(), table.as_standard_layout());
    let (Some(iv), Some(tv)) = (ids_c.as_slice(), table_c.as_slice()) else {
        return Err(Broken("standard layout is contiguous").into());
    };
    let mut out = vec![0.0f32; iv.len() * d];
    triton_runtime::ops::embedding(iv, tv, d, &mut out).map_err(crate::interp::RunError::TokenId)?;
    let mut shape = ids.shape().to_vec();
    shape.push(d);
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), out).invariant("[...ids, D] values")?)
}

/// `x` with its axes reordered (result axis `i` is axis `perm[i]`), in standard layout.
pub fn permute(x: &ArrayD<f32>, perm: &[usize]) -> ArrayD<f32> {
    x.view().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned()
}

/// `x` with its causal mask applied (`runtime::ops::causal_mask`).
pub fn causal_mask(x: &ArrayD<f32>) -> ArrayD<f32> {
    let mut y = x.as_standard_layout().into_owned();
    let shape = y.shape().to_vec();
    if let Some(v) = y.as_slice_mut() {
        triton_runtime::ops::causal_mask(v, &shape);
    }
    y
}

/// The permutation that undoes `perm`.
pub fn inverse_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, p) in perm.iter().enumerate() {
        inv[*p] = i;
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(shape: &[usize], v: Vec<f32>) -> ArrayD<f32> {
        ArrayD::from_shape_vec(IxDyn(shape), v).unwrap()
    }

    #[test]
    fn average_pool_counts_padding_and_max_ignores_it() {
        let x = arr(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let a = PoolAttrs { kernel: [2, 2], stride: [2, 2], padding: [1, 1] };
        let (avg, none) = pool(&x, &a, false).unwrap();
        assert_eq!(avg.as_slice().unwrap(), &[0.25, 0.5, 0.75, 1.0]);
        assert!(none.is_empty());
        let (mx, arg) = pool(&x, &a, true).unwrap();
        assert_eq!(mx.as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(arg, vec![0, 1, 2, 3]);
    }

    #[test]
    fn max_pool_propagates_nan() {
        let x = arr(&[1, 1, 1, 3], vec![1.0, f32::NAN, 5.0]);
        let a = PoolAttrs { kernel: [1, 3], stride: [1, 1], padding: [0, 0] };
        let (y, arg) = pool(&x, &a, true).unwrap();
        assert!(y[[0, 0, 0, 0]].is_nan());
        assert_eq!(arg, vec![1]);
    }

    /// The fast paths (2x2 stride 2, and any window without padding) give the definition's
    /// values and indices: ties keep the first maximum, the first NaN is taken and kept.
    #[test]
    fn fast_max_pooling_matches_the_definition_with_ties_and_nans() {
        let (h, w) = (6, 8);
        for (k, st) in [([2, 2], [2, 2]), ([3, 2], [1, 2]), ([2, 3], [2, 1])] {
            for nan_at in [None, Some(9), Some(20)] {
                let mut v: Vec<f32> = (0..2 * h * w).map(|i| ((i * 7) % 5) as f32).collect();
                if let Some(i) = nan_at {
                    v[i] = f32::NAN;
                    v[i + 1] = f32::NAN;
                }
                let x = arr(&[1, 2, h, w], v.clone());
                let a = PoolAttrs { kernel: k.map(|d| d as i64), stride: st.map(|d| d as i64), padding: [0, 0] };
                let (y, arg) = pool(&x, &a, true).unwrap();
                let (oh, ow) = ((h - k[0]) / st[0] + 1, (w - k[1]) / st[1] + 1);
                for plane in 0..2 {
                    for i in 0..oh {
                        for j in 0..ow {
                            let (mut acc, mut best) = (f32::NEG_INFINITY, usize::MAX);
                            for du in 0..k[0] {
                                for dv in 0..k[1] {
                                    let idx = (plane * h + i * st[0] + du) * w + j * st[1] + dv;
                                    let t = v[idx];
                                    if best == usize::MAX || (!acc.is_nan() && (t.is_nan() || t > acc)) {
                                        acc = t;
                                        best = idx;
                                    }
                                }
                            }
                            let o = (plane * oh + i) * ow + j;
                            assert_eq!(arg[o], best, "{k:?} {st:?} {nan_at:?} output {o}");
                            let got = y.as_slice().unwrap()[o];
                            assert!(got == acc || (got.is_nan() && acc.is_nan()), "{k:?} {st:?} output {o}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn im2col_pads_with_zero_and_orders_groups() {
        // 2 channels in 2 groups, 3x3 image, 2x2 kernel, padding 1, stride 2.
        let x: Vec<f32> = (1..=18).map(|v| v as f32).collect();
        let a = ConvAttrs { stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 2 };
        let g = conv_geom(&[1, 2, 3, 3], &[2, 1, 2, 2], &a);
        assert_eq!((g.oh, g.ow, g.k()), (2, 2, 4));
        let cols = im2col(&x, 1, &g).unwrap();
        assert_eq!(cols.dim(), (4, 8));
        // Pixel (0, 0): taps (-1,-1) (-1,0) (0,-1) (0,0); group 1 reads channel 1 (10..=18).
        assert_eq!(cols.row(0).to_vec(), vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 10.0]);
        // Pixel (1, 1): taps (1,1) (1,2) (2,1) (2,2).
        assert_eq!(cols.row(3).to_vec(), vec![5.0, 6.0, 8.0, 9.0, 14.0, 15.0, 17.0, 18.0]);
        assert!(im2col(&x[..17], 1, &g).is_err());
    }

    #[test]
    fn batch_norm_normalises_per_channel() {
        let x = arr(&[1, 2, 1, 1], vec![3.0, 10.0]);
        let one = |v: [f32; 2]| arr(&[2], v.to_vec());
        let y = batch_norm(&x, &one([2.0, 1.0]), &one([1.0, 0.0]), &one([1.0, 10.0]), &one([4.0, 1.0]), 0.0).unwrap();
        assert_eq!(y.as_slice().unwrap(), &[3.0, 0.0]);
    }
}
