//! What attention does along a sequence: softmax, causal masking and rotary position
//! embeddings.

use super::*;

/// Softmax along an axis: `exp(v - max) / sum`.
pub fn softmax(x: &ndarray::ArrayD<f32>, axis: usize) -> ndarray::ArrayD<f32> {
    let mut y = x.as_standard_layout().into_owned();
    if axis + 1 == y.ndim()
        && let Some(v) = y.as_slice_mut()
    {
        let n = x.shape()[axis].max(1);
        v.chunks_exact_mut(n).for_each(softmax_row);
        return y;
    }
    let mut row = Vec::new();
    for mut lane in y.lanes_mut(ndarray::Axis(axis)) {
        row.clear();
        row.extend(lane.iter().copied());
        softmax_row(&mut row);
        lane.iter_mut().zip(&row).for_each(|(d, s)| *d = *s);
    }
    y
}

/// The partial sums of [`softmax_row`]: element `i` adds into sum `i % 16`.
pub const SOFTMAX_LANES: usize = 16;

/// Softmax of one row in place (docs/language.md, "Activations"): `m` the maximum, `e_i =
/// exp(x_i - m)` with [`exp`], their sum as [`SOFTMAX_LANES`] partial sums (element `i` into sum
/// `i % 16`, in order) then added in order, and `y_i = e_i / sum`, all in f32: the AVX-512
/// kernel's order, so every path gives the same bits.
pub fn softmax_row(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX512-F is present (checked).
        unsafe { crate::kernels::avx512::softmax_row(x) };
        return;
    }
    softmax_row_portable(x);
}

/// [`softmax_row`] element by element (every CPU).
pub(crate) fn softmax_row_portable(x: &mut [f32]) {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let mut acc = [0.0f32; SOFTMAX_LANES];
    for (i, v) in x.iter_mut().enumerate() {
        *v = exp(*v - m);
        acc[i % SOFTMAX_LANES] += *v;
    }
    let sum = acc.iter().fold(0.0f32, |a, b| a + b);
    x.iter_mut().for_each(|v| *v /= sum);
}

/// Causal masking of scores `[..., T, S]` (in place): entry `(i, j)` of each `T x S` matrix
/// becomes `-inf` where `j > i + S - T` (a token sees itself and the ones before it; with more
/// keys than queries, the queries are the last `T` positions); `softmax` then gives those
/// entries weight 0. Rank below 2 is left alone (the checker refuses it).
pub fn causal_mask(x: &mut [f32], shape: &[usize]) {
    let r = shape.len();
    if r < 2 {
        return;
    }
    let (t, s) = (shape[r - 2], shape[r - 1]);
    for m in x.chunks_exact_mut((t * s).max(1)) {
        for (i, row) in m.chunks_exact_mut(s.max(1)).enumerate() {
            let keep = (i + s).saturating_sub(t) + 1;
            row.iter_mut().skip(keep).for_each(|v| *v = f32::NEG_INFINITY);
        }
    }
}

/// The rotation angles' cosines and sines of rotary position embeddings for `t` positions and
/// `half` pairs: entry `(p, i)` of each is `cos` / `sin` of `p * theta^(-2i / (2 half))`,
/// computed in f64 and rounded once to f32.
pub fn rope_tables(t: usize, half: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let d = (2 * half).max(1) as f64;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in 0..t {
        for i in 0..half {
            let angle = p as f64 * f64::from(theta).powf(-2.0 * i as f64 / d);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotary position embeddings (RoPE, LLaMA's and BitNet's "rotate half" form) of `x` with
/// shape `[..., T, D]` in place, `D` even, position `p` = the index along axis -2: with `h =
/// D / 2` and [`rope_tables`]' `c`, `s` at `(p, i)`, `(x[i], x[i + h])` becomes `(x[i] c - x[i
/// + h] s, x[i] s + x[i + h] c)`, each product rounded, then the sum (no fused multiply-add).
/// With `inverse`, the transposed rotation (`s` negated): the gradient. Shapes of rank below
/// 2 or an odd `D` are left alone (the checker refuses them).
pub fn rope(x: &mut [f32], shape: &[usize], theta: f32, inverse: bool) {
    let r = shape.len();
    if r < 2 || !shape[r - 1].is_multiple_of(2) {
        return;
    }
    let (t, d) = (shape[r - 2], shape[r - 1]);
    let h = d / 2;
    let (cos, sin) = rope_tables(t, h, theta);
    for m in x.chunks_exact_mut((t * d).max(1)) {
        for (p, row) in m.chunks_exact_mut(d.max(1)).enumerate() {
            let (a, b) = row.split_at_mut(h);
            for i in 0..h {
                let (c, s) = (cos[p * h + i], if inverse { -sin[p * h + i] } else { sin[p * h + i] });
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * c - x2 * s;
                b[i] = x1 * s + x2 * c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RoPE: position 0 is unchanged, each pair keeps its length, rotates by `p * theta^(-2i/D)`
    /// (checked against f64), and the inverse rotation brings the values back.
    #[test]
    fn rope_rotates_pairs_by_position() {
        let (t, d, theta) = (5usize, 8usize, 10_000.0f32);
        let x: Vec<f32> = (0..2 * t * d).map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0).collect();
        let mut y = x.clone();
        rope(&mut y, &[2, t, d], theta, false);
        let h = d / 2;
        for m in 0..2 {
            for p in 0..t {
                for i in 0..h {
                    let at = |v: &[f32], j: usize| f64::from(v[m * t * d + p * d + j]);
                    let a = p as f64 * f64::from(theta).powf(-2.0 * i as f64 / d as f64);
                    let (x1, x2) = (at(&x, i), at(&x, i + h));
                    let want = (x1 * a.cos() - x2 * a.sin(), x1 * a.sin() + x2 * a.cos());
                    assert!((at(&y, i) - want.0).abs() < 1e-6 && (at(&y, i + h) - want.1).abs() < 1e-6, "{m} {p} {i}");
                    if p == 0 {
                        assert_eq!((at(&y, i), at(&y, i + h)), (x1, x2));
                    }
                }
            }
        }
        rope(&mut y, &[2, t, d], theta, true);
        assert!(y.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    /// Square scores keep the lower triangle; with more keys than queries the queries are the
    /// last positions; every leading matrix is masked alike.
    #[test]
    fn causal_mask_keeps_each_token_and_the_ones_before() {
        let mut x = vec![1f32; 2 * 3 * 3];
        causal_mask(&mut x, &[2, 3, 3]);
        let inf = f32::NEG_INFINITY;
        let one = [1.0, inf, inf, 1.0, 1.0, inf, 1.0, 1.0, 1.0];
        assert_eq!(x[..9], one);
        assert_eq!(x[9..], one);
        let mut y = vec![1f32; 2 * 4];
        causal_mask(&mut y, &[2, 4]);
        assert_eq!(y, [1.0, 1.0, 1.0, inf, 1.0, 1.0, 1.0, 1.0]);
    }
}
