//! The gradient pass against central finite differences, op by op, and the straight-through
//! estimator of ternary layers.
//!
//! Each case is a small model whose trained parameters sit before (and after) the op under test,
//! so the op's vector-Jacobian product is on the path of every parameter gradient. The loss is
//! `sum(y * r)` for a fixed random `r`, so the output gradient is `r`.

use ndarray::{ArrayD, IxDyn};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use triton::compiler::grad::{self, Mode};
use triton::compiler::interp::{Precision, Weights};
use triton::compiler::ir::Graph;

/// Largest relative error allowed between analytic and numeric gradients.
const MAX_REL: f64 = 3e-3;

fn graph(src: &str) -> Graph {
    let checked = triton::check_source("grad.tri", src, None);
    assert!(!checked.has_errors(), "{}", checked.render_plain());
    checked.models.into_iter().next().expect("a model").graph
}

fn random(shape: &[usize], rng: &mut ChaCha8Rng, scale: f32) -> ArrayD<f32> {
    let n = shape.iter().product();
    let data = (0..n).map(|_| ((rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale).collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).expect("shape")
}

fn loss(g: &Graph, w: &Weights, x: &ArrayD<f32>, r: &ArrayD<f32>) -> f64 {
    let params = grad::effective_params(g, w, Precision::Fp32).expect("weights");
    let tape = grad::forward(g, &params, std::slice::from_ref(x), Precision::Fp32, Mode::Train).expect("runs");
    tape.output(g).iter().zip(r.iter()).map(|(y, r)| f64::from(*y) * f64::from(*r)).sum()
}

/// Checks every trained parameter's gradient (up to 40 entries each); returns the largest
/// relative error.
fn check(name: &str, src: &str, input: &[usize]) -> f64 {
    check_on(name, src, |rng| random(input, rng, 1.0))
}

/// [`check`] on the input `make` draws.
fn check_on(name: &str, src: &str, make: impl FnOnce(&mut ChaCha8Rng) -> ArrayD<f32>) -> f64 {
    let g = graph(src);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut w = Weights::init(&g.params, 3);
    // Buffers (running statistics) get non-trivial values too.
    for p in &g.params {
        if p.name.ends_with(".var") {
            let t = w.tensors.get_mut(&p.name).expect("param");
            t.mapv_inplace(|_| 0.5 + (rng.next_u32() % 100) as f32 / 100.0);
        }
    }
    let x = make(&mut rng);
    let params = grad::effective_params(&g, &w, Precision::Fp32).expect("weights");
    let tape = grad::forward(&g, &params, std::slice::from_ref(&x), Precision::Fp32, Mode::Train).expect("runs");
    let r = random(tape.output(&g).shape(), &mut rng, 1.0);
    let bw = grad::differentiate(&g).expect("differentiable");
    let grads = grad::backward_pass(&g, &bw, &tape, r.clone()).expect("backward");
    let eps = 1e-2f32;
    let mut worst = 0.0f64;
    let mut checked = 0;
    let mut skipped = 0;
    for (i, p) in g.params.iter().enumerate() {
        if !bw.trained[i] {
            assert!(grads[i].is_none(), "{name}: buffer {} got a gradient", p.name);
            continue;
        }
        let analytic = grads[i].as_ref().unwrap_or_else(|| panic!("{name}: no gradient for {}", p.name));
        assert_eq!(analytic.shape(), w.tensors[&p.name].shape(), "{name}: {}", p.name);
        let len = analytic.len();
        let picks: Vec<usize> =
            (0..len.min(40)).map(|j| if len <= 40 { j } else { rng.next_u32() as usize % len }).collect();
        for j in picks {
            let orig = w.tensors[&p.name].as_slice().expect("standard")[j];
            let mut at = |v: f32| {
                w.tensors.get_mut(&p.name).expect("param").as_slice_mut().expect("standard")[j] = v;
                loss(&g, &w, &x, &r)
            };
            let numeric = (at(orig + eps) - at(orig - eps)) / (2.0 * f64::from(eps));
            let half = (at(orig + eps / 2.0) - at(orig - eps / 2.0)) / f64::from(eps);
            at(orig);
            // A kink (relu, max pooling) within eps of the point makes the two estimates
            // disagree: finite differences say nothing there.
            if (numeric - half).abs() > 1e-3 * numeric.abs().max(half.abs()).max(1e-2) {
                skipped += 1;
                continue;
            }
            let a = f64::from(analytic.as_slice().expect("standard")[j]);
            let rel = (a - numeric).abs() / a.abs().max(numeric.abs()).max(1e-2);
            assert!(
                rel < MAX_REL,
                "{name}: d{}[{j}] analytic {a} numeric {numeric} (relative error {rel:.2e})",
                p.name
            );
            worst = worst.max(rel);
            checked += 1;
        }
    }
    assert!(checked > 0 && skipped * 5 < checked, "{name}: {checked} entries checked, {skipped} at kinks");
    worst
}

const NN: &str = "use std::nn::{Linear, Conv2d, TernaryLinear, BatchNorm2d, BatchNorm1d}\n";

#[test]
fn every_differentiable_op_matches_finite_differences() {
    let cases: Vec<(&str, String, Vec<usize>)> = vec![
        (
            "matmul + bias",
            format!(
                "{NN}model M {{ a = Linear(5, 4)\n b = Linear(4, 3)\n fn forward(x: f32[B, 5]) -> f32[B, 3] {{ return b(a(x)) }} }}"
            ),
            vec![3, 5],
        ),
        ("relu", unary("relu"), vec![3, 5]),
        ("relu6", unary("relu6"), vec![3, 5]),
        ("sigmoid", unary("sigmoid"), vec![3, 5]),
        ("silu", unary("silu"), vec![3, 5]),
        ("tanh", unary("tanh"), vec![3, 5]),
        ("gelu", unary("gelu"), vec![3, 5]),
        ("gelu_tanh", unary("gelu_tanh"), vec![3, 5]),
        ("exp", unary("exp"), vec![3, 5]),
        (
            "mean, sum",
            format!(
                "{NN}model M {{ a = Linear(6, 8)\n b = Linear(2, 3)\n \
                 fn forward(x: f32[B, 6]) -> f32[B, 3] {{ let h = reshape(a(x), [B, 2, 4])\n \
                 return b(mean(h * h, 2) + sum(h, -1)) }} }}"
            ),
            vec![3, 6],
        ),
        (
            "bmm, permute, transpose, causal_mask",
            format!(
                "{NN}model M {{ a = Linear(6, 8)\n b = Linear(8, 3)\n \
                 fn forward(x: f32[B, 6]) -> f32[B, 3] {{ let h = reshape(a(x), [B, 2, 2, 2])\n \
                 let s = bmm(h, permute(h, [0, 1, 3, 2]))\n let t = bmm(softmax(causal_mask(s), axis = -1), transpose(h, 2, 3))\n \
                 return b(reshape(permute(t, [0, 2, 1, 3]), [B, 8])) }} }}"
            ),
            vec![3, 6],
        ),
        (
            "layer_norm, rms_norm",
            format!(
                "{NN}model M {{ a = Linear(5, 6)\n b = Linear(6, 3)\n \
                 param g: f32[6] (init = \"ones\")\n param c: f32[6]\n param r: f32[6] (init = \"ones\")\n \
                 fn forward(x: f32[B, 5]) -> f32[B, 3] {{ let h = layer_norm(a(x), g * 1.5, c + 0.2, eps = 0.01)\n \
                 return b(rms_norm(h * h + h, r, eps = 0.001)) }} }}"
            ),
            vec![3, 5],
        ),
        (
            "sqrt",
            format!(
                "{NN}model M {{ a = Linear(5, 4)\n b = Linear(4, 3)\n fn forward(x: f32[B, 5]) -> f32[B, 3] {{ let h = a(x)\n return b(sqrt(h * h + 1.0)) }} }}"
            ),
            vec![3, 5],
        ),
        ("softmax", unary("softmax"), vec![3, 5]),
        (
            "mul, sub, div",
            format!(
                "{NN}model M {{ a = Linear(5, 4)\n b = Linear(5, 4)\n c = Linear(4, 2)\n fn forward(x: f32[B, 5]) -> f32[B, 2] {{ let p = a(x)\n let q = b(x)\n return c(p * q - p / (q * q + 2.0)) }} }}"
            ),
            vec![3, 5],
        ),
        (
            "conv2d stride/pad/dilation",
            format!(
                "{NN}model M {{ a = Conv2d(2, 3, 3, stride = 2, padding = 1)\n b = Conv2d(3, 2, 2, dilation = 2)\n fn forward(x: f32[B, 2, 7, 7]) -> f32[B, 2, 2, 2] {{ return b(a(x)) }} }}"
            ),
            vec![2, 2, 7, 7],
        ),
        (
            "grouped conv",
            format!(
                "{NN}model M {{ a = Conv2d(4, 4, 3, padding = 1, groups = 2)\n b = Conv2d(4, 2, 1)\n fn forward(x: f32[B, 4, 5, 5]) -> f32[B, 2, 5, 5] {{ return b(a(x)) }} }}"
            ),
            vec![2, 4, 5, 5],
        ),
        (
            "max_pool2d",
            format!(
                "{NN}model M {{ a = Conv2d(1, 2, 3, padding = 1)\n b = Linear(2 * 3 * 3, 3)\n fn forward(x: f32[B, 1, 6, 6]) -> f32[B, 3] {{ return b(flatten(max_pool2d(a(x), 2))) }} }}"
            ),
            vec![2, 1, 6, 6],
        ),
        (
            "avg_pool2d padded",
            format!(
                "{NN}model M {{ a = Conv2d(1, 2, 3)\n b = Linear(2 * 3 * 3, 3)\n fn forward(x: f32[B, 1, 7, 7]) -> f32[B, 3] {{ return b(flatten(avg_pool2d(a(x), 3, stride = 2, padding = 1))) }} }}"
            ),
            vec![2, 1, 7, 7],
        ),
        (
            "global_avg_pool",
            format!(
                "{NN}model M {{ a = Conv2d(2, 3, 3)\n b = Linear(3, 2)\n fn forward(x: f32[B, 2, 5, 5]) -> f32[B, 2] {{ return b(global_avg_pool(a(x))) }} }}"
            ),
            vec![2, 2, 5, 5],
        ),
        (
            "batch_norm 2d (batch statistics)",
            format!(
                "{NN}model M {{ a = Conv2d(2, 3, 3)\n n = BatchNorm2d(3)\n b = Linear(3 * 3 * 3, 2)\n fn forward(x: f32[B, 2, 5, 5]) -> f32[B, 2] {{ return b(flatten(tanh(n(a(x))))) }} }}"
            ),
            vec![3, 2, 5, 5],
        ),
        (
            "batch_norm 1d",
            format!(
                "{NN}model M {{ a = Linear(5, 4)\n n = BatchNorm1d(4)\n b = Linear(4, 2)\n fn forward(x: f32[B, 5]) -> f32[B, 2] {{ return b(sigmoid(n(a(x)))) }} }}"
            ),
            vec![6, 5],
        ),
        (
            "reshape + concat",
            format!(
                "{NN}model M {{ a = Linear(6, 6)\n b = Linear(6, 4)\n c = Linear(10, 2)\n fn forward(x: f32[B, 6]) -> f32[B, 2] {{ let p = reshape(a(x), [-1, 2, 3])\n return c(concat([flatten(p), b(x)], axis = 1)) }} }}"
            ),
            vec![3, 6],
        ),
    ];
    let mut worst = 0.0f64;
    for (name, src, input) in &cases {
        let w = check(name, src, input);
        eprintln!("{name}: max relative error {w:.2e}");
        worst = worst.max(w);
    }
    eprintln!("all ops: max relative error {worst:.2e} (bound {MAX_REL:.0e})");
}

/// RoPE's gradient (the transposed rotation) through attention-shaped values.
#[test]
fn rope_matches_finite_differences() {
    let worst = check(
        "rope",
        &format!(
            "{NN}model M {{ a = Linear(6, 8)\n b = Linear(8, 3)\n \
             fn forward(x: f32[B, 6]) -> f32[B, 3] {{ let h = rope(reshape(a(x), [B, 2, 4]), theta = 100.0)\n \
             let q = rope(reshape(a(x), [B, 1, 2, 4]))\n return b(reshape(h, [B, 8]) + reshape(q, [B, 8]) * 0.5) }} }}"
        ),
        &[3, 6],
    );
    assert!(worst < MAX_REL, "{worst}");
}

/// `slice`: the sliced positions receive the gradient, the others none (through a concat of
/// two slices in swapped order).
#[test]
fn slice_matches_finite_differences() {
    let worst = check(
        "slice",
        &format!(
            "{NN}model M {{ a = Linear(6, 8)\n b = Linear(5, 3)\n \
             fn forward(x: f32[B, 6]) -> f32[B, 3] {{ let h = reshape(a(x), [B, 2, 4])\n \
             let s = concat([slice(h, 2, 3, 4), slice(h, -1, 0, 2)], axis = 2)\n \
             return b(concat([reshape(slice(s, 1, 1, 2), [B, 3]), slice(x, 1, 0, 2)], axis = 1)) }} }}"
        ),
        &[3, 6],
    );
    assert!(worst < MAX_REL, "{worst}");
}

/// The embedding table's gradient gathers the output gradients of the positions that read
/// each row (ids repeat, some rows are never read: their gradient is zero).
#[test]
fn the_embedding_table_gradient_matches_finite_differences() {
    let src = "use std::transformer::Embedding\nuse std::nn::Linear\nmodel M {\n e = Embedding(7, 3)\n b = Linear(3, 2)\n \
               fn forward(ids: i32[B, T]) -> f32[B, 2] { return b(mean(e(ids), 1)) } }";
    let worst = check_on("embedding", src, |_| {
        ArrayD::from_shape_vec(IxDyn(&[2, 5]), vec![0.0, 3.0, 3.0, 6.0, 1.0, 2.0, 2.0, 0.0, 3.0, 2.0]).expect("shape")
    });
    assert!(worst < MAX_REL, "{worst}");
    // Rows 4 and 5 are never read: no gradient flows into them.
    let g = graph(src);
    let w = Weights::init(&g.params, 3);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![0.0, 1.0, 1.0]).expect("shape");
    let params = grad::effective_params(&g, &w, Precision::Fp32).expect("weights");
    let tape = grad::forward(&g, &params, std::slice::from_ref(&x), Precision::Fp32, Mode::Train).expect("runs");
    let r = ArrayD::from_elem(tape.output(&g).raw_dim(), 1.0f32);
    let grads = grad::backward_pass(&g, &grad::differentiate(&g).expect("differentiable"), &tape, r).expect("backward");
    let i = g.params.iter().position(|p| p.name == "e.table").expect("the table");
    let table = grads[i].as_ref().expect("a gradient");
    assert!(table.outer_iter().skip(2).all(|row| row.iter().all(|v| *v == 0.0)), "{table}");
    assert!(table.outer_iter().take(2).all(|row| row.iter().any(|v| *v != 0.0)), "{table}");
}

fn unary(op: &str) -> String {
    let call = if op == "softmax" { "softmax(a(x), axis = 1)".to_string() } else { format!("{op}(a(x))") };
    format!(
        "{NN}model M {{ a = Linear(5, 4)\n b = Linear(4, 3)\n fn forward(x: f32[B, 5]) -> f32[B, 3] {{ return b({call}) }} }}"
    )
}

/// A ternary layer's latent weight receives exactly the gradient an f32 layer holding the
/// quantized values would get (straight-through), and the forward pass uses those values.
#[test]
fn ternary_layers_train_latent_weights_straight_through() {
    let src = format!(
        "{NN}model M {{ a = TernaryLinear(6, 5)\n b = Linear(5, 3)\n fn forward(x: f32[B, 6]) -> f32[B, 3] {{ return b(relu(a(x))) }} }}"
    );
    let g = graph(&src);
    let w = Weights::init(&g.params, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = random(&[4, 6], &mut rng, 1.0);
    let bw = grad::differentiate(&g).expect("differentiable");

    let tern = grad::effective_params(&g, &w, Precision::Ternary).expect("weights");
    let wi = g.params.iter().position(|p| p.name == "a.w").expect("a.w");
    let distinct: std::collections::BTreeSet<i64> =
        tern[wi].iter().map(|v| (v / tern[wi].iter().fold(0.0f32, |m, t| m.max(t.abs())) * 1e3) as i64).collect();
    assert!(tern[wi] != w.tensors["a.w"], "the forward pass sees quantized values");
    assert!(distinct.len() <= 3 * 5, "per-row alpha * {{-1, 0, 1}}");
    let t1 = grad::forward(&g, &tern, std::slice::from_ref(&x), Precision::Ternary, Mode::Train).expect("runs");
    let r = random(t1.output(&g).shape(), &mut rng, 1.0);
    let g1 = grad::backward_pass(&g, &bw, &t1, r.clone()).expect("backward");

    // The same graph at FP32 with the quantized values as its latent weights.
    let mut wq = w.clone();
    wq.tensors.insert("a.w".into(), tern[wi].clone());
    let fp = grad::effective_params(&g, &wq, Precision::Fp32).expect("weights");
    let t2 = grad::forward(&g, &fp, std::slice::from_ref(&x), Precision::Fp32, Mode::Train).expect("runs");
    assert_eq!(t1.output(&g), t2.output(&g));
    let g2 = grad::backward_pass(&g, &bw, &t2, r).expect("backward");
    assert_eq!(g1, g2);
    assert!(g1[wi].as_ref().is_some_and(|d| d.iter().any(|v| *v != 0.0)));
}

#[test]
fn the_backward_graph_skips_inputs_and_buffers() {
    let src = format!(
        "{NN}model M {{ a = Conv2d(1, 2, 3)\n n = BatchNorm2d(2)\n fn forward(x: f32[B, 1, 4, 4]) -> f32[B, 2, 2, 2] {{ return n(a(x)) }} }}"
    );
    let g = graph(&src);
    let bw = grad::differentiate(&g).expect("differentiable");
    let trained: Vec<&str> =
        g.params.iter().zip(&bw.trained).filter(|(_, t)| **t).map(|(p, _)| p.name.as_str()).collect();
    assert_eq!(trained, ["a.w", "a.b", "n.gamma", "n.beta"]);
    // conv2d: only the weight (argument 1) gets a gradient, its input is the model input.
    let conv =
        bw.steps.iter().find(|s| matches!(g.nodes[s.node].op, triton::compiler::ir::Op::Conv2d(_))).expect("conv step");
    assert_eq!(conv.wrt, [1]);
    let bn =
        bw.steps.iter().find(|s| matches!(g.nodes[s.node].op, triton::compiler::ir::Op::BatchNorm { .. })).expect("bn");
    assert_eq!(bn.wrt, [0, 1, 2]);
    // Steps run in reverse order.
    assert!(bw.steps.windows(2).all(|p| p[0].node > p[1].node));
}
