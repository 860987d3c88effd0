//! Convolutions on their layer's own JIT kernel (`Step::Conv::kernel`, made by the compiler's
//! `codegen::conv_direct`): the weights laid out for it once at load ([`Prepared::Direct`],
//! [`Prepared::DirectI8`]), then per sample one padded (for int8: biased) copy of the input
//! and kernel calls over blocks of output rows.
//!
//! Rules:
//! - The kernel's ABI is `kernel::ConvArgs`; its specialization matches the step's geometry
//!   and epilogue (the compiler made both from the same facts; the plan's validation checks
//!   the layer is one such a kernel runs, the callers check every buffer's size).
//! - int8: inputs become bytes `x + 128` (padding and padded channels 128) and the kernel
//!   subtracts `128 * sum(w)` per channel (`corr`), so the sums are exact.

use rayon::prelude::*;

use super::Model;
use super::arena::Arena;
use super::conv::{Out, Prepared};
use super::plan::{ConvGeom, GemmWeight};
use super::value::QTensor;

/// The per-channel vectors a direct kernel reads (`kernel::ConvArgs::epi`): the present ones
/// of `vecs`, in order, each `o = w.n` values padded with zeros to `o4`.
fn channel_vectors(w: &GemmWeight, vecs: [Option<&[f32]>; 3], o4: usize) -> Result<Vec<f32>, String> {
    let mut epi = Vec::new();
    for v in vecs.into_iter().flatten() {
        if v.len() != w.n {
            return Err(format!("an epilogue vector of `{}` holds {} values, expected {}", w.name, v.len(), w.n));
        }
        epi.extend_from_slice(v);
        epi.resize(epi.len() + o4 - w.n, 0.0);
    }
    Ok(epi)
}

impl Prepared {
    /// The weights and vectors of a direct convolution kernel (see [`Prepared::Direct`]):
    /// `scale` and `bias` are the epilogue's vectors, the multiplier is the weight's scale.
    pub fn direct(
        w: &GemmWeight,
        g: &ConvGeom,
        (scale, bias): (Option<&[f32]>, Option<&[f32]>),
        kernel: crate::kernel::ConvKernelFn,
    ) -> Result<Prepared, String> {
        let (o, k, c, taps) = (g.o, g.k(), g.c, g.kh * g.kw);
        if g.groups != 1 {
            return Err(format!("direct convolution kernel for `{}` with {} groups", w.name, g.groups));
        }
        let values = Self::values(w, g)?;
        let o4 = o.div_ceil(4) * 4;
        // Stored (c, u, v) -> kernel (u, v, c): position t = tap * c + ci reads ci * taps + tap.
        let mut wd = vec![0.0; k * o4];
        for t in 0..k {
            let from = (t % c) * taps + t / c;
            for oc in 0..o {
                wd[t * o4 + oc] = values[oc * k + from];
            }
        }
        let epi = channel_vectors(w, [w.alpha.as_deref(), scale, bias], o4)?;
        let taps = crate::kernel::conv_taps(c, g.w + 2 * g.pad[1], g.kh, g.kw, g.dil);
        Ok(Prepared::Direct { w: wd, epi, taps, o, kernel })
    }

    /// The codes and vectors of an int8 direct convolution kernel (see [`Prepared::DirectI8`]).
    pub fn direct_i8(
        w: &GemmWeight,
        g: &ConvGeom,
        (scale, bias): (Option<&[f32]>, Option<&[f32]>),
        kernel: crate::kernel::ConvKernelFn,
    ) -> Result<Prepared, String> {
        let (o, k, c, taps) = (g.o, g.k(), g.c, g.kh * g.kw);
        let alpha = w.alpha.as_deref().ok_or_else(|| format!("int8 direct convolution `{}` without scales", w.name))?;
        if g.groups != 1 {
            return Err(format!("direct convolution kernel for `{}` with {} groups", w.name, g.groups));
        }
        let values = Self::values(w, g)?;
        if values.iter().any(|v| v.fract() != 0.0 || v.abs() > 127.0) {
            return Err(format!("int8 direct convolution `{}` over values that are not int8 codes", w.name));
        }
        let (o4, groups) = (o.div_ceil(4) * 4, c.div_ceil(4));
        let mut codes = vec![0i8; taps * groups * o4 * 4];
        let mut corr = vec![0i32; o4];
        for tap in 0..taps {
            for ci in 0..c {
                let (gi, m) = (ci / 4, ci % 4);
                for oc in 0..o {
                    let code = values[oc * k + ci * taps + tap] as i8;
                    let (q, l) = (oc / 4, oc % 4);
                    codes[(((tap * groups + gi) * (o4 / 4) + q) * 4 + l) * 4 + m] = code;
                    corr[oc] -= 128 * i32::from(code);
                }
            }
        }
        let epi = channel_vectors(w, [Some(alpha), scale, bias], o4)?;
        Ok(Prepared::DirectI8 { w: codes, corr, epi, o, kernel })
    }
}

impl Model {
    /// A direct convolution JIT kernel over every sample: the input copied once into a
    /// zero-padded buffer (none without padding), then per sample and block of output rows one
    /// kernel call (blocks split over the pool when the work is worth it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_direct(
        &self,
        xs: &[f32],
        (w, epi, taps): (&[f32], &[f32], &[i32]),
        kernel: crate::kernel::ConvKernelFn,
        g: &ConvGeom,
        residual: Option<&[f32]>,
        out: &mut [f32],
        arena: &mut Arena,
    ) {
        let (hp, wp) = (g.h + 2 * g.pad[0], g.w + 2 * g.pad[1]);
        let (per_in, per_out) = (hp * wp * g.c, g.oh * g.ow * g.o);
        let b = out.len() / per_out.max(1);
        let padded = (g.pad != [0, 0]).then(|| {
            let mut buf = arena.f32(b * per_in);
            let row = g.w * g.c;
            for n in 0..b {
                for y in 0..g.h {
                    let src = &xs[(n * g.h + y) * row..][..row];
                    let at = n * per_in + ((y + g.pad[0]) * wp + g.pad[1]) * g.c;
                    buf[at..at + row].copy_from_slice(src);
                }
            }
            buf
        });
        let x = padded.as_deref().unwrap_or(xs);
        self.direct_calls(
            b,
            g,
            |n, r0, r1, out: *mut f32| {
                let a = crate::kernel::ConvArgs {
                    x: x[n * per_in..].as_ptr().cast(),
                    w: w.as_ptr().cast(),
                    epi: epi.as_ptr(),
                    taps: taps.as_ptr(),
                    residual: residual.map_or(std::ptr::null(), |r| r[n * per_out..].as_ptr()),
                    out,
                    row_begin: r0 as u64,
                    row_end: r1 as u64,
                    sx: std::ptr::null(),
                    corr: std::ptr::null(),
                };
                // SAFETY: the kernel was compiled for this geometry (`Step::Conv::kernel`,
                // checked by the plan's validation); the arguments hold the sample's padded input
                // and the sizes the kernel's specialization reads (checked by the caller).
                unsafe { kernel(&a) }
            },
            out,
        );
        if let Some(buf) = padded {
            arena.f32s.push(buf);
        }
    }

    /// An f32 convolution with few input channels on the planar kernel (`kernels::planar`):
    /// every sample transposed once into zero-padded planes, then calls over blocks of output
    /// rows as the JIT kernels'.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_planar(
        &self,
        si: usize,
        xs: &[f32],
        w: &[f32],
        g: &ConvGeom,
        epi: crate::kernels::ChannelEpilogue<'_>,
        residual: Option<&[f32]>,
        out: &mut [f32],
        arena: &mut Arena,
    ) -> Result<(), super::RunError> {
        let (hp, wp) = (g.h + 2 * g.pad[0], g.w + 2 * g.pad[1]);
        let (plane, per_out) = (hp * wp, g.oh * g.ow * g.o);
        let b = out.len() / per_out.max(1);
        let mut buf = arena.f32(b * g.c * plane);
        for (n, sample) in xs.chunks_exact(g.h * g.w * g.c).take(b).enumerate() {
            for (y, src) in sample.chunks_exact(g.w * g.c).enumerate() {
                for ci in 0..g.c {
                    let at = (n * g.c + ci) * plane + (y + g.pad[0]) * wp + g.pad[1];
                    let dst = &mut buf[at..at + g.w];
                    if g.c == 1 {
                        dst.copy_from_slice(src);
                    } else {
                        dst.iter_mut().zip(src[ci..].iter().step_by(g.c)).for_each(|(d, s)| *d = *s);
                    }
                }
            }
        }
        let call = |n: usize, rows: std::ops::Range<usize>| crate::kernels::planar::PlanarCall {
            x: &buf[n * g.c * plane..(n + 1) * g.c * plane],
            c: g.c,
            hp,
            wp,
            w,
            o: g.o,
            kh: g.kh,
            kw: g.kw,
            dil: g.dil,
            ow: g.ow,
            rows,
            epi,
            residual: residual.map(|r| &r[n * per_out..(n + 1) * per_out]),
        };
        if out.len() < b * per_out || (0..b).any(|n| !crate::kernels::planar::sizes_fit(&call(n, 0..g.oh), per_out)) {
            arena.f32s.push(buf);
            return Err(super::internal(si, "planar conv buffers do not match its geometry"));
        }
        let isa = self.isa;
        self.direct_calls(
            b,
            g,
            // SAFETY: the model's level is capped at the CPU's; the sample's output holds
            // per_out floats and the sizes fit (checked above for every sample's rows); this
            // task writes only rows r0 .. r1, no other task touches them.
            |n, r0, r1, sample: *mut f32| unsafe { crate::kernels::planar::conv(isa, &call(n, r0..r1), sample) },
            out,
        );
        arena.f32s.push(buf);
        Ok(())
    }

    /// The calls of a direct convolution over `b` samples: one per sample, or per block of
    /// output rows when there are fewer samples than twice the threads; tasks split over the
    /// pool when the work is worth it. `run(n, r0, r1, sample_out)` computes sample `n`'s rows
    /// `r0 .. r1`, `sample_out` pointing at the sample's output (each task writes only its
    /// rows).
    fn direct_calls(
        &self,
        b: usize,
        g: &ConvGeom,
        run_rows: impl Fn(usize, usize, usize, *mut f32) + Sync,
        out: &mut [f32],
    ) {
        let per_out = g.oh * g.ow * g.o;
        let pool = self.pool_for(b * per_out * g.k());
        let threads = pool.map_or(1, |p| p.current_num_threads());
        let blocks = if b >= 2 * threads { 1 } else { (2 * threads).div_ceil(b.max(1)).min(g.oh.max(1)) };
        let rows = g.oh.div_ceil(blocks.max(1)).max(1);
        let blocks = g.oh.div_ceil(rows);
        let out_ptr = Out::new(out.as_mut_ptr());
        let run = |t: usize| {
            let (n, blk) = (t / blocks, t % blocks);
            let r0 = blk * rows;
            // SAFETY: sample n's output starts at n * per_out (the caller sized `out` for b
            // samples); this task writes only its rows r0 .. r0 + rows of it.
            run_rows(n, r0, (r0 + rows).min(g.oh), unsafe { out_ptr.get().add(n * per_out) });
        };
        let tasks = b * blocks;
        match pool.filter(|_| tasks > 1) {
            Some(pool) => pool.install(|| (0..tasks).into_par_iter().for_each(run)),
            None => (0..tasks).for_each(run),
        }
    }

    /// An int8 direct convolution JIT kernel: every sample's codes copied once, biased to
    /// bytes `x + 128`, into a padded buffer (padding and padded channels 128), then one
    /// kernel call per sample (or block of rows), as [`Model::conv_direct`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_direct_i8(
        &self,
        q: &QTensor,
        (w, corr, epi): (&[i8], &[i32], &[f32]),
        kernel: crate::kernel::ConvKernelFn,
        g: &ConvGeom,
        residual: Option<&[f32]>,
        out: &mut [f32],
        arena: &mut Arena,
    ) {
        let (hp, wp, c4) = (g.h + 2 * g.pad[0], g.w + 2 * g.pad[1], g.c.div_ceil(4) * 4);
        let (per_in, per_out) = (hp * wp * c4, g.oh * g.ow * g.o);
        let b = out.len() / per_out.max(1);
        let mut buf = arena.i8_aligned(b * per_in, Some(i8::MIN));
        for n in 0..b {
            for y in 0..g.h {
                for x in 0..g.w {
                    let src = &q.data[((n * g.h + y) * g.w + x) * q.k_pad..][..g.c];
                    let at = n * per_in + ((y + g.pad[0]) * wp + x + g.pad[1]) * c4;
                    // x + 128 as a byte: flip the sign bit.
                    buf[at..at + g.c].iter_mut().zip(src).for_each(|(d, s)| *d = *s ^ i8::MIN);
                }
            }
        }
        let xs: &[i8] = &buf;
        self.direct_calls(
            b,
            g,
            |n, r0, r1, out: *mut f32| {
                let a = crate::kernel::ConvArgs {
                    x: xs[n * per_in..].as_ptr().cast(),
                    w: w.as_ptr().cast(),
                    epi: epi.as_ptr(),
                    taps: std::ptr::null(),
                    residual: residual.map_or(std::ptr::null(), |r| r[n * per_out..].as_ptr()),
                    out,
                    row_begin: r0 as u64,
                    row_end: r1 as u64,
                    sx: &q.row_scale[n * g.h * g.w],
                    corr: corr.as_ptr(),
                };
                // SAFETY: as in `conv_direct`, for the int8 kernel and its biased input.
                unsafe { kernel(&a) }
            },
            out,
        );
        arena.i8s.push(buf.into_vec());
    }
}
