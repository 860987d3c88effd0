//! The runtime's own tests of a model it is handed: plan validation, artifact encoding and
//! decoding, and running the result (no compiler involved: the parts are built by hand).

use ndarray::{Array2, ArrayD, IxDyn, arr2};

use super::plan::{Epilogue, GemmWeight, Layout, ModelParts, RtDim, Shape, Src, Step, WeightData};
use super::{Model, PartsError};
use crate::artifact::{self, LoadError, Meta};
use crate::ops::UnaryOp;

/// The weight as `[K, N]` = `[4, 3]`.
fn weight() -> Array2<f32> {
    arr2(&[[1.0f32, -1.0, 0.5], [0.0, 2.0, -0.5], [-1.0, 0.0, 1.0], [0.5, 0.5, 0.5]])
}

/// `relu(x . w + b)` then softmax over the 3 outputs, for `x: [B, 4]`: one dense f32 GEMM
/// (no JIT kernel), a bias constant, a unary and a softmax.
pub(crate) fn tiny() -> ModelParts {
    let b = Shape(vec![RtDim { batch: 1, fixed: 0 }, RtDim { batch: 0, fixed: 3 }]);
    let w_t = weight();
    ModelParts {
        name: "Tiny".into(),
        inputs: vec![("x".into(), Shape(vec![RtDim { batch: 1, fixed: 0 }, RtDim { batch: 0, fixed: 4 }]))],
        outputs: vec![Src::Value(3)],
        output_sig: vec![("y".into(), b)],
        consts: vec![ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.1, -0.2, 0.0]).unwrap()],
        weights: vec![GemmWeight { name: "fc.w".into(), n: 3, k: 4, data: WeightData::Dense { w_t }, alpha: None }],
        steps: vec![
            Step::Gemm { x: 0, out: 1, weight: 0, epilogue: Epilogue { bias: Some(0), ..Epilogue::default() } },
            Step::Unary { x: 1, out: 2, op: UnaryOp::Relu },
            Step::Softmax { x: 2, out: 3, axis: 1 },
        ],
        frees: vec![vec![], vec![1], vec![2]],
        slots: 4,
        layouts: vec![Layout::Plain; 4],
        kernels: vec![],
    }
}

/// The same function computed directly.
fn expected(x: &Array2<f32>) -> Array2<f32> {
    let mut y = x.dot(&weight()) + &ndarray::arr1(&[0.1f32, -0.2, 0.0]);
    y.mapv_inplace(|v| v.max(0.0));
    for mut row in y.rows_mut() {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, v| a.max(*v));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    y
}

fn meta() -> Meta {
    Meta {
        compiler_version: "test".into(),
        cranelift_version: "none".into(),
        target: artifact::host_target(),
        target_triple: "test".into(),
        cpu_features: vec![],
        isa_flags: vec![],
        opt_level: "O0".into(),
        precision: "fp32".into(),
        source_key: "00".into(),
    }
}

fn input(b: usize) -> Array2<f32> {
    Array2::from_shape_fn((b, 4), |(i, j)| ((i * 4 + j) as f32 * 0.37).sin())
}

fn assert_runs_like_expected(m: &Model) {
    for b in [1, 3, 17] {
        let x = input(b);
        let y = m.run(&[x.view().into_dyn()]).expect("runs").remove(0);
        let want = expected(&x);
        assert_eq!(y.shape(), &[b, 3]);
        for (a, e) in y.iter().zip(want.iter()) {
            assert!((a - e).abs() <= 1e-6, "batch {b}: {a} vs {e}");
        }
    }
}

#[test]
fn hand_built_parts_validate_and_run() {
    let parts = tiny();
    parts.validate().expect("valid");
    assert_runs_like_expected(&Model::from_parts(parts, 1).expect("maps"));
}

#[test]
fn validation_names_what_is_wrong() {
    type Break = Box<dyn Fn(&mut ModelParts)>;
    let cases: Vec<(&str, Break)> = vec![
        ("value slot 9 of 4", Box::new(|p| p.steps[1] = Step::Unary { x: 9, out: 2, op: UnaryOp::Relu })),
        ("before it is written", Box::new(|p| p.steps.swap(0, 1))),
        ("a second time", Box::new(|p| p.steps[2] = Step::Softmax { x: 2, out: 1, axis: 1 })),
        ("2 free lists for 3 steps", Box::new(|p| drop(p.frees.pop()))),
        (
            "uses weight 4 of 1",
            Box::new(|p| p.steps[0] = Step::Gemm { x: 0, out: 1, weight: 4, epilogue: Epilogue::default() }),
        ),
        ("uses constant 7 of 1", Box::new(|p| p.outputs[0] = Src::Const(7))),
        ("step 2 (softmax): changes the layout", Box::new(|p| p.layouts[3] = Layout::Nhwc)),
        ("step 0 (gemm): a product of channels-last values", Box::new(|p| p.layouts[0] = Layout::Nhwc)),
        ("2 output signatures for 1 outputs", Box::new(|p| p.output_sig.push(p.output_sig[0].clone()))),
        ("4 layouts for 5 value slots", Box::new(|p| p.slots = 5)),
        ("has 2 scales for 3 channels", Box::new(|p| p.weights[0].alpha = Some(vec![1.0, 1.0]))),
        ("expected [4, 3]", Box::new(|p| p.weights[0].data = WeightData::Dense { w_t: Array2::zeros((3, 4)) })),
    ];
    for (want, break_it) in cases {
        let mut p = tiny();
        break_it(&mut p);
        let err = p.validate().expect_err(want);
        assert!(err.contains(want), "expected `{want}` in `{err}`");
        // Mapping refuses the same parts with the same reason; it never runs them.
        match Model::from_parts(p, 1) {
            Err(PartsError::Invalid(e)) => assert_eq!(e, err),
            other => panic!("{want}: mapped anyway ({:?})", other.err()),
        }
    }
}

#[test]
fn artifacts_round_trip_and_run_the_same() {
    let (bytes, size) = artifact::to_bytes(&tiny(), &meta()).expect("encodes");
    assert_eq!(size.total, bytes.len());
    assert_eq!(artifact::read_meta(&bytes).expect("meta"), meta());
    let (m, parts) = artifact::from_bytes(&bytes).expect("decodes");
    assert_eq!(m, meta());
    assert_eq!((parts.steps.len(), parts.consts, parts.slots), (3, tiny().consts, 4));
    assert_runs_like_expected(&Model::from_artifact(&bytes, 1).expect("loads"));
    // Encoding is a function of the parts: the same bytes twice.
    assert_eq!(artifact::to_bytes(&tiny(), &meta()).expect("encodes").0, bytes);
}

#[test]
fn every_truncation_and_every_flipped_byte_is_an_error_not_a_crash() {
    let (bytes, _) = artifact::to_bytes(&tiny(), &meta()).expect("encodes");
    for len in 0..bytes.len() {
        let err = artifact::from_bytes(&bytes[..len]).expect_err("truncated");
        let ok = matches!(err, LoadError::NotAnArtifact | LoadError::Truncated { .. });
        assert!(ok, "{len} bytes: {err}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(artifact::from_bytes(&longer), Err(LoadError::Trailing(1))));
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        // Reserved header bytes are not checked; everything else is.
        let reserved = (12..16).contains(&at) || (56..64).contains(&at);
        match artifact::from_bytes(&bad) {
            Err(e) => {
                let expected = match at {
                    0..8 => matches!(e, LoadError::NotAnArtifact),
                    8..12 => matches!(e, LoadError::Version { .. }),
                    16..24 => matches!(e, LoadError::Truncated { .. } | LoadError::Trailing(_)),
                    _ => matches!(e, LoadError::Checksum { .. }),
                };
                assert!(expected, "byte {at}: {e}");
            }
            Ok(_) => assert!(reserved, "byte {at} flipped and the artifact still loaded"),
        }
    }
}

#[test]
fn another_target_or_missing_cpu_features_are_refused() {
    let elsewhere = Meta { target: "riscv64-none".into(), ..meta() };
    let (bytes, _) = artifact::to_bytes(&tiny(), &elsewhere).expect("encodes");
    assert!(matches!(artifact::from_bytes(&bytes), Err(LoadError::Target { .. })));
    let future = Meta { cpu_features: vec!["avx1024".into()], ..meta() };
    let (bytes, _) = artifact::to_bytes(&tiny(), &future).expect("encodes");
    match artifact::from_bytes(&bytes) {
        Err(LoadError::CpuFeatures { missing }) => assert_eq!(missing, vec!["avx1024 (unknown to this runtime)"]),
        other => panic!("expected a CPU feature error, got {:?}", other.err()),
    }
}
