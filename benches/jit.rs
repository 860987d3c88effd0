//! JIT kernels and end-to-end inference.
//!
//! - `gemv`: the ternary GEMV of issue 4's target shape, m=4096 k=14336 n=1, one thread, int8
//!   activations (the time includes quantizing the 14336 activations); GFLOPS = 2 m k / time.
//!   Four ways: the runtime's wide kernel (the best the CPU has), each instruction set it has,
//!   the Cranelift JIT kernel (128-bit), and a scalar reference (one i8 weight per trit, plain
//!   loops the compiler may vectorize as it likes) that computes the same bits.
//! - `mlp`: examples/mnist_mlp.tri at batch 1 and 1024, one thread: ternary (-O3, int8
//!   activations, JIT kernels) against the FP32 baseline of the same model (`gemm` crate).
//! - `cnn`: examples/mnist_cnn.tri (batch 1 and 64) and resnet18_cifar10.tri (batch 1), one
//!   thread, ternary -O3 against FP32.
//!
//! `cargo bench --bench jit`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use triton::compiler::interp::{Precision, Weights};
use triton::compiler::passes::OptLevel;
use triton::runtime::cpu::Isa;
use triton::{Options, compile_model};

mod common;
use common::input;

fn gemv(c: &mut Criterion) {
    let (m, k) = (4096usize, 14336usize);
    let mut model = common::gemv_model(m, k);
    let x = input(&[1, k]);
    let xs = [x.view()];
    let mut group = c.benchmark_group("gemv");
    group.throughput(Throughput::Elements((2 * m * k) as u64));
    group.sample_size(30);
    // Every runtime level the CPU runs (best first; the portable one is far slower, so only
    // the vector levels), then the JIT kernels.
    let mut kernels: Vec<(String, Isa, bool)> = Isa::ALL
        .into_iter()
        .filter(|i| *i > Isa::Generic && *i <= triton::runtime::cpu::best())
        .rev()
        .map(|i| (i.name().to_string(), i, false))
        .collect();
    kernels.push(("jit".into(), triton::runtime::cpu::best(), true));
    for (name, isa, jit) in kernels {
        model.set_isa(isa);
        model.set_jit_gemm(jit);
        if jit && !model.jit_gemm() {
            continue;
        }
        group.bench_function(format!("ternary_i8_4096x14336_{name}"), |b| {
            b.iter(|| black_box(model.run(black_box(&xs)).expect("runs")))
        });
    }
    model.set_isa(triton::runtime::cpu::best());
    model.set_jit_gemm(false);
    // The scalar reference on the same trits: same bits as the kernels (checked here once).
    let reference = common::ScalarGemv::of(&model, m, k);
    let want = model.run(&xs).expect("runs").swap_remove(0);
    let got = reference.run(x.as_slice().expect("contiguous"));
    assert_eq!(want.as_slice().expect("contiguous"), &got[..], "scalar reference and kernels disagree");
    group.bench_function("ternary_i8_4096x14336_scalar_reference", |b| {
        b.iter(|| black_box(reference.run(black_box(x.as_slice().expect("contiguous")))))
    });
    group.finish();
}

fn mlp(c: &mut Criterion) {
    let checked = triton::check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_mlp.tri"));
    let model = &checked.models[0];
    let w = Weights::init(model.params(), 1);
    let mut group = c.benchmark_group("mnist_mlp");
    for batch in [1usize, 64, 1024] {
        let x = input(&[batch, 784]);
        group.throughput(Throughput::Elements(batch as u64));
        // int8 activations (the product), f32 activations on the add/subtract kernel, FP32.
        for (name, precision, int8_activations) in [
            ("ternary", Precision::Ternary, true),
            ("ternary_f32act", Precision::Ternary, false),
            ("fp32", Precision::Fp32, true),
        ] {
            let opts = Options { opt: OptLevel::O3, precision, threads: 1, int8_activations, ..Options::default() };
            let jit = compile_model(model, &w, &opts).expect("compiles");
            group.bench_function(format!("{name}_b{batch}"), |b| {
                b.iter(|| black_box(jit.run(&x.view()).expect("runs")))
            });
        }
    }
    group.finish();
}

/// Convolutional zoo models end to end, one thread, ternary -O3 against the FP32 path.
fn cnn(c: &mut Criterion) {
    let mut group = c.benchmark_group("cnn");
    group.sample_size(10);
    for (file, batches) in [("mnist_cnn", &[1usize, 64][..]), ("resnet18_cifar10", &[1usize][..])] {
        let checked = triton::check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{file}.tri")));
        let model = &checked.models[0];
        let w = Weights::init(model.params(), 1);
        for &batch in batches {
            let mut shape: Vec<usize> =
                model.inputs()[0].1.shape.iter().map(|d| d.as_known().unwrap_or(1) as usize).collect();
            shape[0] = batch;
            let x = input(&shape);
            group.throughput(Throughput::Elements(batch as u64));
            for precision in [Precision::Ternary, Precision::Fp32] {
                let opts = Options { opt: OptLevel::O3, precision, threads: 1, ..Options::default() };
                let jit = compile_model(model, &w, &opts).expect("compiles");
                let name = format!("{file}_{}_b{batch}", precision.name());
                group.bench_function(name, |b| b.iter(|| black_box(jit.run(&x.view()).expect("runs"))));
            }
        }
    }
    group.finish();
}

criterion_group!(benches, gemv, mlp, cnn);
criterion_main!(benches);
