//! Differential tests of the JIT backend against the reference interpreter: exact on integer
//! paths (int8 activations x ternary weights, including the fused epilogue), within 1e-4
//! relative on float paths (f32 GEMM accumulates in f32, the interpreter in f64).

mod common;
use common::{input, rel_l2};

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use triton::compiler::interp::{self, Precision, Weights};
use triton::compiler::ir::{self, Graph};
use triton::compiler::passes::{self, OptLevel};
use triton::compiler::source::FileId;
use triton::runtime::cpu::Isa;
use triton::{Options, compile_model};

fn interpret(g: &Graph, w: &Weights, x: &ArrayD<f32>, precision: Precision, level: OptLevel) -> ArrayD<f32> {
    let opt = passes::optimize(g, &passes::Options { weights: Some(w), ..passes::Options::new(level) }).expect("valid");
    let p = interp::prepare(&opt.graph, w, precision).expect("weights");
    interp::run(&opt.graph, &p, std::slice::from_ref(x), precision).expect("runs").remove(0)
}

fn assert_close(a: &ArrayD<f32>, b: &ArrayD<f32>, tol: f32, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: {x} vs {y}");
    }
}

#[test]
fn mnist_mlp_jit_matches_the_interpreter_at_every_level_and_precision() {
    let checked = triton::check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_mlp.tri"));
    let model = &checked.models[0];
    let w = Weights::init(model.params(), 5);
    for batch in [1, 3, 37] {
        let x = input(&[batch, 784], batch);
        for precision in [Precision::Ternary, Precision::Fp32] {
            for level in [OptLevel::O0, OptLevel::O1, OptLevel::O2, OptLevel::O3] {
                for threads in [1, 2] {
                    let opts = Options { opt: level, precision, threads, ..Options::default() };
                    let jit = compile_model(model, &w, &opts).expect("compiles");
                    let y = jit.run(&x.view()).expect("runs");
                    let r = interpret(&model.graph, &w, &x, precision, level);
                    let what = format!("batch {batch} {level:?} {} threads {threads}", precision.name());
                    // The head is an f32 GEMM: float path.
                    assert_close(&y, &r, 1e-4, &what);
                }
            }
        }
    }
}

/// A one-layer graph: `x [B, K]` -> int8 -> ternary matmul -> scale, bias, (residual `r`), act.
fn layer(n: usize, k: usize, residual: bool, act: &str) -> Graph {
    let (res, last) = if residual { (format!("%10 = add %9, %1 : f32[B, {n}]\n"), 10) } else { (String::new(), 9) };
    let text = format!(
        "graph L\nparam 0 \"w\": trit[{n}, {k}] weight quant=absmean init=kaiming\nparam 1 \"s\": f32[{n}] param init=kaiming\nparam 2 \"b\": f32[{n}] param init=kaiming\n\
%0 = input \"x\" : f32[B, {k}]\n%1 = input \"r\" : f32[B, {n}]\n%2 = param 0 : trit[{n}, {k}]\n%3 = param 1 : f32[{n}]\n%4 = param 2 : f32[{n}]\n\
%5 = quantize_i8 %0 : i8[B, {k}]\n%6 = matmul %5, %2 : i32[B, {n}]\n%7 = dequantize %6 : f32[B, {n}]\n%8 = mul %7, %3 : f32[B, {n}]\n%9 = add %8, %4 : f32[B, {n}]\n\
{res}%{} = {act} %{last} : f32[B, {n}]\noutput %{}\n",
        last + 1,
        last + 1
    );
    ir::parse(&text, FileId(0)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Awkward shapes: K = 1, 17, 64, 65, 300, ..., N = 1..9, batch 1..40, with and without a
    /// residual, relu or relu6: the kernel (fused at -O2/-O3) equals the interpreter exactly.
    #[test]
    fn ternary_layers_are_exact(n in 1usize..10, k in prop::sample::select(vec![1usize, 3, 17, 31, 32, 63, 64, 65, 128, 200, 300, 520, 1100]),
                                batch in 1usize..40, residual in any::<bool>(), relu6 in any::<bool>(), seed in 0u64..1000) {
        let g = layer(n, k, residual, if relu6 { "relu6" } else { "relu" });
        ir::verify(&g).expect("valid");
        let w = Weights::init(&g.params, seed);
        let xs = [input(&[batch, k], seed as usize), input(&[batch, n], seed as usize + 1)];
        for level in [OptLevel::O0, OptLevel::O2, OptLevel::O3] {
            let opt = passes::optimize(&g, &passes::Options { weights: Some(&w), ..passes::Options::new(level) }).expect("valid");
            let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), &w, Precision::Ternary).expect("compiles");
            prop_assert_eq!(parts.kernels.is_empty(), k < 32, "K >= 32 runs on a JIT kernel, below on the dense path");
            let mut model = triton::runtime::Model::from_parts(parts, 1).expect("maps");
            let y = model.run(&[xs[0].view(), xs[1].view()]).expect("runs").remove(0);
            let p = interp::prepare(&opt.graph, &w, Precision::Ternary).expect("weights");
            let r = interp::run(&opt.graph, &p, &xs, Precision::Ternary).expect("runs").remove(0);
            prop_assert_eq!(&y, &r, "n {} k {} batch {} {:?}", n, k, batch, level);
            // That ran on the best level the CPU has; every lower level and the JIT kernels
            // agree.
            for isa in Isa::available() {
                for jit in [false, true] {
                    model.set_isa(isa);
                    model.set_jit_gemm(jit);
                    let y = model.run(&[xs[0].view(), xs[1].view()]).expect("runs").remove(0);
                    prop_assert_eq!(&y, &r, "{} jit {}: n {} k {} batch {} {:?}", model.isa(), model.jit_gemm(), n, k, batch, level);
                }
            }
        }
    }
}

/// A one-layer graph on f32 activations: `x [B, K]` -> ternary matmul -> scale, bias,
/// (residual `r`), act (no quantization: the add/subtract kernel).
fn f32_layer(n: usize, k: usize, residual: bool, act: &str) -> Graph {
    let (res, last) = if residual { (format!("%8 = add %7, %1 : f32[B, {n}]\n"), 8) } else { (String::new(), 7) };
    let text = format!(
        "graph L\nparam 0 \"w\": trit[{n}, {k}] weight quant=absmean init=kaiming\nparam 1 \"s\": f32[{n}] param init=kaiming\nparam 2 \"b\": f32[{n}] param init=kaiming\n\
%0 = input \"x\" : f32[B, {k}]\n%1 = input \"r\" : f32[B, {n}]\n%2 = param 0 : trit[{n}, {k}]\n%3 = param 1 : f32[{n}]\n%4 = param 2 : f32[{n}]\n\
%5 = matmul %0, %2 : f32[B, {n}]\n%6 = mul %5, %3 : f32[B, {n}]\n%7 = add %6, %4 : f32[B, {n}]\n\
{res}%{} = {act} %{last} : f32[B, {n}]\noutput %{}\n",
        last + 1,
        last + 1
    );
    ir::parse(&text, FileId(0)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The add/subtract kernel's documented order (compiler::codegen::ternary_gemm): lane `j` sums
/// `x`, `-x` or `0` over `k = 4 i + j` in increasing `k`, then `(l0 + l1) + (l2 + l3)`.
fn add_sub_dot(x: &[f32], codes: &[i8]) -> f32 {
    let mut lanes = [0f32; 4];
    for (i, (x, c)) in x.iter().zip(codes).enumerate() {
        let v = match c {
            1 => *x,
            -1 => -*x,
            _ => 0.0,
        };
        lanes[i % 4] += v;
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// The f32-activation ternary kernel (additions and subtractions only, up to
    /// `ADD_SUB_MAX_ROWS` rows): equal bit for bit to its stated summation order followed by
    /// the epilogue in the interpreter's order; and at every batch (more rows run on the f32
    /// GEMM over decoded codes) within the f32 summation bound of the interpreter (f64 sums).
    #[test]
    fn f32_activation_ternary_layers_follow_the_stated_order(
        n in 1usize..10, k in prop::sample::select(vec![32usize, 33, 63, 64, 65, 128, 200, 300, 520, 1100]),
        batch in 1usize..12, residual in any::<bool>(), relu6 in any::<bool>(), seed in 0u64..1000, threads in 1usize..3) {
        let act = if relu6 { "relu6" } else { "relu" };
        let g = f32_layer(n, k, residual, act);
        ir::verify(&g).expect("valid");
        let w = Weights::init(&g.params, seed);
        let xs = [input(&[batch, k], seed as usize), input(&[batch, n], seed as usize + 1)];
        let q = interp::quant::quantize(
            w.tensors["w"].view().into_shape_with_order((n, k)).expect("2-d"),
            ir::QuantRule::Absmean,
        );
        let (s, b) = (&w.tensors["s"], &w.tensors["b"]);
        for level in [OptLevel::O0, OptLevel::O2, OptLevel::O3] {
            let popts = passes::Options { weights: Some(&w), int8_activations: false, ..passes::Options::new(level) };
            let opt = passes::optimize(&g, &popts).expect("valid");
            let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), &w, Precision::Ternary).expect("compiles");
            prop_assert_eq!(parts.kernels.len(), 1, "one add/subtract kernel");
            let mut model = triton::runtime::Model::from_parts(parts, threads).expect("maps");
            // Split every product over the threads, however small (the split paths under test).
            model.set_parallel_threshold(0);
            let y = model.run(&[xs[0].view(), xs[1].view()]).expect("runs").remove(0);
            let p = interp::prepare(&opt.graph, &w, Precision::Ternary).expect("weights");
            let r = interp::run(&opt.graph, &p, &xs, Precision::Ternary).expect("runs").remove(0);
            for row in 0..batch {
                let xr: Vec<f32> = (0..k).map(|i| xs[0][[row, i]]).collect();
                for c in 0..n {
                    let codes: Vec<i8> = q.codes.row(c).to_vec();
                    let mut e = add_sub_dot(&xr, &codes) * q.scale[c] * s[[c]] + b[[c]];
                    if residual {
                        e += xs[1][[row, c]];
                    }
                    e = if relu6 { e.clamp(0.0, 6.0) } else { e.max(0.0) };
                    let got = y[[row, c]];
                    if batch <= triton::runtime::ADD_SUB_MAX_ROWS {
                        prop_assert_eq!(got, e, "row {} channel {} n {} k {} {:?}", row, c, n, k, level);
                    }
                    // |sum in f32 - exact| <= (k + 2) eps sum |x| for any summation order, then the
                    // epilogue's few roundings.
                    let mag: f32 = xr.iter().zip(&codes).map(|(x, c)| (x * *c as f32).abs()).sum::<f32>()
                        * (q.scale[c] * s[[c]]).abs();
                    let bound = ((k + 2) as f32 * f32::EPSILON) * mag + 4.0 * f32::EPSILON * (1.0 + r[[row, c]].abs());
                    prop_assert!((got - r[[row, c]]).abs() <= bound, "{} vs interpreter {} (bound {})", got, r[[row, c]], bound);
                }
            }
        }
    }
}

#[test]
fn wrong_inputs_are_errors_naming_the_expected_shape() {
    let checked = triton::check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_mlp.tri"));
    let model = &checked.models[0];
    let jit = compile_model(model, &Weights::init(model.params(), 1), &Options::default()).expect("compiles");
    let err = jit.run(&input(&[2, 28, 28], 0).view()).expect_err("wrong rank");
    assert_eq!(
        err.to_string(),
        "input `x` must have shape f32[B, 784], got f32[2, 28, 28]: expected 2 dimensions, got 3"
    );
    let err = jit.run(&input(&[2, 783], 0).view()).expect_err("wrong width");
    assert!(err.to_string().contains("dimension 1 is 783, expected 784"), "{err}");
    let err = jit.run(&ArrayD::zeros(IxDyn(&[0, 784])).view()).expect_err("empty batch");
    assert!(err.to_string().contains("at least 1"), "{err}");
}

/// Buffers are reused between calls (the arena): a run after runs of other batch sizes, and runs
/// from several threads at once, give exactly what a fresh model gives.
#[test]
fn repeated_and_concurrent_runs_reuse_storage_without_changing_results() {
    let checked = triton::check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_mlp.tri"));
    let model = &checked.models[0];
    let w = Weights::init(model.params(), 9);
    let opts = Options { opt: OptLevel::O3, threads: 2, ..Options::default() };
    let fresh = |x: &ArrayD<f32>| compile_model(model, &w, &opts).expect("compiles").run(&x.view()).expect("runs");
    let xs: Vec<ArrayD<f32>> = [64, 1, 7, 64, 2].iter().enumerate().map(|(i, b)| input(&[*b, 784], i)).collect();
    let expected: Vec<ArrayD<f32>> = xs.iter().map(fresh).collect();
    let jit = compile_model(model, &w, &opts).expect("compiles");
    for _ in 0..2 {
        for (x, e) in xs.iter().zip(&expected) {
            assert_eq!(&jit.run(&x.view()).expect("runs"), e);
        }
    }
    std::thread::scope(|s| {
        for t in 0..4 {
            let (jit, xs, expected) = (&jit, &xs, &expected);
            s.spawn(move || {
                for i in 0..20 {
                    let j = (i + t) % xs.len();
                    assert_eq!(&jit.run(&xs[j].view()).expect("runs"), &expected[j], "thread {t} call {i}");
                }
            });
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Two ternary layers back to back: at -O3 the quantize step between them is folded into the
    /// first product (requantization per block of rows, fused in), and the result still equals
    /// the interpreter exactly, on 1 and 2 threads, on every kernel.
    #[test]
    fn requantization_fused_into_a_product_is_exact(n1 in 1usize..80, k in prop::sample::select(vec![17usize, 64, 130]),
                                                    n2 in 1usize..12, batch in prop::sample::select(vec![1usize, 3, 16, 17, 40]),
                                                    seed in 0u64..1000) {
        let text = format!("graph Two\nparam 0 \"w1\": trit[{n1}, {k}] weight quant=absmean init=kaiming\n\
param 1 \"w2\": trit[{n2}, {n1}] weight quant=absmean init=kaiming\n\
%0 = input \"x\" : f32[B, {k}]\n%1 = param 0 : trit[{n1}, {k}]\n%2 = param 1 : trit[{n2}, {n1}]\n\
%3 = quantize_i8 %0 : i8[B, {k}]\n%4 = matmul %3, %1 : i32[B, {n1}]\n%5 = dequantize %4 : f32[B, {n1}]\n\
%6 = relu %5 : f32[B, {n1}]\n%7 = quantize_i8 %6 : i8[B, {n1}]\n%8 = matmul %7, %2 : i32[B, {n2}]\n\
%9 = dequantize %8 : f32[B, {n2}]\noutput %9\n");
        let g = ir::parse(&text, FileId(0)).unwrap_or_else(|e| panic!("{e}\n{text}"));
        ir::verify(&g).expect("valid");
        let w = Weights::init(&g.params, seed);
        let x = input(&[batch, k], seed as usize);
        let r = interpret(&g, &w, &x, Precision::Ternary, OptLevel::O3);
        let opt = passes::optimize(&g, &passes::Options { weights: Some(&w), ..passes::Options::new(OptLevel::O3) }).expect("valid");
        let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), &w, Precision::Ternary).expect("compiles");
        let fused = parts.steps.iter().filter(|s| matches!(s, triton::runtime::engine::plan::Step::Gemm { epilogue, .. } if epilogue.quantize.is_some())).count();
        let quantize_steps = parts.steps.iter().filter(|s| matches!(s, triton::runtime::engine::plan::Step::Quantize { .. })).count();
        prop_assert_eq!((fused, quantize_steps), (1, 1), "{:?}", parts.steps);
        for threads in [1, 2] {
            let mut model = triton::runtime::Model::from_parts(parts.clone(), threads).expect("maps");
            model.set_parallel_threshold(0);
            for (isa, jit) in Isa::available().flat_map(|i| [(i, false), (i, true)]) {
                model.set_isa(isa);
                model.set_jit_gemm(jit);
                let y = model.run(&[x.view()]).expect("runs").remove(0);
                prop_assert_eq!(&y, &r, "n1 {} k {} n2 {} batch {} threads {} {} jit {}", n1, k, n2, batch, threads, model.isa(), model.jit_gemm());
            }
        }
    }
}

/// The runtime quantizes an input straight from the caller's array and copies it only for a
/// later f32 reader: an input read by a quantize step and then by an add, given as a
/// contiguous and as a transposed (non-contiguous) view, gives the interpreter's result.
#[test]
fn an_input_read_after_its_quantization_is_still_the_callers_values() {
    let text = "graph Reuse\nparam 0 \"w\": trit[64, 64] weight quant=absmean init=kaiming\n\
%0 = input \"x\" : f32[B, 64]\n%1 = param 0 : trit[64, 64]\n%2 = quantize_i8 %0 : i8[B, 64]\n\
%3 = matmul %2, %1 : i32[B, 64]\n%4 = dequantize %3 : f32[B, 64]\n%5 = relu %4 : f32[B, 64]\n\
%6 = add %5, %0 : f32[B, 64]\noutput %6\n";
    let g = ir::parse(text, FileId(0)).unwrap_or_else(|e| panic!("{e}"));
    ir::verify(&g).expect("valid");
    let w = Weights::init(&g.params, 3);
    let x = input(&[5, 64], 1);
    let xt = x.t().as_standard_layout().into_owned();
    let transposed = xt.t();
    assert!(!transposed.is_standard_layout());
    for level in [OptLevel::O0, OptLevel::O3] {
        let r = interpret(&g, &w, &x, Precision::Ternary, level);
        let opt =
            passes::optimize(&g, &passes::Options { weights: Some(&w), ..passes::Options::new(level) }).expect("valid");
        let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), &w, Precision::Ternary)
            .expect("compiles");
        let model = triton::runtime::Model::from_parts(parts, 1).expect("maps");
        for view in [x.view(), transposed.view()] {
            let y = model.run(std::slice::from_ref(&view)).expect("runs").remove(0);
            assert_eq!(y, r, "{level:?}, standard layout {}", view.is_standard_layout());
            // Inputs are read, never written.
            assert_eq!(view, x.view());
        }
    }
}

/// Every zoo model runs on the JIT backend (no interpreter fallback) and matches the
/// interpreter on the same optimized graph: within 1e-5 relative per value (measured: at most
/// 4.6e-6), except at -O3 ternary. There f32 products (the f32 stem, accumulating in f32 where
/// the interpreter uses f64) feed int8 quantizers, and a last-bit difference can flip one
/// activation's rounding; ResNets amplify such flips (in the interpreter alone, moving every
/// input by one ulp moves ResNet-18's -O3 output by 0.68% relative L2). So -O3 ternary is
/// bounded by 2% relative L2 (measured: R18 0.85%, R34 1.1%, R50 1.0%; the others below 1e-6).
#[test]
fn zoo_models_run_on_the_jit_and_match_the_interpreter() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for file in [
        "mnist_cnn",
        "resnet18_cifar10",
        "mobilenetv2_cifar10",
        "vgg16_cifar10",
        "resnet50_cifar10",
        "resnet34_cifar10",
        "efficientnet_b0_imagenet",
    ] {
        let checked = triton::check_file(&dir.join(format!("{file}.tri")));
        let model = &checked.models[0];
        let w = Weights::init(model.params(), 7);
        let mut shape: Vec<usize> =
            model.inputs()[0].1.shape.iter().map(|d| d.as_known().unwrap_or(2) as usize).collect();
        shape[0] = 2;
        let x = input(&shape, 3);
        for precision in [Precision::Fp32, Precision::Ternary] {
            for level in [OptLevel::O0, OptLevel::O2, OptLevel::O3] {
                let opts = Options { opt: level, precision, threads: 2, ..Options::default() };
                let jit = compile_model(model, &w, &opts).unwrap_or_else(|e| panic!("{file} {level:?}: {e}"));
                let y = jit.run(&x.view()).expect("runs");
                let r = interpret(&model.graph, &w, &x, precision, level);
                let what = format!("{file} {level:?} {}", precision.name());
                assert!(y.iter().all(|v| v.is_finite()), "{what}: non-finite output");
                if level == OptLevel::O3 && precision == Precision::Ternary {
                    let err = rel_l2(&y, &r);
                    assert!(err <= 0.02, "{what}: relative L2 {err}");
                } else {
                    assert_close(&y, &r, 1e-5, &what);
                }
            }
        }
    }
}

/// A one-convolution graph: `x [B, C, H, W]` -> int8 -> ternary conv -> scale, bias,
/// (residual `r`), relu.
#[allow(clippy::too_many_arguments)]
fn conv_layer(
    c: usize,
    o: usize,
    hw: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    residual: bool,
) -> Graph {
    let oh = (hw + 2 * pad - k) / stride + 1;
    let cg = c / groups;
    let y = format!("f32[B, {o}, {oh}, {oh}]");
    let (res, last) = if residual { (format!("%10 = add %9, %1 : {y}\n"), 10) } else { (String::new(), 9) };
    let text = format!(
        "graph C\nparam 0 \"w\": trit[{o}, {cg}, {k}, {k}] weight quant=absmean init=kaiming\nparam 1 \"s\": f32[{o}, 1, 1] param init=kaiming\nparam 2 \"b\": f32[{o}, 1, 1] param init=kaiming\n\
%0 = input \"x\" : f32[B, {c}, {hw}, {hw}]\n%1 = input \"r\" : {y}\n%2 = param 0 : trit[{o}, {cg}, {k}, {k}]\n%3 = param 1 : f32[{o}, 1, 1]\n%4 = param 2 : f32[{o}, 1, 1]\n\
%5 = quantize_i8 %0 : i8[B, {c}, {hw}, {hw}]\n%6 = conv2d %5, %2 {{stride=[{stride}, {stride}], padding=[{pad}, {pad}], dilation=[1, 1], groups={groups}}} : i32[B, {o}, {oh}, {oh}]\n\
%7 = dequantize %6 : {y}\n%8 = mul %7, %3 : {y}\n%9 = add %8, %4 : {y}\n{res}%{} = relu %{last} : {y}\noutput %{}\n",
        last + 1,
        last + 1
    );
    ir::parse(&text, FileId(0)).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Int8 x ternary convolutions (stride, padding, groups, odd sizes, K below and above the
    /// tq2 threshold) equal the interpreter bit for bit at every level, on 1 and 2 threads.
    #[test]
    fn ternary_convolutions_are_exact(
        cg in prop_oneof![1usize..12, 30usize..70], og in 1usize..7, groups in 1usize..4, hw in 1usize..9, k in 1usize..4,
        stride in 1usize..3, pad in 0usize..2, batch in 1usize..4, residual: bool, seed in 0u64..1000,
    ) {
        prop_assume!(hw + 2 * pad >= k);
        let (c, o) = (cg * groups, og * groups);
        let g = conv_layer(c, o, hw, k, stride, pad, groups, residual);
        ir::verify(&g).expect("valid");
        let w = Weights::init(&g.params, seed);
        let oh = (hw + 2 * pad - k) / stride + 1;
        let xs = [input(&[batch, c, hw, hw], seed as usize), input(&[batch, o, oh, oh], seed as usize + 1)];
        for level in [OptLevel::O0, OptLevel::O2, OptLevel::O3] {
            let opt = passes::optimize(&g, &passes::Options { weights: Some(&w), ..passes::Options::new(level) }).expect("valid");
            let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), &w, Precision::Ternary).expect("compiles");
            // One-group convolutions of at most 16 channels may run on a direct JIT kernel
            // (`codegen::lower::direct_conv_spec`); the others on the engine's kernels.
            prop_assert!(groups == 1 || parts.kernels.is_empty(), "a grouped convolution on a JIT kernel");
            let p = interp::prepare(&opt.graph, &w, Precision::Ternary).expect("weights");
            let r = interp::run(&opt.graph, &p, &xs, Precision::Ternary).expect("runs").remove(0);
            // 1 and 2 threads, every level the CPU runs.
            for (threads, isa) in Isa::available().flat_map(|i| [(1, i), (2, i)]) {
                let mut model = triton::runtime::Model::from_parts(parts.clone(), threads).expect("maps");
                model.set_isa(isa);
                model.set_parallel_threshold(0);
                let y = model.run(&[xs[0].view(), xs[1].view()]).expect("runs").remove(0);
                prop_assert_eq!(&y, &r, "c {} o {} hw {} k {} stride {} pad {} groups {} {:?} threads {} {}", c, o, hw, k, stride, pad, groups, level, threads, model.isa());
            }
        }
    }
}

/// The engine at -O0 and -O3 on every level gives the interpreter's bits for graph `g` (integer
/// paths and the shared f32 definitions after them).
fn engine_equals_the_interpreter_bitwise(g: &Graph, w: &Weights, x: &ArrayD<f32>, what: &str) {
    for level in [OptLevel::O0, OptLevel::O3] {
        let opt =
            passes::optimize(g, &passes::Options { weights: Some(w), ..passes::Options::new(level) }).expect("valid");
        let p = interp::prepare(&opt.graph, w, Precision::Ternary).expect("weights");
        let r = interp::run(&opt.graph, &p, std::slice::from_ref(x), Precision::Ternary).expect("runs");
        let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), w, Precision::Ternary)
            .expect("compiles");
        let mut model = triton::runtime::Model::from_parts(parts, 1).expect("maps");
        for isa in Isa::available() {
            model.set_isa(isa);
            let y = model.run(&[x.view()]).unwrap_or_else(|e| panic!("{what} at {level:?}, {isa}: {e}"));
            for (got, want) in y.iter().zip(&r) {
                let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(got), bits(want), "{what} at {level:?}, {isa}");
            }
        }
    }
}

/// Every element-wise op of the language after an int8 product (fused into its epilogue where
/// it is an activation, a step of its own otherwise) gives the interpreter's bits at -O0 and
/// -O3, every level the machine has, on values that reach the ops' tails (|x| up to ~40),
/// zeros, and a second op on the first's result.
#[test]
fn every_unary_op_equals_the_interpreter_after_an_int8_product() {
    use triton::runtime::ops::UnaryOp;
    for op in UnaryOp::ALL {
        let name = op.name();
        let text = format!(
            "graph U\nparam 0 \"w\": trit[24, 40] weight quant=absmean init=kaiming\n\
%0 = input \"x\" : f32[B, 40]\n%1 = param 0 : trit[24, 40]\n%2 = quantize_i8 %0 : i8[B, 40]\n\
%3 = matmul %2, %1 : i32[B, 24]\n%4 = dequantize %3 : f32[B, 24]\n%5 = {name} %4 : f32[B, 24]\n\
%6 = {name} %5 : f32[B, 24]\noutput %5\noutput %6\n"
        );
        let g = ir::parse(&text, FileId(0)).unwrap_or_else(|e| panic!("{e}\n{text}"));
        ir::verify(&g).expect("valid");
        let w = Weights::init(&g.params, 11);
        let x = input(&[5, 40], 4).mapv(|v| v * 8.0);
        engine_equals_the_interpreter_bitwise(&g, &w, &x, name);
    }
}

/// Layer and RMS normalization after an int8 product (a step over rows of the last axis, on
/// the shared definition) give the interpreter's bits at -O0 and -O3, every level, batch 1-4.
#[test]
fn normalizations_equal_the_interpreter() {
    let text = "graph N\nparam 0 \"w\": trit[24, 40] weight quant=absmean init=kaiming\n\
param 1 \"g\": f32[24] param init=ones\nparam 2 \"b\": f32[24] param init=zeros\n\
%0 = input \"x\" : f32[B, 40]\n%1 = param 0 : trit[24, 40]\n%2 = param 1 : f32[24]\n%3 = param 2 : f32[24]\n\
%4 = quantize_i8 %0 : i8[B, 40]\n%5 = matmul %4, %1 : i32[B, 24]\n%6 = dequantize %5 : f32[B, 24]\n\
%7 = layer_norm %6, %2, %3 {eps=0.001} : f32[B, 24]\n%8 = rms_norm %7, %2 {eps=1e-05} : f32[B, 24]\n\
%9 = relu %8 : f32[B, 24]\noutput %9\noutput %7\n";
    let g = ir::parse(text, FileId(0)).unwrap_or_else(|e| panic!("{e}\n{text}"));
    ir::verify(&g).expect("valid");
    let mut w = Weights::init(&g.params, 5);
    // A gamma and beta that are not ones and zeros.
    for (name, k) in [("g", 1usize), ("b", 2)] {
        let v = w.tensors.get_mut(name).expect("initialised");
        v.iter_mut().enumerate().for_each(|(j, x)| *x = 0.5 + (k * 7 + j) as f32 * 0.03);
    }
    for batch in 1..5 {
        let x = input(&[batch, 40], batch).mapv(|v| v * 3.0);
        engine_equals_the_interpreter_bitwise(&g, &w, &x, &format!("batch {batch}"));
    }
}

/// Attention written with the tensor ops (permute, transpose, bmm, softmax, layer_norm) runs
/// on the engine within rounding of the interpreter, at batch 1-4, -O0 and -O3, every level.
#[test]
fn attention_from_tensor_ops_matches_the_interpreter() {
    let src = common::ATTENTION;
    let checked = triton::check_source("att.tri", src, None);
    assert!(!checked.has_errors(), "does not check");
    let model = &checked.models[0];
    let w = Weights::init(model.params(), 3);
    for batch in 1..5 {
        let x = input(&[batch, 4, 8], batch);
        for (level, precision) in [(OptLevel::O0, Precision::Fp32), (OptLevel::O3, Precision::Ternary)] {
            let r = interpret(&model.graph, &w, &x, precision, level);
            let opts = Options { opt: level, precision, threads: 1, ..Default::default() };
            let mut m = compile_model(model, &w, &opts).expect("compiles");
            for isa in Isa::available() {
                m.set_isa(isa);
                let y = m.run(&x.view()).unwrap_or_else(|e| panic!("{level:?}: {e}"));
                assert_close(&y, &r, 1e-5, &format!("batch {batch}, {level:?}, {isa}"));
            }
        }
    }
}

/// Token embeddings feeding ternary projections with per-token int8 activations: the engine
/// gives the interpreter's bits at batch 1-5, -O0 and -O3, every level; an id outside the
/// vocabulary (or not an integer) is the same clear error on both, never a read outside the
/// table.
#[test]
fn embeddings_equal_the_interpreter_and_refuse_ids_outside_the_vocabulary() {
    let src = "use std::transformer::{Embedding, TokenLinear}
model Lm {
    e = Embedding(50, 16)
    p = TokenLinear(16, 24, ternary = true)
    fn forward(ids: i32[B, 6]) -> f32[B, 6, 24] {
        return p(e(ids))
    }
}
";
    let checked = triton::check_source("lm.tri", src, None);
    assert!(!checked.has_errors(), "{}", checked.render_plain());
    let model = &checked.models[0];
    let w = Weights::init(model.params(), 5);
    for batch in 1..=5 {
        let ids = ArrayD::from_shape_fn(IxDyn(&[batch, 6]), |i| ((i[0] * 31 + i[1] * 17) % 50) as f32);
        for level in [OptLevel::O0, OptLevel::O3] {
            let r = interpret(&model.graph, &w, &ids, Precision::Ternary, level);
            let opts = Options { opt: level, precision: Precision::Ternary, threads: 1, ..Default::default() };
            let mut m = compile_model(model, &w, &opts).expect("compiles");
            for isa in Isa::available() {
                m.set_isa(isa);
                let y = m.run(&ids.view()).unwrap_or_else(|e| panic!("{level:?}: {e}"));
                let bits = |a: &ArrayD<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&r), "batch {batch}, {level:?}, {isa}");
            }
        }
    }
    let opts = Options { precision: Precision::Ternary, threads: 1, ..Default::default() };
    let m = compile_model(model, &w, &opts).expect("compiles");
    let p = interp::prepare(&model.graph, &w, Precision::Ternary).expect("weights");
    for (bad, why) in [(50.0, "outside the vocabulary of 50 tokens"), (-1.0, "outside"), (2.5, "not an integer")] {
        let mut ids = ArrayD::from_elem(IxDyn(&[2, 6]), 3.0f32);
        ids[[1, 4]] = bad;
        let e = m.run(&ids.view()).expect_err("a bad id").to_string();
        assert!(e.contains(why) && e.contains("element 10"), "engine: {e}");
        let e = interp::run(&model.graph, &p, &[ids], Precision::Ternary).expect_err("a bad id").to_string();
        assert!(e.contains(why) && e.contains("element 10"), "interpreter: {e}");
    }
}
