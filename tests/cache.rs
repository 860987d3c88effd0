//! The compilation cache: hits and misses, what changes a key, corrupted entries, concurrent
//! compiles, `triton cache stats|clean`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use triton::cache::Level;
use triton::compiler::interp::Weights;
use triton::compiler::passes::OptLevel;
use triton::{Cache, Options, build_artifact};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// `triton args...` from the repository root with `cache` as the cache folder.
fn command(cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_triton"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env("NO_COLOR", "1").env("TRITON_CACHE_DIR", cache);
    c
}

fn triton(cache: &Path, args: &[&str]) -> Output {
    command(cache, args).output().expect("run triton")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn entries(cache: &Path, kind: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(shards) = std::fs::read_dir(cache.join("v1").join(kind)) else { return out };
    for shard in shards.flatten() {
        for f in std::fs::read_dir(shard.path()).expect("shard").flatten() {
            out.push(f.path());
        }
    }
    out
}

fn o3() -> Options {
    Options { opt: OptLevel::O3, threads: 1, ..Options::default() }
}

#[test]
fn a_second_compile_is_a_hit_and_any_changed_input_is_a_miss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::at(dir.path().join("cache"));
    // A private copy of the model, so editing it touches nothing else.
    let src = dir.path().join("m.tri");
    let text = std::fs::read_to_string(example("mnist_mlp.tri")).expect("example");
    std::fs::write(&src, &text).expect("write");

    let first = build_artifact(&src, &o3(), &cache).expect("compiles");
    assert_eq!(first.hit, None);
    let again = build_artifact(&src, &o3(), &cache).expect("compiles");
    assert_eq!(again.hit, Some(Level::Memory));
    assert_eq!(again.bytes, first.bytes);
    assert_eq!(again.summary, first.summary);
    // The hit skipped the front end entirely.
    assert!(again.timings.get("lex+parse").is_none(), "{:?}", again.timings);

    // One byte of source (a comment: the model is the same, the key is not).
    std::fs::write(&src, format!("{text}\n# x")).expect("write");
    assert_eq!(build_artifact(&src, &o3(), &cache).expect("compiles").hit, None);
    std::fs::write(&src, &text).expect("write");
    assert!(build_artifact(&src, &o3(), &cache).expect("compiles").hit.is_some());

    // The -O level.
    let o2 = Options { opt: OptLevel::O2, ..o3() };
    assert_eq!(build_artifact(&src, &o2, &cache).expect("compiles").hit, None);

    // One weight of a weights file.
    let checked = triton::check_file(&src);
    let params = checked.models[0].params();
    let mut w = Weights::init(params, 3);
    let wpath = dir.path().join("w.safetensors");
    std::fs::write(&wpath, w.to_safetensors(None).expect("serialises")).expect("write");
    let with_w = Options { weights: Some(wpath.clone()), ..o3() };
    let a = build_artifact(&src, &with_w, &cache).expect("compiles");
    assert_eq!(a.hit, None);
    assert!(build_artifact(&src, &with_w, &cache).expect("compiles").hit.is_some());
    if let Some(t) = w.tensors.get_mut("fc1.w") {
        t[[0, 0]] += 1.0;
    }
    std::fs::write(&wpath, w.to_safetensors(None).expect("serialises")).expect("write");
    let b = build_artifact(&src, &with_w, &cache).expect("compiles");
    assert_eq!(b.hit, None);
    assert_ne!(a.key, b.key);
}

#[test]
fn an_edited_import_is_a_miss_though_the_main_file_is_unchanged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::at(dir.path().join("cache"));
    std::fs::create_dir_all(dir.path().join("lib")).expect("dir");
    let layer = |n: u32| {
        format!(
            "use std::nn::{{TernaryLinear}}\nlayer Block {{\n  fc = TernaryLinear(8, {n})\n  fn forward(x: f32[B, 8]) -> f32[B, {n}] {{ return relu(fc(x)) }}\n}}\n"
        )
    };
    std::fs::write(dir.path().join("lib/blocks.tri"), layer(4)).expect("write");
    let main = dir.path().join("main.tri");
    std::fs::write(
        &main,
        "use lib::blocks::{Block}\nmodel M {\n  b = Block()\n  fn forward(x: f32[B, 8]) -> f32[B, 4] { return b(x) }\n}\n",
    )
    .expect("write");
    let first = build_artifact(&main, &o3(), &cache).expect("compiles");
    assert_eq!(first.hit, None, "{:?}", first.summary);
    assert!(build_artifact(&main, &o3(), &cache).expect("compiles").hit.is_some());
    // Same shape, other width: the import changed, so the model did.
    std::fs::write(dir.path().join("lib/blocks.tri"), layer(4).replace("relu(", "relu6(")).expect("write");
    let edited = build_artifact(&main, &o3(), &cache).expect("compiles");
    assert_eq!(edited.hit, None);
    assert_ne!(edited.key, first.key);
}

#[test]
fn a_second_process_hits_the_disk_cache_and_loads_run_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let out1 = dir.path().join("a.tcm");
    let out2 = dir.path().join("b.tcm");
    let first = triton(&cache, &["compile", "examples/mnist_mlp.tri", "-O3", "-o", out1.to_str().expect("utf-8")]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("compiled, cached"), "{}", text(&first.stdout));
    let second = triton(
        &cache,
        &["compile", "examples/mnist_mlp.tri", "-O3", "-o", out2.to_str().expect("utf-8"), "--timing=json"],
    );
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    // `--timing=json`: the JSON alone on stdout, the summary line on stderr.
    assert!(text(&second.stderr).contains("(cache hit)"), "{}", text(&second.stderr));
    let json: serde_json::Value = serde_json::from_slice(&second.stdout).expect("--timing=json is JSON");
    assert_eq!(json["cache"], "hit (disk)");
    assert!(json["total_ms"].as_f64().is_some() && json["lines"].as_u64() > Some(0), "{json}");
    assert_eq!(std::fs::read(&out1).expect("a"), std::fs::read(&out2).expect("b"));

    // Compiling again onto an identical artifact leaves it alone; onto one that differs in a
    // single byte (same length) rewrites it.
    let phases = |o: &Output| -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_str(text(&o.stdout).lines().last().expect("json line")).expect("json");
        json["phases"].as_array().expect("phases").iter().map(|p| p["name"].as_str().expect("name").into()).collect()
    };
    let args = ["compile", "examples/mnist_mlp.tri", "-O3", "-o", out2.to_str().expect("utf-8"), "--timing=json"];
    let same = triton(&cache, &args);
    assert!(phases(&same).contains(&"artifact write (unchanged)".to_string()), "{}", text(&same.stdout));
    let mut damaged = std::fs::read(&out2).expect("b");
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(&out2, &damaged).expect("damage");
    let rewrite = triton(&cache, &args);
    assert!(phases(&rewrite).contains(&"artifact write".to_string()), "{}", text(&rewrite.stdout));
    assert_eq!(std::fs::read(&out1).expect("a"), std::fs::read(&out2).expect("b"));

    // `triton run` on the artifact equals `triton run` on the source (same options).
    let x = dir.path().join("x.npy");
    let xs = ndarray::Array2::<f32>::from_shape_fn((3, 784), |(i, j)| ((i * 31 + j) % 17) as f32 / 17.0);
    ndarray_npy::write_npy(&x, &xs).expect("npy");
    let ya = dir.path().join("ya.npy");
    let yb = dir.path().join("yb.npy");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let run_a = triton(&cache, &["run", &s(&out1), "--input", &s(&x), "--out", &s(&ya)]);
    assert_eq!(run_a.status.code(), Some(0), "{}", text(&run_a.stderr));
    let run_b = triton(&cache, &["run", "examples/mnist_mlp.tri", "-O3", "--input", &s(&x), "--out", &s(&yb)]);
    assert_eq!(run_b.status.code(), Some(0), "{}", text(&run_b.stderr));
    assert_eq!(std::fs::read(&ya).expect("ya"), std::fs::read(&yb).expect("yb"));
}

#[test]
fn a_corrupted_entry_is_reported_deleted_and_rebuilt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let out = dir.path().join("m.tcm");
    let out_s = out.to_str().expect("utf-8");
    // -O2 has JIT kernels: model, kernel and manifest entries.
    let first = triton(&cache, &["compile", "examples/mnist_mlp.tri", "-O2", "-o", out_s]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let good = std::fs::read(&out).expect("artifact");
    let models = entries(&cache, "models");
    let kernels = entries(&cache, "kernels");
    assert_eq!((models.len(), kernels.len(), entries(&cache, "manifests").len()), (1, 2, 1));

    // A flipped byte in the model, a truncated kernel.
    let mut m = std::fs::read(&models[0]).expect("entry");
    let mid = m.len() / 2;
    m[mid] ^= 1;
    std::fs::write(&models[0], &m).expect("write");
    let k = std::fs::read(&kernels[0]).expect("entry");
    std::fs::write(&kernels[0], &k[..k.len() / 3]).expect("write");

    let second = triton(&cache, &["compile", "examples/mnist_mlp.tri", "-O2", "-o", out_s]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let err = text(&second.stderr);
    assert_eq!(err.matches("warning: corrupted cache entry").count(), 2, "{err}");
    assert!(text(&second.stdout).contains("compiled, cached"), "{}", text(&second.stdout));
    // Rebuilt to the same bytes, and the entries are whole again.
    assert_eq!(std::fs::read(&out).expect("artifact"), good);
    assert_eq!(std::fs::read(&models[0]).expect("entry"), good);
    assert_eq!(std::fs::read(&kernels[0]).expect("entry"), k);
    let third = triton(&cache, &["compile", "examples/mnist_mlp.tri", "-O2", "-o", out_s]);
    assert!(text(&third.stdout).contains("(cache hit)"), "{}", text(&third.stdout));
    assert!(!text(&third.stderr).contains("warning"), "{}", text(&third.stderr));
}

#[test]
fn eight_concurrent_compiles_of_one_model_agree_and_leave_whole_entries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let spawned: Vec<_> = (0..8)
        .map(|i| {
            command(&cache, &["compile", "examples/mnist_cnn.tri", "-O3", "-o"])
                .arg(dir.path().join(format!("n{i}.tcm")))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let outputs: Vec<Output> = spawned.into_iter().map(|c| c.wait_with_output().expect("wait")).collect();
    for o in &outputs {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
    }
    let first = std::fs::read(dir.path().join("n0.tcm")).expect("artifact");
    for i in 1..8 {
        assert_eq!(std::fs::read(dir.path().join(format!("n{i}.tcm"))).expect("artifact"), first, "n{i}");
    }
    for kind in ["models", "kernels", "manifests"] {
        for e in entries(&cache, kind) {
            let name = e.file_name().expect("name").to_string_lossy().into_owned();
            assert!(!name.starts_with(".tmp"), "temporary file left: {}", e.display());
        }
    }
    let models = entries(&cache, "models");
    assert_eq!(models.len(), 1);
    assert!(models.iter().any(|m| std::fs::read(m).expect("entry") == first));
    assert!(triton::runtime::Model::from_artifact(&first, 1).is_ok());
}

#[test]
fn no_cache_writes_nothing_and_stats_and_clean_report_entries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("cache");
    let out = dir.path().join("m.tcm");
    let out_s = out.to_str().expect("utf-8");
    let off = triton(&cache, &["compile", "examples/mnist_mlp.tri", "--no-cache", "-o", out_s]);
    assert_eq!(off.status.code(), Some(0), "{}", text(&off.stderr));
    assert!(text(&off.stdout).contains("cache off") && !cache.exists());

    let other = dir.path().join("elsewhere");
    let on = triton(
        &cache,
        &["compile", "examples/mnist_mlp.tri", "-O2", "-o", out_s, "--cache-dir", other.to_str().expect("utf-8")],
    );
    assert_eq!(on.status.code(), Some(0), "{}", text(&on.stderr));
    assert!(!cache.exists() && entries(&other, "models").len() == 1);

    let stats = triton(&other, &["cache", "stats"]);
    let s = text(&stats.stdout);
    assert!(s.contains("compiled models") && s.contains("       1 entries"), "{s}");
    let clean = triton(&other, &["cache", "clean"]);
    assert!(text(&clean.stdout).starts_with("removed 4 entries"), "{}", text(&clean.stdout));
    assert!(entries(&other, "models").is_empty());

    // Refuses to write an artifact over a file that is not one.
    let src = dir.path().join("keep.tri");
    std::fs::write(&src, "model text").expect("write");
    let refused = triton(&cache, &["compile", "examples/mnist_mlp.tri", "-o", src.to_str().expect("utf-8")]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("refusing to overwrite"), "{}", text(&refused.stderr));
    assert_eq!(std::fs::read_to_string(&src).expect("kept"), "model text");
}

/// Four threads of one process compile one model into one cache (memory and disk levels
/// shared): every result is the same bytes, and the folder holds one whole model entry.
#[test]
fn four_threads_compile_into_one_cache_and_agree() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = Cache::at(dir.path().join("cache"));
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_cnn.tri");
    let opts = Options { threads: 1, ..Options::default() };
    let builds: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| build_artifact(&file, &opts, &cache).expect("compiles").bytes.to_vec()))
            .collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).collect()
    });
    assert!(builds.windows(2).all(|w| w[0] == w[1]), "every thread got the same artifact");
    assert!(cache.take_warnings().is_empty());
    let models = std::fs::read_dir(dir.path().join("cache/v1/models"))
        .expect("models folder")
        .flat_map(|d| std::fs::read_dir(d.expect("entry").path()).expect("shard"))
        .count();
    assert_eq!(models, 1);
    let fresh = build_artifact(&file, &opts, &Cache::disabled()).expect("compiles");
    assert_eq!(fresh.bytes.to_vec(), builds[0], "the cached bytes are what a fresh compile makes");
}
