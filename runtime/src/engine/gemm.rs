//! Matrix products (`Step::Gemm`): int8 rows x tq2 weights on the runtime's kernels
//! ([`crate::kernels::tq2`]) or the JIT kernels, f32 rows on the f32 GEMM or the JIT
//! add/subtract kernel, with the epilogue and fused requantization.
//!
//! Rules:
//! - Integer products are exact and their epilogue runs in the interpreter's order, so every
//!   kernel (JIT or runtime, any [`Isa`]) gives the same bits.
//! - Buffers are checked against the kernel's contract before the call (internal error
//!   otherwise); big products split over the model's pool (`Model::pool_for`).

use ndarray::{Array2, ArrayD};
use rayon::prelude::*;

use super::arena::Arena;
use super::conv::{Prepared, window};
use super::plan::{ADD_SUB_MAX_ROWS, ConvGeom, Epilogue, GemmWeight, Requantize, WeightData, padded_len};
use super::product::{ScaleBias, finish, int8_args};
use super::quant::{QUANTIZE_WORK, quantize_rows, quantize_sample};
use super::value::{QTensor, Val};
use super::{Model, RunError, internal, shaped};
use crate::kernel::GemmArgs;
use crate::kernels::sgemm::sgemm;
use crate::ops::UnaryOp;
use crate::pack;

/// Rows per block when a product's rows are handed on as soon as they are written (fused
/// requantization): 16 rows of 256 floats are 16 KB, half of L1.
const AFTER_ROWS: usize = 16;

impl GemmWeight {
    /// The dense `[K, N]` f32 matrix a product of `rows` rows runs on, if it runs on the f32
    /// GEMM: the weight's own, or for an f32-activation ternary product of more than
    /// [`ADD_SUB_MAX_ROWS`] rows, its codes (decoded once, on first use).
    pub(crate) fn dense(&self, rows: usize) -> Option<&Array2<f32>> {
        match &self.data {
            WeightData::Dense { w_t } => Some(w_t),
            WeightData::Tq2 { packed, f32_x: true, dense, .. } if rows > ADD_SUB_MAX_ROWS => {
                Some(dense.get_or_init(|| {
                    let codes = pack::unpack_tq2(packed, self.n, self.k);
                    Array2::from_shape_fn((self.k, self.n), |(kk, c)| f32::from(codes[c * self.k + kk]))
                }))
            }
            WeightData::Tq2 { .. } | WeightData::Trits { .. } => None,
        }
    }
}

impl Model {
    /// A matrix product of an int8 or f32 value.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm(
        &self,
        si: usize,
        x: &Val,
        w: &GemmWeight,
        prep: Option<&Prepared>,
        e: &Epilogue,
        vals: &[Option<Val>],
        arena: &mut Arena,
    ) -> Result<Val, RunError> {
        let y = match x {
            Val::Q(q) => self.gemm_q(si, q, w, prep, e, vals, arena)?,
            Val::F32(a) => Val::F32(self.gemm_f32(si, a, w, prep, e, vals, arena)?),
        };
        // Fused requantization that the product's path did not do itself.
        Ok(match (y, e.quantize) {
            (Val::F32(a), Some(rq)) => self.requantize(a, rq, arena),
            (y, _) => y,
        })
    }

    /// A product's finished f32 result quantized as its epilogue asks (its buffer recycled).
    pub(crate) fn requantize(&self, y: ArrayD<f32>, rq: Requantize, arena: &mut Arena) -> Val {
        let q = quantize_rows(y.view(), rq.fixed, rq.align, arena, |n| self.pool_for(n * QUANTIZE_WORK));
        arena.recycle(Val::F32(y));
        Val::Q(q)
    }

    pub(crate) fn epilogue_vectors<'a>(
        &'a self,
        si: usize,
        w: &GemmWeight,
        e: &Epilogue,
    ) -> Result<ScaleBias<'a>, RunError> {
        let vector = |c: Option<usize>| -> Result<Option<&'a [f32]>, RunError> {
            match c {
                None => Ok(None),
                Some(c) => {
                    let a = self.parts.consts.get(c).ok_or_else(|| internal(si, "no such constant"))?;
                    match a.as_slice() {
                        Some(s) if s.len() == w.n => Ok(Some(s)),
                        _ => Err(internal(si, format!("epilogue vector of {} values, expected {}", a.len(), w.n))),
                    }
                }
            }
        };
        Ok((vector(e.scale)?, vector(e.bias)?))
    }

    pub(crate) fn residual<'a>(
        &self,
        si: usize,
        e: &Epilogue,
        vals: &'a [Option<Val>],
        len: usize,
    ) -> Result<Option<&'a [f32]>, RunError> {
        match e.residual {
            None => Ok(None),
            Some(r) => match &vals[r] {
                Some(Val::F32(a)) if a.len() == len => {
                    Ok(Some(a.as_slice().ok_or_else(|| internal(si, "residual not contiguous"))?))
                }
                _ => Err(internal(si, "residual missing or of another size")),
            },
        }
    }

    /// Calls kernel `kernel` on `args` (all its rows and tiles), split between the pool's
    /// threads: chunks of rows, or, for one row, ranges of channel tiles. `after(r0, r1)` runs
    /// on the thread that computed rows r0..r1 (all channels), right after it did.
    ///
    /// # Safety
    /// `args` must be valid for the kernel's specialization: `x` holds `rows` rows of
    /// `x_row_bytes` bytes (`k_pad` int8 or f32 values), `out` (and `residual` when the kernel reads it) `rows` rows of `n` floats, `xsum`
    /// and `sx` `rows` values, `w`, `alpha` (and `scale`, `bias` when read) `n` channels.
    ///
    /// `int8`: for an int8 kernel (rows of `x_row_bytes = k_pad` bytes), the activation it
    /// applies and its channel tile, so the runtime's kernel at the model's level runs instead
    /// unless the model runs int8 products on JIT kernels (same results).
    pub(crate) unsafe fn call_tq2(
        &self,
        kernel: Option<usize>,
        args: GemmArgs,
        x_row_bytes: usize,
        n: usize,
        int8: Option<(Option<UnaryOp>, usize)>,
        after: Option<&(dyn Fn(usize, usize) + Sync)>,
    ) -> Result<(), &'static str> {
        let runtime = int8.filter(|_| !self.jit_gemm || kernel.is_none()).map(|k| (self.isa, k));
        // An artifact leaves out int8 JIT kernels where the runtime's kernel always runs.
        let jit = kernel.filter(|k| self.parts.kernels.get(*k).is_some_and(|c| !c.is_empty()));
        let f = match (runtime, jit) {
            (None, None) => return Err("the kernel is not in this model (an int8 product needs the runtime's kernel)"),
            (_, Some(k)) => Some(self.code.entry(k)),
            (Some(_), None) => None,
        };
        /// The argument block crosses threads; each call writes disjoint rows or channels.
        #[derive(Clone, Copy)]
        struct Shared(GemmArgs);
        // SAFETY: the pointers are only read, except `out`, where every call writes its own
        // rows (or its own channel tiles of the one row).
        unsafe impl Send for Shared {}
        unsafe impl Sync for Shared {}
        impl Shared {
            // A method, so closures capture the whole `Shared` (not its non-`Sync` field).
            fn get(&self) -> GemmArgs {
                self.0
            }
        }
        let (rows, tiles) = (args.rows as usize, args.tile_end as usize);
        let shared = Shared(args);
        let run = move |r0: usize, r1: usize, t0: usize, t1: usize| {
            let a = shared.get();
            let sub = GemmArgs {
                x: a.x.wrapping_add(r0 * x_row_bytes),
                // Null stays null: the wide kernel reads presence from it.
                residual: if a.residual.is_null() { a.residual } else { a.residual.wrapping_add(r0 * n) },
                out: a.out.wrapping_add(r0 * n),
                xsum: a.xsum.wrapping_add(r0),
                sx: a.sx.wrapping_add(r0),
                rows: (r1 - r0) as u64,
                tile_begin: t0 as u64,
                tile_end: t1 as u64,
                ..a
            };
            match runtime {
                // SAFETY: the CPU has `isa` (capped in `Model::set_isa`); a sub-range of the rows
                // and of the channel tiles (cut at n) the caller vouched for, as an int8 kernel
                // for n channels.
                Some((isa, (act, tile))) => unsafe {
                    crate::kernels::tq2::gemm(isa, &sub, n, x_row_bytes, act, (t0 * tile).min(n)..(t1 * tile).min(n))
                },
                // SAFETY: a sub-range of the rows and tiles the caller vouched for.
                None => {
                    if let Some(f) = f {
                        unsafe { f(&sub) }
                    }
                }
            }
        };
        // Rows r0..r1, all tiles; with `after`, in pieces of AFTER_ROWS rows, each handed to
        // `after` as soon as the kernel wrote it (still in L1).
        let rows_then_after = |r0: usize, r1: usize| match after {
            Some(after) => {
                for p in (r0..r1).step_by(AFTER_ROWS) {
                    let p1 = (p + AFTER_ROWS).min(r1);
                    run(p, p1, 0, tiles);
                    after(p, p1);
                }
            }
            None => run(r0, r1, 0, tiles),
        };
        let split = |threads: usize| {
            if rows == 1 && tiles >= 2 * threads {
                let per = tiles.div_ceil(threads);
                (0..threads).into_par_iter().for_each(|i| run(0, 1, (i * per).min(tiles), ((i + 1) * per).min(tiles)));
                if let Some(after) = after {
                    after(0, 1);
                }
            } else if rows > 1 {
                // Chunks of whole row groups (the kernels take 2 or 8 rows per pass).
                let chunk = rows.div_ceil(4 * threads).next_multiple_of(8);
                (0..rows.div_ceil(chunk))
                    .into_par_iter()
                    .for_each(|c| rows_then_after(c * chunk, ((c + 1) * chunk).min(rows)));
            } else {
                rows_then_after(0, rows);
            }
        };
        // A small product stays on this thread (see `sgemm::PARALLEL_MIN_MACS`, counted in f32
        // multiply-adds). An int8 multiply-add costs about a quarter of one (4 per lane of a
        // dot-product instruction), as does an f32 activation's add of a trit: a row of
        // `x_row_bytes` counts as `x_row_bytes / 4`. Measured on the MNIST MLP with 2 threads:
        // splitting its int8 784x256 layer at batch 64 and 128 (13M and 26M int8 multiply-adds)
        // made the model 1.6-1.7x slower than one thread.
        match self.pool_for(rows * n * x_row_bytes / 4) {
            Some(pool) => pool.install(|| split(rayon::current_num_threads())),
            None => rows_then_after(0, rows),
        }
        Ok(())
    }

    /// `out = x . w` on the f32 GEMM: in the model's pool when it has one and the product is
    /// big enough to gain from it (`sgemm::PARALLEL_MIN_MACS`), else on this thread.
    pub(crate) fn sgemm(
        &self,
        x: &ndarray::ArrayView2<'_, f32>,
        w: &ndarray::ArrayView2<'_, f32>,
        out: &mut ndarray::ArrayViewMut2<'_, f32>,
    ) {
        let ((m, k), n) = (x.dim(), w.dim().1);
        match self.pool_for(m * n * k) {
            Some(pool) => pool.install(|| sgemm(x, w, out, true)),
            None => sgemm(x, w, out, false),
        }
    }

    /// The batched product of two f32 values, `[..., M, K] x [..., K, N]`: one f32 GEMM per
    /// leading index (attention's scores and weighted sums).
    pub(crate) fn batch_matmul(
        &self,
        si: usize,
        a: &ArrayD<f32>,
        b: &ArrayD<f32>,
        arena: &mut Arena,
    ) -> Result<ArrayD<f32>, RunError> {
        let r = a.ndim();
        let fits =
            r >= 2 && b.ndim() == r && a.shape()[..r - 2] == b.shape()[..r - 2] && a.shape()[r - 1] == b.shape()[r - 2];
        if !fits {
            return Err(internal(si, format!("batched product of {:?} and {:?}", a.shape(), b.shape())));
        }
        let (m, k, n) = (a.shape()[r - 2], a.shape()[r - 1], b.shape()[r - 1]);
        let batch: usize = a.shape()[..r - 2].iter().product();
        let (a, b) = (a.as_standard_layout(), b.as_standard_layout());
        let (xs, ws) = (
            a.as_slice().ok_or_else(|| internal(si, "operand not contiguous"))?,
            b.as_slice().ok_or_else(|| internal(si, "operand not contiguous"))?,
        );
        let mut buf = arena.f32_overwritten(batch * m * n);
        // Attention-sized products (a ViT's 16 x 16 heads): a row loop beats a GEMM call's setup.
        if m <= SMALL_PRODUCT_ROWS && k * n <= SMALL_PRODUCT_PANEL {
            for ((x, w), out) in xs
                .chunks_exact((m * k).max(1))
                .zip(ws.chunks_exact((k * n).max(1)))
                .zip(buf.chunks_exact_mut((m * n).max(1)))
            {
                small_product(x, w, k, n, out);
            }
            let mut shape = a.shape()[..r - 1].to_vec();
            shape.push(n);
            return shaped(si, &shape, buf);
        }
        for i in 0..batch {
            let x = ndarray::ArrayView2::from_shape((m, k), &xs[i * m * k..(i + 1) * m * k])
                .map_err(|e| internal(si, e.to_string()))?;
            let w = ndarray::ArrayView2::from_shape((k, n), &ws[i * k * n..(i + 1) * k * n])
                .map_err(|e| internal(si, e.to_string()))?;
            let mut out = ndarray::ArrayViewMut2::from_shape((m, n), &mut buf[i * m * n..(i + 1) * m * n])
                .map_err(|e| internal(si, e.to_string()))?;
            self.sgemm(&x, &w, &mut out);
        }
        let mut shape = a.shape()[..r - 1].to_vec();
        shape.push(n);
        shaped(si, &shape, buf)
    }

    /// Integer product of quantized rows.
    #[allow(clippy::too_many_arguments)]
    fn gemm_q(
        &self,
        si: usize,
        q: &QTensor,
        w: &GemmWeight,
        prep: Option<&Prepared>,
        e: &Epilogue,
        vals: &[Option<Val>],
        arena: &mut Arena,
    ) -> Result<Val, RunError> {
        let rows = q.row_scale.len();
        let n = w.n;
        if q.k != w.k {
            return Err(internal(si, format!("activations have {} features, the weight {}", q.k, w.k)));
        }
        let alpha = w.alpha.as_deref().ok_or_else(|| internal(si, "integer product with an f32 weight"))?;
        let (scale, bias) = self.epilogue_vectors(si, w, e)?;
        let residual = self.residual(si, e, vals, rows * n)?;
        let mut shape = q.shape.clone();
        if let Some(l) = shape.last_mut() {
            *l = n;
        }
        let mut out = arena.f32_overwritten(rows * n);
        // Several rows on AVX-512 VNNI: the int8 panel (exact sums, the same epilogue and bits);
        // `gemm` requantizes the result if the epilogue asks.
        #[cfg(target_arch = "x86_64")]
        if let Some(Prepared::Rows { panel }) = prep
            && rows >= super::conv::VNNI_MIN_ROWS
            && self.isa >= crate::cpu::Isa::Avx512Vnni
            && let Some(panel) = Prepared::rows_panel(panel, w)
        {
            let fits = q.k_pad == panel.k4 * 4
                && panel.blocks == n.div_ceil(16)
                && q.data.len() == rows * q.k_pad
                && alpha.len() == n;
            if !fits {
                return Err(internal(si, "product buffers do not match its panel"));
            }
            self.pointwise_vnni(q, panel, alpha, (scale, bias), residual, e, &mut out);
            return Ok(Val::F32(shaped(si, &shape, out)?));
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = prep;
        // Requantization fused in: each block of rows is quantized as soon as the kernel wrote
        // it, while it is in L1. Needs the whole epilogue in the kernel and one row per sample
        // (a 2-D result) or a fixed scale; otherwise the step quantizes the finished result.
        let fused = e.quantize.filter(|rq| {
            matches!(w.data, WeightData::Tq2 { .. })
                && (e.act.is_none() || e.act_in_kernel)
                && (shape.len() == 2 || rq.fixed.is_some())
        });
        let mut fused_q = fused.map(|rq| {
            let k_pad = padded_len(n, rq.align);
            QTensor {
                shape: shape.clone(),
                k: n,
                k_pad,
                data: arena.i8_aligned(rows * k_pad, None),
                row_scale: arena.f32_overwritten(rows),
                row_sum: arena.i32_overwritten(rows),
            }
        });
        match &w.data {
            WeightData::Tq2 { packed, kernel, tile, f32_x, .. } => {
                let (k_pad, tiles) = (pack::padded_k(w.k), n.div_ceil(*tile));
                let sizes_ok = !f32_x
                    && q.k_pad == k_pad
                    && q.data.len() == rows * k_pad
                    && packed.len() == n * pack::row_bytes(w.k)
                    && alpha.len() == n
                    && q.row_sum.len() == rows
                    && *kernel < self.code.len();
                if !sizes_ok {
                    return Err(internal(si, "kernel buffers do not match its specialization"));
                }
                let args = int8_args(q, packed, alpha, (scale, bias), residual, &mut out, tiles);
                /// Where fused requantization writes: rows of `q`, read from rows of `out`.
                struct Requant {
                    out: *const f32,
                    data: *mut i8,
                    scale: *mut f32,
                    sum: *mut i32,
                    n: usize,
                    k_pad: usize,
                    fixed: Option<f32>,
                }
                // SAFETY: each call reads and writes only its own rows (disjoint across threads).
                unsafe impl Sync for Requant {}
                impl Requant {
                    /// Quantizes rows r0..r1 of `out` into the int8 rows.
                    ///
                    /// # Safety
                    /// The kernel has written rows r0..r1 of `out`; no other thread touches them.
                    unsafe fn rows(&self, r0: usize, r1: usize) {
                        for r in r0..r1 {
                            // SAFETY: r < rows: `out` holds rows * n values, `data` rows * k_pad,
                            // `scale` and `sum` rows (allocated so above); rows are disjoint.
                            unsafe {
                                quantize_sample(
                                    std::slice::from_raw_parts(self.out.add(r * self.n), self.n),
                                    self.n,
                                    self.fixed,
                                    std::slice::from_raw_parts_mut(self.data.add(r * self.k_pad), self.k_pad),
                                    std::slice::from_raw_parts_mut(self.scale.add(r), 1),
                                    std::slice::from_raw_parts_mut(self.sum.add(r), 1),
                                )
                            };
                        }
                    }
                }
                let requant = fused_q.as_mut().map(|t| Requant {
                    out: out.as_ptr(),
                    data: t.data.as_mut_ptr(),
                    scale: t.row_scale.as_mut_ptr(),
                    sum: t.row_sum.as_mut_ptr(),
                    n,
                    k_pad: t.k_pad,
                    fixed: fused.and_then(|rq| rq.fixed),
                });
                // SAFETY: `call_tq2` calls it per block of rows right after the kernel wrote them.
                let after = requant.as_ref().map(|rq| move |r0: usize, r1: usize| unsafe { rq.rows(r0, r1) });
                let after = after.as_ref().map(|f| f as &(dyn Fn(usize, usize) + Sync));
                // SAFETY: the kernel was specialised for (n, k, tile) and this epilogue; the
                // sizes of x (k_pad per row), w (n rows), alpha/scale/bias (n), residual and out
                // (n per row), xsum and sx (one per row) were checked above for all rows.
                unsafe { self.call_tq2(Some(*kernel), args, k_pad, n, Some((e.kernel_act(), *tile)), after) }
                    .map_err(|e| internal(si, e))?;
            }
            WeightData::Dense { w_t } => {
                let x = Array2::from_shape_fn((rows, w.k), |(r, c)| q.data[r * q.k_pad + c] as f32);
                let mut acc = Array2::zeros((rows, n));
                self.sgemm(&x.view(), &w_t.view(), &mut acc.view_mut());
                for (r, (o, a)) in out.chunks_mut(n).zip(acc.outer_iter()).enumerate() {
                    let sx = q.row_scale[r];
                    for c in 0..n {
                        o[c] = a[c] * (sx * alpha[c]);
                    }
                }
                finish(&mut out, n, scale, bias, residual, e.act);
            }
            WeightData::Trits { .. } => return Err(internal(si, "a matrix product over convolution weights")),
        }
        if let Some(q) = fused_q {
            arena.f32s.push(out);
            return Ok(Val::Q(q));
        }
        if let (Some(act), false, WeightData::Tq2 { .. }) = (e.act, e.act_in_kernel, &w.data) {
            out.iter_mut().for_each(|v| *v = act.apply(*v));
        }
        Ok(Val::F32(shaped(si, &shape, out)?))
    }

    /// Float product: f32 activations with f32 weights (on the panel kernels when the model
    /// prepared them), trit/int8 codes scaled by alpha, or packed trits on the add/subtract
    /// kernel.
    #[allow(clippy::too_many_arguments)]
    fn gemm_f32(
        &self,
        si: usize,
        x: &ArrayD<f32>,
        w: &GemmWeight,
        prep: Option<&Prepared>,
        e: &Epilogue,
        vals: &[Option<Val>],
        arena: &mut Arena,
    ) -> Result<ArrayD<f32>, RunError> {
        let rows = x.len() / w.k.max(1);
        let x2 = x
            .view()
            .into_shape_with_order((rows, w.k))
            .map_err(|_| internal(si, format!("activations of shape {:?} are not rows of {}", x.shape(), w.k)))?;
        let (scale, bias) = self.epilogue_vectors(si, w, e)?;
        let residual = self.residual(si, e, vals, rows * w.n)?;
        let mut out = arena.f32_overwritten(rows * w.n);
        match (prep, w.dense(rows), &w.data) {
            (Some(Prepared::Panel { panel, .. }), _, _) => {
                let xs = x.as_slice().ok_or_else(|| internal(si, "gemm input not contiguous"))?;
                let fits = panel.k == w.k
                    && panel.blocks == w.n.div_ceil(16)
                    && panel.bytes() == panel.blocks * w.k * 64
                    && w.alpha.as_ref().is_none_or(|a| a.len() == w.n);
                if !fits {
                    return Err(internal(si, "gemm buffers do not match its weight"));
                }
                // The rows as the pixels of a 1x1 convolution.
                let g = ConvGeom {
                    c: w.k,
                    h: rows,
                    w: 1,
                    o: w.n,
                    kh: 1,
                    kw: 1,
                    stride: [1, 1],
                    pad: [0, 0],
                    dil: [1, 1],
                    groups: 1,
                    oh: rows,
                    ow: 1,
                };
                let vecs = (w.alpha.as_deref(), scale, bias);
                self.conv_f32_panel(xs, panel, true, &g, &window(&g), vecs, residual, e, &mut out);
            }
            (Some(_), _, _) => return Err(internal(si, "matrix product prepared as a convolution")),
            (None, Some(w_t), _) => {
                let mut acc = ndarray::ArrayViewMut2::from_shape((rows, w.n), &mut out[..])
                    .map_err(|e| internal(si, e.to_string()))?;
                self.sgemm(&x2, &w_t.view(), &mut acc);
                if let Some(alpha) = &w.alpha {
                    for mut row in acc.outer_iter_mut() {
                        row.zip_mut_with(&ndarray::ArrayView1::from(alpha.as_slice()), |v, a| *v *= a);
                    }
                }
                finish(&mut out, w.n, scale, bias, residual, e.act);
            }
            (None, None, WeightData::Dense { .. } | WeightData::Trits { .. }) => {
                return Err(internal(si, "a dense weight without its matrix"));
            }
            (None, None, WeightData::Tq2 { packed, kernel, tile, f32_x, .. }) => {
                let alpha = w.alpha.as_deref().ok_or_else(|| internal(si, "ternary product without alpha"))?;
                let k_pad = pack::padded_k(w.k);
                let sizes_ok = *f32_x
                    && packed.len() == w.n * pack::row_bytes(w.k)
                    && alpha.len() == w.n
                    && *kernel < self.code.len();
                if !sizes_ok {
                    return Err(internal(si, "kernel buffers do not match its specialization"));
                }
                // Rows padded with zeros to k_pad.
                let mut xp = arena.f32(rows * k_pad);
                for (dst, src) in xp.chunks_mut(k_pad).zip(x2.outer_iter()) {
                    dst[..w.k].iter_mut().zip(src).for_each(|(d, v)| *d = *v);
                }
                let args = GemmArgs {
                    x: xp.as_ptr().cast::<i8>(),
                    w: packed.as_ptr(),
                    alpha: alpha.as_ptr(),
                    scale: scale.map_or(std::ptr::null(), |s| s.as_ptr()),
                    bias: bias.map_or(std::ptr::null(), |s| s.as_ptr()),
                    residual: residual.map_or(std::ptr::null(), |s| s.as_ptr()),
                    out: out.as_mut_ptr(),
                    xsum: std::ptr::null(),
                    sx: std::ptr::null(),
                    rows: rows as u64,
                    tile_begin: 0,
                    tile_end: w.n.div_ceil(*tile) as u64,
                };
                // SAFETY: the kernel was specialised for (n, k, tile), this epilogue and f32
                // activations (checked); xp holds `rows` rows of k_pad floats, out and residual
                // `rows` rows of n, w/alpha/scale/bias n channels (sizes checked above).
                unsafe { self.call_tq2(Some(*kernel), args, 4 * k_pad, w.n, None, None) }
                    .map_err(|e| internal(si, e))?;
                arena.f32s.push(xp);
                if let (Some(act), false) = (e.act, e.act_in_kernel) {
                    out.iter_mut().for_each(|v| *v = act.apply(*v));
                }
            }
        }
        let mut shape = x.shape().to_vec();
        if let Some(l) = shape.last_mut() {
            *l = w.n;
        }
        shaped(si, &shape, out)
    }
}

/// Rows of the products [`small_product`] computes (see `Model::batch_matmul`).
const SMALL_PRODUCT_ROWS: usize = 64;
/// Values of the right operand of those products.
const SMALL_PRODUCT_PANEL: usize = 128 * 128;

/// `out = x . w` for `x` `[m, k]` and `w` `[k, n]` row-major: each output row the sum over `k`
/// in order of `x[i, k] * w[k, :]`, in f32 (16 lanes at a time where the CPU has AVX-512).
fn small_product(x: &[f32], w: &[f32], k: usize, n: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX512-F is present (checked).
        unsafe { small_product_avx512(x, w, k, n, out) };
        return;
    }
    small_product_rows(x, w, k, n, out);
}

/// [`small_product_rows`] in 16-column blocks of AVX-512 fused multiply-adds (the sum over
/// `k` in order per output, fused: within rounding of the portable loop).
///
/// # Safety
/// The CPU has AVX512-F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn small_product_avx512(x: &[f32], w: &[f32], k: usize, n: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    for (xr, orow) in x.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
        for c in (0..n).step_by(16) {
            let lanes = (n - c).min(16);
            let m: __mmask16 = if lanes == 16 { 0xffff } else { ((1u32 << lanes) - 1) as __mmask16 };
            // SAFETY: row kk of w holds n values from kk * n; the mask keeps c + lane < n.
            unsafe {
                let mut acc = _mm512_setzero_ps();
                for (kk, a) in xr.iter().enumerate() {
                    let b = _mm512_maskz_loadu_ps(m, w.as_ptr().add(kk * n + c));
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(*a), b, acc);
                }
                _mm512_mask_storeu_ps(orow.as_mut_ptr().add(c), m, acc);
            }
        }
    }
}

#[inline(always)]
fn small_product_rows(x: &[f32], w: &[f32], k: usize, n: usize, out: &mut [f32]) {
    for (xr, orow) in x.chunks_exact(k.max(1)).zip(out.chunks_exact_mut(n.max(1))) {
        orow.fill(0.0);
        for (a, wr) in xr.iter().zip(w.chunks_exact(n.max(1))) {
            orow.iter_mut().zip(wr).for_each(|(o, b)| *o += a * b);
        }
    }
}

#[cfg(test)]
mod small_product_tests {
    use super::*;

    /// The AVX-512 blocks (fused) agree with the portable row loop within rounding, for widths
    /// around the 16-lane blocks, and both with an f64 reference.
    #[test]
    fn small_products_agree_with_the_portable_loop() {
        for (m, k, n) in [(1, 1, 1), (3, 5, 7), (16, 16, 16), (5, 33, 17), (64, 2, 128), (7, 128, 31)] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 37) % 23) as f32 / 11.0 - 1.0).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 53) % 29) as f32 / 13.0 - 1.0).collect();
            let mut portable = vec![0.0f32; m * n];
            small_product_rows(&x, &w, k, n, &mut portable);
            let mut fast = vec![0.0f32; m * n];
            small_product(&x, &w, k, n, &mut fast);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| f64::from(x[i * k + t]) * f64::from(w[t * n + j])).sum();
                    for got in [portable[i * n + j], fast[i * n + j]] {
                        assert!((f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()), "{m}x{k}x{n} [{i}, {j}]");
                    }
                }
            }
        }
    }
}
