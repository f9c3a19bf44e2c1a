//! The engine's model-based operation-sequence test (pdc-core's
//! `tests/engine_model`) under the fuzzer: the input bytes are the
//! script of operations; a broken invariant is a panic with its step.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../pdc-core/tests/engine_model/mod.rs"]
mod engine_model;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = engine_model::run(data) {
        panic!("{e}");
    }
});
