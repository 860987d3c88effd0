//! The IR of every zoo model: lowering produces a graph the verifier accepts, and the text form
//! round-trips (print -> parse -> print is the identity).

mod common;
use common::examples;

use std::path::Path;

use triton::compiler::ir;
use triton::compiler::source::FileId;

#[test]
fn lowered_zoo_graphs_verify_and_round_trip() {
    for f in examples() {
        let checked = triton::check_file(&f);
        let g = &checked.models[0].graph;
        ir::verify(g).unwrap_or_else(|e| panic!("{}: {e}\n{g}", f.display()));
        assert_eq!(g.outputs.len(), 1);
        assert_eq!(g.inputs.len(), 1, "every zoo model takes one input");
        let text = g.to_string();
        let parsed = ir::parse(&text, FileId(0)).unwrap_or_else(|e| {
            let (l, c) = e.location(&text);
            panic!("{}: {l}:{c}: {}", f.display(), e.message)
        });
        ir::verify(&parsed).unwrap_or_else(|e| panic!("{}: parsed graph: {e}", f.display()));
        assert_eq!(parsed.to_string(), text, "{}: print -> parse -> print", f.display());
    }
}

#[test]
fn mnist_mlp_lowers_to_the_expected_graph() {
    let checked = triton::check_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mnist_mlp.tri"));
    insta::assert_snapshot!(checked.models[0].graph.to_string());
}

#[test]
fn the_verifier_rejects_malformed_graphs() {
    let good = "graph G\nparam 0 \"w\": f32[3, 4] weight init=kaiming\n%0 = input \"x\" : f32[B, 4]\n%1 = param 0 : f32[3, 4]\n%2 = matmul %0, %1 : f32[B, 3]\noutput %2\n";
    let g = ir::parse(good, FileId(0)).expect("parses");
    assert_eq!(ir::verify(&g), Ok(()));
    for (bad, why) in [
        (good.replace("f32[B, 3]\noutput", "f32[B, 4]\noutput"), "wrong result type"),
        (good.replace("%1 = param 0 : f32[3, 4]", "%1 = param 0 : f32[4, 3]"), "param type differs from the table"),
        (good.replace("%2 = matmul %0, %1", "%2 = relu %0, %1"), "wrong arity"),
        (good.replace("output %2\n", ""), "no output"),
    ] {
        let g = ir::parse(&bad, FileId(0)).expect("parses");
        assert!(ir::verify(&g).is_err(), "{why}:\n{bad}");
    }
    for (bad, why) in [
        (good.replace("%2 = matmul %0, %1", "%2 = matmul %0, %7"), "forward reference"),
        (good.replace("%2 =", "%5 ="), "out-of-order id"),
        (good.replace("matmul", "matmull"), "unknown op"),
        (good.replace("f32[B, 4]", "f33[B, 4]"), "unknown dtype"),
    ] {
        assert!(ir::parse(&bad, FileId(0)).is_err(), "{why}:\n{bad}");
    }
}

#[test]
fn names_with_escapes_round_trip_through_the_text_form() {
    // Found by the `ir` fuzz target: names are printed with escapes and must read back as-is.
    let mut g = ir::Graph::new("G");
    let ty = ir::TensorType::new(triton::runtime::DType::F32, vec![ir::Dim::sym("B"), ir::Dim::known(2)]);
    let x = g.add_input("we\"ird\\name\0\u{301}\u{1b}", ty.clone());
    let y = g.add(ir::Op::Unary(ir::UnaryOp::Relu), vec![x], ty);
    g.outputs.push(y);
    let text = g.to_string();
    let back = ir::parse(&text, FileId(0)).expect("parses");
    assert_eq!(back.inputs[0].0, g.inputs[0].0);
    assert_eq!(back.to_string(), text);
    let bad = text.replace("we\\\"ird", "we\\qird");
    assert!(ir::parse(&bad, FileId(0)).is_err(), "unknown escapes are errors");
}
