//! Int8 quantization of activations in the engine: per-sample absmax (or a fixed scale) into
//! padded rows with per-row scales and code sums (the definitions are `crate::ops`).
//!
//! Rules:
//! - The same function on the same values as the interpreter's `quantize_i8`, so integer
//!   products downstream are bit-identical; layout does not matter (one scale per sample).
//! - Rows are the last physical axis, padded with zeros to a multiple of the consumer's
//!   alignment (`plan::GEMM_ALIGN` or `plan::CONV_ALIGN`).

use ndarray::ArrayViewD;
use rayon::prelude::*;

use super::arena::Arena;
use super::plan::padded_len;
use super::value::QTensor;
use crate::ops::{absmax_scale, quantize_row_padded};

/// What quantizing one value weighs against an f32 multiply-add when deciding to split
/// (`Model::pool_for`): a pass over memory, so 512k values reach the default threshold.
/// (Splitting the MNIST MLP's 100k-value batch-128 input made it slower, measured.)
pub(crate) const QUANTIZE_WORK: usize = 16;

/// Quantizes per sample (dimension 0; per tensor below rank 2) into rows of the last axis,
/// padded to a multiple of `align`. `pool(values)`: the pool to split over, if the batch is
/// worth it.
pub(crate) fn quantize_rows<'p>(
    x: ArrayViewD<'_, f32>,
    fixed: Option<f32>,
    align: usize,
    arena: &mut Arena,
    pool: impl FnOnce(usize) -> Option<&'p rayon::ThreadPool>,
) -> QTensor {
    let shape = x.shape().to_vec();
    let k = shape.last().copied().unwrap_or(1).max(1);
    let k_pad = padded_len(k, align);
    let x = x.as_standard_layout();
    let all = x.as_slice().unwrap_or(&[]);
    let rows = all.len() / k;
    let samples = if shape.len() >= 2 { shape[0].max(1) } else { 1 };
    let per_sample = (all.len() / samples).max(1);
    let sample_rows = per_sample.div_ceil(k);
    // Every row's k values, scale and sum are written below; only the padding is zeroed.
    let mut data = arena.i8_aligned(rows * k_pad, None);
    let mut row_scale = arena.f32_overwritten(rows);
    let mut row_sum = arena.i32_overwritten(rows);
    // One sample: its values, then its rows' codes, scales and sums.
    type Sample<'a> = (((&'a [f32], &'a mut [i8]), &'a mut [f32]), &'a mut [i32]);
    let one = |(((sample, data), scales), sums): Sample<'_>| quantize_sample(sample, k, fixed, data, scales, sums);
    // Quantizing is a pass over memory: only large batches are worth a second thread.
    if let Some(pool) = pool(all.len()).filter(|_| samples > 1) {
        pool.install(|| {
            (all.par_chunks(per_sample).zip(data.par_chunks_mut(sample_rows * k_pad)))
                .zip(row_scale.par_chunks_mut(sample_rows))
                .zip(row_sum.par_chunks_mut(sample_rows))
                .for_each(one)
        });
    } else {
        (all.chunks(per_sample).zip(data.chunks_mut(sample_rows * k_pad)))
            .zip(row_scale.chunks_mut(sample_rows))
            .zip(row_sum.chunks_mut(sample_rows))
            .for_each(one);
    }
    QTensor { shape, k, k_pad, data, row_scale, row_sum }
}

/// Quantizes one sample (rows of `k` values) with its absmax scale or `fixed` into rows of
/// `data` (each `data.len() / rows` long, zero past `k`), one scale and code sum per row.
pub(crate) fn quantize_sample(
    sample: &[f32],
    k: usize,
    fixed: Option<f32>,
    data: &mut [i8],
    scales: &mut [f32],
    sums: &mut [i32],
) {
    let (scale, factor) = match fixed {
        Some(f) => (f, 1.0 / f),
        None => absmax_scale(sample),
    };
    let k_pad = data.len() / scales.len().max(1);
    for (((row, dst), s), sum) in sample.chunks(k).zip(data.chunks_mut(k_pad)).zip(scales).zip(sums) {
        *sum = quantize_row_padded(row, factor, dst);
        *s = scale;
    }
}
