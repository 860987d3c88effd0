//! Transformer layers (std::transformer): what BitNet b1.58 2B4T's layer is made of, checked
//! against definitions written out with the language's own ops, and the engine against the
//! interpreter.

mod common;

use ndarray::{ArrayD, Axis, concatenate};
use triton::compiler::interp::{self, Precision, Weights};
use triton::compiler::passes::OptLevel;
use triton::runtime::cpu::Isa;
use triton::{Options, compile_model};

fn checked(src: &str) -> triton::compiler::CheckedModel {
    let checked = triton::check_source("t.tri", src, None);
    assert!(!checked.has_errors(), "{}", checked.render_plain());
    checked.models.into_iter().next().expect("a model")
}

fn interpret(m: &triton::compiler::CheckedModel, w: &Weights, x: &ArrayD<f32>, precision: Precision) -> ArrayD<f32> {
    let p = interp::prepare(&m.graph, w, precision).expect("weights");
    interp::run(&m.graph, &p, std::slice::from_ref(x), precision).expect("runs").remove(0)
}

fn close(a: &ArrayD<f32>, b: &ArrayD<f32>, tol: f32, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: {x} vs {y}");
    }
}

/// A BitNet-shaped block in miniature: grouped-query attention (4 query heads on 2 key/value
/// heads), RoPE, causal, RMSNorm, SubLN, the ReLU^2 GLU, no biases, per-tensor absmean
/// ternary weights with int8 activations.
const MINI_BITNET: &str = "use std::transformer::TransformerBlock
model Mini {
    block = TransformerBlock(16, 4, 24, kv_heads = 2, causal = true, norm = \"rms\", mlp = \"relu2_glu\", sub_norm = true, bias = false, rope_theta = 500000.0, quant = \"absmean_tensor\")
    fn forward(x: f32[B, 5, 16]) -> f32[B, 5, 16] {
        return block(x)
    }
}
";

/// The engine runs the miniature BitNet block as the interpreter does (within the f32 rounding
/// of the batched products), at batch 1-5, -O0 and -O3, FP32 and ternary, every instruction
/// set the machine has.
#[test]
fn a_bitnet_block_runs_on_the_engine_as_in_the_interpreter() {
    let m = checked(MINI_BITNET);
    engine_matches_interpreter(&m, &Weights::init(m.params(), 9), 3.0);
}

/// The engine against the interpreter on `[batch, 5, 16]` inputs (scaled by `scale`) at batch
/// 1-5: -O0 FP32 and -O3 ternary, every instruction set the machine has, within the f32
/// rounding of the batched products.
fn engine_matches_interpreter(m: &triton::compiler::CheckedModel, w: &Weights, scale: f32) {
    for batch in 1..=5 {
        let x = common::input(&[batch, 5, 16], batch).mapv(|v| v * scale);
        for (level, precision) in [(OptLevel::O0, Precision::Fp32), (OptLevel::O3, Precision::Ternary)] {
            let r = interpret(m, w, &x, precision);
            let opts = Options { opt: level, precision, threads: 1, ..Default::default() };
            let mut model = compile_model(m, w, &opts).expect("compiles");
            for isa in Isa::available() {
                model.set_isa(isa);
                let y = model.run(&x.view()).unwrap_or_else(|e| panic!("{level:?}: {e}"));
                close(&y, &r, 2e-5, &format!("batch {batch}, {level:?}, {}, {isa}", precision.name()));
            }
        }
    }
}

/// Fused q/k/v projections cut apart with `slice` run on the engine as in the interpreter.
#[test]
fn slices_of_a_fused_projection_run_on_the_engine_as_in_the_interpreter() {
    let m = checked(
        "use std::transformer::TokenLinear
model S {
    qkv = TokenLinear(16, 48, ternary = true)
    fn forward(x: f32[B, 5, 16]) -> f32[B, 5, 16] {
        let h = qkv(x)
        let s = softmax(bmm(slice(h, 2, 0, 16), transpose(slice(h, -1, 16, 32), 1, 2)) * 0.25, axis = -1)
        return bmm(s, slice(h, 2, 32, 48)) + slice(concat([x, x], axis = 1), 1, 3, 8)
    }
}",
    );
    engine_matches_interpreter(&m, &Weights::init(m.params(), 3), 1.0);
}

/// Grouped-query attention is multi-head attention whose key and value heads are repeated
/// per group (LLaMA's `repeat_kv`): with k and v weights repeated that way, an MHA gives the
/// same outputs (causal, with RoPE).
#[test]
fn grouped_query_attention_equals_attention_with_repeated_key_value_heads() {
    let gqa = checked(
        "use std::transformer::MultiHeadAttention
model G {
    a = MultiHeadAttention(12, 6, kv_heads = 2, ternary = false, bias = false, causal = true, rope_theta = 100.0)
    fn forward(x: f32[B, T, 12]) -> f32[B, T, 12] { return a(x) }
}",
    );
    let mha = checked(
        "use std::transformer::MultiHeadAttention
model M {
    a = MultiHeadAttention(12, 6, ternary = false, bias = false, causal = true, rope_theta = 100.0)
    fn forward(x: f32[B, T, 12]) -> f32[B, T, 12] { return a(x) }
}",
    );
    let wg = Weights::init(gqa.params(), 4);
    let mut wm = Weights::init(mha.params(), 4);
    // Head dim 2; query heads 0-2 use kv head 0, heads 3-5 kv head 1.
    for name in ["a.k.proj.w", "a.v.proj.w"] {
        let g = &wg.tensors[name];
        assert_eq!(g.shape(), &[4, 12]);
        let rows = |h: usize| g.slice_axis(Axis(0), (2 * h..2 * h + 2).into());
        let parts: Vec<_> = (0..6).map(|q| rows(q / 3)).collect();
        wm.tensors.insert(name.to_string(), concatenate(Axis(0), &parts).expect("rows").into_dyn());
    }
    for name in ["a.q.proj.w", "a.o.proj.w"] {
        wm.tensors.insert(name.to_string(), wg.tensors[name].clone());
    }
    let x = common::input(&[2, 5, 12], 1);
    let (yg, ym) = (interpret(&gqa, &wg, &x, Precision::Fp32), interpret(&mha, &wm, &x, Precision::Fp32));
    close(&yg, &ym, 1e-6, "GQA vs repeated-KV MHA");
    // And not by accident: other key weights change the result.
    let mut other = wg.clone();
    other.tensors.get_mut("a.k.proj.w").expect("k").mapv_inplace(|v| v * -1.5);
    assert!(interpret(&gqa, &other, &x, Precision::Fp32).iter().zip(&yg).any(|(a, b)| (a - b).abs() > 1e-3));
}

/// The `relu2_glu` MLP is BitNet's `down(sub_norm(relu(gate x)^2 * up x))`, not SiLU-gated:
/// the block equals that formula written out with plain ops and the block's weights.
#[test]
fn the_bitnet_ffn_is_relu_squared_gated() {
    let block = checked(
        "use std::transformer::TransformerBlock
model B {
    b = TransformerBlock(8, 2, 12, ternary = false, norm = \"rms\", mlp = \"relu2_glu\", sub_norm = true, bias = false)
    fn forward(x: f32[B, T, 8]) -> f32[B, T, 8] { return b(x) }
}",
    );
    let by_hand = |act: &str| {
        checked(&format!(
            "use std::transformer::{{MultiHeadAttention, TokenLinear}}
use std::nn::RMSNorm
model H {{
    norm1 = RMSNorm(8)
    attn = MultiHeadAttention(8, 2, ternary = false, bias = false, sub_norm = true)
    norm2 = RMSNorm(8)
    gate = TokenLinear(8, 12, bias = false)
    up = TokenLinear(8, 12, bias = false)
    ffn_norm = RMSNorm(12)
    fc2 = TokenLinear(12, 8, bias = false)
    fn forward(x: f32[B, T, 8]) -> f32[B, T, 8] {{
        let h = x + attn(norm1(x))
        let z = norm2(h)
        return h + fc2(ffn_norm({act} * up(z)))
    }}
}}"
        ))
    };
    let w = Weights::init(block.params(), 6);
    let mut renamed = Weights::default();
    for (k, v) in &w.tensors {
        renamed.tensors.insert(k.trim_start_matches("b.").to_string(), v.clone());
    }
    // Non-trivial norm gains, so the sub-norm's place matters.
    for (k, v) in renamed.tensors.iter_mut() {
        if k.ends_with("gamma") {
            v.iter_mut().enumerate().for_each(|(i, g)| *g = 0.5 + i as f32 * 0.1);
        }
    }
    let mut w = Weights::default();
    for (k, v) in &renamed.tensors {
        w.tensors.insert(format!("b.{k}"), v.clone());
    }
    let x = common::input(&[2, 3, 8], 5).mapv(|v| v * 2.0);
    let y = interpret(&block, &w, &x, Precision::Fp32);
    let relu2 = interpret(&by_hand("relu(gate(z)) * relu(gate(z))"), &renamed, &x, Precision::Fp32);
    assert_eq!(y, relu2, "the block is the ReLU^2 GLU");
    let silu = interpret(&by_hand("silu(gate(z))"), &renamed, &x, Precision::Fp32);
    assert!(y.iter().zip(&silu).any(|(a, b)| (a - b).abs() > 1e-3), "a SiLU GLU differs");
}

/// The per-tensor absmean rule reaches the ternary projections: every channel of a weight
/// carries the same scale in the compiled model, and the block still matches the interpreter
/// exactly on its integer products (checked above); here its scales.
#[test]
fn absmean_tensor_gives_one_scale_per_weight() {
    let m = checked(MINI_BITNET);
    let w = Weights::init(m.params(), 2);
    let q = triton::compiler::weights::quant::QuantCache::build(m.params(), &w);
    let mut seen = 0;
    for p in m.params().iter().filter(|p| p.quant.is_some()) {
        let s = &q.get(&p.name).expect("quantized").scale;
        assert!(s.iter().all(|v| *v == s[0]) && s[0] > 0.0, "{}: {s}", p.name);
        seen += 1;
    }
    assert_eq!(seen, 7, "q, k, v, o, gate, up, down");
}

/// Broadcasting arithmetic as transformers use it (a scalar scale, a `[T, D]` position table
/// on `[B, T, D]` tokens, either side, a `[1, D]` row, a per-feature vector) gives the
/// interpreter's bits on the engine.
#[test]
fn broadcast_arithmetic_equals_the_interpreter_bitwise() {
    let m = checked(
        "model Bc {
    param pos: f32[5, 16] (init = \"kaiming\")
    param row: f32[1, 16] (init = \"kaiming\")
    param g: f32[16] (init = \"kaiming\")
    fn forward(x: f32[B, 5, 16]) -> f32[B, 5, 16] {
        let a = x * 0.125 + pos
        let b = pos - a
        let c = row / (b * b + 1.0)
        return 2.0 - c * g + b
    }
}",
    );
    let w = Weights::init(m.params(), 8);
    for batch in 1..=5 {
        let x = common::input(&[batch, 5, 16], batch).mapv(|v| v * 4.0);
        let r = interpret(&m, &w, &x, Precision::Fp32);
        for level in [OptLevel::O0, OptLevel::O3] {
            let opts = Options { opt: level, precision: Precision::Fp32, threads: 1, ..Default::default() };
            let model = compile_model(&m, &w, &opts).expect("compiles");
            let y = model.run(&x.view()).expect("runs");
            let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&r), "batch {batch}, {level:?}");
        }
    }
}
