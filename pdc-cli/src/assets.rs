//! The web till's static files (page, script, style, service worker, the
//! JS client and the engine's worker script), embedded in the binary for
//! `pdc serve --web`. They live in pdc-web (`till/`, `js/`); `web/` here
//! holds symlinks to them so that the packaged crate carries copies. The
//! engine's wasm and its wasm-bindgen glue are build outputs, not in here.

/// One file: the path it is served at, its media type, its content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asset {
    /// The URL path (`/till/`, `/sw.js`, ...).
    pub(crate) path: &'static str,
    /// The `Content-Type`.
    pub(crate) content_type: &'static str,
    /// The file.
    pub(crate) body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript";

/// The till's files at the paths the page and the service worker expect
/// (the service worker at the root, so that its scope covers the page and
/// the engine's worker).
pub(crate) const TILL: &[Asset] = &[
    Asset {
        path: "/till/",
        content_type: HTML,
        body: include_str!("../web/index.html"),
    },
    Asset {
        path: "/till/index.html",
        content_type: HTML,
        body: include_str!("../web/index.html"),
    },
    Asset {
        path: "/till/till.js",
        content_type: JS,
        body: include_str!("../web/till.js"),
    },
    Asset {
        path: "/till/till.css",
        content_type: "text/css",
        body: include_str!("../web/till.css"),
    },
    Asset {
        path: "/sw.js",
        content_type: JS,
        body: include_str!("../web/sw.js"),
    },
    Asset {
        path: "/js/client.js",
        content_type: JS,
        body: include_str!("../web/client.js"),
    },
    Asset {
        path: "/js/worker.js",
        content_type: JS,
        body: include_str!("../web/worker.js"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_service_worker_caches_is_served() {
        let sw = TILL.iter().find(|a| a.path == "/sw.js").map(|a| a.body);
        let sw = sw.unwrap_or_default();
        let start = sw.find("const SHELL = [").unwrap_or(0);
        let list = &sw[start..start + sw[start..].find("];").unwrap_or(0)];
        let cached: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
        assert!(cached.len() >= 5, "{cached:?}");
        for path in cached {
            // The engine's bundle is served from the build output.
            if path.starts_with("/pkg/") {
                continue;
            }
            assert!(TILL.iter().any(|a| a.path == path), "{path} is not served");
        }
    }
}
