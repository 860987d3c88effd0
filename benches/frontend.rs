//! Front-end throughput: lexing, lexing + parsing (bytes per second), and a full check
//! (parse, resolve, instantiate, infer shapes) of zoo models.
//!
//! `cargo bench --bench frontend`

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use triton::compiler::diagnostics::Diags;
use triton::compiler::load::STDLIB;
use triton::compiler::source::FileId;
use triton::compiler::syntax::{lexer, parse};

/// Every example and stdlib source, repeated to about 1 MB.
fn corpus() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut one = String::new();
    for e in std::fs::read_dir(root.join("examples")).expect("examples") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "tri") {
            one.push_str(&std::fs::read_to_string(p).expect("read"));
        }
    }
    for (_, text) in STDLIB {
        one.push_str(text);
    }
    one.repeat((1 << 20) / one.len() + 1)
}

fn frontend(c: &mut Criterion) {
    let text = corpus();
    let mut g = c.benchmark_group("frontend");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("lex", |b| {
        b.iter(|| {
            let mut d = Diags::new();
            black_box(lexer::lex(FileId(0), black_box(&text), &mut d).len())
        })
    });
    g.bench_function("lex+parse", |b| {
        b.iter(|| {
            let mut d = Diags::new();
            let m = parse(FileId(0), black_box(&text), &mut d);
            assert!(d.is_empty());
            black_box(m.items.len())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for model in ["mnist_mlp", "resnet18_cifar10", "resnet50_cifar10", "efficientnet_b0_imagenet"] {
        let path = root.join(format!("examples/{model}.tri"));
        g.bench_function(model, |b| {
            b.iter(|| {
                let checked = triton::check_file(black_box(&path));
                assert!(!checked.has_errors());
                black_box(checked.models.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, frontend);
criterion_main!(benches);
