//! Helpers shared by the benches.

use ndarray::{ArrayD, IxDyn};
use triton::compiler::interp::{Precision, Weights};
use triton::compiler::passes::{self, OptLevel};
use triton::compiler::source::FileId;
use triton::compiler::{driver, ir};

/// The zoo: every `.tri` file in examples/, sorted.
#[allow(dead_code, reason = "not every bench uses it")]
pub fn zoo() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "tri"))
        // The full-depth BitNet (2.4B parameters) is benched on its own (`triton run`).
        .filter(|p| p.file_stem().is_none_or(|s| s != "bitnet_2b"))
        .collect();
    files.sort();
    files
}

/// A deterministic input in [-1, 1).
#[allow(dead_code, reason = "not every bench uses it")]
pub fn input(shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect())
        .expect("shape")
}

/// The ternary GEMV `y = dequantize(quantize_i8(x) . w)` of `m` outputs over `k` inputs, seeded
/// weights, compiled at -O3 to run on the calling thread.
#[allow(dead_code, reason = "not every bench uses it")]
pub fn gemv_model(m: usize, k: usize) -> triton::runtime::Model {
    let text = format!(
        "graph Gemv\nparam 0 \"w\": trit[{m}, {k}] weight quant=absmean init=kaiming\n%0 = input \"x\" : f32[B, {k}]\n%1 = param 0 : trit[{m}, {k}]\n%2 = quantize_i8 %0 : i8[B, {k}]\n%3 = matmul %2, %1 : i32[B, {m}]\n%4 = dequantize %3 : f32[B, {m}]\noutput %4\n"
    );
    let g = ir::parse(&text, FileId(0)).expect("parses");
    let w = Weights::init(&g.params, 1);
    let settings = driver::Settings { level: OptLevel::O3, precision: Precision::Ternary, ..Default::default() };
    let mut t = passes::Timings::new();
    let q = driver::quantize(&g, &w, &mut t);
    let opt = driver::optimize(&g, Some((&w, &q)), &settings, &mut t).expect("valid");
    let (parts, _) =
        driver::codegen(&opt, (&w, q), Precision::Ternary, &mut driver::jit_kernels(), &mut t).expect("compiles");
    triton::runtime::Model::from_parts(parts, 1).expect("maps")
}

/// The scalar reference of [`gemv_model`]'s product: one i8 weight per trit, plain loops.
/// Computes `acc * (sx * alpha)` in the kernels' order, so its bits equal theirs.
#[allow(dead_code, reason = "not every bench uses it")]
pub struct ScalarGemv {
    m: usize,
    k: usize,
    trits: Vec<i8>,
    alpha: Vec<f32>,
}

#[allow(dead_code, reason = "not every bench uses it")]
impl ScalarGemv {
    /// The trits and channel scales of `model`'s one weight.
    pub fn of(model: &triton::runtime::Model, m: usize, k: usize) -> ScalarGemv {
        use triton::runtime::engine::plan::WeightData;
        let w = &model.parts().weights[0];
        let WeightData::Tq2 { packed, .. } = &w.data else { panic!("the GEMV weight is tq2-packed") };
        assert_eq!((w.n, w.k), (m, k));
        let trits = triton::runtime::pack::unpack_tq2(packed, m, k);
        ScalarGemv { m, k, trits, alpha: w.alpha.clone().expect("a quantized weight has scales") }
    }

    /// `y = dequantize(quantize_i8(x) . w)` for one row `x` of `k` values.
    pub fn run(&self, x: &[f32]) -> Vec<f32> {
        use triton::runtime::ops;
        let (sx, factor) = ops::absmax_scale(x);
        let q: Vec<i8> = x.iter().map(|&v| ops::quantize(v, factor)).collect();
        (0..self.m)
            .map(|c| {
                let row = &self.trits[c * self.k..(c + 1) * self.k];
                let acc: i32 = row.iter().zip(&q).map(|(&w, &v)| i32::from(w) * i32::from(v)).sum();
                acc as f32 * (sx * self.alpha[c])
            })
            .collect()
    }
}
