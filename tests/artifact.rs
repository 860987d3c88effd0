//! Compiled artifacts (`.tcm`): a loaded artifact computes exactly what the in-process JIT
//! computes; every way a file can be wrong is its own clear error; the size targets hold.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use triton::compiler::interp::Precision;
use triton::compiler::passes::OptLevel;
use triton::runtime::artifact::{self, LoadError};
use triton::runtime::{Model, PartsError};
use triton::{Cache, Options, build_artifact, compile_file};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

fn opts(opt: OptLevel, precision: Precision) -> Options {
    Options { opt, precision, threads: 1, seed: 7, ..Options::default() }
}

fn build(name: &str, o: &Options) -> Vec<u8> {
    build_artifact(&example(name), o, &Cache::disabled()).expect("compiles").bytes.to_vec()
}

/// A deterministic input of batch `b` for a model's first input.
fn input(model: &Model, b: usize) -> ArrayD<f32> {
    let dims = model.inputs()[0].1.eval(b);
    let n: usize = dims.iter().product();
    ArrayD::from_shape_vec(IxDyn(&dims), (0..n).map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0).collect())
        .expect("shape")
}

#[test]
fn a_loaded_artifact_computes_exactly_what_the_in_process_jit_computes() {
    let cases = [
        ("mnist_mlp.tri", OptLevel::O3, Precision::Ternary),
        ("mnist_mlp.tri", OptLevel::O2, Precision::Ternary),
        ("mnist_mlp.tri", OptLevel::O2, Precision::Fp32),
        ("mnist_cnn.tri", OptLevel::O3, Precision::Ternary),
        ("mnist_cnn.tri", OptLevel::O1, Precision::Ternary),
    ];
    for (name, level, precision) in cases {
        let o = opts(level, precision);
        let jit = compile_file(example(name), &o).expect("jit");
        let loaded = Model::from_artifact(&build(name, &o), 1).expect("loads");
        assert_eq!(loaded.name(), jit.model().name());
        assert_eq!(loaded.inputs(), jit.model().inputs());
        assert_eq!(loaded.outputs(), jit.model().outputs());
        assert_eq!(loaded.outputs()[0].0, "output");
        for b in [1, 3, 17] {
            let x = input(&loaded, b);
            let want = jit.run(&x.view()).expect("jit runs");
            let got = loaded.run(&[x.view()]).expect("artifact runs").swap_remove(0);
            assert_eq!(got.shape(), want.shape());
            let same = got.iter().zip(want.iter()).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name} -{level:?} {precision:?} batch {b}: artifact and JIT differ");
        }
    }
}

#[test]
fn the_same_model_and_options_give_the_same_bytes() {
    let o = opts(OptLevel::O3, Precision::Ternary);
    assert_eq!(build("mnist_mlp.tri", &o), build("mnist_mlp.tri", &o));
    let other_seed = Options { seed: 8, ..o.clone() };
    assert_ne!(build("mnist_mlp.tri", &other_seed), build("mnist_mlp.tri", &o));
}

#[test]
fn the_mnist_mlp_artifact_is_16x_smaller_than_its_fp32_weights_at_1_6_bits_per_trit() {
    let b = build_artifact(&example("mnist_mlp.tri"), &opts(OptLevel::O3, Precision::Ternary), &Cache::disabled())
        .expect("compiles");
    let s = &b.summary;
    // 784*256 + 256 + 256*128 + 128 + 128*10 + 10 parameters.
    assert_eq!(s.fp32_bytes, 235_146 * 4);
    assert_eq!(s.trit_count, 784 * 256 + 256 * 128);
    assert_eq!(s.trit_bytes, s.trit_count.div_ceil(5));
    assert!(s.trit_bytes as f64 * 8.0 / s.trit_count as f64 <= 1.6 + 1e-4);
    assert_eq!(s.artifact_bytes, b.bytes.len());
    assert!(s.ratio() >= 16.0, "only {:.2}x smaller ({} bytes)", s.ratio(), s.artifact_bytes);
    // The FP32 head is in there as it is (biases and scales may be stored as one value when
    // all are equal).
    assert!(s.tensor_bytes >= 128 * 10 * 4, "{s:?}");
}

#[test]
fn every_kind_of_bad_file_is_its_own_error() {
    let good = build("mnist_mlp.tri", &opts(OptLevel::O2, Precision::Ternary));
    assert!(Model::from_artifact(&good, 1).is_ok());
    let err = |bytes: &[u8]| Model::from_artifact(bytes, 1).expect_err("must fail");

    assert!(matches!(err(b"model MnistMlp {}"), LoadError::NotAnArtifact));
    assert!(matches!(err(&[]), LoadError::NotAnArtifact));
    // Truncated anywhere: in the header, in the payload, by one byte.
    for cut in [10, artifact::HEADER_LEN + 5, good.len() / 2, good.len() - 1] {
        match err(&good[..cut]) {
            LoadError::Truncated { expected, got } => {
                assert_eq!(got, cut as u64);
                assert!(expected > got);
            }
            e => panic!("cut at {cut}: {e}"),
        }
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"junk");
    assert!(matches!(err(&longer), LoadError::Trailing(4)));
    let mut version = good.clone();
    version[8] = 99;
    let e = err(&version);
    assert!(matches!(e, LoadError::Version { found: 99, supported: artifact::FORMAT_VERSION }), "{e}");
    assert!(e.to_string().contains("recompile"), "{e}");
    // One flipped bit anywhere in the payload (a weight, the plan, the metadata).
    for at in [artifact::HEADER_LEN + 3, good.len() / 2, good.len() - 1] {
        let mut flipped = good.clone();
        flipped[at] ^= 0x10;
        assert!(matches!(err(&flipped), LoadError::Checksum { .. }), "flip at {at}");
    }
}

#[test]
fn a_cpu_without_a_recorded_feature_or_another_target_is_refused_before_anything_runs() {
    let good = build("mnist_mlp.tri", &opts(OptLevel::O2, Precision::Ternary));
    let (meta, parts) = artifact::from_bytes(&good).expect("decodes");
    assert_eq!(meta.target, artifact::host_target());
    assert!(meta.cpu_features.iter().all(|f| artifact::cpu_has(f) == Some(true)), "{:?}", meta.cpu_features);
    assert_eq!(meta.opt_level, "O2");
    assert_eq!(meta.cranelift_version, "0.135.8");

    let mut needs_more = meta.clone();
    needs_more.cpu_features.push("avx9000".into());
    let (bytes, _) = artifact::to_bytes(&parts, &needs_more).expect("encodes");
    let e = Model::from_artifact(&bytes, 1).expect_err("refused");
    assert!(matches!(&e, LoadError::CpuFeatures { missing } if missing.len() == 1), "{e}");
    assert!(e.to_string().contains("avx9000"), "{e}");

    let mut elsewhere = meta;
    elsewhere.target = "riscv64-linux".into();
    let (bytes, _) = artifact::to_bytes(&parts, &elsewhere).expect("encodes");
    let e = Model::from_artifact(&bytes, 1).expect_err("refused");
    assert!(matches!(e, LoadError::Target { .. }), "{e}");
}

#[test]
fn inconsistent_parts_are_an_error_not_an_out_of_bounds_access() {
    let good = build("mnist_mlp.tri", &opts(OptLevel::O2, Precision::Ternary));
    let (_, mut parts) = artifact::from_bytes(&good).expect("decodes");
    parts.slots = 1;
    let e = Model::from_parts(parts, 1).expect_err("refused");
    assert!(matches!(&e, PartsError::Invalid(why) if why.contains("value slot")), "{e}");
}

#[test]
fn load_reads_a_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mlp.tcm");
    std::fs::write(&path, build("mnist_mlp.tri", &opts(OptLevel::O3, Precision::Ternary))).expect("write");
    let m = Model::load(&path).expect("loads");
    assert_eq!(m.name(), "MnistMlp");
    let y = m.run(&[input(&m, 2).view()]).expect("runs");
    assert_eq!(y[0].shape(), &[2, 10]);
    let e = Model::load(dir.path().join("missing.tcm")).expect_err("missing");
    assert!(matches!(&e, LoadError::Io { path, .. } if path.ends_with("missing.tcm")), "{e}");
}

#[test]
fn the_recorded_cranelift_version_is_the_one_the_workspace_pins() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).expect("manifest");
    let pin = format!("cranelift-codegen = \"={}\"", triton::compiler::codegen::isa::CRANELIFT_VERSION);
    assert!(manifest.contains(&pin), "Cargo.toml does not pin `{pin}`");
}

#[test]
fn sizes_read_off_the_plan_equal_those_reported_when_writing() {
    for (name, level) in [("mnist_mlp.tri", OptLevel::O2), ("mnist_cnn.tri", OptLevel::O3)] {
        let o = opts(level, Precision::Ternary);
        let (meta, parts) = artifact::from_bytes(&build(name, &o)).expect("decodes");
        let (bytes, written) = artifact::to_bytes(&parts, &meta).expect("encodes");
        let (read, kernels) = artifact::size_report(&bytes).expect("reads");
        assert_eq!(read, written, "{name}");
        assert_eq!(kernels, parts.kernels.iter().filter(|k| !k.is_empty()).count());
    }
}

/// Compiling the same inputs twice gives the same bytes (no hash-order or address leaks into
/// the artifact), at every level, for a residual network and an MLP.
#[test]
fn compiling_twice_gives_byte_identical_artifacts() {
    for (name, level) in [("resnet18_cifar10.tri", OptLevel::O3), ("mnist_mlp.tri", OptLevel::O2)] {
        for precision in [Precision::Ternary, Precision::Fp32] {
            let o = opts(level, precision);
            let (a, b) = (build(name, &o), build(name, &o));
            let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            assert!(a.len() == b.len() && differ == 0, "{name} {level:?} {precision:?}: {differ} bytes differ");
        }
    }
}
