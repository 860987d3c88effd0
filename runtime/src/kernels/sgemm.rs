//! The f32 GEMM behind every float product of the runtime: the FP32 baseline's layers, f32
//! heads of ternary models, f32-activation ternary products at batch (over decoded codes) and
//! float convolutions.
//!
//! Rules:
//! - One entry point, [`sgemm`], over ndarray views of any strides; it runs on the `gemm` crate
//!   (AVX-512 or AVX2/FMA micro-kernels chosen at run time: the `x86-v4` feature; AVX-512
//!   halved ResNet-18's FP32 latency on a CPU with full-width AVX-512, no packing of the weight for a single row, so
//!   batch-1 products are GEMVs that read each weight once). matrixmultiply, which ndarray uses,
//!   packs the weight on every call: 7x slower on a 784x256 layer at one row, measured.
//! - Threads: inside a model's rayon pool (`threads != 1`) a product of at least
//!   [`PARALLEL_MIN_MACS`] multiply-adds may split over the pool's threads; a smaller one, or any
//!   on the calling thread only (`threads == 1`), never spawns.
//! - Float sums are in the GEMM's own order: the result differs from the interpreter's f64
//!   accumulation by rounding only.

use ndarray::{ArrayView2, ArrayViewMut2};

/// Multiply-adds below which a product runs on one thread even inside a pool: entering the pool
/// wakes a worker and then the caller, 20-40 us on the 2-vCPU VM this was measured on, more
/// than the second core saves. Measured with `triton bench` on the MNIST MLP, 2 threads against
/// one: below about 8M multiply-adds (its 784x256 layer up to batch 32) both the FP32 GEMM and
/// the ternary kernel were slower split (1.5-2x at batch 16 with a 2M threshold); at 13M
/// (batch 64) they broke even, at 26M (batch 128) splitting saved 10-25%.
pub const PARALLEL_MIN_MACS: usize = 1 << 23;

/// `out = x . w` (`[m, k] x [k, n] -> [m, n]`), overwriting `out`.
///
/// # Panics
/// If the shapes do not chain; callers check them first (an internal error otherwise).
pub fn sgemm(x: &ArrayView2<'_, f32>, w: &ArrayView2<'_, f32>, out: &mut ArrayViewMut2<'_, f32>, parallel: bool) {
    let ((m, k), (k2, n)) = (x.dim(), w.dim());
    assert!(k == k2 && out.dim() == (m, n), "sgemm shapes [{m}, {k}] x [{k2}, {n}] -> {:?}", out.dim());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let parallelism = if parallel && rayon::current_num_threads() > 1 && m * n * k >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    let (xs, ws) = (x.strides(), w.strides());
    let (os0, os1) = (out.strides()[0], out.strides()[1]);
    // SAFETY: the pointers and strides describe the three views exactly (ndarray guarantees
    // every index within their shapes is in bounds); `out` is borrowed mutably, so it does not
    // alias `x` or `w`; with `read_dst = false` the old contents of `out` are not read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            os1,
            os0,
            false,
            x.as_ptr(),
            xs[1],
            xs[0],
            w.as_ptr(),
            ws[1],
            ws[0],
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, s};

    use super::*;

    /// Against a plain f64 triple loop, for strided views (a column slice of the weight, as
    /// grouped convolutions use), k = 0, one row and more rows than a micro-kernel.
    #[test]
    fn matches_a_reference_product_for_any_strides() {
        for (m, k, n) in [(1, 784, 256), (37, 17, 3), (5, 0, 4), (64, 128, 10), (3, 1, 1)] {
            let x = Array2::from_shape_fn((m, k), |(i, j)| ((i * 31 + j * 7) % 23) as f32 / 11.0 - 1.0);
            let wide = Array2::from_shape_fn((k, n + 5), |(i, j)| ((i * 13 + j * 5) % 19) as f32 / 9.0 - 1.0);
            let w = wide.slice(s![.., 2..2 + n]);
            let mut out = Array2::from_elem((m, n), f32::NAN);
            sgemm(&x.view(), &w, &mut out.view_mut(), false);
            for i in 0..m {
                for j in 0..n {
                    let r: f64 = (0..k).map(|t| f64::from(x[[i, t]]) * f64::from(w[[t, j]])).sum();
                    assert!((f64::from(out[[i, j]]) - r).abs() <= 1e-5 * (1.0 + r.abs()), "{m}x{k}x{n} at {i},{j}");
                }
            }
        }
    }

    /// A transposed (column-major) output view is written correctly too.
    #[test]
    fn writes_column_major_outputs() {
        let x = Array2::from_shape_fn((4, 6), |(i, j)| (i + 2 * j) as f32);
        let w = Array2::from_shape_fn((6, 3), |(i, j)| (i as f32) - (j as f32));
        let mut out_t = Array2::<f32>::zeros((3, 4));
        sgemm(&x.view(), &w.view(), &mut out_t.view_mut().reversed_axes(), false);
        assert_eq!(out_t.t(), x.dot(&w));
    }
}
