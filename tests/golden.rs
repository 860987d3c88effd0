//! Golden tests: every example and stdlib module parses and checks cleanly, and the zoo's
//! parameter counts equal those of the reference architectures.

mod common;
use common::examples;

use std::path::Path;

use triton::compiler::load::STDLIB;
use triton::{ModelStats, check_file, check_source};

#[test]
fn every_example_checks_without_diagnostics() {
    let files = examples();
    assert!(files.len() >= 8, "the zoo has {} models", files.len());
    for f in files {
        let checked = check_file(&f);
        assert!(checked.diags().is_empty(), "{}:\n{}", f.display(), checked.render_plain());
        assert_eq!(checked.models.len(), 1, "{}: one model per example", f.display());
    }
}

#[test]
fn every_stdlib_module_checks_without_diagnostics() {
    for (name, text) in STDLIB {
        let checked = check_source(&format!("{name}.tri"), text, None);
        assert!(checked.diags().is_empty(), "std::{name}:\n{}", checked.render_plain());
    }
}

/// (file, model, reference parameter count, reference, input, output)
const ZOO: &[(&str, &str, u64, &str, &str, &str)] = &[
    ("mnist_mlp.tri", "MnistMlp", 235_146, "784-256-128-10 MLP with biases", "f32[B, 784]", "f32[B, 10]"),
    ("mnist_cnn.tri", "MnistCnn", 61_706, "LeNet-5", "f32[B, 1, 28, 28]", "f32[B, 10]"),
    ("resnet18_cifar10.tri", "ResNet18", 11_173_962, "CIFAR ResNet-18", "f32[B, 3, 32, 32]", "f32[B, 10]"),
    ("resnet34_cifar10.tri", "ResNet34", 21_282_122, "CIFAR ResNet-34", "f32[B, 3, 32, 32]", "f32[B, 10]"),
    ("resnet50_cifar10.tri", "ResNet50", 23_520_842, "CIFAR ResNet-50", "f32[B, 3, 32, 32]", "f32[B, 10]"),
    (
        "mobilenetv2_cifar10.tri",
        "MobileNetV2",
        2_236_682,
        "torchvision mobilenet_v2(num_classes=10)",
        "f32[B, 3, 32, 32]",
        "f32[B, 10]",
    ),
    ("vit_mnist.tri", "VitMnist", 138_890, "ViT: 7x7 patches, width 64, 4 blocks", "f32[B, 1, 28, 28]", "f32[B, 10]"),
    (
        "bitnet_layer.tri",
        "BitnetLayer",
        69_482_752,
        "a BitNet b1.58 2B4T decoder layer (q, o 2560x2560; k, v 640x2560; gate, up, down 6912 x 2560; 4 norms)",
        "f32[B, T, 2560]",
        "f32[B, T, 2560]",
    ),
    (
        "bitnet_2b.tri",
        "Bitnet2b",
        2_412_820_480,
        "BitNet b1.58 2B4T: a 128256 x 2560 embedding tied to the head, 30 decoder layers, a final RMSNorm",
        "i32[B, T]",
        "f32[B, T, 128256]",
    ),
    ("vgg16_cifar10.tri", "Vgg16", 14_728_266, "CIFAR VGG-16 with batch norm", "f32[B, 3, 32, 32]", "f32[B, 10]"),
    (
        "efficientnet_b0_imagenet.tri",
        "EfficientNetB0",
        5_288_548,
        "torchvision efficientnet_b0",
        "f32[B, 3, 224, 224]",
        "f32[B, 1000]",
    ),
];

#[test]
fn zoo_parameter_counts_match_reference_architectures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for &(file, name, params, reference, input, output) in ZOO {
        let checked = check_file(&dir.join(file));
        assert!(!checked.has_errors(), "{file}:\n{}", checked.render_plain());
        let m = &checked.models[0];
        assert_eq!(m.name, name);
        let s = ModelStats::of(m);
        assert_eq!(s.parameters, params, "{file}: {reference} has {params} parameters");
        assert_eq!(m.inputs()[0].1.to_string(), input, "{file}");
        assert_eq!(m.output().to_string(), output, "{file}");
        // First and last layers stay f32; (nearly) everything else is ternary.
        assert!(s.ternary > 0 && s.ternary < s.parameters, "{file}");
        assert!(s.ternary as f64 / s.parameters as f64 > 0.7, "{file}: mostly ternary");
        assert!(s.compression() > 3.0, "{file}: packed smaller than f32");
        // Names are unique and dotted like PyTorch state_dict keys.
        let mut names: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "{file}: duplicate parameter names");
    }
}

#[test]
fn mnist_mlp_parameters_are_named_and_shaped_as_declared() {
    let checked = check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_mlp.tri"));
    let m = &checked.models[0];
    let got: Vec<(String, String, Vec<u64>)> =
        m.params().iter().map(|p| (p.name.clone(), p.dtype.to_string(), p.shape.clone())).collect();
    let want = [
        ("fc1.w", "trit", vec![256, 784]),
        ("fc1.b", "f32", vec![256]),
        ("fc2.w", "trit", vec![128, 256]),
        ("fc2.b", "f32", vec![128]),
        ("head.w", "f32", vec![10, 128]),
        ("head.b", "f32", vec![10]),
    ];
    let want: Vec<(String, String, Vec<u64>)> =
        want.into_iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c)).collect();
    assert_eq!(got, want);
    let s = ModelStats::of(m);
    // Trits at 5 per byte (rounded up per tensor) plus an f32 scale per row; the rest f32.
    let packed = (256 * 784_u64).div_ceil(5) + 256 * 4 + (128 * 256_u64).div_ceil(5) + 128 * 4 + (256 + 128 + 1290) * 4;
    assert_eq!(s.packed_bytes, packed);
    assert_eq!(s.fp32_bytes, 235_146 * 4);
}

#[test]
fn resnet_blocks_project_only_when_the_shape_changes() {
    let checked = check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/resnet18_cifar10.tri"));
    let m = &checked.models[0];
    let has = |n: &str| m.params().iter().any(|p| p.name == n);
    assert!(!has("layer1.0.shortcut.w"), "identity shortcut at stride 1, same width");
    assert!(has("layer2.0.shortcut.w"), "projection when downsampling");
    assert!(!has("layer2.1.shortcut.w"));
    let bn_mean = m.params().iter().find(|p| p.name == "layer2.0.bn1.mean").expect("running mean");
    assert_eq!(bn_mean.kind, triton::compiler::ir::ParamKind::Buffer);
}

#[test]
fn symbolic_spatial_dims_flow_through_a_fully_convolutional_model() {
    let src = "
        use std::nn::{Conv2d}
        use std::resnet::{BasicBlock}
        model Fcn {
            stem = Conv2d(3, 16, 3, padding = 1)
            down = BasicBlock(16, 32, stride = 2)
            fn forward(x: f32[B, 3, H, W]) -> f32[B, 32, (H - 1) / 2 + 1, (W - 1) / 2 + 1] {
                return down(stem(x))
            }
        }";
    let checked = check_source("fcn.tri", src, None);
    assert!(!checked.has_errors(), "{}", checked.render_plain());
    assert_eq!(
        Some(checked.models[0].output().to_string()).as_deref(),
        Some("f32[B, 32, (H - 1) / 2 + 1, (W - 1) / 2 + 1]")
    );
}

#[test]
fn relative_imports_resolve_next_to_the_importing_file() {
    let dir = std::env::temp_dir().join(format!("triton-import-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("blocks")).expect("temp dir");
    std::fs::write(
        dir.join("blocks/dense.tri"),
        "use std::nn::{TernaryLinear}\nlayer Dense(n: int) {\n fc = TernaryLinear(n, n)\n fn forward(x: f32[B, n]) -> f32[B, n] { return relu(fc(x)) }\n}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("model.tri"),
        "use blocks::dense::{Dense as Block}\nmodel M {\n b = Block(8)\n fn forward(x: f32[B, 8]) -> f32[B, 8] { return b(x) }\n}\n",
    )
    .expect("write");
    let checked = check_file(&dir.join("model.tri"));
    assert!(checked.diags().is_empty(), "{}", checked.render_plain());
    assert_eq!(ModelStats::of(&checked.models[0]).parameters, 8 * 8 + 8);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn quantization_rules_and_int8_activation_paths_check() {
    use triton::compiler::check::QuantRule;
    use triton::runtime::DType;
    let src = r#"
        use std::nn::{TernaryLinear, TernaryConv2d, Linear}
        layer Int8Dense(n: int, m: int) {
            weight w: i8[m, n]
            param scale: f32[m] (init = "ones")
            fn forward(x: f32[B, n]) -> f32[B, m] {
                let acc: i32[B, m] = matmul(quantize_i8(x, scale = 0.05), w)
                return dequantize(acc) * scale
            }
        }
        model Q {
            conv = TernaryConv2d(1, 4, 3, padding = 1, quant = "twn", int8 = true)
            fc1 = TernaryLinear(4 * 8 * 8, 32, int8 = true)
            fc2 = Int8Dense(32, 16)
            head = Linear(16, 10, bias = false)
            fn forward(x: f32[B, 1, 8, 8]) -> f32[B, 10] {
                let h = relu(conv(x))
                let h = relu(fc1(flatten(h)))
                return softmax(head(relu(fc2(h))), axis = -1)
            }
        }"#;
    let checked = check_source("q.tri", src, None);
    assert!(checked.diags().is_empty(), "{}", checked.render_plain());
    let m = &checked.models[0];
    let get = |n: &str| m.params().iter().find(|p| p.name == n).unwrap_or_else(|| panic!("{n}"));
    assert_eq!(get("conv.w").quant, Some(QuantRule::Twn));
    assert_eq!(get("fc1.w").quant, Some(QuantRule::Absmean));
    assert_eq!((get("fc2.w").dtype, get("fc2.w").quant), (DType::I8, Some(QuantRule::Absmax)));
    assert_eq!(get("head.w").quant, None);
    assert!(m.params().iter().all(|p| p.name != "head.b"), "bias = false declares no bias");
    let s = ModelStats::of(m);
    assert_eq!(s.int8, 32 * 16);
    assert_eq!(s.ternary, 4 * 9 + 32 * 256);
}
