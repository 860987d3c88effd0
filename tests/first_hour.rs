//! A new user's first hour with the `triton` command: the weights it picks and says it picks,
//! options it refuses instead of ignoring, files given in the wrong place, sizes that would
//! exhaust memory, closed pipes, several inputs, symbolic sizes, `--top-k`, `--quiet`, training
//! options that make no sense. Exit codes: 1 for a bad input, 2 for a command line that cannot
//! apply; never 101 (panic) or 134 (abort).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ndarray::{ArrayD, IxDyn};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_triton"));
    c.args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("TRITON_CACHE_DIR", std::env::temp_dir().join(format!("triton-first-hour-{}", std::process::id())));
    c
}

fn triton(args: &[&str]) -> Output {
    cmd(args).output().expect("runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The exit code, after checking the run was no crash and printed no panic.
fn code(out: &Output) -> i32 {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("memory allocation"), "{err}");
    out.status.code().unwrap_or_else(|| panic!("killed by a signal: {:?}\n{err}", out.status))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn write_npy(path: &Path, shape: &[usize], values: Vec<f32>) {
    let a = ArrayD::from_shape_vec(IxDyn(shape), values).expect("shape");
    ndarray_npy::WriteNpyExt::write_npy(&a, std::fs::File::create(path).expect("create")).expect("write");
}

/// `n` images of the shipped MNIST sample's test split as `[n, 784]` pixels in [0, 1], and
/// their labels.
fn sample_images(n: usize) -> (Vec<f32>, Vec<usize>) {
    let dir = triton::data::sample_dir().expect("the sample ships with the repository");
    let m = triton::data::load_mnist(&dir).expect("reads");
    let test = m.test.expect("a test split");
    let unit = triton::data::Normalization::of(triton::data::Normalize::Unit, &test);
    let (x, labels) = triton::data::batch(&test, &(0..n).collect::<Vec<_>>(), &[784], &unit, &Default::default(), None)
        .expect("28x28 images");
    (x.iter().copied().collect(), labels)
}

/// `--top-k 1` lines: the predicted class per example.
fn predictions(stdout: &str) -> Vec<usize> {
    stdout.lines().filter_map(|l| l.split(": ").nth(1)?.split(' ').next()?.parse().ok()).collect()
}

#[test]
fn run_and_compile_use_the_weights_beside_the_model_and_say_so() {
    let dir = tempfile::tempdir().expect("temp");
    let (x, labels) = sample_images(200);
    let input = dir.path().join("x.npy");
    write_npy(&input, &[200, 784], x);
    let out = triton(&["run", "examples/mnist_mlp.tri", "--input", s(&input), "--top-k", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("weights: examples/mnist_mlp.safetensors"), "{}", text(&out.stderr));
    let predicted = predictions(&text(&out.stdout));
    assert_eq!(predicted.len(), 200, "{}", text(&out.stdout));
    let right = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
    assert!(right >= 180, "the shipped weights classify {right}/200 (random weights: ~20)");

    // A copy of the model without weights beside it: seeded, and said so.
    let model = dir.path().join("mlp.tri");
    std::fs::copy(root().join("examples/mnist_mlp.tri"), &model).expect("copy");
    let out = triton(&["run", s(&model), "--input", s(&input), "--top-k", "1"]);
    assert_eq!(code(&out), 0);
    let err = text(&out.stderr);
    assert!(err.contains("weights: seeded random (seed 0): no ") && err.contains("mlp.safetensors"), "{err}");
    let right = predictions(&text(&out.stdout)).iter().zip(&labels).filter(|(p, l)| p == l).count();
    assert!(right < 100, "seeded weights are not trained: {right}/200");
    // --quiet: nothing on stderr.
    let out = triton(&["run", s(&model), "--input", s(&input), "--top-k", "1", "--quiet"]);
    assert_eq!(code(&out), 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // compile says it too.
    let tcm = dir.path().join("m.tcm");
    let out = triton(&["compile", "examples/mnist_mlp.tri", "-o", s(&tcm), "--no-cache"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("weights: examples/mnist_mlp.safetensors"));
    assert!(text(&out.stdout).contains("-O3 ->"), "-O3 is the default: {}", text(&out.stdout));
    // --seed cannot choose weights that come from a file.
    let out = triton(&["run", "examples/mnist_mlp.tri", "--input", s(&input), "--seed", "3"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("--seed cannot apply"), "{}", text(&out.stderr));
}

#[test]
fn an_artifact_refuses_the_options_it_has_built_in() {
    let dir = tempfile::tempdir().expect("temp");
    let tcm = dir.path().join("m.tcm");
    assert_eq!(code(&triton(&["compile", "examples/mnist_mlp.tri", "-o", s(&tcm), "-q"])), 0);
    let input = dir.path().join("x.npy");
    write_npy(&input, &[1, 784], vec![0.5; 784]);
    let ok = triton(&["run", s(&tcm), "--input", s(&input)]);
    assert_eq!(code(&ok), 0, "{}", text(&ok.stderr));
    for extra in [
        &["--precision", "fp32"][..],
        &["-O0"],
        &["--seed", "1"],
        &["--model", "MnistMlp"],
        &["--engine", "interp"],
        &["--weights", "examples/mnist_mlp.safetensors"],
        &["--f32-activations"],
    ] {
        let out = triton(&[&["run", s(&tcm), "--input", s(&input)][..], extra].concat());
        assert_eq!(code(&out), 2, "{extra:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        let flag = extra[0].trim_end_matches('0');
        assert!(err.contains("compiled ternary at -O3") && err.contains(flag), "{extra:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing runs: {}", text(&out.stdout));
    }
}

#[test]
fn files_given_in_the_wrong_place_are_named_not_read_as_text() {
    let dir = tempfile::tempdir().expect("temp");
    let npy = dir.path().join("x.npy");
    write_npy(&npy, &[1, 784], vec![0.0; 784]);
    let tcm = dir.path().join("m.tcm");
    assert_eq!(code(&triton(&["compile", "examples/mnist_mlp.tri", "-o", s(&tcm), "-q"])), 0);
    let weights = "examples/mnist_mlp.safetensors";
    for (args, what) in [
        (vec!["check", s(&npy)], "is a NumPy array (.npy)"),
        (vec!["check", s(&tcm)], "is a compiled Triton model (.tcm)"),
        (vec!["check", weights], "is a safetensors weights file"),
        (vec!["run", weights, "--input", s(&npy)], "is a safetensors weights file"),
        (vec!["compile", s(&npy)], "is a NumPy array (.npy)"),
        (vec!["bench", s(&tcm)], "is a compiled Triton model (.tcm)"),
        (vec!["train", weights, "-o", "/nonexistent/w.safetensors"], "is a safetensors weights file"),
        (vec!["run", "examples/mnist_mlp.tri", "--input", weights], "is a safetensors weights file"),
    ] {
        let out = triton(&args);
        assert_eq!(code(&out), 1, "{args:?}");
        let err = String::from_utf8(out.stderr).expect("stderr is text, no binary bytes");
        assert!(err.contains(what), "{args:?}: {err}");
        assert!(!err.contains("UTF-8") && err.lines().count() <= 3, "{args:?}: {err}");
    }
}

#[test]
fn sizes_that_would_exhaust_memory_are_refused_before_allocating() {
    let dir = tempfile::tempdir().expect("temp");
    let model = dir.path().join("big.tri");
    std::fs::write(
        &model,
        "use std::nn::{TernaryLinear}\nmodel Big {\n    fc = TernaryLinear(200000, 300000)\n    fn forward(x: f32[B, 200000]) -> f32[B, 300000] { return fc(x) }\n}\n",
    )
    .expect("write");
    assert_eq!(code(&triton(&["check", s(&model)])), 0, "a big model is a valid model");
    for args in [vec!["compile", s(&model), "--no-cache"], vec!["compile", s(&model), "--emit", "plan"]] {
        let out = triton(&args);
        assert_eq!(code(&out), 1, "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("`fc.w`") && err.contains("240.0 GB") && err.contains("available"), "{err}");
    }
    // The limit can be set; a 2.4 GB model under a 1 GB limit is refused the same way.
    let mid = dir.path().join("mid.tri");
    std::fs::write(
        &mid,
        "use std::nn::{TernaryLinear}\nmodel Mid {\n    fc = TernaryLinear(20000, 30000)\n    fn forward(x: f32[B, 20000]) -> f32[B, 30000] { return fc(x) }\n}\n",
    )
    .expect("write");
    let x = dir.path().join("x.npy");
    write_npy(&x, &[1, 20000], vec![0.0; 20000]);
    let out = cmd(&["run", s(&mid), "--input", s(&x)]).env("TRITON_MEMORY_LIMIT", "1G").output().expect("runs");
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("2.4 GB of memory; this machine has 1.1 GB"), "{}", text(&out.stderr));

    // A 4 KB .npy whose header claims (10^12, 784).
    let bytes = common::npy_bytes(&[1_000_000_000_000, 784], &[0.0; 1024]);
    let huge = dir.path().join("huge.npy");
    std::fs::write(&huge, bytes).expect("write");
    let out = triton(&["run", "examples/mnist_mlp.tri", "--input", s(&huge)]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("(1000000000000, 784)") && text(&out.stderr).contains("holds only"));
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    for args in [
        &["compile", "examples/resnet18_cifar10.tri", "--emit", "ir", "-q"][..],
        &["check", "examples/resnet18_cifar10.tri", "examples/mnist_mlp.tri", "examples/mnist_cnn.tri"],
    ] {
        let mut child = cmd(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawns");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("a line");
        // The reader is dropped here: the pipe closes with output still to come.
        let out = child.wait_with_output().expect("waits");
        assert!(!first.is_empty());
        let err = text(&out.stderr);
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
        assert_ne!(out.status.code(), Some(101), "{args:?}");
    }
}

#[test]
fn several_inputs_in_order_by_name_or_in_an_npz() {
    let dir = tempfile::tempdir().expect("temp");
    let model = dir.path().join("two.tri");
    std::fs::write(
        &model,
        "model Two {\n    fn forward(a: f32[B, 3], b: f32[B, 3]) -> f32[B, 3] { return a - b * 2.0 }\n}\n",
    )
    .expect("write");
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    write_npy(&a, &[1, 3], vec![1.0, 2.0, 3.0]);
    write_npy(&b, &[1, 3], vec![10.0, 20.0, 30.0]);
    let expect = "[[-19.000000, -38.000000, -57.000000]]";
    let run = |inputs: &[&str]| {
        let mut args = vec!["run", s(&model), "-q"];
        for i in inputs {
            args.extend(["--input", i]);
        }
        triton(&args)
    };
    let ordered = run(&[s(&a), s(&b)]);
    assert_eq!(code(&ordered), 0, "{}", text(&ordered.stderr));
    assert_eq!(text(&ordered.stdout).trim(), expect);
    let named = format!("b={}", s(&b));
    let swapped = run(&[&named, s(&a)]);
    assert_eq!(code(&swapped), 0, "{}", text(&swapped.stderr));
    assert_eq!(text(&swapped.stdout).trim(), expect, "b by name, a fills the free slot");
    // An .npz archive by name.
    let npz = dir.path().join("in.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&npz).expect("create"));
    for (name, path) in [("b", &b), ("a", &a)] {
        zip.start_file(format!("{name}.npy"), zip::write::SimpleFileOptions::default()).expect("entry");
        std::io::Write::write_all(&mut zip, &std::fs::read(path).expect("read")).expect("write");
    }
    zip.finish().expect("finish");
    let archived = run(&[s(&npz)]);
    assert_eq!(code(&archived), 0, "{}", text(&archived.stderr));
    assert_eq!(text(&archived.stdout).trim(), expect);
    // Wrong counts and names are errors naming what the model takes.
    let one = run(&[s(&a)]);
    assert_eq!(code(&one), 1);
    assert!(text(&one.stderr).contains("takes 2 inputs (a: f32[B, 3], b: f32[B, 3]); got 1"), "{}", text(&one.stderr));
    let unknown = format!("c={}", s(&a));
    let bad = run(&[&unknown, s(&b)]);
    assert_eq!(code(&bad), 1);
    assert!(text(&bad.stderr).contains("no input `c`"), "{}", text(&bad.stderr));
}

#[test]
fn symbolic_sizes_are_bound_by_shape_or_by_the_input() {
    let dir = tempfile::tempdir().expect("temp");
    let model = dir.path().join("fcn.tri");
    std::fs::write(
        &model,
        "use std::nn::{TernaryConv2d, Conv2d}\nmodel Fcn {\n    c1 = Conv2d(1, 8, 3, padding=1)\n    c2 = TernaryConv2d(8, 16, 3, stride=2, padding=1)\n    fn forward(x: f32[B, 1, H, W]) -> f32[B, 16] {\n        let h = relu(c1(x))\n        return global_avg_pool(relu(c2(h)))\n    }\n}\n",
    )
    .expect("write");
    let tcm = dir.path().join("f.tcm");
    let out = triton(&["compile", s(&model), "-o", s(&tcm), "--no-cache"]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("--shape H=64,W=64"), "a hint: {}", text(&out.stderr));
    let out = triton(&["compile", s(&model), "-o", s(&tcm), "--shape", "H=12,W=10"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    for (bad, why) in [("H=0", "SIZE >= 1"), ("Q=3", "no symbolic dimension `Q`"), ("B=3", "stays free")] {
        let out = triton(&["compile", s(&model), "--shape", bad, "--no-cache"]);
        assert!(matches!(code(&out), 1 | 2), "{bad}");
        assert!(text(&out.stderr).contains(why), "{bad}: {}", text(&out.stderr));
    }
    let values: Vec<f32> = (0..2 * 120).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
    let x = dir.path().join("x.npy");
    write_npy(&x, &[2, 1, 12, 10], values);
    let jit = triton(&["run", s(&model), "--input", s(&x), "-q"]);
    assert_eq!(code(&jit), 0, "{}", text(&jit.stderr));
    let interp = triton(&["run", s(&model), "--input", s(&x), "-q", "--engine", "interp"]);
    let artifact = triton(&["run", s(&tcm), "--input", s(&x)]);
    assert_eq!(code(&artifact), 0, "{}", text(&artifact.stderr));
    assert_eq!(text(&jit.stdout), text(&artifact.stdout), "the same compile, bound two ways");
    let nums = |o: &Output| -> Vec<f32> {
        text(&o.stdout)
            .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .filter_map(|t| t.parse().ok())
            .collect()
    };
    let (u, v) = (nums(&jit), nums(&interp));
    assert_eq!(u.len(), 32);
    assert!(u.iter().zip(&v).all(|(p, q)| (p - q).abs() <= 1e-3 * (1.0 + q.abs())), "{u:?} vs {v:?}");
    // Another size runs from the .tri; the artifact is fixed to its own.
    let y = dir.path().join("y.npy");
    write_npy(&y, &[1, 1, 7, 9], vec![0.25; 63]);
    assert_eq!(code(&triton(&["run", s(&model), "--input", s(&y), "-q"])), 0);
    let fixed = triton(&["run", s(&tcm), "--input", s(&y)]);
    assert_eq!(code(&fixed), 1);
    assert!(text(&fixed.stderr).contains("expected 12"), "{}", text(&fixed.stderr));
}

#[test]
fn wording_counts_and_ratios_read_right() {
    let dir = tempfile::tempdir().expect("temp");
    let model = dir.path().join("tiny.tri");
    std::fs::write(
        &model,
        "use std::nn::{Linear}\nmodel Tiny {\n    fc = Linear(2, 2)\n    fn forward(x: f32[B, 2]) -> f32[B, 2] { return fc(x) }\n}\n",
    )
    .expect("write");
    let check = triton(&["check", s(&model)]);
    assert!(text(&check.stdout).contains("model Tiny: 1 layer, 6 parameters"), "{}", text(&check.stdout));
    let out = triton(&["compile", s(&model), "-o", s(&dir.path().join("t.tcm")), "-q"]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(line.contains("x larger than its FP32 weights (24 bytes)") && !line.contains("smaller"), "{line}");
    assert!(line.contains("no ternary weights"), "{line}");
    let help = text(&triton(&["compile", "--help"]).stdout);
    assert!(help.contains("ir:") && help.contains("optimized graph IR"), "{help}");
    let run_help = text(&triton(&["run", "--help"]).stdout);
    assert!(run_help.contains("[0, 1]") && run_help.contains("NAME=FILE") && run_help.contains("--top-k"));
}

#[test]
fn timing_json_is_the_only_thing_on_stdout() {
    let dir = tempfile::tempdir().expect("temp");
    let out = triton(&[
        "compile",
        "examples/mnist_cnn.tri",
        "--timing=json",
        "--no-cache",
        "-o",
        s(&dir.path().join("c.tcm")),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(json["model"], "MnistCnn");
    assert!(json["total_ms"].as_f64().is_some_and(|t| t > 0.0));
}

#[test]
fn training_options_that_make_no_sense_are_refused_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().expect("temp");
    let model = dir.path().join("mlp.tri");
    std::fs::copy(root().join("examples/mnist_mlp.tri"), &model).expect("copy");
    let data = root().join("data/mnist-sample");
    let base = ["train", s(&model), "--data", s(&data), "--subset", "256", "--batch-size", "64"];
    for bad in [
        &["--lr", "nan"][..],
        &["--lr", "-1"],
        &["--lr", "0"],
        &["--lr", "inf"],
        &["--epochs", "0"],
        &["--batch-size", "0"],
        &["--subset", "0"],
        &["--weight-decay", "-0.1"],
    ] {
        let out = triton(&[&base[..], bad].concat());
        assert_eq!(code(&out), 2, "{bad:?}: {}", text(&out.stderr));
    }
    assert!(!dir.path().join("mlp.safetensors").exists(), "nothing written");
    // A loss that blows up stops training and writes nothing.
    let out = triton(&[&base[..], &["--lr", "1e30", "--epochs", "1"]].concat());
    assert_eq!(code(&out), 1, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("training diverged"), "{}", text(&out.stderr));
    assert!(!dir.path().join("mlp.safetensors").exists(), "nothing written");
    // A weights file beside the model is never replaced without -o.
    let beside = dir.path().join("mlp.safetensors");
    std::fs::copy(root().join("examples/mnist_mlp.safetensors"), &beside).expect("copy");
    let before = std::fs::read(&beside).expect("read");
    let out = triton(&[&base[..], &["--epochs", "1"]].concat());
    assert_eq!(code(&out), 1);
    assert!(text(&out.stderr).contains("give -o to replace it"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&beside).expect("read"), before, "untouched");
    // With -o it trains (on the sample) and replaces it.
    let out = triton(&[&base[..], &["--epochs", "1", "-o", s(&beside)]].concat());
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert_ne!(std::fs::read(&beside).expect("read"), before);
    assert!(text(&out.stderr).contains("1 epoch,"), "{}", text(&out.stderr));
}

#[test]
fn the_readme_zoo_table_is_what_check_prints() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let mut args = vec!["check".to_string()];
    for e in std::fs::read_dir(root().join("examples")).expect("examples") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "tri") {
            args.push(format!("examples/{}", p.file_name().expect("name").to_string_lossy()));
        }
    }
    let out = triton(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code(&out), 0);
    assert_eq!(text(&out.stdout).lines().count(), args.len() - 1);
    for line in text(&out.stdout).lines() {
        // "... FP32 940.6 KB -> packed 54.9 KB (17.1x)": the README row has the same figures.
        let fp32 = line.split("FP32 ").nth(1).and_then(|t| t.split(" ->").next()).expect("fp32 size");
        let packed = line.split("packed ").nth(1).expect("packed size");
        let name = line.split("model ").nth(1).and_then(|t| t.split(':').next()).expect("name");
        let row = readme.lines().find(|l| l.starts_with(&format!("| {name} "))).expect("a README row");
        assert!(row.contains(fp32) && row.contains(packed), "README row `{row}` vs `{line}`");
    }
}

/// `--verify-each` reaches the optimizer through `triton compile`'s artifact path: the passes
/// run (a cached model would skip them) and each is followed by the verifier.
#[test]
fn verify_each_runs_the_verifier_through_compile() {
    let dir = tempfile::tempdir().expect("temp");
    let cache = dir.path().join("cache");
    let out = dir.path().join("m.tcm");
    let compile = |extra: &[&str]| {
        let mut args = vec!["compile", "examples/mnist_cnn.tri", "-o", s(&out), "--cache-dir", s(&cache), "-q"];
        args.extend(extra);
        triton(&args)
    };
    assert_eq!(code(&compile(&[])), 0);
    let hit = compile(&["--timing=json"]);
    let hit: serde_json::Value = serde_json::from_slice(&hit.stdout).expect("json");
    assert_eq!(hit["cache"], "hit (disk)");
    let verified = compile(&["--timing=json", "--verify-each"]);
    assert_eq!(code(&verified), 0, "{}", text(&verified.stderr));
    let json: serde_json::Value = serde_json::from_slice(&verified.stdout).expect("json");
    assert_eq!(json["cache"], "miss", "--verify-each compiles: {json}");
    let phases: Vec<&str> =
        json["phases"].as_array().expect("phases").iter().filter_map(|p| p["name"].as_str()).collect();
    let passes = phases.iter().filter(|p| p.starts_with("pass ") && **p != "pass verify").count();
    assert!(passes >= 5 && phases.contains(&"pass verify"), "{phases:?}");
}
