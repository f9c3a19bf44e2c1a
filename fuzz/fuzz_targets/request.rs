//! The server's whole request path, as a client reaches it: arbitrary
//! bytes as the body of a push or a pull, in either format, gzipped or not,
//! through pdc-server's real router (authentication, body limit, gzip,
//! media type, decoding, validation, the ledger with `PosApply`). Any
//! panic, a 5xx, or an error answer that is not the JSON error shape is a
//! bug. The first byte chooses the endpoint and the headers.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request};
use libfuzzer_sys::fuzz_target;
use pdc_server::{AppState, DatasetHub, Ledger, Limits, PosApply, RedbLedger, RedbOptions};
use tower::ServiceExt;

struct World {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let (app, token) = rt.block_on(async {
            let pos = Arc::new(PosApply::new());
            let ledger: Arc<dyn Ledger> = Arc::new(
                RedbLedger::open(&dir.path().join("l.redb"), pos.clone(), RedbOptions::default())
                    .expect("ledger"),
            );
            let token = pdc_server::add_terminal(&*ledger, "till-1").await.expect("terminal");
            let hub = Arc::new(
                DatasetHub::load(ledger.clone(), &pdc_server::DEFAULT_DATASETS, 1000)
                    .await
                    .expect("datasets"),
            );
            let limits = Limits {
                max_body_bytes: 1 << 16,
                rate_per_sec: 1_000_000,
                burst: 1_000_000,
                ..Limits::default()
            };
            let state = AppState::new(ledger, hub, Some(pos), limits).await.expect("state");
            (pdc_server::http::router(state), token)
        });
        World { rt, app, token, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, body)) = data.split_first() else {
        return;
    };
    let w = world();
    let path = if how & 0x80 == 0 { "/v1/push" } else { "/v1/pull" };
    let (ctype, gzip) = match how & 0x07 {
        0 => ("application/x-pdc", false),
        1 => ("application/json", false),
        2 => ("application/x-pdc", true),
        3 => ("application/json", true),
        4 => ("APPLICATION/JSON; charset=utf-8", false),
        5 => ("Application/X-PDC", true),
        _ => ("text/plain", false),
    };
    let mut req = Request::post(path)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::AUTHORIZATION, format!("Bearer {}", w.token));
    if gzip {
        req = req.header(header::CONTENT_ENCODING, "gzip");
    }
    let req = req.body(Body::from(body.to_vec())).expect("request");
    let resp = w.rt.block_on(w.app.clone().oneshot(req)).expect("infallible");
    let status = resp.status();
    assert!(!status.is_server_error(), "{status} for a client's bytes");
    if !status.is_success() {
        let bytes = w
            .rt
            .block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
            .expect("answer body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON error");
        assert!(v["error"].is_string(), "{v}");
    }
});
