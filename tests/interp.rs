//! The reference interpreter: op semantics against hand-computed values (docs/language.md is
//! the contract), and optimized graphs against unoptimized ones for the whole zoo.

mod common;
use common::rel_l2;

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, IxDyn, array};
use triton::compiler::interp::{self, Precision, Weights};
use triton::compiler::ir;
use triton::compiler::ir::Graph;
use triton::compiler::passes::{self, OptLevel, Options};
use triton::compiler::source::FileId;

fn arr(shape: &[usize], data: &[f32]) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), data.to_vec()).expect("shape matches data")
}

/// Runs IR text with the given parameter values and inputs.
fn eval(
    ir_text: &str,
    params: &[(&str, ArrayD<f32>)],
    inputs: &[ArrayD<f32>],
    precision: Precision,
) -> Vec<ArrayD<f32>> {
    let g = ir::parse(ir_text, FileId(0)).expect("IR parses");
    ir::verify(&g).expect("IR verifies");
    let tensors: HashMap<String, ArrayD<f32>> = params.iter().map(|(n, a)| (n.to_string(), a.clone())).collect();
    let w = Weights { tensors };
    let p = interp::prepare(&g, &w, precision).expect("weights match");
    interp::run(&g, &p, inputs, precision).expect("runs")
}

fn close(a: &ArrayD<f32>, b: &ArrayD<f32>, tol: f32) -> bool {
    a.shape() == b.shape() && a.iter().zip(b.iter()).all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[test]
fn conv2d_padding_stride_dilation() {
    // 1x1x3x3 input 1..9, 2x2 kernel of ones, padding 1, stride 2: windows at (-1,-1), (-1,1), (1,-1), (1,1).
    let ir = "graph G\nparam 0 \"w\": f32[1, 1, 2, 2] weight init=kaiming\n%0 = input \"x\" : f32[B, 1, 3, 3]\n%1 = param 0 : f32[1, 1, 2, 2]\n%2 = conv2d %0, %1 {stride=[2, 2], padding=[1, 1], dilation=[1, 1], groups=1} : f32[B, 1, 2, 2]\noutput %2\n";
    let x = arr(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let y = eval(ir, &[("w", arr(&[1, 1, 2, 2], &[1.; 4]))], std::slice::from_ref(&x), Precision::Fp32);
    assert_eq!(y[0], arr(&[1, 1, 2, 2], &[1., 5., 11., 28.]));
    // Dilation 2 with a 2x2 kernel on 3x3, no padding: one window of corners 1+3+7+9.
    let ir_d = ir
        .replace("stride=[2, 2], padding=[1, 1], dilation=[1, 1]", "stride=[1, 1], padding=[0, 0], dilation=[2, 2]")
        .replace("f32[B, 1, 2, 2]\noutput", "f32[B, 1, 1, 1]\noutput");
    let y = eval(&ir_d, &[("w", arr(&[1, 1, 2, 2], &[1.; 4]))], &[x], Precision::Fp32);
    assert_eq!(y[0], arr(&[1, 1, 1, 1], &[20.]));
}

#[test]
fn grouped_conv_only_sees_its_group() {
    // 2 channels, groups 2, 1x1 kernels [2] and [3]: each output channel scales its own input.
    let ir = "graph G\nparam 0 \"w\": f32[2, 1, 1, 1] weight init=kaiming\n%0 = input \"x\" : f32[B, 2, 1, 2]\n%1 = param 0 : f32[2, 1, 1, 1]\n%2 = conv2d %0, %1 {stride=[1, 1], padding=[0, 0], dilation=[1, 1], groups=2} : f32[B, 2, 1, 2]\noutput %2\n";
    let x = arr(&[1, 2, 1, 2], &[1., 2., 10., 20.]);
    let y = eval(ir, &[("w", arr(&[2, 1, 1, 1], &[2., 3.]))], &[x], Precision::Fp32);
    assert_eq!(y[0], arr(&[1, 2, 1, 2], &[2., 4., 30., 60.]));
}

#[test]
fn pooling_pads_max_with_minus_infinity_and_counts_zeros_for_average() {
    let x = arr(&[1, 1, 2, 2], &[-1., -2., -3., -4.]);
    let max = "graph G\n%0 = input \"x\" : f32[B, 1, 2, 2]\n%1 = max_pool2d %0 {kernel=[2, 2], stride=[2, 2], padding=[1, 1]} : f32[B, 1, 2, 2]\noutput %1\n";
    assert_eq!(eval(max, &[], std::slice::from_ref(&x), Precision::Fp32)[0], arr(&[1, 1, 2, 2], &[-1., -2., -3., -4.]));
    let avg = max.replace("max_pool2d", "avg_pool2d");
    assert_eq!(eval(&avg, &[], &[x], Precision::Fp32)[0], arr(&[1, 1, 2, 2], &[-0.25, -0.5, -0.75, -1.0]));
}

#[test]
fn broadcasting_aligns_from_the_right() {
    let ir = "graph G\n%0 = input \"a\" : f32[2, 1]\n%1 = input \"b\" : f32[3]\n%2 = add %0, %1 : f32[2, 3]\n%3 = const 2.0 : f32[]\n%4 = mul %2, %3 : f32[2, 3]\noutput %4\n";
    let y = eval(ir, &[], &[arr(&[2, 1], &[10., 20.]), arr(&[3], &[1., 2., 3.])], Precision::Fp32);
    assert_eq!(y[0], arr(&[2, 3], &[22., 24., 26., 42., 44., 46.]));
}

#[test]
fn int8_quantization_saturates_rounds_ties_to_even_and_scales_per_sample() {
    // Sample 0: max 127 -> factor 1: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -127 stays. Sample 1: all zero.
    let ir = "graph G\n%0 = input \"x\" : f32[B, 4]\n%1 = quantize_i8 %0 : i8[B, 4]\n%2 = dequantize %1 : f32[B, 4]\noutput %2\n";
    let x = arr(&[2, 4], &[0.5, 1.5, 2.5, -127.0, 0., 0., 0., 0.]);
    assert_eq!(
        eval(ir, &[], std::slice::from_ref(&x), Precision::Ternary)[0],
        arr(&[2, 4], &[0., 2., 2., -127., 0., 0., 0., 0.])
    );
    // FP32 precision: quantization is the identity.
    assert_eq!(eval(ir, &[], std::slice::from_ref(&x), Precision::Fp32)[0], x);
    // A calibrated scale saturates at +-127: 100 * 2 = 200 -> 127 -> 63.5; 0.25 * 2 = 0.5 -> 0
    // and 0.75 * 2 = 1.5 -> 2 (ties to even) -> 1.0.
    let fixed = ir.replace("quantize_i8 %0 :", "quantize_i8 %0 {scale=0.5} :");
    let y = eval(&fixed, &[], &[arr(&[1, 4], &[100., -100., 0.25, 0.75])], Precision::Ternary);
    assert_eq!(y[0], arr(&[1, 4], &[63.5, -63.5, 0., 1.0]));
}

#[test]
fn integer_ternary_matmul_is_exact() {
    // x = [1, -2, 3] quantizes with factor 127/3 to [42, -85, 127] (42.33 -> 42, -84.67 -> -85).
    // Trit rows (absmean): [1, 0, -1] and [1, 1, 1] with gammas 2/3 and 1.
    let ir = "graph G\nparam 0 \"w\": trit[2, 3] weight quant=absmean init=kaiming\n%0 = input \"x\" : f32[B, 3]\n%1 = param 0 : trit[2, 3]\n%2 = quantize_i8 %0 : i8[B, 3]\n%3 = matmul %2, %1 : i32[B, 2]\n%4 = dequantize %3 : f32[B, 2]\noutput %4\n";
    let w = arr(&[2, 3], &[1., 0., -1., 1., 1., 1.]);
    let y = eval(ir, &[("w", w)], &[arr(&[1, 3], &[1., -2., 3.])], Precision::Ternary);
    let s = 3.0f32 / 127.0;
    let want = arr(&[1, 2], &[(42 - 127) as f32 * (s * (2.0 / 3.0)), (42 - 85 + 127) as f32 * (s * 1.0)]);
    assert!(close(&y[0], &want, 1e-6), "{} vs {want}", y[0]);
}

#[test]
fn ternary_weights_follow_their_rule_at_ternary_precision_only() {
    let ir = "graph G\nparam 0 \"w\": trit[1, 4] weight quant=twn init=kaiming\n%0 = input \"x\" : f32[B, 4]\n%1 = param 0 : trit[1, 4]\n%2 = matmul %0, %1 : f32[B, 1]\noutput %2\n";
    let w = arr(&[1, 4], &[0.9, -0.1, 0.4, -1.2]);
    let x = arr(&[1, 4], &[1., 1., 1., 1.]);
    // TWN: codes [1, 0, 0, -1], alpha 1.05 -> (1 - 1) * 1.05 = 0; FP32: the latent sum 0.0.
    let t = eval(ir, &[("w", w.clone())], std::slice::from_ref(&x), Precision::Ternary);
    assert!(t[0][[0, 0]].abs() < 1e-6);
    let x2 = arr(&[1, 4], &[2., 0., 0., 1.]);
    let t = eval(ir, &[("w", w.clone())], std::slice::from_ref(&x2), Precision::Ternary);
    assert!((t[0][[0, 0]] - 1.05).abs() < 1e-5, "{}", t[0]);
    let f = eval(ir, &[("w", w)], &[x2], Precision::Fp32);
    assert!((f[0][[0, 0]] - 0.6).abs() < 1e-5, "{}", f[0]);
}

#[test]
fn batch_norm_softmax_and_shape_ops() {
    let ir = "graph G\nparam 0 \"g\": f32[2] param init=ones\nparam 1 \"b\": f32[2] param init=zeros\nparam 2 \"m\": f32[2] buffer init=zeros\nparam 3 \"v\": f32[2] buffer init=ones\n%0 = input \"x\" : f32[B, 2, 1, 2]\n%1 = param 0 : f32[2]\n%2 = param 1 : f32[2]\n%3 = param 2 : f32[2]\n%4 = param 3 : f32[2]\n%5 = batch_norm %0, %1, %2, %3, %4 {eps=0.0} : f32[B, 2, 1, 2]\n%6 = global_avg_pool %5 : f32[B, 2]\n%7 = softmax %6 {axis=1} : f32[B, 2]\n%8 = reshape %5 {shape=[B, 4]} : f32[B, 4]\n%9 = concat %8, %8 {axis=1} : f32[B, 8]\noutput %7\noutput %9\n";
    let params = [
        ("g", array![2.0f32, 1.0].into_dyn()),
        ("b", array![1.0f32, 0.0].into_dyn()),
        ("m", array![1.0f32, 0.0].into_dyn()),
        ("v", array![4.0f32, 1.0].into_dyn()),
    ];
    let x = arr(&[1, 2, 1, 2], &[3., 5., 1., 1.]);
    let y = eval(ir, &params, &[x], Precision::Fp32);
    // channel 0: (x - 1) / 2 * 2 + 1 = x: [3, 5] -> mean 4; channel 1: [1, 1] -> mean 1.
    let e = (3.0f32).exp();
    assert!(close(&y[0], &arr(&[1, 2], &[e / (e + 1.0), 1.0 / (e + 1.0)]), 1e-6), "{}", y[0]);
    assert_eq!(y[1], arr(&[1, 8], &[3., 5., 1., 1., 3., 5., 1., 1.]));
}

#[test]
fn inputs_are_validated_before_running() {
    let g = ir::parse("graph G\n%0 = input \"x\" : f32[B, 4]\n%1 = relu %0 : f32[B, 4]\noutput %1\n", FileId(0))
        .expect("parses");
    let p = interp::prepare(&g, &Weights::default(), Precision::Fp32).expect("no params");
    let err = interp::run(&g, &p, &[arr(&[2, 5], &[0.; 10])], Precision::Fp32).expect_err("wrong shape");
    assert_eq!(err.to_string(), "input `x` must have shape f32[B, 4], got f32[2, 5]: dimension 1 is 5, expected 4");
    assert!(interp::run(&g, &p, &[], Precision::Fp32).is_err());
}

/// Every zoo model at every -O level computes what -O0 computes, at both precisions. -O3's int8
/// activations (docs/ir.md, "-O3") are the one intended difference: -O3 matches -O0 with the
/// `int8_act` pass applied within the -O2 tolerance, and plain -O0 within 5% relative L2.
#[test]
fn optimized_zoo_models_match_unoptimized() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for file in [
        "mnist_mlp",
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
        let weights = Weights::init(model.params(), 7);
        let input_ty = model.inputs()[0].1;
        let mut shape: Vec<usize> = input_ty.shape.iter().map(|d| d.as_known().unwrap_or(2) as usize).collect();
        shape[0] = 2;
        let n: usize = shape.iter().product();
        let x =
            ArrayD::from_shape_vec(IxDyn(&shape), (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect())
                .expect("shape");
        let int8_reference = passes::run_passes(&model.graph, &[passes::INT8_ACT], true).expect("valid").graph;
        assert!(
            int8_reference.nodes.len() > model.graph.nodes.len(),
            "{file}: every zoo model has ternary layers with f32 activations"
        );
        for precision in [Precision::Fp32, Precision::Ternary] {
            let run = |g: &Graph| {
                let p = interp::prepare(g, &weights, precision).expect("weights");
                interp::run(g, &p, std::slice::from_ref(&x), precision).expect("runs").remove(0)
            };
            let base = run(&model.graph);
            assert!(base.iter().all(|v| v.is_finite()), "{file}: non-finite output");
            let with_int8 = run(&int8_reference);
            for level in [OptLevel::O1, OptLevel::O2, OptLevel::O3] {
                let opt = passes::optimize(&model.graph, &Options { verify_each: true, ..Options::new(level) })
                    .expect("passes keep the graph valid");
                let y = run(&opt.graph);
                let what = format!("{file} {level:?} {}", precision.name());
                if level == OptLevel::O3 && precision == Precision::Ternary {
                    assert!(close(&y, &with_int8, 1e-4), "{what}: differs from -O0 with int8 activations");
                    let err = rel_l2(&y, &base);
                    assert!(err > 0.0 && err <= 0.05, "{what}: int8 activations moved the output by {err}");
                } else {
                    assert!(close(&y, &base, 1e-4), "{what}: optimized output differs");
                }
            }
        }
    }
}

#[test]
fn weights_round_trip_through_safetensors_and_mismatches_are_listed() {
    let checked = triton::check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_cnn.tri"));
    let params = checked.models[0].params();
    let w = Weights::init(params, 42);
    assert_eq!(w, Weights::init(params, 42), "seeded initialisation is deterministic");
    assert_ne!(w, Weights::init(params, 43));
    // Kaiming bound sqrt(6 / fan_in) for conv1 (fan_in 25); biases start at zero.
    let bound = (6.0f32 / 25.0).sqrt();
    assert!(
        w.tensors["conv1.w"].iter().all(|v| v.abs() <= bound)
            && w.tensors["conv1.w"].iter().any(|v| v.abs() > bound / 2.0)
    );
    assert!(w.tensors["conv1.b"].iter().all(|v| *v == 0.0));
    let bytes = w.to_safetensors(None).expect("serialises");
    assert_eq!(Weights::from_safetensors(&bytes, params).expect("reads back"), w);
    // Drop one tensor, reshape another, add a stray one.
    let mut broken = w.clone();
    broken.tensors.remove("fc2.b");
    broken.tensors.insert("fc1.w".into(), ArrayD::zeros(IxDyn(&[120, 10])));
    broken.tensors.insert("extra.w".into(), ArrayD::zeros(IxDyn(&[2])));
    let err =
        Weights::from_safetensors(&broken.to_safetensors(None).expect("serialises"), params).expect_err("mismatch");
    let msg = err.to_string();
    assert!(msg.contains("missing: fc2.b f32[84]"), "{msg}");
    assert!(msg.contains("wrong shape: fc1.w: expected [120, 400], found [120, 10]"), "{msg}");
    assert!(msg.contains("not a parameter of the model: extra.w"), "{msg}");
}
