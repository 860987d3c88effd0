//! `triton train --data` on every format it reads, made here in each format's exact layout:
//! CIFAR-10 binary batches, a folder of class folders of PNG images, `.npy` pairs. Each trains a
//! few steps end to end through the binary, records its normalization, and a model that does
//! not fit the data is refused before training, naming both.

use std::path::Path;
use std::process::{Command, Output};

fn triton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_triton"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("TRITON_CACHE_DIR", std::env::temp_dir().join(format!("triton-datasets-cache-{}", std::process::id())))
        .output()
        .expect("run triton")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A model taking `input` (without the batch) with `classes` outputs.
fn model(dir: &Path, input: &str, flat: usize, classes: usize) -> std::path::PathBuf {
    let p = dir.join("m.tri");
    let body = if input.contains(',') {
        "let h = flatten(x)\n        let h = relu(fc(h))".to_string()
    } else {
        "let h = relu(fc(x))".to_string()
    };
    std::fs::write(
        &p,
        format!(
            "use std::nn::{{TernaryLinear, Linear}}\nmodel M {{\n    fc = TernaryLinear({flat}, 16)\n    head = Linear(16, {classes})\n    fn forward(x: f32[B, {input}]) -> f32[B, {classes}] {{\n        {body}\n        return head(h)\n    }}\n}}\n"
        ),
    )
    .expect("write model");
    p
}

/// Deterministic bytes whose first value depends on the label (so there is something to learn).
fn pixel(label: usize, i: usize, k: usize) -> u8 {
    ((label * 60 + (i * 31 + k * 7) % 50) % 256) as u8
}

fn metadata(path: &Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(path).expect("weights written");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors");
    meta.metadata().clone().unwrap_or_default()
}

fn trains(model: &Path, data: &Path, extra: &[&str]) -> (String, String) {
    let out_w = model.with_extension("safetensors");
    let mut args = vec!["train", s(model), "--data", s(data), "--epochs", "2", "--batch-size", "16", "-o", s(&out_w)];
    args.extend_from_slice(extra);
    let out = triton(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out_w.is_file());
    (text(&out.stdout), text(&out.stderr))
}

#[test]
fn cifar10_binary_batches_train_with_per_channel_normalization() {
    let dir = tempfile::tempdir().expect("temp");
    let data = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&data).expect("mkdir");
    let batch = |n: usize, off: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                let label = (i + off) % 10;
                std::iter::once(label as u8).chain((0..3072).map(move |k| pixel(label, i, k / 1024 * 3 + k % 5)))
            })
            .collect()
    };
    std::fs::write(data.join("data_batch_1.bin"), batch(120, 0)).expect("w");
    std::fs::write(data.join("data_batch_2.bin"), batch(100, 3)).expect("w");
    std::fs::write(data.join("test_batch.bin"), batch(40, 1)).expect("w");
    std::fs::write(
        data.join("batches.meta.txt"),
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n",
    )
    .expect("w");
    let m = model(dir.path(), "3, 32, 32", 3072, 10);
    // The parent folder is enough: the known sub-folder is found.
    let (stdout, stderr) = trains(&m, dir.path(), &["--augment", "crop,flip"]);
    assert!(
        stderr.contains("CIFAR-10 from") && stderr.contains("220 training and 40 test examples of 3x32x32, 10 classes"),
        "{stderr}"
    );
    assert!(stderr.contains("augment crop:4,flip"), "{stderr}");
    assert!(stderr.contains("CIFAR-10 has 5 training batches"), "a short dataset is noted: {stderr}");
    assert!(stdout.contains("198 training, 22 validation examples"), "{stdout}");
    let meta = metadata(&m.with_extension("safetensors"));
    let norm: serde_json::Value = serde_json::from_str(&meta["normalization"]).expect("json");
    assert_eq!(norm["mean"].as_array().map(Vec::len), Some(3), "one mean per colour channel: {norm}");
    assert_eq!(norm["divide"], 255.0);
    assert!(meta["classes"].contains("airplane"), "{meta:?}");
    // A model with the wrong class count or input layout is refused, naming both.
    let refused = |m: &Path| {
        let x = dir.path().join("x.safetensors");
        let out = triton(&["train", s(m), "--data", s(dir.path()), "--epochs", "1", "-o", s(&x)]);
        assert_eq!(out.status.code(), Some(1));
        text(&out.stderr)
    };
    let err = refused(&model(dir.path(), "3, 32, 32", 3072, 7));
    assert!(err.contains("must be [B, 10] logits for the dataset's 10 classes (CIFAR-10); it is f32[B, 7]"), "{err}");
    let err = refused(&model(dir.path(), "32, 32, 3", 3072, 10));
    assert!(err.contains("does not fit the dataset's examples (3x32x32)") && err.contains("[B, 3, 32, 32]"), "{err}");
    assert!(!dir.path().join("x.safetensors").exists(), "nothing written");
}

#[test]
fn a_png_folder_trains_and_an_odd_image_is_named() {
    let dir = tempfile::tempdir().expect("temp");
    let data = dir.path().join("shapes");
    for (label, class) in ["circle", "square", "triangle"].iter().enumerate() {
        for split in ["train", "test"] {
            let d = data.join(split).join(class);
            std::fs::create_dir_all(&d).expect("mkdir");
            for i in 0..if split == "train" { 12 } else { 4 } {
                let img = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([pixel(label, i, (x * 8 + y) as usize)]));
                img.save(d.join(format!("{i}.png"))).expect("png");
            }
        }
    }
    let m = model(dir.path(), "1, 8, 8", 64, 3);
    let (stdout, stderr) = trains(&m, &data, &["--format", "folder"]);
    assert!(
        stderr.contains("image folder from") && stderr.contains("36 training and 12 test examples of 1x8x8, 3 classes"),
        "{stderr}"
    );
    assert!(stdout.contains("no validation split") || stdout.contains("val "), "{stdout}");
    assert!(metadata(&m.with_extension("safetensors"))["classes"].contains("triangle"));
    // The flat form of the same model trains too (images flattened).
    let flat = model(dir.path(), "64", 64, 3);
    trains(&flat, &data, &[]);
    // An image of another size stops the run before training, naming the file.
    image::GrayImage::new(9, 8).save(data.join("train/square/odd.png")).expect("png");
    let out =
        triton(&["train", s(&m), "--data", s(&data), "--epochs", "1", "-o", s(&dir.path().join("y.safetensors"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("odd.png") && text(&out.stderr).contains("is 9x8, the first image is 8x8"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn npy_pairs_train_features_and_refuse_image_augmentation() {
    use ndarray_npy::WriteNpyExt;
    let dir = tempfile::tempdir().expect("temp");
    let data = dir.path().join("tabular");
    std::fs::create_dir(&data).expect("mkdir");
    let write = |name: &str, n: usize| {
        let x =
            ndarray::Array2::<f32>::from_shape_fn((n, 6), |(i, j)| ((i % 4) as f32) * 2.0 + (j as f32) * 0.1 + 50.0);
        let y = ndarray::Array1::<i64>::from_shape_fn(n, |i| (i % 4) as i64);
        x.write_npy(std::fs::File::create(data.join(format!("{name}_x.npy"))).expect("c")).expect("npy");
        y.write_npy(std::fs::File::create(data.join(format!("{name}_y.npy"))).expect("c")).expect("npy");
    };
    write("train", 64);
    write("test", 16);
    let m = model(dir.path(), "6", 6, 4);
    let (stdout, stderr) = trains(&m, &data.join("train_x.npy"), &["--lr", "0.01"]);
    assert!(
        stderr.contains(".npy pairs from")
            && stderr.contains("64 training and 16 test examples of 6 features, 4 classes"),
        "{stderr}"
    );
    assert!(stdout.contains("test "), "{stdout}");
    let meta = metadata(&m.with_extension("safetensors"));
    let norm: serde_json::Value = serde_json::from_str(&meta["normalization"]).expect("json");
    assert_eq!(norm["mean"].as_array().map(Vec::len), Some(6), "per-feature: {norm}");
    assert_eq!(norm["divide"], 1.0, "float data is not divided by 255");
    // `run --normalize` applies the recorded normalization: raw rows give what the rows
    // normalized by hand give.
    let mean: Vec<f64> = norm["mean"].as_array().expect("means").iter().map(|v| v.as_f64().expect("f64")).collect();
    let std: Vec<f64> = norm["std"].as_array().expect("stds").iter().map(|v| v.as_f64().expect("f64")).collect();
    let raw = ndarray::Array2::<f32>::from_shape_fn((2, 6), |(i, j)| i as f32 * 2.0 + j as f32 * 0.1 + 50.0);
    let by_hand =
        ndarray::Array2::<f32>::from_shape_fn((2, 6), |(i, j)| (raw[[i, j]] - mean[j] as f32) / std[j] as f32);
    raw.write_npy(std::fs::File::create(dir.path().join("raw.npy")).expect("c")).expect("npy");
    by_hand.write_npy(std::fs::File::create(dir.path().join("hand.npy")).expect("c")).expect("npy");
    let w = m.with_extension("safetensors");
    let run = |input: &str, extra: &[&str]| {
        let p = dir.path().join(input);
        let mut args = vec!["run", s(&m), "--weights", s(&w), "--engine", "interp", "--input", s(&p)];
        args.extend_from_slice(extra);
        let out = triton(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(run("raw.npy", &["--normalize"]), run("hand.npy", &[]));
    assert_ne!(run("raw.npy", &[]), run("hand.npy", &[]), "the normalization matters");
    let out =
        triton(&["train", s(&m), "--data", s(&data), "--augment", "flip", "-o", s(&dir.path().join("z.safetensors"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not images"), "{}", text(&out.stderr));
    // More classes in the labels than the model has outputs.
    let few = model(dir.path(), "6", 6, 3);
    let out = triton(&["train", s(&few), "--data", s(&data), "-o", s(&dir.path().join("z.safetensors"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("its labels run from 0 to 3"), "{}", text(&out.stderr));
}

/// `--checkpoint` writes the run's state after every epoch; `--resume` continues it (here
/// from the last epoch: the weights written are the run's own) and refuses other settings.
#[test]
fn checkpoints_resume_through_the_command_line() {
    let dir = tempfile::tempdir().expect("temp");
    let (a, b, ck) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"), dir.path().join("run.ckpt"));
    let base = ["train", "examples/mnist_mlp.tri", "--data", "data/mnist-sample", "--subset", "300", "--epochs", "2"];
    let root = env!("CARGO_MANIFEST_DIR");
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_triton"))
            .args(base.iter().chain(extra))
            .current_dir(root)
            .env("NO_COLOR", "1")
            .output()
            .expect("run triton");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, _, err) = run(&["-o", s(&a), "--checkpoint", s(&ck)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(ck.is_file(), "the checkpoint is written");
    let (code, _, err) = run(&["-o", s(&b), "--resume", s(&ck)]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("resuming after epoch 2 of 2"), "{err}");
    let weights = |p: &Path| {
        let bytes = std::fs::read(p).expect("weights");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        names.iter().map(|n| st.tensor(n).expect("tensor").data().to_vec()).collect::<Vec<_>>()
    };
    assert_eq!(weights(&a), weights(&b), "the resumed run writes the same weights");
    let (code, _, err) = run(&["-o", s(&b), "--resume", s(&ck), "--lr", "0.01"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("made with other settings") && err.contains("lr: 0.002 in the checkpoint"), "{err}");
    let (code, _, err) = run(&["-o", s(&b), "--resume", s(&a)]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no `triton_checkpoint` metadata"), "{err}");
}
