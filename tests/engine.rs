//! The execution engine against the reference interpreter on convolutional graphs: random
//! geometries (odd channels, kernels 1/3/5/7, strides, padding, dilation, groups including
//! depthwise), residuals, concat, every pooling, every activation, batch 1..5, every
//! instruction-set level the CPU runs, 1 and 2 threads. On integer paths the results are the
//! interpreter's bits; on f32 paths (FP32 convolutions on the panel kernels) within the f32
//! summation bound of the interpreter's f64 sums. Also: the NaN contract and a concat feeding
//! a pooling at batch 3.

mod common;
use common::input;

use proptest::prelude::*;
use triton::compiler::interp::{self, Precision, Weights};
use triton::compiler::ir::{self, Graph};
use triton::compiler::passes::{self, OptLevel};
use triton::compiler::source::FileId;
use triton::runtime::cpu::Isa;

/// A random convolutional block's parameters.
#[derive(Clone, Debug)]
struct Block {
    c: usize,
    hw: usize,
    o_per_group: usize,
    groups: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    act1: &'static str,
    act2: &'static str,
    pool_max: bool,
    pool_k: usize,
    pool_stride: usize,
    pool_pad: usize,
}

fn out_size(size: usize, k: usize, stride: usize, pad: usize, dil: usize) -> Option<usize> {
    (size + 2 * pad).checked_sub(dil * (k - 1) + 1).map(|s| s / stride + 1)
}

/// `x` -> int8 -> conv (the block's geometry) -> scale, bias, act1 -> int8 -> depthwise 3x3
/// -> + residual -> act2 -> concat with the first activation -> pooling, and its global
/// average: two outputs.
fn block_graph(b: &Block) -> Option<Graph> {
    let (c, o, g) = (b.c * b.groups, b.o_per_group * b.groups, b.groups);
    let cg = b.c;
    let oh = out_size(b.hw, b.k, b.stride, b.pad, b.dil)?;
    let ph = out_size(oh, b.pool_k, b.pool_stride, b.pool_pad, 1)?;
    let (k, s, p, d, hw) = (b.k, b.stride, b.pad, b.dil, b.hw);
    let y = format!("f32[B, {o}, {oh}, {oh}]");
    let pool = if b.pool_max { "max_pool2d" } else { "avg_pool2d" };
    let (pk, ps, pp) = (b.pool_k, b.pool_stride, b.pool_pad);
    let o2 = 2 * o;
    let text = format!(
        "graph Block\n\
param 0 \"w1\": trit[{o}, {cg}, {k}, {k}] weight quant=absmean init=kaiming\n\
param 1 \"s\": f32[{o}, 1, 1] param init=kaiming\n\
param 2 \"b\": f32[{o}, 1, 1] param init=kaiming\n\
param 3 \"w2\": trit[{o}, 1, 3, 3] weight quant=absmean init=kaiming\n\
%0 = input \"x\" : f32[B, {c}, {hw}, {hw}]\n\
%1 = param 0 : trit[{o}, {cg}, {k}, {k}]\n%2 = param 1 : f32[{o}, 1, 1]\n%3 = param 2 : f32[{o}, 1, 1]\n\
%4 = param 3 : trit[{o}, 1, 3, 3]\n\
%5 = quantize_i8 %0 : i8[B, {c}, {hw}, {hw}]\n\
%6 = conv2d %5, %1 {{stride=[{s}, {s}], padding=[{p}, {p}], dilation=[{d}, {d}], groups={g}}} : i32[B, {o}, {oh}, {oh}]\n\
%7 = dequantize %6 : {y}\n%8 = mul %7, %2 : {y}\n%9 = add %8, %3 : {y}\n%10 = {a1} %9 : {y}\n\
%11 = quantize_i8 %10 : i8[B, {o}, {oh}, {oh}]\n\
%12 = conv2d %11, %4 {{stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups={o}}} : i32[B, {o}, {oh}, {oh}]\n\
%13 = dequantize %12 : {y}\n%14 = add %13, %10 : {y}\n%15 = {a2} %14 : {y}\n\
%16 = concat %15, %10 {{axis=1}} : f32[B, {o2}, {oh}, {oh}]\n\
%17 = {pool} %16 {{kernel=[{pk}, {pk}], stride=[{ps}, {ps}], padding=[{pp}, {pp}]}} : f32[B, {o2}, {ph}, {ph}]\n\
%18 = global_avg_pool %17 : f32[B, {o2}]\n\
output %17\noutput %18\n",
        a1 = b.act1,
        a2 = b.act2,
    );
    Some(ir::parse(&text, FileId(0)).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

fn block() -> impl Strategy<Value = Block> {
    let acts = || prop::sample::select(vec!["relu", "relu6", "sigmoid", "silu", "tanh", "gelu", "gelu_tanh"]);
    (
        (1usize..6, 1usize..10, 1usize..4, prop::sample::select(vec![1usize, 2, 3])),
        (prop::sample::select(vec![1usize, 3, 5, 7]), 1usize..4, 0usize..4, 1usize..3),
        (acts(), acts(), any::<bool>(), 1usize..4, 1usize..3, 0usize..2),
    )
        .prop_map(
            |(
                (c, hw, o_per_group, groups),
                (k, stride, pad, dil),
                (act1, act2, pool_max, pool_k, pool_stride, pool_pad),
            )| {
                Block {
                    c,
                    hw: hw + 2,
                    o_per_group,
                    groups,
                    k,
                    stride,
                    pad: pad.min(k / 2 + 1),
                    dil,
                    act1,
                    act2,
                    pool_max,
                    pool_k,
                    pool_stride,
                    pool_pad: pool_pad.min(pool_k / 2),
                }
            },
        )
}

/// The block, depthwise included: `groups == c` with one input channel per group.
fn depthwise(mut b: Block) -> Block {
    b.groups *= b.c;
    b.c = 1;
    b
}

fn check_block(b: &Block, batch: usize, seed: u64) -> Result<(), TestCaseError> {
    let g = block_graph(b);
    prop_assume!(g.is_some(), "the window does not fit");
    let Some(g) = g else { return Ok(()) };
    ir::verify(&g).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let w = Weights::init(&g.params, seed);
    let c = b.c * b.groups;
    let x = input(&[batch, c, b.hw, b.hw], seed as usize);
    for level in [OptLevel::O0, OptLevel::O3] {
        let opt =
            passes::optimize(&g, &passes::Options { weights: Some(&w), ..passes::Options::new(level) }).expect("valid");
        let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), &w, Precision::Ternary)
            .expect("compiles");
        let p = interp::prepare(&opt.graph, &w, Precision::Ternary).expect("weights");
        let r = interp::run(&opt.graph, &p, std::slice::from_ref(&x), Precision::Ternary).expect("runs");
        for (threads, isa) in Isa::available().flat_map(|i| [(1, i), (2, i)]) {
            let mut model = triton::runtime::Model::from_parts(parts.clone(), threads).expect("maps");
            model.set_isa(isa);
            model.set_parallel_threshold(0);
            let y = model.run(&[x.view()]).expect("runs");
            for (got, want) in y.iter().zip(&r) {
                let same = got.shape() == want.shape()
                    && got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                prop_assert!(same, "{b:?} batch {batch} {level:?} {isa} threads {threads}:\n{got}\nvs\n{want}");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_conv_blocks_equal_the_interpreter(b in block(), batch in 1usize..6, seed in 0u64..1000) {
        check_block(&b, batch, seed)?;
    }

    #[test]
    fn random_depthwise_blocks_equal_the_interpreter(b in block(), batch in 1usize..6, seed in 0u64..1000) {
        check_block(&depthwise(b), batch, seed)?;
    }
}

/// Larger channel counts than the proptest reaches: whole tq2 blocks (pointwise convolutions
/// multiply the int8 rows in place), several pixel blocks and channel chunks.
#[test]
fn wide_blocks_equal_the_interpreter() {
    let base = Block {
        c: 70,
        hw: 12,
        o_per_group: 67,
        groups: 1,
        k: 1,
        stride: 1,
        pad: 0,
        dil: 1,
        act1: "relu",
        act2: "relu6",
        pool_max: true,
        pool_k: 2,
        pool_stride: 2,
        pool_pad: 0,
    };
    check_block(&base, 3, 1).expect("pointwise");
    check_block(&Block { k: 3, pad: 1, groups: 2, c: 35, o_per_group: 40, ..base.clone() }, 2, 2).expect("grouped 3x3");
    check_block(&Block { k: 5, pad: 2, stride: 2, pool_max: false, ..base }, 5, 3).expect("5x5 stride 2");
}

/// An FP32 convolution `x -> conv -> * s + b (+ r) -> act` of the block's geometry, or only
/// the convolution (`bare`, to measure the sums' magnitude on |x| and |w|).
fn f32_conv_graph(b: &Block, residual: bool, bare: bool) -> Option<Graph> {
    let (c, o, g) = (b.c * b.groups, b.o_per_group * b.groups, b.groups);
    let oh = out_size(b.hw, b.k, b.stride, b.pad, b.dil)?;
    let (cg, k, s, p, d, hw) = (b.c, b.k, b.stride, b.pad, b.dil, b.hw);
    let y = format!("f32[B, {o}, {oh}, {oh}]");
    let mut text = format!(
        "graph C\n\
param 0 \"w\": f32[{o}, {cg}, {k}, {k}] weight init=kaiming\n\
param 1 \"s\": f32[{o}, 1, 1] param init=kaiming\n\
param 2 \"b\": f32[{o}, 1, 1] param init=kaiming\n\
%0 = input \"x\" : f32[B, {c}, {hw}, {hw}]\n%1 = input \"r\" : {y}\n\
%2 = param 0 : f32[{o}, {cg}, {k}, {k}]\n%3 = param 1 : f32[{o}, 1, 1]\n%4 = param 2 : f32[{o}, 1, 1]\n\
%5 = conv2d %0, %2 {{stride=[{s}, {s}], padding=[{p}, {p}], dilation=[{d}, {d}], groups={g}}} : {y}\n"
    );
    if bare {
        text += "output %5\n";
    } else {
        text += &format!("%6 = mul %5, %3 : {y}\n%7 = add %6, %4 : {y}\n");
        let last = if residual {
            text += &format!("%8 = add %7, %1 : {y}\n");
            8
        } else {
            7
        };
        text += &format!("%{n} = {} %{last} : {y}\noutput %{n}\n", b.act1, n = last + 1);
    }
    Some(ir::parse(&text, FileId(0)).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// Geometries for the FP32 convolutions: up to 36 channels per group (partial and several
/// blocks of 16), reductions past the kernels' chunk of 512 (up to 23 x 49).
fn f32_block() -> impl Strategy<Value = Block> {
    (block(), 1usize..24, 1usize..37, prop::sample::select(vec![1usize, 2]), 3usize..11)
        .prop_map(|(b, c, o_per_group, groups, hw)| Block { c, o_per_group, groups, hw, ..b })
}

fn check_f32_conv(b: &Block, residual: bool, batch: usize, seed: u64) -> Result<(), TestCaseError> {
    let (Some(g), Some(bare)) = (f32_conv_graph(b, residual, false), f32_conv_graph(b, residual, true)) else {
        prop_assume!(false, "the window does not fit");
        return Ok(());
    };
    ir::verify(&g).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    let w = Weights::init(&g.params, seed);
    let oh = out_size(b.hw, b.k, b.stride, b.pad, b.dil).unwrap_or(0);
    let o = b.o_per_group * b.groups;
    let xs =
        [input(&[batch, b.c * b.groups, b.hw, b.hw], seed as usize), input(&[batch, o, oh, oh], seed as usize + 3)];
    // The magnitude of every sum: the bare convolution of |x| with |w|.
    let mut wa = w.clone();
    wa.tensors.values_mut().for_each(|t| t.mapv_inplace(f32::abs));
    let pa = interp::prepare(&bare, &wa, Precision::Fp32).expect("weights");
    let mag = interp::run(&bare, &pa, &[xs[0].mapv(f32::abs), xs[1].clone()], Precision::Fp32).expect("runs").remove(0);
    let reduction = b.c * b.k * b.k;
    for level in [OptLevel::O0, OptLevel::O3] {
        let opt =
            passes::optimize(&g, &passes::Options { weights: Some(&w), ..passes::Options::new(level) }).expect("valid");
        let parts = triton::compiler::codegen::compile_graph(&opt.graph, opt.kernels.as_ref(), &w, Precision::Fp32)
            .expect("compiles");
        let p = interp::prepare(&opt.graph, &w, Precision::Fp32).expect("weights");
        let r = interp::run(&opt.graph, &p, &xs, Precision::Fp32).expect("runs").remove(0);
        for (threads, isa) in Isa::available().flat_map(|i| [(1, i), (2, i)]) {
            let mut model = triton::runtime::Model::from_parts(parts.clone(), threads).expect("maps");
            model.set_isa(isa);
            model.set_parallel_threshold(0);
            let y = model.run(&[xs[0].view(), xs[1].view()]).expect("runs").remove(0);
            prop_assert_eq!(y.shape(), r.shape());
            for ((idx, got), want) in y.indexed_iter().zip(&r) {
                let s = w.tensors["s"][[idx[1], 0, 0]].abs();
                // |f32 sum - exact| <= (k + 2) eps sum |x w| in any order; then the epilogue's
                // roundings, through an activation of slope at most 1.1.
                let bound = 2.0 * ((reduction + 2) as f32 * f32::EPSILON * mag[&idx] * s)
                    + 8.0 * f32::EPSILON * (1.0 + want.abs());
                prop_assert!(
                    (got - want).abs() <= bound,
                    "{:?} batch {} {:?} {} threads {} at {:?}: {} vs interpreter {} (bound {})",
                    b,
                    batch,
                    level,
                    isa,
                    threads,
                    idx,
                    got,
                    want,
                    bound
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_f32_convs_are_within_the_summation_bound(
        b in f32_block(), residual in any::<bool>(), batch in 1usize..6, seed in 0u64..1000) {
        check_f32_conv(&b, residual, batch, seed)?;
    }

    /// Depthwise f32 convolutions (their own kernel): channel counts across 16-lane blocks,
    /// every kernel size, stride, padding and dilation, so both the interior tiles and the
    /// checked edge pixels run.
    #[test]
    fn random_f32_depthwise_convs_are_within_the_summation_bound(
        b in f32_block(), residual in any::<bool>(), batch in 1usize..6, seed in 0u64..1000) {
        let b = depthwise(Block { o_per_group: 1, hw: b.hw + 4, ..b });
        check_f32_conv(&b, residual, batch, seed)?;
    }
}

/// FP32 convolutions the proptest reaches rarely: a long reduction (3 chunks), a wide layer
/// (several channel chunks split over threads), depthwise-like groups with 2 channels each.
#[test]
fn wide_f32_convs_are_within_the_summation_bound() {
    let base = Block {
        c: 48,
        hw: 9,
        o_per_group: 70,
        groups: 1,
        k: 5,
        stride: 1,
        pad: 2,
        dil: 1,
        act1: "relu",
        act2: "relu",
        pool_max: true,
        pool_k: 2,
        pool_stride: 2,
        pool_pad: 0,
    };
    check_f32_conv(&base, true, 2, 1).expect("k = 1200");
    check_f32_conv(&Block { k: 1, pad: 0, c: 64, o_per_group: 130, hw: 12, ..base.clone() }, true, 3, 2)
        .expect("pointwise");
    check_f32_conv(&Block { c: 2, o_per_group: 2, groups: 24, k: 3, pad: 1, stride: 2, ..base }, false, 2, 3)
        .expect("groups");
}

fn temp_model(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("triton-engine-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.tri"));
    std::fs::write(&path, text).expect("write");
    path
}

/// Found as a new user would: a concat along the channels feeding an average pooling failed at
/// batch 3 with "pool input not contiguous". Runs at every batch 1..5, -O0 and -O3, both
/// precisions, and matches the interpreter.
#[test]
fn concat_feeding_avg_pool_runs_at_every_batch() {
    let path = temp_model(
        "concat_pool",
        "use std::nn::{Conv2d, TernaryConv2d}\n\
model Cat {\n    a = TernaryConv2d(3, 4, 3, padding = 1)\n    b = Conv2d(3, 5, 1)\n\n\
    fn forward(x: f32[B, 3, 8, 8]) -> f32[B, 9, 4, 4] {\n\
        return avg_pool2d(concat([relu(a(x)), b(x)], axis = 1), 2)\n    }\n}\n",
    );
    let checked = triton::check_file(&path);
    let model = checked.models.first().expect("the model checks");
    let w = Weights::init(model.params(), 3);
    for precision in [Precision::Fp32, Precision::Ternary] {
        for level in [OptLevel::O0, OptLevel::O3] {
            let opts = triton::Options { opt: level, precision, threads: 1, ..triton::Options::default() };
            let compiled = triton::compile_model(model, &w, &opts).expect("compiles");
            for batch in 1..=5 {
                let x = input(&[batch, 3, 8, 8], batch);
                let y = compiled.run(&x.view()).unwrap_or_else(|e| panic!("batch {batch} {level:?}: {e}"));
                assert_eq!(y.shape(), [batch, 9, 4, 4]);
                let opt = passes::optimize(
                    &model.graph,
                    &passes::Options { weights: Some(&w), ..passes::Options::new(level) },
                )
                .expect("valid");
                let p = interp::prepare(&opt.graph, &w, precision).expect("weights");
                let r = interp::run(&opt.graph, &p, std::slice::from_ref(&x), precision).expect("runs").remove(0);
                for (a, b) in y.iter().zip(&r) {
                    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "batch {batch} {level:?}: {a} vs {b}");
                }
            }
        }
    }
}

/// The NaN contract (docs/language.md): a NaN or an infinity in a sample's input makes that
/// sample's outputs NaN, through relu, pooling and int8 quantization, on every level and at
/// both precisions; the other samples are untouched.
#[test]
fn nan_and_infinity_propagate_per_sample() {
    let path = temp_model(
        "nan",
        "use std::nn::{Conv2d, TernaryConv2d, TernaryLinear}\n\
model Nan {\n    a = Conv2d(2, 4, 3, padding = 1)\n    b = TernaryConv2d(4, 6, 3, padding = 1)\n    fc = TernaryLinear(6, 3)\n\n\
    fn forward(x: f32[B, 2, 6, 6]) -> f32[B, 3] {\n\
        let h = max_pool2d(relu(a(x)), 2)\n        let h = relu6(b(h))\n\
        return fc(global_avg_pool(h))\n    }\n}\n",
    );
    let checked = triton::check_file(&path);
    let model = checked.models.first().expect("the model checks");
    let w = Weights::init(model.params(), 5);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = input(&[3, 2, 6, 6], 1);
        x[[1, 1, 2, 3]] = bad;
        for precision in [Precision::Fp32, Precision::Ternary] {
            for level in [OptLevel::O0, OptLevel::O3] {
                let opts = triton::Options { opt: level, precision, threads: 1, ..triton::Options::default() };
                let mut compiled = triton::compile_model(model, &w, &opts).expect("compiles");
                for isa in Isa::available() {
                    compiled.set_isa(isa);
                    let y = compiled.run(&x.view()).expect("runs");
                    let what = format!("{bad} {} {level:?} {isa}", precision.name());
                    assert!(y.slice(ndarray::s![1, ..]).iter().all(|v| v.is_nan()), "{what}: sample 1 {y}");
                    for s in [0, 2] {
                        assert!(y.slice(ndarray::s![s, ..]).iter().all(|v| v.is_finite()), "{what}: sample {s} {y}");
                    }
                }
            }
        }
    }
}
