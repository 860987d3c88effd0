//! f32 kernels for training: each op forward and its vector-Jacobian product.
//!
//! Rules:
//! - Products run on the runtime's GEMM ([`triton_runtime::kernels::sgemm::sgemm`], both cores);
//!   convolutions run per sample, in parallel: the sample's tap-major columns
//!   (`[C * KH * KW, OH * OW]`, in a cache-sized scratch buffer) times the weights, one GEMM per
//!   group; gradients recompute the columns instead of keeping them.
//! - Shapes were checked by the verifier; a layout fact that fails is a [`Broken`] error.
//! - The forward semantics are the interpreter's at FP32 (docs/language.md): columns, pooling
//!   and inference batch norm come from [`crate::reference`]; training batch norm normalises
//!   with the batch's biased variance.

use ndarray::{Array2, ArrayD, ArrayView2, Axis, IxDyn, s};
use rayon::prelude::*;
use triton_runtime::engine::plan::ConvGeom;
use triton_runtime::kernels::sgemm::sgemm;

use crate::invariant::{Broken, Invariant};
use crate::ir::{BinaryOp, ConvAttrs, PoolAttrs, UnaryOp};
use crate::reference::{self, per_channel};

/// Gradients with respect to two operands, each only when asked for.
pub type MaybeGrads = (Option<ArrayD<f32>>, Option<ArrayD<f32>>);
/// Training batch norm's output, what its backward needs, and the batch mean and variance.
pub type BnForward = (ArrayD<f32>, BnSaved, Vec<f32>, Vec<f32>);
/// Batch norm's gradients with respect to x, gamma and beta.
pub type BnGrads = (ArrayD<f32>, ArrayD<f32>, ArrayD<f32>);

fn std_layout(a: &ArrayD<f32>) -> ArrayD<f32> {
    a.as_standard_layout().into_owned()
}

/// A tensor viewed as `[len / k, k]`.
pub fn rows(a: &ArrayD<f32>, k: usize) -> Result<Array2<f32>, Broken> {
    let m = a.len() / k.max(1);
    std_layout(a).into_shape_with_order((m, k)).invariant("a tensor is rows of K")
}

/// [`rows`] without a copy when `a` is in standard layout.
fn rows_cow(a: &ArrayD<f32>, k: usize) -> Result<ndarray::CowArray<'_, f32, ndarray::Ix2>, Broken> {
    let m = a.len() / k.max(1);
    match a.view().into_shape_with_order((m, k)) {
        Ok(v) if a.is_standard_layout() => Ok(v.into()),
        _ => Ok(rows(a, k)?.into()),
    }
}

/// `v` reshaped to `shape` (same element count).
fn shaped(v: Array2<f32>, shape: &[usize]) -> Result<ArrayD<f32>, Broken> {
    v.into_shape_with_order(IxDyn(shape)).invariant("a gradient has its operand's size")
}

fn gemm(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((x.nrows(), w.ncols()));
    sgemm(&x, &w, &mut out.view_mut(), true);
    out
}

/// `x [.., K] . w [N, K]^T`.
pub fn matmul(x: &ArrayD<f32>, w: &ArrayD<f32>) -> Result<ArrayD<f32>, Broken> {
    let n = w.shape()[0];
    let k = w.len() / n.max(1);
    let wm = rows_cow(w, k)?;
    let y = gemm(rows_cow(x, k)?.view(), wm.t());
    let mut shape = x.shape().to_vec();
    *shape.last_mut().invariant("a matmul operand has rank >= 1")? = n;
    shaped(y, &shape)
}

/// `v`, or its transpose when `t`.
fn maybe_t(v: ArrayView2<'_, f32>, t: bool) -> ArrayView2<'_, f32> {
    if t { v.reversed_axes() } else { v }
}

/// The batched product `a . b` over the leading axes in f32 (the training pass's
/// [`crate::reference::bmm`], which sums in f64), with `a` and/or `b` read transposed in
/// their last two axes (`ta`, `tb`) without a copy: the backward pass's `dy . b^T` and
/// `a^T . dy`.
pub fn bmm(a: &ArrayD<f32>, b: &ArrayD<f32>, ta: bool, tb: bool) -> Result<ArrayD<f32>, Broken> {
    let r = a.ndim();
    if r < 2 || b.ndim() != r || a.shape()[..r - 2] != b.shape()[..r - 2] {
        return Err(Broken("a batched product's operands agree (checked)"));
    }
    let batch: usize = a.shape()[..r - 2].iter().product();
    let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
    let a3 = a.view().into_shape_with_order((batch, a.shape()[r - 2], a.shape()[r - 1])).invariant("[batch, ., .]")?;
    let b3 = b.view().into_shape_with_order((batch, b.shape()[r - 2], b.shape()[r - 1])).invariant("[batch, ., .]")?;
    let (m, k) = maybe_t(a3.index_axis(Axis(0), 0), ta).dim();
    let (k2, n) = maybe_t(b3.index_axis(Axis(0), 0), tb).dim();
    if k != k2 {
        return Err(Broken("a batched product's operands agree (checked)"));
    }
    let mut out = ndarray::Array3::<f32>::zeros((batch, m, n));

    for (i, mut o) in out.outer_iter_mut().enumerate() {
        let x = maybe_t(a3.index_axis(Axis(0), i), ta);
        let y = maybe_t(b3.index_axis(Axis(0), i), tb);
        sgemm(&x, &y, &mut o, false);
    }
    let mut shape = a.shape()[..r - 2].to_vec();
    shape.extend([m, n]);
    out.into_shape_with_order(IxDyn(&shape)).invariant("[..., M, N] values")
}

/// The gradient of an embedding's table (`table_shape` = `[V, D]`): row `v` sums the rows of
/// `dy` (`[...ids, D]`) at the positions whose id is `v` (ids checked in the forward pass).
pub fn embedding_grad(ids: &ArrayD<f32>, table_shape: &[usize], dy: &ArrayD<f32>) -> Result<ArrayD<f32>, Broken> {
    let [v, d] = *table_shape else { return Err(Broken("an embedding table has rank 2 (checked)")) };
    let mut g = vec![0.0f32; v * d];
    let dy = dy.as_standard_layout();
    let rows = dy.as_slice().invariant("standard layout is contiguous")?.chunks_exact(d.max(1));
    for (id, row) in ids.iter().zip(rows) {
        let r = *id as usize;
        if r >= v {
            return Err(Broken("embedding ids are in range (checked in the forward pass)"));
        }
        g[r * d..(r + 1) * d].iter_mut().zip(row).for_each(|(a, b)| *a += *b);
    }
    ArrayD::from_shape_vec(IxDyn(table_shape), g).invariant("[V, D] values")
}

/// Gradients of [`matmul`] with respect to x and w (each only when asked for).
pub fn matmul_grad(x: &ArrayD<f32>, w: &ArrayD<f32>, dy: &ArrayD<f32>, want: [bool; 2]) -> Result<MaybeGrads, Broken> {
    let n = w.shape()[0];
    let k = w.len() / n.max(1);
    let dym = rows_cow(dy, n)?;
    let dx = match want[0] {
        true => Some(shaped(gemm(dym.view(), rows_cow(w, k)?.view()), x.shape())?),
        false => None,
    };
    let dw = match want[1] {
        true => Some(shaped(gemm(dym.t(), rows_cow(x, k)?.view()), w.shape())?),
        false => None,
    };
    Ok((dx, dw))
}

/// The range of output positions `j` whose tap at offset `off` (`j * stride + off`) lands in
/// `0..len`.
fn valid(out: usize, stride: usize, off: isize, len: usize) -> std::ops::Range<usize> {
    let s = stride.max(1) as isize;
    let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
    let hi = if (len as isize) - off <= 0 { 0 } else { ((len as isize) - off - 1) / s + 1 };
    let lo = (lo as usize).min(out);
    lo..(hi.max(0) as usize).clamp(lo, out)
}

/// One sample's columns, tap-major: `[C * KH * KW, OH * OW]`, row `(c, u, v)` (a group's
/// channels are its rows, in weight order) holding that tap's input for every output pixel,
/// zero in the padding; every value of `out` is written. The transpose of
/// [`reference::im2col`]'s rows for the sample, built a contiguous run at a time.
fn sample_columns(x: &[f32], g: &ConvGeom, out: &mut [f32]) {
    let (p, plane, taps) = (g.pixels(), g.h * g.w, g.kh * g.kw);
    for (r, row) in out.chunks_mut(p.max(1)).enumerate().take(g.c * taps) {
        let (ch, u, v) = (r / taps, (r % taps) / g.kw, r % g.kw);
        let offx = (v * g.dil[1]) as isize - g.pad[1] as isize;
        let js = valid(g.ow, g.stride[1], offx, g.w);
        let img = &x[ch * plane..][..plane];
        for i in 0..g.oh {
            let dst = &mut row[i * g.ow..][..g.ow];
            let y = (i * g.stride[0] + u * g.dil[0]) as isize - g.pad[0] as isize;
            if y < 0 || y as usize >= g.h || js.is_empty() {
                dst.fill(0.0);
                continue;
            }
            let src = &img[y as usize * g.w..][..g.w];
            dst[..js.start].fill(0.0);
            dst[js.end..].fill(0.0);
            let x0 = (js.start as isize * g.stride[1] as isize + offx) as usize;
            if g.stride[1] == 1 {
                copy_short(&mut dst[js.clone()], &src[x0..x0 + js.len()]);
            } else {
                for (d, v) in dst[js.clone()].iter_mut().zip(src[x0..].iter().step_by(g.stride[1])) {
                    *d = *v;
                }
            }
        }
    }
}

/// `dst = src` for the short runs of a convolution's rows: eight values at a time as fixed-size
/// moves (a `memcpy` call per run of a few dozen values cost more than the copy).
#[inline]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d8, s8) in (&mut d).zip(&mut s) {
        if let (Ok(d8), Ok(s8)) = (<&mut [f32; 8]>::try_from(d8), <&[f32; 8]>::try_from(s8)) {
            *d8 = *s8;
        }
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = *b;
    }
}

/// Adds one sample's tap-major column gradient back onto its input gradient `dx` (the adjoint
/// of [`sample_columns`]).
fn sample_adjoint(dcols: &[f32], g: &ConvGeom, dx: &mut [f32]) {
    let (p, plane, taps) = (g.pixels(), g.h * g.w, g.kh * g.kw);
    for ch in 0..g.c {
        let img = &mut dx[ch * plane..][..plane];
        for u in 0..g.kh {
            for v in 0..g.kw {
                let row = &dcols[(ch * taps + u * g.kw + v) * p..][..p];
                let offx = (v * g.dil[1]) as isize - g.pad[1] as isize;
                let js = valid(g.ow, g.stride[1], offx, g.w);
                for i in 0..g.oh {
                    let y = (i * g.stride[0] + u * g.dil[0]) as isize - g.pad[0] as isize;
                    if y < 0 || y as usize >= g.h || js.is_empty() {
                        continue;
                    }
                    let dst = &mut img[y as usize * g.w..][..g.w];
                    let src = &row[i * g.ow..][..g.ow];
                    let x0 = (js.start as isize * g.stride[1] as isize + offx) as usize;
                    if g.stride[1] == 1 {
                        for (d, v) in dst[x0..x0 + js.len()].iter_mut().zip(&src[js.clone()]) {
                            *d += v;
                        }
                    } else {
                        for (d, v) in dst[x0..].iter_mut().step_by(g.stride[1]).zip(&src[js.clone()]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

/// `out[n] = product(n)` for every sample, in parallel over the samples, each with a scratch
/// buffer of `scratch` floats for its columns (a sample's columns stay in cache).
fn per_sample(
    out: &mut [f32],
    per: usize,
    scratch: usize,
    f: impl Fn(usize, &mut [f32], &mut Vec<f32>) -> Result<(), Broken> + Sync + Send,
) -> Result<(), Broken> {
    out.par_chunks_mut(per.max(1)).enumerate().try_for_each_init(|| vec![0.0f32; scratch], |buf, (n, o)| f(n, o, buf))
}

/// A convolution (NCHW, weight `[O, C / groups, KH, KW]`): per sample, its tap-major columns
/// (in a scratch buffer) times the weights, one GEMM per group, in parallel over the samples.
pub fn conv2d(x: &ArrayD<f32>, w: &ArrayD<f32>, a: ConvAttrs) -> Result<ArrayD<f32>, Broken> {
    let g = reference::conv_geom(x.shape(), w.shape(), &a);
    let (b, p, k, og) = (x.shape()[0], g.pixels(), g.k(), g.og());
    let x = x.as_standard_layout();
    let xs = x.as_slice().invariant("a standard-layout array is contiguous")?;
    if xs.len() != b * g.c * g.h * g.w {
        return Err(Broken("the convolution's input has B * C * H * W values"));
    }
    let wm = rows_cow(w, k)?;
    let mut y = ArrayD::<f32>::zeros(IxDyn(&[b, g.o, g.oh, g.ow]));
    let ys = y.as_slice_mut().invariant("a fresh array is contiguous")?;
    let rows = g.c * g.kh * g.kw;
    per_sample(ys, g.o * p, rows * p, |n, yn, buf| {
        sample_columns(&xs[n * g.c * g.h * g.w..][..g.c * g.h * g.w], &g, buf);
        let cols = ArrayView2::from_shape((rows, p), &buf[..]).invariant("columns are [C*KH*KW, P]")?;
        let mut out = ndarray::ArrayViewMut2::from_shape((g.o, p), yn).invariant("an output is [O, P]")?;
        for gi in 0..g.groups {
            let wg = wm.slice(s![gi * og..(gi + 1) * og, ..]);
            let xc = cols.slice(s![gi * k..(gi + 1) * k, ..]);
            sgemm(&wg, &xc, &mut out.slice_mut(s![gi * og..(gi + 1) * og, ..]), false);
        }
        Ok(())
    })?;
    Ok(y)
}

/// Gradients of [`conv2d`] with respect to x (when `want_x`) and w. Per sample (in parallel):
/// its columns again, its weight gradient `dy_n . cols_n^T` and its column gradient
/// `w^T . dy_n` summed back onto `dx_n`; the samples' weight gradients are then added in
/// sample order, so the sums do not depend on thread timing.
pub fn conv2d_grad(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    dy: &ArrayD<f32>,
    a: ConvAttrs,
    want_x: bool,
) -> Result<(Option<ArrayD<f32>>, ArrayD<f32>), Broken> {
    let g = reference::conv_geom(x.shape(), w.shape(), &a);
    let (b, p, k, og) = (x.shape()[0], g.pixels(), g.k(), g.og());
    let x = x.as_standard_layout();
    let xs = x.as_slice().invariant("a standard-layout array is contiguous")?;
    let dy = dy.as_standard_layout();
    let dys = dy.as_slice().invariant("a standard-layout array is contiguous")?;
    if xs.len() != b * g.c * g.h * g.w || dys.len() != b * g.o * p {
        return Err(Broken("a convolution's input and output gradient have their shapes' sizes"));
    }
    let wm = rows_cow(w, k)?;
    let rows = g.c * g.kh * g.kw;
    let plane = g.c * g.h * g.w;
    // Per sample (in parallel): its weight gradient into its own [O, K] part, and (when
    // wanted) its input gradient straight into its plane of dx.
    let ok = g.o * k;
    let mut dw_parts = vec![0.0f32; b * ok];
    let mut dx = vec![0.0f32; if want_x { b * plane } else { 0 }];
    let work = |n: usize, dw_part: &mut [f32], dx_part: Option<&mut [f32]>, buf: &mut Vec<f32>| {
        let (cols_buf, dcols_buf) = buf.split_at_mut(rows * p);
        sample_columns(&xs[n * plane..][..plane], &g, cols_buf);
        let cols = ArrayView2::from_shape((rows, p), &cols_buf[..]).invariant("columns are [C*KH*KW, P]")?;
        let dyn_ = ArrayView2::from_shape((g.o, p), &dys[n * g.o * p..][..g.o * p]).invariant("dy_n is [O, P]")?;
        let mut dw = ndarray::ArrayViewMut2::from_shape((g.o, k), dw_part).invariant("dw is [O, K]")?;
        for gi in 0..g.groups {
            let (oc, cc) = (gi * og..(gi + 1) * og, gi * k..(gi + 1) * k);
            let dyg = dyn_.slice(s![oc.clone(), ..]);
            sgemm(&dyg, &cols.slice(s![cc.clone(), ..]).t(), &mut dw.slice_mut(s![oc.clone(), ..]), false);
            if dx_part.is_some() {
                let mut dc = ndarray::ArrayViewMut2::from_shape((rows, p), &mut dcols_buf[..])
                    .invariant("column gradients are [C*KH*KW, P]")?;
                sgemm(&wm.slice(s![oc, ..]).t(), &dyg, &mut dc.slice_mut(s![cc, ..]), false);
            }
        }
        if let Some(d) = dx_part {
            sample_adjoint(dcols_buf, &g, d);
        }
        Ok::<(), Broken>(())
    };
    let scratch = || vec![0.0f32; 2 * rows * p];
    let parts = dw_parts.par_chunks_mut(ok.max(1));
    match want_x {
        true => parts
            .zip(dx.par_chunks_mut(plane.max(1)))
            .enumerate()
            .try_for_each_init(scratch, |buf, (n, (d, x))| work(n, d, Some(x), buf))?,
        false => parts.enumerate().try_for_each_init(scratch, |buf, (n, d)| work(n, d, None, buf))?,
    }
    let mut dw = vec![0.0f32; ok];
    for part in dw_parts.chunks(ok.max(1)) {
        dw.iter_mut().zip(part).for_each(|(d, v)| *d += v);
    }
    let dx = match want_x {
        true => Some(ArrayD::from_shape_vec(IxDyn(x.shape()), dx).invariant("dx has x's shape")?),
        false => None,
    };
    Ok((dx, ArrayD::from_shape_vec(IxDyn(w.shape()), dw).invariant("dw has w's shape")?))
}

/// Gradient of [`reference::pool`] (from the indices max pooling took).
pub fn pool_grad(x_shape: &[usize], a: &PoolAttrs, argmax: &[usize], dy: &ArrayD<f32>) -> Result<ArrayD<f32>, Broken> {
    let mut dx = ArrayD::<f32>::zeros(IxDyn(x_shape));
    let d = dx.as_slice_mut().invariant("a fresh array is contiguous")?;
    let dy = dy.as_standard_layout();
    let g = dy.as_slice().invariant("a standard-layout array is contiguous")?;
    if !argmax.is_empty() {
        for (o, &i) in argmax.iter().enumerate() {
            if i != usize::MAX {
                d[i] += g[o];
            }
        }
        return Ok(dx);
    }
    let (h, w) = (x_shape[2], x_shape[3]);
    let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
    let [kh, kw] = [a.kernel[0] as usize, a.kernel[1] as usize];
    let norm = 1.0 / (kh * kw) as f32;
    for plane in 0..x_shape[0] * x_shape[1] {
        for i in 0..oh {
            for j in 0..ow {
                let v = g[(plane * oh + i) * ow + j] * norm;
                for u in 0..kh {
                    for t in 0..kw {
                        let y = (i * a.stride[0] as usize + u) as isize - a.padding[0] as isize;
                        let z = (j * a.stride[1] as usize + t) as isize - a.padding[1] as isize;
                        if y >= 0 && z >= 0 && (y as usize) < h && (z as usize) < w {
                            d[(plane * h + y as usize) * w + z as usize] += v;
                        }
                    }
                }
            }
        }
    }
    Ok(dx)
}

/// The derivative of a unary op at `x` (with `y` its value there).
#[inline]
pub fn unary_grad(op: UnaryOp, x: f32, y: f32) -> f32 {
    match op {
        UnaryOp::Relu => f32::from(x > 0.0),
        UnaryOp::Relu6 => f32::from(x > 0.0 && x < 6.0),
        UnaryOp::Sigmoid => y * (1.0 - y),
        UnaryOp::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            s + x * s * (1.0 - s)
        }
        UnaryOp::Tanh => 1.0 - y * y,
        UnaryOp::Neg => -1.0,
        UnaryOp::Sqrt => 0.5 / y,
        UnaryOp::Exp => y,
        // Phi(x) + x phi(x).
        UnaryOp::Gelu => {
            let phi = (-0.5 * x * x).exp() * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
            0.5 * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2) + x * phi
        }
        // y = x s(2u), s the logistic function: s + 2 x s (1 - s) u'.
        UnaryOp::GeluTanh => {
            use triton_runtime::ops::{GELU_TANH_CUBIC, GELU_TANH_SCALE};
            let u = GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * x * x * x);
            let s = 1.0 / (1.0 + (-2.0 * u).exp());
            s + 2.0 * x * s * (1.0 - s) * GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x)
        }
    }
}

/// Sums a broadcast gradient back to `shape` (numpy broadcasting in reverse).
pub fn unbroadcast(g: ArrayD<f32>, shape: &[usize]) -> ArrayD<f32> {
    if g.shape() == shape {
        return g;
    }
    unbroadcast_view(g.view(), shape)
}

/// [`unbroadcast`] of a borrowed gradient.
fn unbroadcast_view(g: ndarray::ArrayViewD<'_, f32>, shape: &[usize]) -> ArrayD<f32> {
    if g.shape() == shape {
        return g.to_owned();
    }
    let mut g = match g.ndim() > shape.len() {
        true => g.sum_axis(Axis(0)),
        false => g.to_owned(),
    };
    while g.ndim() > shape.len() {
        g = g.sum_axis(Axis(0));
    }
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[i] != 1 {
            g = g.sum_axis(Axis(i)).insert_axis(Axis(i));
        }
    }
    g
}

/// `x op y` where `x` has the output's shape and `y` is one value per row of the last axis
/// (`[N]` against `[B, N]`) or per channel (`[C, 1, 1]` against `[B, C, H, W]`): the bias
/// additions of every layer, as plain loops the compiler vectorizes (the same value per
/// element as the general broadcast). `None` for any other shape.
pub fn binary_per_channel(op: BinaryOp, x: &ArrayD<f32>, y: &ArrayD<f32>, shape: &[usize]) -> Option<ArrayD<f32>> {
    if x.shape() != shape || !x.is_standard_layout() || !y.is_standard_layout() || shape.len() < 2 {
        return None;
    }
    let ys = y.as_slice()?;
    let ydims: Vec<usize> = y.shape().to_vec();
    let lead = shape.len() - ydims.len();
    let mut full = vec![1usize; lead];
    full.extend_from_slice(&ydims);
    let mut out = x.to_owned();
    let o = out.as_slice_mut()?;
    // The op chosen outside the loops, so each loop is vectorized.
    fn each(chunk: &mut [f32], qs: impl Iterator<Item = f32>, op: BinaryOp) {
        match op {
            BinaryOp::Add => chunk.iter_mut().zip(qs).for_each(|(v, q)| *v += q),
            BinaryOp::Sub => chunk.iter_mut().zip(qs).for_each(|(v, q)| *v -= q),
            BinaryOp::Mul => chunk.iter_mut().zip(qs).for_each(|(v, q)| *v *= q),
            BinaryOp::Div => chunk.iter_mut().zip(qs).for_each(|(v, q)| *v /= q),
        }
    }
    let apply = |chunk: &mut [f32], q: f32| each(chunk, std::iter::repeat(q), op);
    if full[..shape.len() - 1].iter().all(|d| *d == 1) && full[shape.len() - 1] == shape[shape.len() - 1] {
        // One value per position of the last axis.
        let n = shape[shape.len() - 1];
        for row in o.chunks_mut(n.max(1)) {
            each(row, ys.iter().copied(), op);
        }
        return Some(out);
    }
    if shape.len() == 4 && full[0] == 1 && full[1] == shape[1] && full[2] == 1 && full[3] == 1 {
        let (c, plane) = (shape[1], shape[2] * shape[3]);
        o.par_chunks_mut(plane.max(1)).enumerate().for_each(|(k, chunk)| apply(chunk, ys[k % c]));
        return Some(out);
    }
    None
}

/// Gradients of a binary op with respect to both operands (already summed to their shapes).
/// `dy` is consumed: an addition hands it on to the operand of its shape without a copy.
pub fn binary_grad(op: BinaryOp, a: &ArrayD<f32>, b: &ArrayD<f32>, dy: ArrayD<f32>) -> (ArrayD<f32>, ArrayD<f32>) {
    match op {
        BinaryOp::Add => {
            let db = unbroadcast_view(dy.view(), b.shape());
            (unbroadcast(dy, a.shape()), db)
        }
        BinaryOp::Sub => {
            let db = unbroadcast(dy.mapv(|v| -v), b.shape());
            (unbroadcast(dy, a.shape()), db)
        }
        BinaryOp::Mul => (unbroadcast(&dy * b, a.shape()), unbroadcast(&dy * a, b.shape())),
        BinaryOp::Div => (unbroadcast(&dy / b, a.shape()), unbroadcast(-(&dy * a) / (b * b), b.shape())),
    }
}

/// Softmax along `axis` backward, from its output `y`.
pub fn softmax_grad(y: &ArrayD<f32>, dy: &ArrayD<f32>, axis: usize) -> ArrayD<f32> {
    let dot = (dy * y).sum_axis(Axis(axis)).insert_axis(Axis(axis));
    y * &(dy - &dot)
}

/// `(dx, dgamma, dbeta)` of a normalization.
pub type NormGrads = (ArrayD<f32>, ArrayD<f32>, ArrayD<f32>);

/// Gradients of layer normalization (or RMS normalization, `rms`) over the last axis:
/// `(dx, dgamma, dbeta)` (`dbeta` zeros for RMS). Per row, with `r = 1 / sqrt(var + eps)`,
/// `xhat = (x - mean) r` and `g = dy * gamma`: `dx = r (g - mean(g) - xhat mean(g xhat))`; for
/// RMS (`xhat = x r`): `dx = r (g - xhat mean(g xhat))`. Statistics in f64.
pub fn norm_grad(
    x: &ArrayD<f32>,
    gamma: &ArrayD<f32>,
    dy: &ArrayD<f32>,
    eps: f32,
    rms: bool,
) -> Result<NormGrads, Broken> {
    let d = *x.shape().last().invariant("a normalized value has a last axis")?;
    let gm: Vec<f64> = gamma.iter().map(|v| f64::from(*v)).collect();
    if gm.len() != d || dy.shape() != x.shape() {
        return Err(Broken("a normalization's gradient matches its input"));
    }
    let (xs, dys) = (x.as_standard_layout(), dy.as_standard_layout());
    let (xs, dys) = (xs.as_slice().invariant("standard layout")?, dys.as_slice().invariant("standard layout")?);
    let mut dx = vec![0f32; xs.len()];
    let (mut dgamma, mut dbeta) = (vec![0f64; d], vec![0f64; d]);
    let n = d.max(1) as f64;
    for ((row, drow), out) in
        xs.chunks_exact(d.max(1)).zip(dys.chunks_exact(d.max(1))).zip(dx.chunks_exact_mut(d.max(1)))
    {
        let mean = if rms { 0.0 } else { row.iter().map(|v| f64::from(*v)).sum::<f64>() / n };
        let var = row.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / n;
        let r = 1.0 / (var + f64::from(eps)).sqrt();
        let xhat: Vec<f64> = row.iter().map(|v| (f64::from(*v) - mean) * r).collect();
        let g: Vec<f64> = drow.iter().zip(&gm).map(|(dy, gm)| f64::from(*dy) * gm).collect();
        let mean_g = if rms { 0.0 } else { g.iter().sum::<f64>() / n };
        let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n;
        for i in 0..d {
            out[i] = (r * (g[i] - mean_g - xhat[i] * mean_gx)) as f32;
            dgamma[i] += f64::from(drow[i]) * xhat[i];
            dbeta[i] += f64::from(drow[i]);
        }
    }
    let vector = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&[d]), v.into_iter().map(|v| v as f32).collect());
    Ok((
        ArrayD::from_shape_vec(x.raw_dim(), dx).invariant("one gradient per input value")?,
        vector(dgamma).invariant("one gradient per feature")?,
        vector(if rms { vec![0.0; d] } else { dbeta }).invariant("one gradient per feature")?,
    ))
}

/// What training-mode batch norm keeps for its backward pass.
#[derive(Clone, Debug)]
pub struct BnSaved {
    pub xhat: ArrayD<f32>,
    pub inv_std: Vec<f32>,
}

/// Channel statistics (dimension 1) of `x`: mean and biased variance per channel.
fn channel_stats(x: &ArrayD<f32>) -> Result<(Vec<f32>, Vec<f32>, usize), Broken> {
    let c = x.shape()[1];
    let moved = x.view().permuted_axes(channel_first(x.ndim()));
    let flat = moved.as_standard_layout().into_owned();
    let per = x.len() / c.max(1);
    let m = flat.into_shape_with_order((c, per)).invariant("channels first is [C, rest]")?;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for (ch, row) in m.outer_iter().enumerate() {
        let mu = row.iter().map(|v| f64::from(*v)).sum::<f64>() / per as f64;
        let v = row.iter().map(|v| (f64::from(*v) - mu).powi(2)).sum::<f64>() / per as f64;
        mean[ch] = mu as f32;
        var[ch] = v as f32;
    }
    Ok((mean, var, per))
}

fn channel_first(ndim: usize) -> IxDyn {
    let mut axes: Vec<usize> = vec![1, 0];
    axes.extend(2..ndim);
    IxDyn(&axes)
}

/// Training-mode batch norm: normalises with the batch's statistics; returns the output,
/// what the backward pass needs, and the batch mean and unbiased variance (for the running
/// statistics).
pub fn batch_norm_train(
    x: &ArrayD<f32>,
    gamma: &ArrayD<f32>,
    beta: &ArrayD<f32>,
    eps: f32,
) -> Result<BnForward, Broken> {
    let (mean, var, per) = channel_stats(x)?;
    let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let nd = x.ndim();
    let xhat = (x - &per_channel(&mean, nd)?) * per_channel(&inv_std, nd)?;
    let g: Vec<f32> = gamma.iter().copied().collect();
    let b: Vec<f32> = beta.iter().copied().collect();
    let y = &xhat * &per_channel(&g, nd)? + per_channel(&b, nd)?;
    let unbiased = var.iter().map(|v| v * per as f32 / (per.max(2) - 1) as f32).collect();
    Ok((y, BnSaved { xhat, inv_std }, mean, unbiased))
}

/// Gradients of training-mode batch norm with respect to x, gamma and beta.
pub fn batch_norm_grad(saved: &BnSaved, gamma: &ArrayD<f32>, dy: &ArrayD<f32>) -> Result<BnGrads, Broken> {
    let nd = dy.ndim();
    let c = dy.shape()[1];
    let sum_c = |t: &ArrayD<f32>| -> Vec<f32> {
        let mut out = vec![0.0; c];
        for sample in t.outer_iter() {
            for (ch, plane) in sample.outer_iter().enumerate() {
                out[ch] += plane.sum();
            }
        }
        out
    };
    let dbeta = sum_c(dy);
    let dgamma = sum_c(&(dy * &saved.xhat));
    let per = (dy.len() / c.max(1)) as f32;
    let g: Vec<f32> = gamma.iter().copied().collect();
    // dx = gamma * inv_std / N * (N dy - sum(dy) - xhat * sum(dy xhat))
    let coef: Vec<f32> = (0..c).map(|i| g[i] * saved.inv_std[i] / per).collect();
    let dx = (dy * per - per_channel(&dbeta, nd)? - &saved.xhat * &per_channel(&dgamma, nd)?) * per_channel(&coef, nd)?;
    let to = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&[c]), v).invariant("one value per channel");
    Ok((dx, to(dgamma)?, to(dbeta)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Dimension;

    /// The per-channel and per-row fast paths give the general broadcast's values, for every
    /// op; other shapes are left to the general path.
    #[test]
    fn per_channel_binary_ops_equal_the_general_broadcast() {
        let cases: [(&[usize], &[usize], bool); 5] = [
            (&[3, 4, 5, 6], &[4, 1, 1], true),
            (&[3, 4, 5, 6], &[1, 4, 1, 1], true),
            (&[3, 4, 5, 6], &[6], true),
            (&[7, 5], &[5], true),
            (&[3, 4, 5, 6], &[5, 1], false),
        ];
        for (xs, ys, fast) in cases {
            let x = ArrayD::from_shape_fn(IxDyn(xs), |i| (i.slice().iter().sum::<usize>() as f32 * 0.37).sin());
            let y = ArrayD::from_shape_fn(IxDyn(ys), |i| 0.5 + i.slice().iter().sum::<usize>() as f32);
            for op in BinaryOp::ALL {
                let got = binary_per_channel(op, &x, &y, xs);
                assert_eq!(got.is_some(), fast, "{xs:?} {ys:?}");
                if let Some(got) = got {
                    let mut want = ArrayD::<f32>::zeros(IxDyn(xs));
                    ndarray::Zip::from(&mut want)
                        .and_broadcast(&x)
                        .and_broadcast(&y)
                        .for_each(|o, &p, &q| *o = op.apply(p, q));
                    assert_eq!(got, want, "{op:?} {xs:?} {ys:?}");
                }
            }
        }
    }

    /// Tap-major columns are exactly the reference's rows transposed, sample by sample, over
    /// strides, padding, dilation and groups; their adjoint satisfies
    /// <columns(x), d> = <x, adjoint(d)>.
    #[test]
    fn columns_are_the_reference_transposed_and_the_adjoint_is_exact() {
        let shapes = [
            ([2, 3, 7, 6], [4, 3, 3, 3], [1, 1], [1, 1], [1, 1], 1),
            ([1, 4, 9, 8], [4, 2, 3, 2], [2, 3], [2, 0], [1, 2], 2),
            ([3, 1, 5, 5], [2, 1, 5, 5], [1, 1], [2, 2], [1, 1], 1),
            ([2, 2, 6, 7], [2, 1, 2, 3], [3, 2], [0, 1], [2, 1], 2),
        ];
        for (xs, ws, stride, pad, dil, groups) in shapes {
            let a = ConvAttrs { stride, padding: pad, dilation: dil, groups };
            let g = reference::conv_geom(&xs, &ws, &a);
            let n: usize = xs.iter().product();
            let x: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
            let reference = reference::im2col(&x, xs[0], &g).expect("reference");
            let (p, rows, plane) = (g.pixels(), g.c * g.kh * g.kw, g.c * g.h * g.w);
            for s in 0..xs[0] {
                let mut ours = vec![f32::NAN; rows * p];
                sample_columns(&x[s * plane..][..plane], &g, &mut ours);
                let ours = Array2::from_shape_vec((rows, p), ours).expect("shape");
                assert_eq!(ours, reference.slice(s![s * p..(s + 1) * p, ..]).t(), "{xs:?} {ws:?} {a:?}");
                let d = Array2::from_shape_fn(ours.dim(), |(r, c)| ((r * 7 + c * 3) % 11) as f32 - 5.0);
                let lhs: f64 = ours.iter().zip(d.iter()).map(|(a, b)| f64::from(a * b)).sum();
                let mut adj = vec![0.0f32; plane];
                sample_adjoint(d.as_slice().expect("contiguous"), &g, &mut adj);
                let rhs: f64 = x[s * plane..][..plane].iter().zip(&adj).map(|(a, b)| f64::from(a * b)).sum();
                assert_eq!(lhs, rhs, "{xs:?} {ws:?} {a:?}");
            }
        }
    }
}
