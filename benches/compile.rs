//! Compile time per zoo model: `.tri` source to `.tcm` artifact bytes (check, lower, optimize,
//! quantize and pack, JIT-compile kernels, encode), without the cache, ternary at -O3 with
//! seeded weights — what a cold `triton compile` does in-process.
//!
//! `cargo bench --bench compile`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use triton::compiler::passes::OptLevel;
use triton::{Cache, Options, build_artifact};

mod common;

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    let cache = Cache::disabled();
    for file in common::zoo() {
        let name = file.file_stem().expect("stem").to_string_lossy().into_owned();
        for level in [OptLevel::O0, OptLevel::O3] {
            let opts = Options { opt: level, ..Options::default() };
            group.bench_function(format!("{name}_{}", level.name()), |b| {
                b.iter(|| black_box(build_artifact(black_box(&file), &opts, &cache).expect("compiles").bytes.len()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
