//! `pdc serve --web`: the web till on the API's origin. The page, its
//! script and style, its service worker, and the engine's JS client and
//! worker are embedded in the binary (`crate::assets`); the engine's wasm and its bindings (a build output:
//! `cargo xtask browser` or `wasm-bindgen --target web --out-dir
//! pdc-web/pkg ...`) are read once at start from `--web-pkg`.

use std::path::Path;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::CliError;

fn file(content_type: &'static str, body: Bytes) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // A till must pick up a new version at the next load.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// The till's routes; the engine bundle is read from `pkg`.
pub fn routes(pkg: &Path) -> Result<Router, CliError> {
    let read = |name: &str| {
        std::fs::read(pkg.join(name)).map_err(|e| {
            CliError::Msg(format!(
                "--web needs the engine's wasm bundle in {} ({name}: {e}); build it with `cargo xtask browser`",
                pkg.display()
            ))
        })
    };
    let js = Bytes::from(read("pdc_web.js")?);
    let wasm = Bytes::from(read("pdc_web_bg.wasm")?);
    let mut router = Router::new().route("/", get(|| async { Redirect::temporary("/till/") }));
    for asset in crate::assets::TILL {
        let (content_type, body) = (asset.content_type, asset.body);
        router = router.route(
            asset.path,
            get(move || async move { file(content_type, Bytes::from_static(body.as_bytes())) }),
        );
    }
    router = router
        .route(
            "/pkg/pdc_web.js",
            get(move || {
                let js = js.clone();
                async move { file("text/javascript", js) }
            }),
        )
        .route(
            "/pkg/pdc_web_bg.wasm",
            get(move || {
                let wasm = wasm.clone();
                async move { file("application/wasm", wasm) }
            }),
        );
    Ok(router)
}
