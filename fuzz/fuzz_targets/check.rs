//! Arbitrary bytes through the whole front end: UTF-8 check, lex, parse, resolve, elaborate,
//! render. Any panic, hang or stack overflow is a bug; diagnostics are the expected outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let checked = triton_compiler::check_source("fuzz.tri", text, None);
    // Rendering is part of the contract: every diagnostic must render.
    let _ = checked.render_plain();
});
