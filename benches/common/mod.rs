//! Helpers shared by the benches.

use ndarray::{ArrayD, IxDyn};
use triton::compiler::interp::{Precision, Weights};
use triton::compiler::ir;
use triton::compiler::passes::{self, OptLevel};
use triton::compiler::source::FileId;

/// A deterministic input in [-1, 1).
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
    let opt = passes::optimize(&g, &passes::Options { weights: Some(&w), ..passes::Options::new(OptLevel::O3) })
        .expect("valid");
    let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), &w, Precision::Ternary)
        .expect("compiles");
    triton::runtime::Model::from_parts(parts, 1).expect("maps")
}
