//! End-to-end inference per zoo model and batch size: the compiled artifact (-O3, seeded
//! weights) loaded by the runtime, one thread, ternary against FP32 (the `gemm` crate).
//! Throughput is in examples per second.
//!
//! `cargo bench --bench inference` (`-- resnet18` for one model)

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use triton::compiler::interp::Precision;
use triton::runtime::Model;
use triton::{Cache, Options, build_artifact};

mod common;
use common::input;

fn inference(c: &mut Criterion) {
    let mut group = c.benchmark_group("inference");
    group.sample_size(10).measurement_time(Duration::from_secs(3));
    let cache = Cache::disabled();
    for file in common::zoo() {
        let name = file.file_stem().expect("stem").to_string_lossy().into_owned();
        // ImageNet-sized EfficientNet-B0 takes ~0.2 s per image on one thread: batch 1 only.
        let batches: &[usize] = if name.contains("imagenet") { &[1] } else { &[1, 16] };
        for precision in [Precision::Ternary, Precision::Fp32] {
            let opts = Options { precision, ..Options::default() };
            let bytes = build_artifact(&file, &opts, &cache).expect("compiles").bytes;
            let model = Model::from_artifact(&bytes, 1).expect("loads");
            for &batch in batches {
                let xs: Vec<_> = model.inputs().iter().map(|(_, s)| input(&s.eval(batch))).collect();
                let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_function(format!("{name}_{}_b{batch}", precision.name()), |b| {
                    b.iter(|| black_box(model.run(black_box(&views)).expect("runs")))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, inference);
criterion_main!(benches);
