//! ONNX import on arbitrary bytes: every file is either imported (to a model that checks, with
//! weights that fit it: `import` verifies both) or refused with an error. A panic, a hang or a
//! giant allocation is a bug. Seed it with tests/onnx/*.onnx.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use triton_compiler::onnx::{self, ImportError, ImportOptions};

fuzz_target!(|data: &[u8]| {
    match onnx::import(data, Path::new("fuzz.onnx"), &ImportOptions::default()) {
        Ok(m) => assert!(!m.source.is_empty()),
        Err(ImportError::Check(e)) => panic!("an import that does not check: {e}"),
        Err(_) => {}
    }
});
