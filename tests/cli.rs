//! The `triton` binary: exit codes and output. 0 = ok, 1 = user errors, 2 = usage; never 101.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use triton::compiler::interp::Weights;

fn triton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triton"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .env("TRITON_CACHE_DIR", std::env::temp_dir().join(format!("triton-cli-cache-{}", std::process::id())))
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

/// The numbers in a printed output.
fn numbers(s: &str) -> Vec<f32> {
    s.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .filter_map(|t| t.parse().ok())
        .collect()
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

/// Every command takes the same model options; one that cannot apply to a command is refused
/// by name (exit 2), never ignored.
#[test]
fn shared_model_options_are_refused_where_they_cannot_apply() {
    let m = "examples/mnist_mlp.tri";
    for (args, flag) in [
        (vec!["train", m, "-O2"], "-O"),
        (vec!["train", m, "--f32-activations"], "--f32-activations"),
        (vec!["bench", m, "--precision", "fp32"], "--precision"),
    ] {
        let out = triton(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(&format!("{flag} cannot apply")), "{args:?}: {}", text(&out.stderr));
    }
    // `--init` is --weights' earlier name in `train`: both at once is a usage error.
    let out = triton(&["train", m, "--init", "a.safetensors", "--weights", "b.safetensors"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // The same flags are accepted where they apply (help lists them for every command).
    for cmd in ["compile", "run", "train", "bench"] {
        let help = text(&triton(&[cmd, "--help"]).stdout);
        for flag in ["--weights", "--seed", "--model", "--threads"] {
            assert!(help.contains(flag), "`triton {cmd} --help` lacks {flag}");
        }
    }
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

/// Writes a float32 .npy file.
fn npy(name: &str, shape: &[usize], data: &[f32]) -> PathBuf {
    temp(name, &common::npy_bytes(shape, data))
}

#[test]
fn compile_emits_fused_ir_and_timings() {
    let out = triton(&["compile", "examples/resnet18_cifar10.tri", "-O3", "--emit", "ir", "--timing"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ir = text(&out.stdout);
    assert!(ir.starts_with("graph ResNet18\n"), "{ir}");
    assert!(ir.contains("fused_conv2d") && ir.contains("epilogue=[scale, bias, residual, relu]"), "{ir}");
    assert!(!ir.contains("batch_norm"), "batch norms are folded");
    let timing = text(&out.stderr);
    for pass in ["pass bn_fold", "pass fuse", "pass memory_plan", "total"] {
        assert!(timing.contains(pass), "{timing}");
    }
    let summary = triton(&["compile", "examples/resnet18_cifar10.tri", "-O2", "--emit", "summary"]);
    let s = text(&summary.stdout);
    assert!(s.contains("68 run-time nodes at -O0, 28 at -O2") && s.contains("arena"), "{s}");
    assert_eq!(triton(&["compile", "examples/mnist_mlp.tri", "-O7"]).status.code(), Some(2));
}

#[test]
fn compile_emits_the_kernel_plan() {
    let out = triton(&["compile", "examples/mnist_mlp.tri", "-O3", "--emit", "plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 6, "{plan}");
    assert!(lines[0].contains("fc1.w [256 x 784] gemm tq2(k_pad=832) act=i8 tile=4ch x 2rows 4/iter"), "{plan}");
    assert!(lines[2].contains("head.w [10 x 128] gemm f32 act=f32"), "{plan}");
    // Then the engine: which kernel and level runs each product here.
    let best = triton::runtime::cpu::best();
    let engine = &lines[3..];
    assert!(engine[0].contains("fc1.w") && engine[0].contains("runs int8 tq2"), "{plan}");
    let panel = triton::runtime::kernels::fconv::kernel_name(best);
    assert!(engine[2].contains("head.w") && engine[2].contains(&format!("runs f32 gemm ({panel})")), "{plan}");
    use triton::runtime::cpu::Isa;
    if best != Isa::Generic {
        // The tq2 kernel's level (AMX adds tiles for the panel products, not a tq2 kernel).
        assert!(engine[0].contains(&format!("({})", best.min(Isa::Avx512Vnni))), "{plan}");
    }
    if best == Isa::Amx {
        assert!(engine[0].contains("from 4 rows amx int8 tiles"), "{plan}");
    }
    let cnn = text(&triton(&["compile", "examples/resnet18_cifar10.tri", "-O3", "--emit", "plan"]).stdout);
    assert!(cnn.contains("int8 implicit-gemm") && cnn.contains("relayout to nhwc"), "{cnn}");
    let f32 =
        text(&triton(&["compile", "examples/mnist_mlp.tri", "-O3", "--emit", "plan", "--f32-activations"]).stdout);
    assert!(f32.contains("fc1.w [256 x 784] gemm tq2(k_pad=832) act=f32"), "{f32}");
    // Known weights add what they show; -O1 has no plan.
    let w = temp("w.safetensors", &{
        let checked = triton::check_file(Path::new("examples/mnist_mlp.tri"));
        Weights::init(checked.models[0].params(), 1).to_safetensors(None).expect("serialises")
    });
    let known = triton(&[
        "compile",
        "examples/mnist_mlp.tri",
        "-O3",
        "--emit",
        "plan",
        "--weights",
        w.to_str().expect("utf-8"),
    ]);
    assert!(text(&known.stdout).contains("zero_blocks=0/"), "{}", text(&known.stdout));
    let o1 = triton(&["compile", "examples/mnist_mlp.tri", "-O1", "--emit", "plan"]);
    assert!(o1.stdout.is_empty() && text(&o1.stderr).contains("from -O2 on"));
}

#[test]
fn run_prints_or_writes_the_output_and_levels_agree() {
    let x = npy("x.npy", &[2, 784], &(0..1568).map(|i| (i % 17) as f32 / 17.0).collect::<Vec<_>>());
    let x = x.to_str().expect("utf-8 path");
    let mut outputs = Vec::new();
    for level in [&["-O0"][..], &["-O1"], &["-O2"], &["-O3", "--f32-activations"]] {
        let out = triton(&[&["run", "examples/mnist_mlp.tri", "--input", x], level].concat());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        outputs.push(text(&out.stdout));
    }
    assert_eq!(outputs[0].lines().count(), 2, "{}", outputs[0]);
    assert!(outputs.iter().all(|o| *o == outputs[0]), "{outputs:?}");
    // -O3 quantizes the ternary layers' activations to int8: close to -O0, not equal.
    let o3 = text(&triton(&["run", "examples/mnist_mlp.tri", "--input", x, "-O3"]).stdout);
    let (a, b) = (numbers(&o3), numbers(&outputs[0]));
    assert_eq!(a.len(), 20, "{o3}");
    assert_ne!(a, b, "int8 activations change the values");
    let peak = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(a.iter().zip(&b).all(|(u, v)| (u - v).abs() <= 0.05 * peak), "{o3} vs {}", outputs[0]);
    let fp32 = triton(&["run", "examples/mnist_mlp.tri", "--input", x, "--precision", "fp32"]);
    assert_ne!(text(&fp32.stdout), outputs[0], "fp32 uses the latent weights");
    // Seeds choose the initialisation of a model without a weights file.
    let bare = temp("bare.tri", include_bytes!("../examples/mnist_mlp.tri"));
    let bare = bare.to_str().expect("utf-8");
    let seeded = |seed: &str| text(&triton(&["run", bare, "--input", x, "--seed", seed]).stdout);
    assert_ne!(seeded("3"), seeded("4"), "another seed, other weights");
    assert_eq!(seeded("3"), seeded("3"));
    let y = std::env::temp_dir().join(format!("triton-cli-{}/y.npy", std::process::id()));
    let out = triton(&["run", "examples/mnist_mlp.tri", "--input", x, "--out", y.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(0));
    let written = std::fs::read(&y).expect("output written");
    assert!(written.starts_with(b"\x93NUMPY") && written.len() > 2 * 10 * 4);
    // The JIT and the interpreter agree (within float rounding: the f32 layers accumulate in f32
    // on the JIT, in f64 in the interpreter).
    let interp = text(&triton(&["run", "examples/mnist_mlp.tri", "--input", x, "-O2", "--engine", "interp"]).stdout);
    let (u, v) = (numbers(&interp), numbers(&outputs[2]));
    assert_eq!(u.len(), 20, "{interp}");
    assert!(u.iter().zip(&v).all(|(p, q)| (p - q).abs() <= 1e-5), "{interp} vs {}", outputs[2]);
    // Convolutions and pooling run on the JIT too (no interpreter fallback note) and agree.
    let img = npy("img.npy", &[1, 1, 28, 28], &(0..784).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect::<Vec<_>>());
    let img = img.to_str().expect("utf-8");
    let cnn = triton(&["run", "examples/mnist_cnn.tri", "--input", img, "-O0"]);
    assert_eq!(cnn.status.code(), Some(0), "{}", text(&cnn.stderr));
    assert!(!text(&cnn.stderr).contains("not supported"), "{}", text(&cnn.stderr));
    let cnn_interp = triton(&["run", "examples/mnist_cnn.tri", "--input", img, "-O0", "--engine", "interp"]);
    let (u, v) = (numbers(&text(&cnn.stdout)), numbers(&text(&cnn_interp.stdout)));
    assert_eq!(u.len(), v.len(), "{}", text(&cnn.stdout));
    assert!(u.iter().zip(&v).all(|(p, q)| (p - q).abs() <= 1e-4 * (1.0 + q.abs())), "{u:?} vs {v:?}");
}

/// `run --timing`: the output as without it on stdout, and on stderr one row per engine step
/// (its op, weight and kernel) with a median time, and the total; artifacts and the
/// interpreter say what they time.
#[test]
fn run_timing_prints_one_row_per_engine_step() {
    let img = npy("timing.npy", &[2, 1, 28, 28], &(0..1568).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect::<Vec<_>>());
    let img = img.to_str().expect("utf-8");
    let plain = triton(&["run", "examples/mnist_cnn.tri", "--input", img, "-O3"]);
    let timed = triton(&[
        "run",
        "examples/mnist_cnn.tri",
        "--input",
        img,
        "-O3",
        "--timing",
        "--repeat",
        "3",
        "--threads",
        "1",
    ]);
    assert_eq!(timed.status.code(), Some(0), "{}", text(&timed.stderr));
    assert_eq!(text(&timed.stdout), text(&plain.stdout), "timing leaves the output alone");
    let table = text(&timed.stderr);
    let plan = text(&triton(&["compile", "examples/mnist_cnn.tri", "-O3", "--emit", "plan"]).stdout);
    // Every product of the plan is a row naming its weight and the kernel the plan names.
    let products: Vec<&str> = plan.lines().filter(|l| l.starts_with("step") && l.contains(" runs ")).collect();
    assert!(!products.is_empty(), "{plan}");
    for line in products {
        let weight = line.split_whitespace().nth(3).expect("a weight column");
        let kernel = line.split(" runs ").nth(1).expect("a kernel").trim();
        assert!(
            table.lines().any(|r| r.contains(weight) && r.contains(kernel)),
            "{weight} on {kernel} missing:\n{table}"
        );
    }
    assert!(table.contains("median ms") && table.contains("3 calls"), "{table}");
    let total: f64 = table
        .lines()
        .find(|l| l.contains("per call"))
        .and_then(|l| l.split("median ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .expect("a total");
    assert!(total > 0.0, "{table}");
    let interp = triton(&["run", "examples/mnist_cnn.tri", "--input", img, "--engine", "interp", "--timing"]);
    assert_eq!(interp.status.code(), Some(0), "{}", text(&interp.stderr));
    assert!(text(&interp.stderr).contains("interpreter"), "{}", text(&interp.stderr));
    let bad = triton(&["run", "examples/mnist_cnn.tri", "--input", img, "--timing", "--repeat", "0"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

#[test]
fn run_rejects_bad_inputs_and_weights_with_clear_errors() {
    let wrong = npy("wrong.npy", &[2, 28, 28], &[0.0; 1568]);
    let out = triton(&["run", "examples/mnist_mlp.tri", "--input", wrong.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("input `x` must have shape f32[B, 784], got f32[2, 28, 28]"),
        "{}",
        text(&out.stderr)
    );
    let garbage = temp("garbage.npy", b"not an npy file");
    let out = triton(&["run", "examples/mnist_mlp.tri", "--input", garbage.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a readable .npy array"), "{}", text(&out.stderr));
    let x = npy("x1.npy", &[1, 784], &[0.5; 784]);
    let bad_weights = temp("w.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ");
    let out = triton(&[
        "run",
        "examples/mnist_mlp.tri",
        "--input",
        x.to_str().expect("utf-8"),
        "--weights",
        bad_weights.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("missing: fc1.w trit[256, 784]") && err.contains("missing: head.b f32[10]"), "{err}");
    let out = triton(&["run", "examples/mnist_mlp.tri", "--input", "no/such.npy"]);
    assert_eq!(out.status.code(), Some(1));
    let out =
        triton(&["run", "tests/diagnostics/shape_layer_input_features.tri", "--input", x.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "a model with errors does not run");
}

#[test]
fn train_names_where_it_looked_for_missing_data_and_keeps_a_foreign_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = dir.path().join("nothing-here");
    std::fs::create_dir(&empty).expect("mkdir");
    let w = dir.path().join("w.safetensors");
    let out = triton(&[
        "train",
        "examples/mnist_mlp.tri",
        "--epochs",
        "1",
        "--data",
        empty.to_str().expect("utf-8"),
        "-o",
        w.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot tell the format") && err.contains("nothing-here"), "{err}");
    assert!(err.contains("--format"), "{err}");

    let keep = dir.path().join("notes.txt");
    std::fs::write(&keep, "mine").expect("write");
    let out = triton(&["train", "examples/mnist_mlp.tri", "--epochs", "1", "-o", keep.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read_to_string(&keep).expect("kept"), "mine");
}

/// `run --isa`: every level this CPU runs gives the same int8 results (the MLP's ternary layers
/// are exact; its f32 head rounds alike on each); a level above the CPU's, or with the
/// interpreter, is refused with exit 2.
#[test]
fn run_isa_runs_every_level_the_cpu_has_and_refuses_the_rest() {
    use triton::runtime::cpu::Isa;
    let x = npy("isa.npy", &[16, 784], &(0..16 * 784).map(|i| ((i * 7) % 23) as f32 / 23.0).collect::<Vec<_>>());
    let x = x.to_str().expect("utf-8");
    let mut outs = Vec::new();
    for isa in Isa::available() {
        let out = triton(&["run", "examples/mnist_mlp.tri", "--input", x, "--isa", isa.name(), "-q"]);
        assert_eq!(out.status.code(), Some(0), "{isa}: {}", text(&out.stderr));
        outs.push((isa, numbers(&text(&out.stdout))));
    }
    let (first, v) = &outs[0];
    assert_eq!(v.len(), 160);
    for (isa, u) in &outs[1..] {
        assert!(u.iter().zip(v).all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs())), "{isa} vs {first}");
    }
    let interp = triton(&["run", "examples/mnist_mlp.tri", "--input", x, "--isa", "generic", "--engine", "interp"]);
    assert_eq!(interp.status.code(), Some(2), "{}", text(&interp.stderr));
    assert!(text(&interp.stderr).contains("interpreter"), "{}", text(&interp.stderr));
    if let Some(above) = Isa::ALL.into_iter().find(|i| *i > triton::runtime::cpu::best()) {
        let out = triton(&["run", "examples/mnist_mlp.tri", "--input", x, "--isa", above.name()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("this CPU runs"), "{}", text(&out.stderr));
    }
}

/// Token ids from int32 and int64 `.npy` files: the engine and the interpreter print the same
/// rows; an id outside the vocabulary is exit 1 naming it, an integer beyond 2^24 is refused
/// when read.
#[test]
fn run_reads_integer_ids_and_refuses_ones_outside_the_vocabulary() {
    let model = temp(
        "lm.tri",
        b"use std::transformer::Embedding\nmodel Lm {\n e = Embedding(30, 4)\n fn forward(ids: i32[B, 3]) -> f32[B, 3, 4] {\n return e(ids)\n }\n}\n",
    );
    let m = model.to_str().expect("utf-8");
    let write = |name: &str, a: ndarray::ArrayD<i64>, wide: bool| {
        let mut bytes = Vec::new();
        if wide {
            ndarray_npy::WriteNpyExt::write_npy(&a, &mut bytes).expect("npy");
        } else {
            ndarray_npy::WriteNpyExt::write_npy(&a.mapv(|v| v as i32), &mut bytes).expect("npy");
        }
        temp(name, &bytes)
    };
    let ids = |v: Vec<i64>| ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2, 3]), v).expect("shape");
    let good32 = write("ids32.npy", ids(vec![0, 5, 29, 7, 7, 1]), false);
    let good64 = write("ids64.npy", ids(vec![0, 5, 29, 7, 7, 1]), true);
    let mut printed = Vec::new();
    for (path, engine) in [(&good32, "jit"), (&good64, "jit"), (&good64, "interp")] {
        let out = triton(&["run", m, "--input", path.to_str().expect("utf-8"), "--engine", engine, "-q"]);
        assert_eq!(out.status.code(), Some(0), "{engine}: {}", text(&out.stderr));
        printed.push(numbers(&text(&out.stdout)));
    }
    assert_eq!(printed[0].len(), 24);
    assert!(printed[0].iter().any(|v| *v != 0.0), "the table is initialised");
    assert!(printed.iter().all(|p| p == &printed[0]), "{printed:?}");
    // Positions 3 and 4 read the same row.
    assert_eq!(printed[0][12..16], printed[0][16..20]);

    let bad = write("ids_bad.npy", ids(vec![0, 5, 30, 7, 7, 1]), true);
    for engine in ["jit", "interp"] {
        let out = triton(&["run", m, "--input", bad.to_str().expect("utf-8"), "--engine", engine]);
        assert_eq!(out.status.code(), Some(1), "{engine}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains("token id 30 (element 2 of the ids) is outside the vocabulary of 30 tokens"), "{err}");
    }
    let huge = write("ids_huge.npy", ids(vec![0, 5, 1 << 30, 7, 7, 1]), true);
    let out = triton(&["run", m, "--input", huge.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("2^24"), "{}", text(&out.stderr));
}
