//! The `triton` binary: exit codes and output. 0 = ok, 1 = user errors, 2 = usage; never 101.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn triton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triton"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run triton")
}

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("triton-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_prints_one_summary_line_per_model_and_exits_0() {
    let out = triton(&["check", "examples/mnist_mlp.tri", "examples/resnet18_cifar10.tri"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].contains("model MnistMlp: 3 layers, 235,146 parameters (233,472 ternary"), "{stdout}");
    assert!(lines[0].contains("f32[B, 784] -> f32[B, 10]"), "{stdout}");
    assert!(lines[1].contains("model ResNet18") && lines[1].contains("11,173,962 parameters"), "{stdout}");
    assert!(lines[1].contains("FP32 44.73 MB -> packed"), "{stdout}");
}

#[test]
fn every_example_passes_check() {
    let mut args = vec!["check".to_string()];
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")).expect("examples") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "tri") {
            args.push(format!("examples/{}", p.file_name().expect("name").to_string_lossy()));
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = triton(&refs);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), args.len() - 1);
}

#[test]
fn diagnostics_go_to_stderr_and_exit_1() {
    let out = triton(&["check", "tests/diagnostics/shape_layer_input_features.tri"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("triton::E041"), "{err}");
    assert!(err.contains("check failed: 1 error, 0 warnings"), "{err}");
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn every_malformed_fixture_exits_1_or_0_for_warnings_never_101() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    for e in std::fs::read_dir(dir).expect("fixtures") {
        let p = e.expect("entry").path();
        if p.extension().is_none_or(|x| x != "tri") {
            continue;
        }
        let rel = format!("tests/diagnostics/{}", p.file_name().expect("name").to_string_lossy());
        let warnings_only = std::fs::read_to_string(&p).map(|t| t.starts_with("# expect: W")).unwrap_or(false);
        let out = triton(&["check", &rel]);
        let want = if warnings_only { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(want), "{rel}: {}", text(&out.stderr));
        if warnings_only {
            let denied = triton(&["check", "--deny-warnings", &rel]);
            assert_eq!(denied.status.code(), Some(1), "{rel} with --deny-warnings");
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(triton(&["check"]).status.code(), Some(2));
    assert_eq!(triton(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(triton(&["check", "--no-such-flag", "examples/mnist_mlp.tri"]).status.code(), Some(2));
    assert_eq!(triton(&[]).status.code(), Some(2));
    assert_eq!(triton(&["--help"]).status.code(), Some(0));
}

#[test]
fn missing_file_is_a_user_error() {
    let out = triton(&["check", "no/such/model.tri"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("triton::E001"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot read `no/such/model.tri`"));
}

#[test]
fn hostile_inputs_get_diagnostics_not_crashes() {
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.tri", Vec::new(), "E013"),
        ("binary.tri", vec![0xff, 0xfe, 0x00, 0x01, b'm'], "E002"),
        (
            "deep_parens.tri",
            format!("model M {{ const n = {}1{} }}", "(".repeat(100_000), ")".repeat(100_000)).into_bytes(),
            "E008",
        ),
        ("deep_ops.tri", format!("model M {{ const n = {} }}", vec!["1"; 200_000].join("+")).into_bytes(), "E008"),
        ("deep_unary.tri", format!("model M {{ const n = {}1 }}", "-".repeat(100_000)).into_bytes(), "E008"),
        ("huge_int.tri", b"model M { const n = 123456789012345678901234567890 }".to_vec(), "E006"),
        ("nul.tri", b"model M {\0}".to_vec(), "E004"),
    ];
    // 10 MB: over the size limit.
    cases.push(("big.tri", "# padding\n".repeat(1_000_000).into_bytes(), "E003"));
    // Just under the limit, full of junk: bounded diagnostics, no hang.
    cases.push(("junk.tri", "@ $ ~ ` ".repeat(900_000).into_bytes(), "E004"));
    for (name, bytes, code) in cases {
        let p = temp(name, &bytes);
        let out = triton(&["check", p.to_str().expect("utf-8 temp path")]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&format!("triton::{code}")), "{name}: {}", text(&out.stderr));
    }
}
