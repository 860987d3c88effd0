//! The front end never panics, whatever the input: random bytes, random token soup, and
//! random edits of real models. Every diagnostic it produces has a location inside the file
//! and renders.

use proptest::prelude::*;

const MNIST_MLP: &str = include_str!("../examples/mnist_mlp.tri");
const RESNET18: &str = include_str!("../examples/resnet18_cifar10.tri");

fn check_all_is_well(text: &str) {
    let checked = triton::check_source("input.tri", text, None);
    for d in checked.diags().iter() {
        for l in &d.labels {
            let len = checked.program.sources.get(l.span.file).text.len() as u32;
            assert!(l.span.lo <= l.span.hi && l.span.hi <= len, "label outside its file: {d:?}");
        }
    }
    let rendered = checked.render_plain();
    assert_eq!(checked.diags().is_empty(), rendered.is_empty());
}

const VOCAB: &[&str] = &[
    "layer",
    "model",
    "fn",
    "let",
    "return",
    "use",
    "as",
    "weight",
    "param",
    "buffer",
    "const",
    "if",
    "else",
    "true",
    "false",
    "std",
    "nn",
    "::",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    ";",
    "=",
    "->",
    "+",
    "-",
    "*",
    "/",
    "%",
    "==",
    "!=",
    "<",
    ">",
    "&&",
    "||",
    "!",
    "x",
    "w",
    "B",
    "H",
    "n",
    "f32",
    "trit",
    "i8",
    "int",
    "0",
    "1",
    "784",
    "1.5",
    "\"twn\"",
    "relu",
    "matmul",
    "ternary_matmul",
    "conv2d",
    "reshape",
    "TernaryLinear",
    "Linear",
    "forward",
    "\n",
    "#c\n",
    "$",
    "\"open",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_all_is_well(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_token_soup_never_panics(tokens in proptest::collection::vec(0..VOCAB.len(), 0..200)) {
        let text: Vec<&str> = tokens.into_iter().map(|i| VOCAB[i]).collect();
        check_all_is_well(&text.join(" "));
    }

    #[test]
    fn edited_models_never_panic(
        which in 0..2usize,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, 0..VOCAB.len()), 1..6),
    ) {
        let mut text = [MNIST_MLP, RESNET18][which].to_string();
        for (at, kind, tok) in edits {
            let mut pos = at.index(text.len() + 1);
            while !text.is_char_boundary(pos) {
                pos -= 1;
            }
            match kind {
                0 => text.insert_str(pos, VOCAB[tok]),
                1 => {
                    let mut end = (pos + 1 + tok % 7).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(pos..end, "");
                }
                _ => text.insert(pos, ' '),
            }
        }
        check_all_is_well(&text);
    }
}

#[test]
fn numbers_in_layer_arguments_are_checked_not_trusted() {
    // Every shape-producing argument, swept over awkward values.
    for v in ["0", "1", "-1", "3", "9223372036854775807", "1 - 9223372036854775807 - 2", "68719476737"] {
        for template in [
            "use std::nn::{TernaryLinear}\nmodel M { fc = TernaryLinear(V, 4)\n fn forward(x: f32[B, 4]) -> f32[B, 4] { return fc(x) } }",
            "use std::nn::{Conv2d}\nmodel M { c = Conv2d(3, 4, V, stride = V, padding = V, groups = V)\n fn forward(x: f32[B, 3, 8, 8]) -> f32[B, 4, 8, 8] { return c(x) } }",
            "model M { fn forward(x: f32[B, 4]) -> f32[B, 4] { return reshape(x, [B, V]) } }",
            "model M { fn forward(x: f32[B, 4, 4, 4]) -> f32[B, 4, 4, 4] { return max_pool2d(x, V, stride = V) } }",
        ] {
            check_all_is_well(&template.replace('V', v));
        }
    }
}
