//! `triton quantize`: FP32 weights made ternary per output channel, batch norms recalibrated,
//! optionally fine-tuned, with the accuracy before and after — on the shipped FP32 weights, a
//! model with batch norms, and a model from `triton import`. Runs on the shipped MNIST sample.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use triton::compiler::interp::{Precision, Weights};
use triton::compiler::ir::QuantRule;
use triton::train::quantize;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn triton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triton"))
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("TRITON_CACHE_DIR", std::env::temp_dir().join(format!("triton-quantize-cache-{}", std::process::id())))
        .output()
        .expect("run triton")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

/// The percentage printed on the line starting with `what`.
fn accuracy(stdout: &str, what: &str) -> f64 {
    let line =
        stdout.lines().find(|l| l.trim_start().starts_with(what)).unwrap_or_else(|| panic!("`{what}` in {stdout}"));
    line.split_whitespace().last().and_then(|p| p.trim_end_matches('%').parse().ok()).expect("a percentage")
}

#[test]
fn the_shipped_fp32_mlp_ternarizes_and_fine_tunes_back_up() {
    let dir = tempfile::tempdir().expect("temp");
    let out = dir.path().join("q.safetensors");
    let args = [
        "quantize",
        "examples/mnist_mlp.tri",
        "--weights",
        "examples/mnist_mlp.fp32.safetensors",
        "--data",
        "data/mnist-sample",
        "-o",
        s(&out),
    ];
    let o = triton(&args);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    let (before, after) = (accuracy(&stdout, "FP32"), accuracy(&stdout, "ternary (absmean"));
    assert!(before > 95.0, "the FP32 weights classify the sample: {stdout}");
    assert!(after < before, "plain ternarization loses accuracy: {stdout}");
    // The file written holds weights that compile runs at the printed accuracy: its metadata
    // says so, and it loads as the model's weights.
    let bytes = std::fs::read(&out).expect("written");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors");
    let meta = meta.metadata().clone().unwrap_or_default();
    assert_eq!(meta["quant_rule"], "absmean");
    assert_eq!(meta["precision"], "ternary");
    assert!((meta["test_accuracy"].parse::<f64>().expect("number") * 100.0 - after).abs() < 0.01, "{meta:?}");
    // Fine-tuning 2 epochs recovers most of the loss.
    let o = triton(&[&args[..], &["--epochs", "2", "--lr", "1e-3"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let tuned = accuracy(&text(&o.stdout), "+ fine-tuned");
    assert!(tuned > after + 2.0, "fine-tuning helps: {}", text(&o.stdout));
    // The FP32 file itself is never the output; nothing is written without --weights.
    let o = triton(&["quantize", "examples/mnist_mlp.tri", "--data", "data/mnist-sample", "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("give --weights FP32.safetensors"));
    let fp32 = root().join("examples/mnist_mlp.fp32.safetensors");
    let o = triton(&["quantize", "examples/mnist_mlp.tri", "--weights", s(&fp32), "-o", s(&fp32)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("is the FP32 weights file"), "{}", text(&o.stderr));
}

/// `--quant twn` on layers declaring absmean writes latent values the declared rule quantizes
/// to TWN's codes and scales: the effective weights match TWN's to rounding.
#[test]
fn another_rule_is_baked_into_latent_values_the_declared_rule_reproduces() {
    let checked = triton::check_file(&root().join("examples/mnist_mlp.tri"));
    let m = checked.models.into_iter().next().expect("a model");
    let fp32 = Weights::from_safetensors(
        &std::fs::read(root().join("examples/mnist_mlp.fp32.safetensors")).expect("read"),
        &m.graph.params,
    )
    .expect("loads");
    let baked = quantize::bake(&m.graph, &fp32, QuantRule::Twn).expect("bakes");
    let ours = triton::compiler::grad::effective_params(&m.graph, &baked, Precision::Ternary).expect("declared rule");
    let twn = quantize::with_rule(&m.graph, QuantRule::Twn);
    let want = triton::compiler::grad::effective_params(&twn, &fp32, Precision::Ternary).expect("twn");
    for ((p, a), b) in m.graph.params.iter().zip(&ours).zip(&want) {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let err = a.iter().zip(b.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale;
        assert!(err < 1e-5, "{}: relative error {err}", p.name);
        // Same ternary codes: zero exactly where TWN's is.
        assert!(a.iter().zip(b.iter()).all(|(x, y)| (*x == 0.0) == (*y == 0.0)), "{}", p.name);
    }
    assert_ne!(baked.tensors["fc1.w"], fp32.tensors["fc1.w"], "the latent values changed");
}

/// A model with batch norms gets them recalibrated with the ternary weights in place; a model
/// imported from ONNX (LeNet, random weights) goes through the same steps.
#[test]
fn batch_norms_are_recalibrated_and_imported_models_quantize() {
    let dir = tempfile::tempdir().expect("temp");
    let model = dir.path().join("bn.tri");
    std::fs::write(
        &model,
        "use std::nn::{TernaryConv2d, BatchNorm2d, Linear}\nmodel Bn {\n    conv = TernaryConv2d(1, 8, 3, padding = 1)\n    bn = BatchNorm2d(8)\n    head = Linear(8 * 14 * 14, 10)\n    fn forward(x: f32[B, 1, 28, 28]) -> f32[B, 10] {\n        let h = max_pool2d(relu(bn(conv(x))), 2)\n        return head(flatten(h))\n    }\n}\n",
    )
    .expect("write");
    let fp32 = dir.path().join("bn.fp32.safetensors");
    let o = triton(&[
        "train",
        s(&model),
        "--data",
        "data/mnist-sample",
        "--precision",
        "fp32",
        "--epochs",
        "2",
        "-o",
        s(&fp32),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = dir.path().join("bn.q.safetensors");
    let o = triton(&["quantize", s(&model), "--weights", s(&fp32), "--data", "data/mnist-sample", "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    let (plain, recal) = (accuracy(&stdout, "ternary ("), accuracy(&stdout, "+ 1 batch norms recalibrated"));
    assert!(recal > 10.0 && plain > 10.0, "{stdout}");
    // An imported model: `triton import` then `triton quantize` on its FP32 weights.
    let tri = dir.path().join("lenet.tri");
    let o = triton(&["import", "tests/onnx/lenet.onnx", "-o", s(&tri)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let w = dir.path().join("lenet.safetensors");
    let o = triton(&[
        "quantize",
        s(&tri),
        "--weights",
        s(&w),
        "--data",
        "data/mnist-sample",
        "-o",
        s(&dir.path().join("l.q.safetensors")),
    ]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}{stdout}", text(&o.stderr));
    assert!(
        stdout.contains("FP32 (the weights given)") && stdout.contains("ternary (absmean per output channel)"),
        "{stdout}"
    );
}
