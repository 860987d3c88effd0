//! Training end to end on real MNIST (../shared/data): a short run learns, runs are
//! deterministic, and weights files round-trip with their scales.

use std::path::Path;

use triton::compiler::interp::{Precision, Weights};
use triton::data::{self, Normalize};
use triton::train::{self, OptimConfig, OptimizerKind, Schedule, TrainConfig};

fn mnist() -> data::Mnist {
    let dir = data::find_mnist(None).expect("MNIST is provided at ../shared/data/mnist for the tests");
    data::load_mnist(&dir).expect("MNIST reads")
}

fn model(name: &str) -> triton::CheckedModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let checked = triton::check_file(&path);
    assert!(!checked.has_errors(), "{}", checked.render_plain());
    checked.models.into_iter().next().expect("a model")
}

fn config(subset: usize, epochs: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 64,
        lr: 2e-3,
        optim: OptimConfig::new(OptimizerKind::Adam, 0.0),
        schedule: Schedule::Cosine,
        precision: Precision::Ternary,
        seed,
        normalize: Normalize::Unit,
        shift: 1,
        subset: Some(subset),
    }
}

/// One epoch on 5,000 images takes a ternary MLP far above chance (10%): a broken gradient
/// cannot land.
#[test]
fn one_epoch_on_a_5k_subset_learns_the_digits() {
    let data = mnist();
    assert_eq!((data.train.len(), data.test.len(), data.train.rows, data.train.cols), (60_000, 10_000, 28, 28));
    let m = model("mnist_mlp.tri");
    let init = Weights::init(&m.graph.params, 1);
    let before = train::evaluate(&m.graph, &init, &data.test, Precision::Ternary, Normalize::Unit).expect("evaluates");
    let mut batches = 0;
    let t = train::train(&m.graph, init, &data, &config(5000, 1, 1), |_| batches += 1, |_| {}).expect("trains");
    assert_eq!(batches, 5000usize.div_ceil(64));
    let after = t.epochs[0].test_accuracy;
    assert!(before < 0.3, "untrained accuracy {before}");
    assert!(after > 0.85, "test accuracy after one epoch on 5k images: {after}");
    assert!(t.epochs[0].loss < 1.0, "mean loss {}", t.epochs[0].loss);
}

/// The same seed gives bit-identical weights; another seed does not.
#[test]
fn training_is_deterministic_given_the_seed() {
    let data = mnist();
    let m = model("mnist_cnn.tri");
    let run = |seed: u64| {
        let init = Weights::init(&m.graph.params, seed);
        train::train(&m.graph, init, &data, &config(600, 1, seed), |_| {}, |_| {}).expect("trains").weights
    };
    let a = run(3);
    assert_eq!(a, run(3));
    assert_ne!(a, run(4));
}

/// Saved weights (latent values plus the scales of quantized layers) load back exactly; a
/// wrong-shaped scale, a missing tensor and an unknown one are each named.
#[test]
fn weights_files_round_trip_with_scales() {
    let m = model("mnist_mlp.tri");
    let w = Weights::init(&m.graph.params, 9);
    let mut saved = w.clone();
    let scales = train::scales(&m.graph, &w);
    let names: Vec<&str> = scales.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fc1.scale", "fc2.scale"]);
    for (n, s) in scales {
        saved.tensors.insert(n, s);
    }
    let bytes = saved.to_safetensors(None).expect("serialises");
    assert_eq!(Weights::from_safetensors(&bytes, &m.graph.params).expect("loads"), w);

    let mut bad = saved.clone();
    bad.tensors.insert("fc1.scale".into(), ndarray::ArrayD::zeros(ndarray::IxDyn(&[3])));
    bad.tensors.remove("head.b");
    bad.tensors.insert("fc9.w".into(), ndarray::ArrayD::zeros(ndarray::IxDyn(&[1])));
    let err = Weights::from_safetensors(&bad.to_safetensors(None).expect("serialises"), &m.graph.params)
        .expect_err("mismatch")
        .to_string();
    for needle in ["missing: head.b", "fc1.scale: expected [256]", "not a parameter of the model: fc9.w"] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
}
