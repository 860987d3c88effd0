//! Helpers shared by the integration tests (each test file uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};

/// Every `.tri` file in examples/, sorted.
pub fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "tri"))
        .collect();
    v.sort();
    v
}

/// A deterministic input in [-1, 1) of `shape`; `seed` shifts the pattern.
pub fn input(shape: &[usize], seed: usize) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| (((i + seed) * 7919) % 1000) as f32 / 500.0 - 1.0).collect())
        .expect("shape")
}

/// Relative L2 distance `|a - b| / |b|`.
pub fn rel_l2(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    let num: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    (num / den.max(f32::MIN_POSITIVE)).sqrt()
}

/// A float32 `.npy` file's bytes (the format is a small header plus raw data).
pub fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    for v in data {
        bytes.extend(v.to_le_bytes());
    }
    bytes
}

/// One attention block over 4 tokens of width 8, two heads, from the language's tensor ops
/// (permute, transpose, bmm, causal_mask, softmax, layer_norm, mean, sum), a ternary key
/// projection.
#[allow(dead_code)]
pub const ATTENTION: &str = "use std::nn::{Linear, TernaryLinear, LayerNorm}
model Att {
    q = Linear(8, 8)
    k = TernaryLinear(8, 8)
    v = Linear(8, 8)
    n = LayerNorm(8)
    fn forward(x: f32[B, 4, 8]) -> f32[B, 4, 8] {
        let t = reshape(n(x), [B * 4, 8])
        let qh = permute(reshape(q(t), [B, 4, 2, 4]), [0, 2, 1, 3])
        let kt = permute(reshape(k(t), [B, 4, 2, 4]), [0, 2, 3, 1])
        let vh = transpose(reshape(v(t), [B, 4, 2, 4]), 1, 2)
        let att = softmax(causal_mask(bmm(qh, kt) * 0.5), axis = -1)
        let y = reshape(transpose(bmm(att, vh), -3, -2), [B, 4, 8]) + gelu(x)
        return y + reshape(mean(y, 1) + sum(y, 1) * 0.1, [B, 1, 8])
    }
}
";
