//! Programs spliced from valid fragments, so the fuzzer reaches the checker's deeper paths
//! (instantiation, shape inference) instead of stopping at syntax errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

const FRAGMENTS: &[&str] = &[
    "use std::nn::{TernaryLinear, Linear, Conv2d, TernaryConv2d, BatchNorm2d}\n",
    "use std::resnet::{BasicBlock, Bottleneck}\n",
    "use std::efficientnet::{MBConv, SqueezeExcite}\n",
    "use std::mobilenet::{InvertedResidual}\n",
    "model M {\n", "layer L(n: int, s: int = 1) {\n", "}\n",
    "fc = TernaryLinear(", "conv = Conv2d(", "b = BasicBlock(", "blocks = [L(", "; ", "]\n",
    "weight w: trit[", "param p: f32[", "buffer q: f32[", "const k = ", "if k > 1 {\n", "} else {\n",
    "fn forward(x: f32[B, ", "fn forward(x: f32[B, 3, H, W]) -> f32[B, ", ") -> f32[B, ", ") {\n",
    "let h = ", "return ", "relu(", "ternary_matmul(", "conv2d(", "matmul(", "reshape(", "concat([",
    "quantize_i8(", "dequantize(", "max_pool2d(", "global_avg_pool(", "flatten(", "softmax(",
    "x", "h", "w", "n", "s", "k", "B", "H", "fc(", "conv(", "b(", "blocks(",
    "0", "1", "2", "3", "4", "16", "784", "-1", "1e-5", "\"twn\"", "true", "false",
    ", ", ")", "]", "[", " + ", " * ", " / ", " - ", " == ", " stride = ", " padding = ", " groups = ",
    "\n",
];

fuzz_target!(|data: &[u8]| {
    let mut text = String::new();
    for &b in data.iter().take(512) {
        text.push_str(FRAGMENTS[b as usize % FRAGMENTS.len()]);
    }
    let checked = triton_compiler::check_source("fuzz.tri", &text, None);
    let _ = checked.render_plain();
});
