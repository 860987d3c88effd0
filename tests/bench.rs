//! `triton bench`: the report's structure and invariants, its outputs, the baseline comparison
//! and the command's exit codes. Timing never decides a test: budgets are tiny and only the
//! shape of the figures (counts, orderings, ratios of sizes) is asserted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use triton::bench::{self, Budget, Config, Quiet, Side, SideAccuracy, Target, TargetArg, compare, plots, render};
use triton::compiler::passes::OptLevel;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Test images the bench's default lookup finds: the full split, else the shipped sample.
fn test_images() -> usize {
    if triton::data::find_mnist(None).is_ok() { 10_000 } else { 1_000 }
}

/// The smallest budget: one warm-up call and the minimum of timed calls.
fn tiny() -> Budget {
    Budget { warmup: 1, iters: 3, max: Duration::ZERO }
}

fn config(file: PathBuf) -> Config {
    Config {
        file,
        model: None,
        weights: None,
        fp32_weights: None,
        data: None,
        batch_sizes: vec![1, 4],
        threads: 2,
        budget: tiny(),
        opt: OptLevel::O3,
        seed: 0,
        int8_activations: true,
        scaling: false,
        targets: vec![],
        probe: None,
        shapes: Default::default(),
    }
}

fn triton(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triton")).current_dir(dir).args(args).output().expect("runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const TINY: [&str; 9] = ["--warmup", "1", "--iters", "3", "--max-seconds", "0", "--batch-sizes", "1,2", "--no-scaling"];

#[test]
fn the_shipped_mlp_is_measured_on_both_sides_with_consistent_figures() {
    let r = bench::run(&config(root().join("examples/mnist_mlp.tri")), &mut Quiet).expect("runs");
    assert_eq!(r.model, "MnistMlp");

    // Weights: the shipped files, FP32-trained for the FP32 side.
    let f = r.weights_of(Side::Fp32).expect("fp32 weights");
    let t = r.weights_of(Side::Ternary).expect("ternary weights");
    assert!(f.path.as_deref().is_some_and(|p| p.ends_with("mnist_mlp.fp32.safetensors")), "{f:?}");
    assert!(t.path.as_deref().is_some_and(|p| p.ends_with("mnist_mlp.safetensors")), "{t:?}");
    assert_eq!((f.trained_precision.as_deref(), t.trained_precision.as_deref()), (Some("fp32"), Some("ternary")));

    // Accuracy on the real test split, else on the shipped sample (which a fresh clone has).
    let n = test_images();
    let dataset = r.accuracy.dataset.as_deref().expect("a dataset");
    assert_eq!(dataset.contains("sample shipped with Triton"), n == 1_000, "{dataset}");
    let (fa, ta) = (r.accuracy.fp32.measured().expect("fp32"), r.accuracy.ternary.measured().expect("ternary"));
    for c in [fa, ta] {
        assert_eq!(c.examples, n);
        assert_eq!(c.confusion.iter().flatten().sum::<usize>(), n);
        assert_eq!(c.per_class.iter().map(|m| m.support).sum::<usize>(), n);
        assert_eq!(c.correct, (0..10).map(|i| c.confusion[i][i]).sum::<usize>());
        assert!(c.accuracy > 0.97, "trained weights score {}", c.accuracy);
        assert!(c.macro_f1 > 0.97 && c.macro_f1 <= 1.0);
    }
    let delta = r.accuracy.delta_pp().expect("both measured");
    assert!((delta - 100.0 * (fa.accuracy - ta.accuracy)).abs() < 1e-9);

    // Latency: every side x thread count x batch size, with ordered statistics.
    assert_eq!(r.latency.len(), 2 * 2 * 2);
    for c in &r.latency {
        let l = &c.stats;
        assert!(l.samples >= bench::measure::MIN_SAMPLES, "{c:?}");
        assert!(l.min_ms <= l.median_ms && l.median_ms <= l.p95_ms && l.p95_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
        assert!(l.min_ms <= l.mean_ms && l.mean_ms <= l.max_ms && l.ci95_ms.is_some());
        assert!((c.per_example_ms * c.batch as f64 - l.median_ms).abs() < 1e-9);
        // The raw samples are kept and summarise to the stated figures.
        assert_eq!(c.samples_ms.len(), l.samples);
        let min = c.samples_ms.iter().copied().fold(f64::INFINITY, f64::min);
        assert!((min - l.min_ms).abs() < 1e-9, "{c:?}");
    }
    assert!(r.speedup(1, 1).is_some() && r.speedup(2, 4).is_some());

    // Size: the ternary artifact is far smaller; the ratio is the stated one.
    let z = &r.size;
    assert_eq!(z.parameters, 235_146);
    assert_eq!(z.ternary_weights, 784 * 256 + 256 * 128);
    assert!(z.ternary_artifact_bytes * 10 < z.fp32_artifact_bytes, "{z:?}");
    assert!((z.compression - z.fp32_bytes as f64 / z.ternary_artifact_bytes as f64).abs() < 1e-9);
    // Trits at 1.6 bits: 233,472 weights in about 46 KB.
    assert!(z.trit_bytes >= 233_472 / 5 && z.trit_bytes < 233_472 / 4, "{z:?}");

    // Memory and compile speed: both sides, every level.
    // Memory at batch 1 and at the largest batch, both sides.
    let cases: Vec<(Side, usize)> = r.memory.iter().map(|m| (m.side, m.batch)).collect();
    assert_eq!(cases, [(Side::Fp32, 1), (Side::Fp32, 4), (Side::Ternary, 1), (Side::Ternary, 4)]);
    assert!(r.memory.iter().all(|m| m.arena_bytes > 0 && !m.isolated));
    assert_eq!(r.compile.len(), 8);
    for c in &r.compile {
        assert!(c.lines > 50 && c.cold_samples == 3 && c.warm_samples == 5, "{c:?}");
        assert_eq!((c.cold_ms_samples.len(), c.warm_ms_samples.len()), (3, 5));
        assert!(c.cold_ms > 0.0 && c.warm_ms > 0.0 && c.latency_b1_ms > 0.0);
    }

    // Default targets are judged; memory has no default.
    let names: Vec<Target> = r.targets.iter().map(|o| o.target).collect();
    assert!(names.contains(&Target::Compression) && !names.contains(&Target::MemoryMib));
    let compression = r.targets.iter().find(|o| o.target == Target::Compression).expect("judged");
    assert_eq!(compression.measured, Some(z.compression));

    // The JSON form reads back to the same report.
    let json = serde_json::to_string(&r).expect("encodes");
    assert_eq!(serde_json::from_str::<bench::Report>(&json).expect("decodes"), r);

    // Tables and Markdown show the same figures.
    let term = render::terminal(&r, None);
    let md = render::markdown(&r, None, &[]);
    assert!(md.starts_with("# triton bench: MnistMlp"), "{md}");
    for needle in [
        "Latency per batch size",
        "Compile speed",
        "Memory",
        "Targets",
        &render::bytes(z.ternary_artifact_bytes as u64),
    ] {
        assert!(term.contains(needle) && md.contains(needle), "{needle}");
    }
    assert!(md.contains("Confusion matrix, ternary") && term.contains("Accuracy per class"));

    // Plots: three SVG files (accuracy only when measured).
    let dir = tempfile::tempdir().expect("temp");
    let (drawn, skipped) = plots::write(&r, dir.path()).expect("draws");
    assert_eq!(drawn.len() + skipped.len(), 3);
    for (_, p) in &drawn {
        let svg = std::fs::read_to_string(p).expect("written");
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"), "{}", p.display());
    }

    // Against itself nothing regresses; a baseline with a smaller artifact and higher accuracy
    // makes both regress.
    let same = compare::compare(&r, &r, "self", 10.0, 0.1);
    assert_eq!(same.regressions().count(), 0);
    assert!(same.warnings.is_empty());
    let mut old = r.clone();
    old.size.ternary_artifact_bytes /= 2;
    if let SideAccuracy::Measured(c) = &mut old.accuracy.ternary {
        c.accuracy += 0.01;
    }
    let cmp = compare::compare(&old, &r, "old.json", 10.0, 0.1);
    let regressed: Vec<&str> = cmp.regressions().map(|c| c.figure.as_str()).collect();
    assert!(regressed.contains(&"ternary artifact bytes"), "{regressed:?}");
    assert!(regressed.contains(&"ternary accuracy (%)"), "{regressed:?}");
    assert!(render::comparison(&cmp).terminal().contains("REGRESSION"));
}

#[test]
fn seeded_weights_make_accuracy_not_applicable_and_scaling_grows() {
    // A folder holding only the MLP: no shipped weights, and the zoo is that one model.
    let dir = tempfile::tempdir().expect("temp");
    let file = dir.path().join("mlp.tri");
    std::fs::copy(root().join("examples/mnist_mlp.tri"), &file).expect("copy");
    // An unfinished model beside it is skipped in the zoo table, not fatal.
    std::fs::write(dir.path().join("wip.tri"), "model Wip {").expect("write");
    let mut cfg = config(file);
    cfg.batch_sizes = vec![2];
    cfg.threads = 1;
    cfg.scaling = true;
    // The batch-16 scaling cases run when a batch-1 call x 16 fits in ten of the table's case
    // budgets (at least 0.25 s each): 2.5 s, far above these MLPs even in a debug build.
    cfg.budget.max = Duration::from_millis(50);
    cfg.targets = vec![TargetArg(Target::AccuracyDrop, 0.5), TargetArg(Target::Compression, 1e6)];
    let r = bench::run(&cfg, &mut Quiet).expect("runs");
    for side in Side::BOTH {
        match r.accuracy.side(side) {
            SideAccuracy::NotApplicable(why) => assert!(why.contains("seeded"), "{why}"),
            SideAccuracy::Measured(_) => panic!("accuracy of seeded weights must not be reported"),
        }
        assert!(r.weights_of(side).is_some_and(|w| w.path.is_none()));
    }
    assert_eq!(r.accuracy.delta_pp(), None);
    let judged = |t: Target| r.targets.iter().find(|o| o.target == t).expect("judged").clone();
    assert_eq!(judged(Target::AccuracyDrop).verdict(), "n/a");
    assert_eq!(judged(Target::Compression).verdict(), "FAIL");
    // One thread only: no all-threads cases.
    assert_eq!(r.thread_counts(), vec![1]);
    assert_eq!(r.latency.len(), 2);

    let sc = r.scaling.as_ref().expect("scaling measured");
    assert_eq!(sc.mlp.len(), bench::scaling::WIDTHS.len());
    for w in sc.mlp.windows(2) {
        assert!(w[1].parameters > w[0].parameters && w[1].ternary_artifact_bytes > w[0].ternary_artifact_bytes);
        assert!(w[1].fp32_bytes > w[0].fp32_bytes);
    }
    assert!(sc.mlp.iter().all(|row| row.compression > 10.0 && row.fp32_batch_ms.is_some() && row.skipped.is_none()));
    assert_eq!(sc.zoo.len(), 1);
    assert_eq!(sc.zoo[0].name, "mlp");
    assert_eq!(sc.zoo_skipped.len(), 1);
    assert_eq!(sc.zoo_skipped[0].0, "wip");
    assert_eq!(sc.zoo[0].parameters, r.size.parameters);
    assert!(render::terminal(&r, None).contains("Scaling: MLP width"));
}

#[test]
fn an_explicit_dataset_that_is_missing_is_an_error() {
    let mut cfg = config(root().join("examples/mnist_mlp.tri"));
    cfg.data = Some("/nonexistent/triton-data".into());
    let err = bench::run(&cfg, &mut Quiet).expect_err("missing data");
    assert!(err.to_string().contains("/nonexistent/triton-data"), "{err}");
}

#[test]
fn the_command_writes_every_output_and_flags_regressions_and_targets() {
    // Run from an empty folder: no full dataset is found there (unless $TRITON_DATA names one),
    // so accuracy is measured on the MNIST sample shipped with Triton, and says so.
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let model = root().join("examples/mnist_mlp.tri");
    let model = model.to_str().expect("utf-8");
    let mut args = vec!["bench", model, "--json", "run.json", "--report", "report.md", "--plots", "plots"];
    args.extend(TINY);
    let out = triton(d, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("triton bench: MnistMlp") && stdout.contains("ternary vs FP32"), "{stdout}");
    let sample = std::env::var_os("TRITON_DATA").is_none();
    if sample {
        assert!(stdout.contains("sample shipped with Triton"), "{stdout}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run.json")).expect("json")).expect("valid");
    assert_eq!(json["format"], bench::FORMAT);
    assert!(json["machine"]["cpu"].is_string() && json["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
    assert!(
        json["accuracy"]["ternary"]["measured"]["accuracy"].as_f64().is_some_and(|a| a > 0.97),
        "{}",
        json["accuracy"]
    );
    // Memory measured in a process of its own.
    assert!(
        json["memory"]
            .as_array()
            .is_some_and(|m| m.iter().all(|c| c["isolated"] == true && c["inference"].is_object()))
    );
    let md = std::fs::read_to_string(d.join("report.md")).expect("report");
    assert!(md.starts_with("# triton bench: MnistMlp") && md.contains("![size](plots/size.svg)"), "{md}");
    assert!(d.join("plots/latency.svg").is_file() && d.join("plots/size.svg").is_file());
    assert!(d.join("plots/accuracy.svg").is_file());

    // A baseline whose ternary artifact was half the size: a regression; exit 3 when asked.
    let mut old = json.clone();
    old["size"]["ternary_artifact_bytes"] =
        serde_json::json!(json["size"]["ternary_artifact_bytes"].as_u64().expect("bytes") / 2);
    std::fs::write(d.join("old.json"), old.to_string()).expect("write");
    let mut args = vec!["bench", model, "--baseline", "old.json", "--json", "run.json"];
    args.extend(TINY);
    let out = triton(d, &args);
    assert!(out.status.success(), "without --fail-on-regression: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("REGRESSION"));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run.json")).expect("json")).expect("valid");
    assert!(again["comparison"]["changes"].as_array().is_some_and(|c| !c.is_empty()));
    args.push("--fail-on-regression");
    let out = triton(d, &args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("regressed"));

    // `--json -`: stdout is the JSON alone (the tables go to stderr).
    let mut args = vec!["bench", model, "--json", "-"];
    args.extend(TINY);
    let out = triton(d, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["model"], "MnistMlp");
    assert!(text(&out.stderr).contains("ternary vs FP32"));

    // A failed target exits 3 with --fail-on-target only.
    let mut args = vec!["bench", model, "--target", "compression=1000000", "--fail-on-target"];
    args.extend(TINY);
    let out = triton(d, &args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("FAIL"));
}

#[test]
fn the_command_rejects_bad_options_and_keeps_foreign_files() {
    let dir = tempfile::tempdir().expect("temp");
    let d = dir.path();
    let model = root().join("examples/mnist_mlp.tri");
    let model = model.to_str().expect("utf-8");
    for bad in [
        vec!["--batch-sizes", "0"],
        vec!["--batch-sizes", "1,x"],
        vec!["--target", "speed=2"],
        vec!["--target", "speedup=-1"],
        vec!["--max-seconds", "nan"],
        vec!["--fail-on-regression"],
        vec!["-O", "4"],
    ] {
        let mut args = vec!["bench", model];
        args.extend(&bad);
        let out = triton(d, &args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }

    // User errors exit 1 before anything is measured, and say what was expected.
    std::fs::write(d.join("notes.txt"), "my notes").expect("write");
    std::fs::write(d.join("bad.json"), "{\"format\": 999, \"model\": \"x\"}").expect("write");
    for (args, expect) in [
        (vec!["bench", model, "--baseline", "missing.json"], "missing.json"),
        (vec!["bench", model, "--baseline", "notes.txt"], "not JSON"),
        (vec!["bench", model, "--baseline", "bad.json"], "format 999"),
        (vec!["bench", model, "--json", "notes.txt"], "refusing to overwrite"),
        (vec!["bench", model, "--report", "notes.txt"], "refusing to overwrite"),
        (vec!["bench", "missing.tri"], "missing.tri"),
        (vec!["bench", model, "--weights", "notes.txt"], "notes.txt"),
    ] {
        let out = triton(d, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(expect), "{args:?}: {}", text(&out.stderr));
    }
    assert_eq!(std::fs::read_to_string(d.join("notes.txt")).expect("kept"), "my notes");
}
