//! Convolution steps, channels-last in and out: weights re-laid out once at load
//! ([`Prepared`]), then per sample and block of output pixels a gather into rows and a
//! product on the matrix-product kernels (implicit GEMM), a plain GEMM for 1x1 convolutions,
//! the depthwise kernels, or a layer's own JIT kernel (`direct.rs`).
//!
//! Rules:
//! - Int8 activations with ternary weights run on the tq2 kernels at the model's level
//!   (`kernels::tq2`): exact sums, the epilogue in the interpreter's order, so every level
//!   and thread count gives the interpreter's bits. A pointwise convolution (1x1, stride 1,
//!   no padding, one group) over rows padded to whole tq2 blocks multiplies the activations
//!   in place: no gather at all.
//! - F32 activations run on the f32 panel kernels (`kernels::fconv`: weights in blocks of 16
//!   channels, re-laid out once; AVX-512, AVX2 + FMA or portable by the model's level) over
//!   gathered rows, or over the input rows themselves for 1x1, with the epilogue per register
//!   tile; int8 activations with non-ternary weights on the f32 GEMM over gathered rows, then
//!   the weight's scale. Both differ from the interpreter's f64 sums by rounding only.
//! - Depthwise convolutions (one input and output channel per group) never run as products.
//! - Threads: blocks of output pixels of every sample split over the pool when the work is
//!   worth it (`Model::pool_for`); each block writes its own output rows.

use std::ops::Range;

use ndarray::{Array2, ArrayView2, ArrayViewMut2, s};
use rayon::prelude::*;

use super::arena::Arena;
use super::plan::{ConvGeom, Epilogue, GemmWeight, Kind, WeightData};
use super::product::{finish, int8_args};
use super::value::{QTensor, Val};
use super::{Model, RunError, internal, shaped};
use crate::kernel::GemmArgs;
use crate::kernels::ChannelEpilogue;
#[cfg(target_arch = "x86_64")]
use crate::kernels::avx512::conv::{Call, Panel};
use crate::kernels::conv::{Window, depthwise, im2col_f32, im2col_i8};
use crate::kernels::fconv::{self, F32Panel, FCall};
use crate::pack;
#[cfg(not(target_arch = "x86_64"))]
use no_vnni::Panel;

/// A convolution's weight in the order its kernels stream.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// Int8 activations x trits: per output channel, tq2-packed rows in `(u, v, c)` order
    /// (`k` values padded to `k_pad`); the rows of group `g` start at channel `g * og`.
    /// `panel`: the same trits as int8 panels for the AVX-512 VNNI kernel, made only on CPUs
    /// that have it.
    Tq2 { packed: Vec<u8>, k_pad: usize, pointwise: bool, panel: Option<Panel> },
    /// Depthwise int8 codes `[tap][c]`.
    DepthwiseI8 { w: Vec<i8> },
    /// Depthwise f32 values (or codes) `[tap][c]`.
    DepthwiseF32 { w: Vec<f32> },
    /// `[k, o]` f32 values (or int8 codes) with `k` in `(u, v, c)` order, for int8 input
    /// without a tq2 weight.
    Dense { w_t: Array2<f32> },
    /// f32 values (or codes) as panels of 16 channels for the f32 kernels (f32 input).
    Panel { panel: F32Panel, pointwise: bool },
    /// A direct convolution JIT kernel (f32 input, one group): weights `[kh, kw, c, o4]` with
    /// the output channels padded to `o4` (a multiple of 4), and the per-channel vectors the
    /// kernel reads (multiplier, scale, bias: those it has), `o4` values each.
    Direct { w: Vec<f32>, epi: Vec<f32>, taps: Vec<i32>, o: usize, kernel: crate::kernel::ConvKernelFn },
    /// An int8 direct convolution JIT kernel (int8 input, integer codes, one group): codes
    /// `[kh, kw, c4 / 4, o4 / 4, 4, 4]` (see `kernel::ConvArgs::w`), the per-channel
    /// corrections `-128 * sum(w)` and the vectors (the weight's scale, then scale and bias
    /// when present), `o4` values each.
    DirectI8 { w: Vec<i8>, corr: Vec<i32>, epi: Vec<f32>, o: usize, kernel: crate::kernel::ConvKernelFn },
    /// Weights `[o][c][kh][kw]` of an f32 convolution with few input channels run with output
    /// pixels in the lanes (`kernels::planar`), on CPUs with AVX-512.
    Planar { w: Vec<f32>, o: usize },
    /// A ternary matrix product's trits (int8 input) as int8 panels for the AVX-512 VNNI
    /// kernel, on CPUs that have it, made on the first product of [`VNNI_MIN_ROWS`] rows or
    /// more (fewer rows stream the 2-bit rows of the tq2 kernels, which memory bounds; a model
    /// only ever run at batch 1 never holds the byte-per-trit copy).
    Rows { panel: std::sync::OnceLock<Panel> },
}

/// Rows from which a ternary matrix product runs on the VNNI panel rather than the tq2 rows.
pub(crate) const VNNI_MIN_ROWS: usize = 4;

impl Prepared {
    /// A ternary matrix product weight over int8 activations, on CPUs with AVX-512 VNNI: the
    /// place for its VNNI panel.
    pub fn rows(w: &GemmWeight) -> Option<Prepared> {
        match &w.data {
            WeightData::Tq2 { f32_x: false, .. } if crate::cpu::best() >= crate::cpu::Isa::Avx512Vnni => {
                Some(Prepared::Rows { panel: std::sync::OnceLock::new() })
            }
            _ => None,
        }
    }

    /// The panel of [`Prepared::Rows`] for weight `w` (made on first use).
    pub fn rows_panel<'a>(panel: &'a std::sync::OnceLock<Panel>, w: &GemmWeight) -> Option<&'a Panel> {
        match &w.data {
            WeightData::Tq2 { packed, .. } => Some(
                panel.get_or_init(|| Panel::new(&pack::unpack_tq2(packed, w.n, w.k), 1, w.n, w.k, pack::padded_k(w.k))),
            ),
            _ => None,
        }
    }
}

/// A 1x1 convolution with stride 1, no padding and one group: a plain product over pixels.
fn is_pointwise(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == [1, 1] && g.pad == [0, 0] && g.groups == 1
}

pub(crate) fn window(g: &ConvGeom) -> Window {
    Window { h: g.h, w: g.w, kh: g.kh, kw: g.kw, stride: g.stride, pad: g.pad, dil: g.dil, oh: g.oh, ow: g.ow }
}

/// A product's per-channel vectors: integer-to-real multipliers, scale and bias.
type ChannelVecs<'a> = (Option<&'a [f32]>, Option<&'a [f32]>, Option<&'a [f32]>);

impl Prepared {
    /// Codes (or values) of `w` per output channel in the stored `(c, u, v)` order.
    pub(super) fn values(w: &GemmWeight, g: &ConvGeom) -> Result<Vec<f32>, String> {
        let (o, k) = (g.o, g.k());
        match &w.data {
            WeightData::Trits { packed } => Ok(pack::unpack_tq2(packed, o, k).into_iter().map(f32::from).collect()),
            WeightData::Dense { w_t } if w_t.dim() == (k, o) => {
                Ok((0..o).flat_map(|c| w_t.column(c).to_vec()).collect())
            }
            WeightData::Dense { .. } => Err(format!("convolution weight `{}` does not match its geometry", w.name)),
            WeightData::Tq2 { .. } => Err(format!("convolution weight `{}` packed for a matrix product", w.name)),
        }
    }

    /// Re-lays out `w` for a convolution of geometry `g` over values of kind `x`.
    pub fn new(w: &GemmWeight, g: &ConvGeom, x: Kind) -> Result<Prepared, String> {
        let (o, k, cg, taps) = (g.o, g.k(), g.cg(), g.kh * g.kw);
        let values = Self::values(w, g)?;
        // Index in `(c, u, v)` order of position `t` of the `(u, v, c)` order.
        let from = |t: usize| (t % cg) * taps + t / cg;
        let depthwise = cg == 1 && g.og() == 1;
        let codes_i8 = matches!(w.data, WeightData::Trits { .. })
            || (w.alpha.is_some() && values.iter().all(|v| v.fract() == 0.0 && v.abs() <= 127.0));
        Ok(match (x, depthwise) {
            (Kind::Int8, true) if codes_i8 => {
                Prepared::DepthwiseI8 { w: (0..taps * o).map(|i| values[(i % o) * k + i / o] as i8).collect() }
            }
            (Kind::F32, true) => {
                Prepared::DepthwiseF32 { w: (0..taps * o).map(|i| values[(i % o) * k + i / o]).collect() }
            }
            (Kind::Int8, false) if matches!(w.data, WeightData::Trits { .. }) => {
                let codes: Vec<i8> = (0..o * k).map(|i| values[(i / k) * k + from(i % k)] as i8).collect();
                let k_pad = pack::padded_k(k);
                let panel = (crate::cpu::best() >= crate::cpu::Isa::Avx512Vnni)
                    .then(|| Panel::new(&codes, g.groups, g.og(), k, k_pad));
                Prepared::Tq2 { packed: pack::pack_tq2(&codes, o, k), k_pad, pointwise: is_pointwise(g), panel }
            }
            (Kind::F32, false)
                if crate::cpu::best() >= crate::cpu::Isa::Avx512Vnni
                    && crate::kernels::planar::fits(g.c, o, g.stride, g.groups) =>
            {
                Prepared::Planar { w: values, o }
            }
            (Kind::F32, false) => Prepared::Panel {
                panel: F32Panel::new(g.groups, g.og(), k, |t, c| values[c * k + from(t)]),
                pointwise: is_pointwise(g),
            },
            (Kind::Int8, _) => Prepared::Dense { w_t: Array2::from_shape_fn((k, o), |(t, c)| values[c * k + from(t)]) },
        })
    }

    /// The kernel that runs at level `isa`, as `--emit plan` prints it.
    pub fn kernel_name(&self, isa: crate::cpu::Isa) -> String {
        use crate::cpu::Isa;
        let depthwise = match isa {
            Isa::Avx512Vnni | Isa::Amx => "avx512 8-pixel tiles",
            Isa::Avx2 => "avx2 auto-vectorized",
            Isa::Generic => "generic",
        };
        match self {
            Prepared::Tq2 { pointwise, panel, .. } => {
                let what = if *pointwise { "int8 pointwise gemm" } else { "int8 implicit-gemm" };
                if panel.is_some() && isa >= Isa::Amx {
                    format!("{what} (amx int8 tiles on the panel)")
                } else if panel.is_some() && isa >= Isa::Avx512Vnni {
                    format!("{what} (avx512vnni vpdpbusd panel)")
                } else {
                    format!("{what} (tq2 {isa})")
                }
            }
            Prepared::DepthwiseI8 { .. } => format!("int8 depthwise ({depthwise})"),
            Prepared::DepthwiseF32 { .. } => format!("f32 depthwise ({depthwise})"),
            Prepared::Panel { pointwise, .. } => {
                let what = if *pointwise { "f32 pointwise gemm" } else { "f32 implicit-gemm" };
                format!("{what} ({})", fconv::kernel_name(isa))
            }
            Prepared::Dense { .. } => "int8 x f32 im2col-gemm (gemm crate)".into(),
            Prepared::DirectI8 { o, .. } => format!(
                "int8 direct conv (jit, layer-specialized: {o} output channels in 128-bit lanes, vpdpbusd where the CPU has VNNI, no gather)"
            ),
            Prepared::Direct { o, .. } => format!(
                "f32 direct conv (jit, layer-specialized: {o} output channels in 128-bit lanes, no gather; the f32 panel's 16-channel tile would be {}% empty)",
                100 * (16 - o.min(&16)) / 16
            ),
            Prepared::Planar { o, .. } => format!(
                "f32 planar conv ({}; {o} output channels, few input channels: no gather, no empty channel lanes)",
                crate::kernels::planar::kernel_name(isa)
            ),
            Prepared::Rows { .. } => {
                let panel = if isa >= Isa::Amx { "amx int8 tiles" } else { "avx512vnni vpdpbusd panel" };
                format!("int8 tq2 ({}); from {VNNI_MIN_ROWS} rows {panel}", isa.min(Isa::Avx512Vnni))
            }
        }
    }
}

/// Pointers that cross threads; each block writes its own rows.
#[derive(Clone, Copy)]
pub(super) struct Out(*mut f32);
// SAFETY: every task writes disjoint output rows (its own pixels of its own sample).
unsafe impl Send for Out {}
unsafe impl Sync for Out {}
impl Out {
    pub(super) fn new(p: *mut f32) -> Out {
        Out(p)
    }

    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Blocks of the product kernels' rows (`total`: output pixels of every sample, which a block
/// may span): `(rows per block, blocks)`, rows a multiple of `tile` (but the last block's).
/// Every block streams the whole weight panel, every run of its channels the block's rows
/// (`row_bytes` each): a block holds about `small` bytes of rows (at most `cap` rows), which
/// stay in cache while the panel streams by; a panel larger than 1 MB (from L3 or memory,
/// each pass) takes blocks of up to 1 MB of rows instead, so it is streamed fewer times (at
/// batch 16, ResNet-18's last f32 panels once instead of 16 times). Blocks are split evenly.
fn row_blocks(
    total: usize,
    row_bytes: usize,
    panel_bytes: usize,
    tile: usize,
    (small, cap): (usize, usize),
) -> (usize, usize) {
    if total == 0 {
        return (0, 0);
    }
    let (budget, cap) = if panel_bytes > 1 << 20 { (1 << 20, 1024) } else { (small, cap) };
    let most = (budget / row_bytes.max(1)).clamp(tile, cap.max(tile)) / tile * tile;
    let blocks = total.div_ceil(most);
    let rows = total.div_ceil(blocks).next_multiple_of(tile).min(total);
    (rows, total.div_ceil(rows))
}

/// The samples' pieces of output rows `rows` (`p` pixels per sample): `(sample, its pixels,
/// row offset in the block)`.
fn sample_pieces(p: usize, rows: Range<usize>) -> impl Iterator<Item = (usize, Range<usize>, usize)> {
    let start = rows.start;
    let mut r = rows.start;
    std::iter::from_fn(move || {
        (r < rows.end && p > 0).then(|| {
            let (n, p0) = (r / p, r % p);
            let p1 = (p0 + rows.end - r).min(p);
            let piece = (n, p0..p1, r - start);
            r += p1 - p0;
            piece
        })
    })
}

impl Model {
    /// Runs a convolution step (see the module rules).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv(
        &self,
        si: usize,
        x: &Val,
        w: &GemmWeight,
        prep: &Prepared,
        g: &ConvGeom,
        e: &Epilogue,
        vals: &[Option<Val>],
        arena: &mut Arena,
    ) -> Result<Val, RunError> {
        let (p, o) = (g.pixels(), g.o);
        let in_shape = match x {
            Val::F32(a) => a.shape().to_vec(),
            Val::Q(q) => q.shape.clone(),
        };
        let b = in_shape.first().copied().unwrap_or(0);
        if in_shape != [b, g.h, g.w, g.c] || w.n != o || w.k != g.k() {
            return Err(internal(
                si,
                format!("conv input {in_shape:?} or weight [{}, {}] does not fit {g:?}", w.n, w.k),
            ));
        }
        let (scale, bias) = self.epilogue_vectors(si, w, e)?;
        let residual = self.residual(si, e, vals, b * p * o)?;
        let mut out = arena.f32_overwritten(b * p * o);
        let win = window(g);
        let alpha = w.alpha.as_deref();
        match (prep, x) {
            (Prepared::Tq2 { packed, k_pad, pointwise, panel }, Val::Q(q)) => {
                let alpha = alpha.ok_or_else(|| internal(si, "ternary conv without scales"))?;
                let fits = q.k == g.c
                    && q.rows() == b * g.h * g.w
                    && q.data.len() == q.rows() * q.k_pad
                    && packed.len() == o * k_pad / 4
                    && alpha.len() == o;
                if !fits {
                    return Err(internal(si, "conv buffers do not match its weight"));
                }
                let panel = panel.as_ref().filter(|_| self.isa >= crate::cpu::Isa::Avx512Vnni);
                #[cfg(target_arch = "x86_64")]
                let vnni_pointwise = *pointwise && q.k_pad == *k_pad && panel.is_some();
                #[cfg(not(target_arch = "x86_64"))]
                let vnni_pointwise = false;
                if vnni_pointwise {
                    #[cfg(target_arch = "x86_64")]
                    if let Some(panel) = panel {
                        self.pointwise_vnni(q, panel, alpha, (scale, bias), residual, e, &mut out);
                    }
                } else if *pointwise && q.k_pad == *k_pad {
                    let args = int8_args(q, packed, alpha, (scale, bias), residual, &mut out, o);
                    // SAFETY: x holds rows of k_pad codes with their sums and scales, the
                    // weight o rows of k_pad / 4 bytes, the per-channel vectors o values (all
                    // checked above), out and residual rows of o values.
                    unsafe { self.call_tq2(None, args, *k_pad, o, Some((e.act, 1)), None) }
                        .map_err(|e| internal(si, e))?;
                } else {
                    self.conv_tq2(q, (packed, panel), *k_pad, alpha, g, &win, (scale, bias), residual, e, &mut out);
                }
            }
            (Prepared::DepthwiseI8 { w: wd }, Val::Q(q)) => {
                let fits = q.k == g.c && q.rows() == b * g.h * g.w && wd.len() == win.taps() * o && o == g.c;
                let alpha = alpha.filter(|a| a.len() == o);
                if !fits || alpha.is_none() {
                    return Err(internal(si, "depthwise buffers do not match its weight"));
                }
                let alpha = alpha.unwrap_or_default();
                let per = g.h * g.w * q.k_pad;
                let mut mult = vec![0.0; o];
                for n in 0..b {
                    let sx = q.row_scale[n * g.h * g.w];
                    mult.iter_mut().zip(alpha).for_each(|(m, a)| *m = sx * a);
                    let epi = ChannelEpilogue { mult: Some(&mult), scale, bias, act: e.act };
                    let xs = &q.data[n * per..(n + 1) * per];
                    let res = residual.map(|r| &r[n * p * o..(n + 1) * p * o]);
                    let dst = &mut out[n * p * o..(n + 1) * p * o];
                    depthwise(self.isa, xs, q.k_pad, wd, o, &win, 0..p, &epi, res, dst);
                }
            }
            (Prepared::DepthwiseF32 { w: wd }, Val::F32(a)) => {
                let xs = a.as_slice().ok_or_else(|| internal(si, "conv input not contiguous"))?;
                if wd.len() != win.taps() * o || o != g.c || alpha.is_some_and(|a| a.len() != o) {
                    return Err(internal(si, "depthwise buffers do not match its weight"));
                }
                let per = g.h * g.w * g.c;
                let epi = ChannelEpilogue { mult: alpha, scale, bias, act: e.act };
                for n in 0..b {
                    let res = residual.map(|r| &r[n * p * o..(n + 1) * p * o]);
                    let dst = &mut out[n * p * o..(n + 1) * p * o];
                    depthwise(self.isa, &xs[n * per..(n + 1) * per], g.c, wd, o, &win, 0..p, &epi, res, dst);
                }
            }
            (Prepared::Panel { panel, pointwise }, Val::F32(a)) => {
                let xs = a.as_slice().ok_or_else(|| internal(si, "conv input not contiguous"))?;
                let fits = xs.len() == b * g.h * g.w * g.c
                    && panel.k == g.k()
                    && panel.blocks == g.og().div_ceil(16)
                    && panel.bytes() == g.groups * panel.blocks * panel.k * 64
                    && alpha.is_none_or(|a| a.len() == o);
                if !fits {
                    return Err(internal(si, "conv buffers do not match its weight"));
                }
                self.conv_f32_panel(xs, panel, *pointwise, g, &win, (alpha, scale, bias), residual, e, &mut out);
            }
            (Prepared::Planar { w: wd, .. }, Val::F32(a)) => {
                let xs = a.as_slice().ok_or_else(|| internal(si, "conv input not contiguous"))?;
                let fits = xs.len() == b * g.h * g.w * g.c
                    && wd.len() == o * g.k()
                    && crate::kernels::planar::fits(g.c, o, g.stride, g.groups)
                    && alpha.is_none_or(|v| v.len() == o)
                    && scale.is_none_or(|v| v.len() == o)
                    && bias.is_none_or(|v| v.len() == o);
                if !fits {
                    return Err(internal(si, "planar conv buffers do not match its weight"));
                }
                let epi = crate::kernels::ChannelEpilogue { mult: alpha, scale, bias, act: e.act };
                self.conv_planar(si, xs, wd, g, epi, residual, &mut out, arena)?;
            }
            (Prepared::Direct { w: wd, epi, taps, kernel, .. }, Val::F32(a)) => {
                let xs = a.as_slice().ok_or_else(|| internal(si, "conv input not contiguous"))?;
                let o4 = o.div_ceil(4) * 4;
                let vectors = [alpha.is_some(), scale.is_some(), bias.is_some()].iter().filter(|v| **v).count();
                let fits = xs.len() == b * g.h * g.w * g.c
                    && wd.len() == g.k() * o4
                    && epi.len() == vectors * o4
                    && taps.len() == g.k();
                if !fits || g.groups != 1 {
                    return Err(internal(si, "direct conv buffers do not match its weight"));
                }
                self.conv_direct(xs, (wd, epi, taps), *kernel, g, residual, &mut out, arena);
            }
            (Prepared::DirectI8 { w: wd, corr, epi, kernel, .. }, Val::Q(q)) => {
                let (o4, c4) = (o.div_ceil(4) * 4, g.c.div_ceil(4) * 4);
                let vectors = 1 + usize::from(scale.is_some()) + usize::from(bias.is_some());
                let fits = q.k == g.c
                    && q.k_pad >= g.c
                    && q.rows() == b * g.h * g.w
                    && q.data.len() >= q.rows() * q.k_pad
                    && wd.len() == g.kh * g.kw * c4 * o4
                    && corr.len() == o4
                    && epi.len() == vectors * o4
                    && g.groups == 1;
                if !fits {
                    return Err(internal(si, "int8 direct conv buffers do not match its weight"));
                }
                self.conv_direct_i8(q, (wd, corr, epi), *kernel, g, residual, &mut out, arena);
            }
            (Prepared::Dense { w_t }, Val::Q(q)) => {
                if w_t.dim() != (g.k(), o) || alpha.is_some_and(|a| a.len() != o) {
                    return Err(internal(si, "conv weight does not match its geometry"));
                }
                self.conv_dense(si, q, w_t, g, &win, alpha, &mut out, arena)?;
                finish(&mut out, o, scale, bias, residual, e.act);
            }
            _ => return Err(internal(si, "convolution prepared for another kind of input")),
        }
        let y = shaped(si, &[b, g.oh, g.ow, o], out)?;
        Ok(match e.quantize {
            Some(rq) => self.requantize(y, rq, arena),
            None => Val::F32(y),
        })
    }

    /// The implicit-GEMM int8 path: per sample, group and block of output pixels, a gather
    /// into rows and the tq2 kernel over them.
    #[allow(clippy::too_many_arguments)]
    fn conv_tq2(
        &self,
        q: &QTensor,
        (packed, panel): (&[u8], Option<&Panel>),
        k_pad: usize,
        alpha: &[f32],
        g: &ConvGeom,
        win: &Window,
        (scale, bias): (Option<&[f32]>, Option<&[f32]>),
        residual: Option<&[f32]>,
        e: &Epilogue,
        out: &mut [f32],
    ) {
        let (p, o, og, cg) = (g.pixels(), g.o, g.og(), g.cg());
        let b = q.rows() / (g.h * g.w).max(1);
        // Gathered rows per block: about 64 KB of int8 values (at most 256 rows), in whole
        // groups of 8 rows; larger for a panel that does not stay in cache (`row_blocks`).
        let panel_bytes = panel.map_or(packed.len(), |pn| pn.data.len());
        let (rows, blocks) = row_blocks(b * p, k_pad, panel_bytes, 8, (1 << 16, 256));
        let per = g.h * g.w * q.k_pad;
        let row_bytes = k_pad / 4;
        let out_ptr = Out(out.as_mut_ptr());
        // One block of output rows (pixels of one or more samples), with its buffers.
        let task = |bufs: &mut (Vec<i8>, Vec<i32>, Vec<f32>, Vec<f32>), t: usize| {
            let row0 = t * rows;
            let nr = (row0 + rows).min(b * p) - row0;
            let (cols, xsum, sx, tmp) = bufs;
            sx.clear();
            for (n, pixels, _) in sample_pieces(p, row0..row0 + nr) {
                sx.extend(std::iter::repeat_n(q.row_scale[n * g.h * g.w], pixels.len()));
            }
            for gi in 0..g.groups {
                let c0 = gi * og;
                for (n, pixels, at) in sample_pieces(p, row0..row0 + nr) {
                    let xs = &q.data[n * per..(n + 1) * per];
                    let (c, s) = (&mut cols[at * k_pad..], &mut xsum[at..]);
                    im2col_i8(xs, q.k_pad, gi * cg, cg, win, pixels, c, k_pad, s, panel.is_some());
                }
                let (dst, res, act) = if g.groups == 1 {
                    // SAFETY: rows row0 .. row0 + nr of `out` (o values each) are this task's.
                    (
                        unsafe { out_ptr.get().add(row0 * o) },
                        residual.map_or(std::ptr::null(), |r| r[row0 * o..].as_ptr()),
                        e.act,
                    )
                } else {
                    (tmp.as_mut_ptr(), std::ptr::null(), None)
                };
                let args = GemmArgs {
                    x: cols.as_ptr(),
                    w: packed[c0 * row_bytes..].as_ptr(),
                    alpha: alpha[c0..].as_ptr(),
                    scale: scale.map_or(std::ptr::null(), |s| s[c0..].as_ptr()),
                    bias: bias.map_or(std::ptr::null(), |s| s[c0..].as_ptr()),
                    residual: res,
                    out: dst,
                    xsum: xsum.as_ptr(),
                    sx: sx.as_ptr(),
                    rows: nr as u64,
                    tile_begin: 0,
                    tile_end: og as u64,
                };
                match panel {
                    #[cfg(target_arch = "x86_64")]
                    Some(panel) => {
                        let call = Call {
                            x: cols.as_ptr(),
                            stride: k_pad,
                            rows: nr,
                            sx: sx.as_ptr(),
                            out: dst,
                            n: og,
                            residual: res,
                            og,
                            group: gi,
                            alpha: &alpha[c0..c0 + og],
                            scale: scale.map(|s| &s[c0..c0 + og]),
                            bias: bias.map(|s| &s[c0..c0 + og]),
                            act,
                            flipped: true,
                        };
                        // SAFETY: the model's level (capped at the CPU's) has AVX-512 VNNI; cols
                        // holds nr rows of k_pad codes, sx nr values, dst (and res) nr rows of
                        // og = n values, the vectors og values of this group.
                        unsafe { crate::kernels::panel_product(self.isa, panel, &call) };
                    }
                    // SAFETY: cols holds nr rows of k_pad codes, xsum and sx nr values; the
                    // group's weight rows, scales and biases start at channel c0 of o (sizes
                    // checked by the caller); dst (and res) hold nr rows of og values (groups
                    // > 1: tmp) or of o = og values (one group).
                    _ => unsafe { crate::kernels::tq2::gemm(self.isa, &args, og, k_pad, act, 0..og) },
                }
                if g.groups > 1 {
                    for r in 0..nr {
                        // SAFETY: row row0 + r of `out` is this task's; channels c0 .. c0 + og.
                        let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((row0 + r) * o + c0), og) };
                        dst.copy_from_slice(&tmp[r * og..(r + 1) * og]);
                        if let Some(rs) = residual {
                            dst.iter_mut().zip(&rs[(row0 + r) * o + c0..]).for_each(|(v, x)| *v += x);
                        }
                        if let Some(a) = e.act {
                            dst.iter_mut().for_each(|v| *v = a.apply(*v));
                        }
                    }
                }
            }
        };
        let new_bufs = || (vec![0i8; rows * k_pad], vec![0i32; rows], Vec::with_capacity(rows), vec![0f32; rows * og]);
        let work = b * p * o * k_pad / 4;
        match self.pool_for(work).filter(|_| blocks > 1) {
            Some(pool) => pool.install(|| (0..blocks).into_par_iter().for_each_init(new_bufs, task)),
            None => {
                let mut bufs = new_bufs();
                (0..blocks).for_each(|t| task(&mut bufs, t));
            }
        }
    }

    /// A pointwise convolution on the AVX-512 VNNI kernel, in place on the int8 rows: chunks
    /// of rows split over the pool when the work is worth it.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pointwise_vnni(
        &self,
        q: &QTensor,
        panel: &Panel,
        alpha: &[f32],
        (scale, bias): (Option<&[f32]>, Option<&[f32]>),
        residual: Option<&[f32]>,
        e: &Epilogue,
        out: &mut [f32],
    ) {
        let (rows, o) = (q.rows(), alpha.len());
        const CHUNK: usize = 96;
        let out_ptr = Out(out.as_mut_ptr());
        let run = |chunk: usize| {
            let r0 = chunk * CHUNK;
            let nr = (rows - r0).min(CHUNK);
            let call = Call {
                x: q.data[r0 * q.k_pad..].as_ptr(),
                stride: q.k_pad,
                rows: nr,
                sx: q.row_scale[r0..].as_ptr(),
                // SAFETY: rows r0 .. r0 + nr of `out` are this chunk's.
                out: unsafe { out_ptr.get().add(r0 * o) },
                n: o,
                residual: residual.map_or(std::ptr::null(), |r| r[r0 * o..].as_ptr()),
                og: o,
                group: 0,
                alpha,
                scale,
                bias,
                act: e.act,
                flipped: false,
            };
            // SAFETY: the model's level has AVX-512 VNNI (`Model::set_isa` caps it); the int8
            // rows r0 .. r0 + nr hold k_pad codes each (checked by the caller), out and the
            // residual o values per row, the vectors o values.
            unsafe { crate::kernels::panel_product(self.isa, panel, &call) };
        };
        let chunks = rows.div_ceil(CHUNK);
        match self.pool_for(rows * o * q.k_pad / 4).filter(|_| chunks > 1) {
            Some(pool) => pool.install(|| (0..chunks).into_par_iter().for_each(run)),
            None => (0..chunks).for_each(run),
        }
    }

    /// The f32 path on the panel kernels: per block of output rows (pixels of one or more
    /// samples, [`row_blocks`]), a gather into rows (none for 1x1: the input rows themselves)
    /// and the product with the epilogue in registers. Tasks are (row block, channel chunk);
    /// channels split only when there are too few row blocks to keep the pool busy.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_f32_panel(
        &self,
        xs: &[f32],
        panel: &F32Panel,
        pointwise: bool,
        g: &ConvGeom,
        win: &Window,
        (mult, scale, bias): ChannelVecs<'_>,
        residual: Option<&[f32]>,
        e: &Epilogue,
        out: &mut [f32],
    ) {
        let (p, o, og, cg, k) = (g.pixels(), g.o, g.og(), g.cg(), g.k());
        let pixels_in = g.h * g.w;
        let b = out.len() / (p * o).max(1);
        let (rows, pblocks) = row_blocks(b * p, 4 * k, panel.bytes(), fconv::MR, (1 << 18, 240));
        let work = b * p * o * k;
        let pool = self.pool_for(work);
        let threads = pool.map_or(1, |p| p.current_num_threads());
        let nblocks = panel.blocks;
        let chunks = if pblocks >= 2 * threads { 1 } else { nblocks.div_ceil(fconv::NB).min(2 * threads) };
        let per_chunk = nblocks.div_ceil(chunks).div_ceil(fconv::NB) * fconv::NB;
        let chunks = nblocks.div_ceil(per_chunk);
        let out_ptr = Out(out.as_mut_ptr());
        let task = |cols: &mut Vec<f32>, t: usize| {
            let (pb, ch) = (t / chunks, t % chunks);
            let row0 = pb * rows;
            let nr = (row0 + rows).min(b * p) - row0;
            let blocks = ch * per_chunk..((ch + 1) * per_chunk).min(nblocks);
            for gi in 0..g.groups {
                let c0 = gi * og;
                let (x, stride) = if pointwise {
                    // 1x1, stride 1: output row r reads input row r, across samples alike.
                    (xs[row0 * g.c..].as_ptr(), g.c)
                } else {
                    for (n, pixels, at) in sample_pieces(p, row0..row0 + nr) {
                        let sample = &xs[n * pixels_in * g.c..][..pixels_in * g.c];
                        im2col_f32(sample, g.c, gi * cg, cg, win, pixels, &mut cols[at * k..]);
                    }
                    (cols.as_ptr(), k)
                };
                let call = FCall {
                    x,
                    stride,
                    rows: nr,
                    // SAFETY: rows row0 .. row0 + nr of `out` are this task's (its channels).
                    out: unsafe { out_ptr.get().add(row0 * o + c0) },
                    n: o,
                    residual: residual.map_or(std::ptr::null(), |r| r[row0 * o + c0..].as_ptr()),
                    og,
                    group: gi,
                    mult: mult.map(|m| &m[c0..c0 + og]),
                    scale: scale.map(|s| &s[c0..c0 + og]),
                    bias: bias.map(|s| &s[c0..c0 + og]),
                    act: e.act,
                    blocks: blocks.clone(),
                };
                // SAFETY: the model's level is capped at the CPU's; x holds nr rows
                // of `stride >= k` floats (the gathered rows, or the input rows from row0,
                // which exist: 1x1 stride 1 keeps pixels), out and the residual nr rows of o
                // floats from channel c0, the vectors og values (checked by the caller);
                // `blocks` is within the panel's.
                unsafe { fconv::product(self.isa, panel, &call) };
            }
        };
        let tasks = pblocks * chunks;
        let cols_len = if pointwise { 0 } else { rows * k };
        match pool.filter(|_| tasks > 1) {
            Some(pool) => pool.install(|| (0..tasks).into_par_iter().for_each_init(|| vec![0f32; cols_len], task)),
            None => {
                let mut cols = vec![0f32; cols_len];
                (0..tasks).for_each(|t| task(&mut cols, t));
            }
        }
    }

    /// Int8 activations with a weight that is not ternary (f32 values or int8 codes): a GEMM
    /// over gathered rows per sample and group, then the weight's scale times the sample's
    /// activation scale.
    #[allow(clippy::too_many_arguments)]
    fn conv_dense(
        &self,
        si: usize,
        q: &QTensor,
        w_t: &Array2<f32>,
        g: &ConvGeom,
        win: &Window,
        alpha: Option<&[f32]>,
        out: &mut [f32],
        arena: &mut Arena,
    ) -> Result<(), RunError> {
        let (p, o, og, cg, k) = (g.pixels(), g.o, g.og(), g.cg(), g.k());
        let pixels_in = g.h * g.w;
        let b = out.len() / (p * o).max(1);
        if q.data.len() < b * pixels_in * q.k_pad || q.row_scale.len() < b * pixels_in {
            return Err(internal(si, "conv input does not match its geometry"));
        }
        let err = |e: ndarray::ShapeError| internal(si, e.to_string());
        let mut cols = arena.f32_overwritten(p * k);
        for n in 0..b {
            let xs = &q.data[n * pixels_in * q.k_pad..][..pixels_in * q.k_pad];
            let sx = q.row_scale[n * pixels_in];
            for gi in 0..g.groups {
                im2col_f32(xs, q.k_pad, gi * cg, cg, win, 0..p, &mut cols);
                let xm = ArrayView2::from_shape((p, k), &cols[..]).map_err(err)?;
                let wg = w_t.slice(s![.., gi * og..(gi + 1) * og]);
                let mut om = ArrayViewMut2::from_shape((p, o), &mut out[n * p * o..(n + 1) * p * o]).map_err(err)?;
                let mut og_view = om.slice_mut(s![.., gi * og..(gi + 1) * og]);
                self.sgemm(&xm, &wg, &mut og_view);
                if let Some(alpha) = alpha {
                    og_view
                        .rows_mut()
                        .into_iter()
                        .for_each(|mut r| r.iter_mut().zip(&alpha[gi * og..]).for_each(|(v, a)| *v *= sx * a));
                }
            }
        }
        arena.f32s.push(cols);
        Ok(())
    }
}

/// Without x86-64 there is no VNNI panel (never made: `cpu::best()` is `Generic` there).
#[cfg(not(target_arch = "x86_64"))]
mod no_vnni {
    #[derive(Debug)]
    pub(crate) struct Panel;

    impl Panel {
        pub fn new(_: &[i8], _: usize, _: usize, _: usize, _: usize) -> Panel {
            Panel
        }
    }
}
