//! The model-based operation-sequence test (see `engine_model/mod.rs`):
//! `PDC_MODEL_CASES` scripts (default 256) of up to 120 operations. The
//! same model runs under cargo-fuzz (`fuzz/fuzz_targets/engine_model.rs`)
//! for long runs.
#![allow(clippy::unwrap_used)]

mod engine_model;
use engine_model as model;

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PDC_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]
    #[test]
    fn the_engine_follows_the_model(script in proptest::collection::vec(any::<u8>(), 0..240)) {
        if let Err(e) = model::run(&script) {
            prop_assert!(false, "{e}");
        }
    }
}

/// A fixed script through every operation, so that each is known to run.
#[test]
fn every_operation_runs() {
    let script: Vec<u8> = (0u8..14)
        .flat_map(|op| [op, 3, 8, 4])
        .chain([8, 7, 9, 7])
        .collect();
    let s = model::run(&script).unwrap();
    assert!(s.saved > 0 && s.refused > 0 && s.opens > 1, "{s:?}");
}
