//! The values steps pass each other: f32 arrays (in their slot's physical layout) and int8
//! rows.
//!
//! Rules:
//! - An f32 value is a standard-layout (contiguous, row-major) array of its physical shape;
//!   steps that make arrays by other means copy them into a pooled buffer, so every reader may
//!   take `as_slice()`.
//! - A [`QTensor`] holds rows of the last physical axis (`k` values, padded to `k_pad`) with one
//!   scale and one code sum per row; every row of a sample carries the sample's scale.

use ndarray::{ArrayD, IxDyn};

use crate::aligned::AlignedI8;

/// Quantized rows: `rows` of `k` values padded to `k_pad`, with a scale and a sum per row.
#[derive(Clone, Debug)]
pub(crate) struct QTensor {
    /// Physical shape (the last axis is `k`).
    pub shape: Vec<usize>,
    pub k: usize,
    pub k_pad: usize,
    pub data: AlignedI8,
    pub row_scale: Vec<f32>,
    pub row_sum: Vec<i32>,
}

impl QTensor {
    pub fn rows(&self) -> usize {
        self.row_scale.len()
    }

    /// The f32 values `q * scale` (into `out`, `rows * k` values).
    pub fn dequantize_into(&self, out: &mut [f32]) {
        for (r, o) in out.chunks_mut(self.k.max(1)).enumerate() {
            let s = self.row_scale[r];
            let row = &self.data[r * self.k_pad..r * self.k_pad + self.k];
            o.iter_mut().zip(row).for_each(|(d, v)| *d = *v as f32 * s);
        }
    }

    pub fn dequantize(&self) -> ArrayD<f32> {
        let mut out = vec![0.0; self.rows() * self.k];
        self.dequantize_into(&mut out);
        ArrayD::from_shape_vec(IxDyn(&self.shape), out).unwrap_or_else(|_| ArrayD::zeros(IxDyn(&self.shape)))
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Val {
    F32(ArrayD<f32>),
    Q(QTensor),
}
