//! IR text through the optimizer: any text that parses and verifies must survive every pipeline
//! with the verifier on after every pass, round-trip through the text form, and get a valid
//! memory plan. A failure here is a compiler bug (a pass producing a malformed graph).
#![no_main]

use libfuzzer_sys::fuzz_target;
use triton_compiler::ir;
use triton_compiler::passes::{self, OptLevel};
use triton_compiler::source::FileId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(g) = ir::parse(text, FileId(0)) else { return };
    if ir::verify(&g).is_err() || g.nodes.len() > 2000 {
        return;
    }
    for level in [OptLevel::O1, OptLevel::O2] {
        let opts = passes::Options { verify_each: true, ..passes::Options::new(level) };
        let opt = match passes::optimize(&g, &opts) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        let printed = opt.graph.to_string();
        let back = ir::parse(&printed, FileId(0)).expect("printed IR parses");
        assert_eq!(back.to_string(), printed);
        if let Some(Ok(plan)) = &opt.plan {
            plan.check(&opt.graph).expect("valid memory plan");
        }
    }
});
