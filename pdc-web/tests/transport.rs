//! pdc-core's HTTP transport on reqwest's fetch backend, in a dedicated
//! worker of headless Chromium, against a real `pdc serve` on loopback
//! (cross-origin, through its CORS preflight): the same
//! `transport_conformance` suite the native transport passes in
//! pdc-server's tests.
//!
//! The server's address and a terminal's token are compile-time inputs
//! (`PDC_WEB_TEST_SERVER`, `PDC_WEB_TEST_TOKEN` for terminal
//! `till-conformance`): `cargo xtask browser` starts the server, adds the
//! terminal and sets both. Built without them, the test fails and says so.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pdc_core::{HttpOptions, HttpTransport};
use pdc_sync::{SyncTransport, TransportError};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

fn server() -> (&'static str, &'static str) {
    match (
        option_env!("PDC_WEB_TEST_SERVER"),
        option_env!("PDC_WEB_TEST_TOKEN"),
    ) {
        (Some(url), Some(token)) => (url, token),
        _ => panic!(
            "built without PDC_WEB_TEST_SERVER / PDC_WEB_TEST_TOKEN: run it with `cargo xtask browser`"
        ),
    }
}

#[wasm_bindgen_test]
async fn the_http_transport_passes_the_transport_suite_in_a_browser() {
    let (url, token) = server();
    let transport = HttpTransport::new(url, token, HttpOptions::default()).unwrap();
    // A fresh range of local ids per run: the server's ledger outlives it.
    let first_id = 1 + (js_sys::Date::now() as u64 % 1_000_000_000) * 1_000;
    pdc_sync::transport_conformance::run(&transport, "till-conformance", first_id).await;
}

#[wasm_bindgen_test]
async fn a_wrong_token_is_refused_and_a_dead_server_is_offline() {
    let (url, _) = server();
    let wrong = HttpTransport::new(url, "not-a-token", HttpOptions::default()).unwrap();
    let err = wrong.push(vec![1, 2, 3]).await.unwrap_err();
    assert!(matches!(err, TransportError::Auth(_)), "{err:?}");
    let options = HttpOptions {
        timeout: Duration::from_secs(5),
        ..HttpOptions::default()
    };
    // Port 9 (discard) is closed on these machines.
    let dead = HttpTransport::new("http://127.0.0.1:9", "t", options).unwrap();
    let err = dead.ping().await.unwrap_err();
    assert!(
        matches!(err, TransportError::Offline(_)),
        "dead server: {err:?}"
    );
}
