//! `cargo xtask browser`: pdc-web's tests in headless Chromium. Installs
//! what it needs when missing — Debian's `chromium` (never a browser
//! download), `wasm-bindgen-cli` at the lockfile's wasm-bindgen version,
//! `playwright-core` from npm (the lockfile in `pdc-web/tests/browser`) —
//! builds the engine's wasm and its JS bindings, and runs pdc-store's
//! conformance suites on the OPFS backend in a dedicated worker
//! (wasm-bindgen-test), the smoke test (OPFS store, durable records,
//! reload, second tab) and the end-to-end test against `pdc serve` on
//! PostgreSQL through the web till page.

use std::path::Path;
use std::process::Command;

use crate::{cargo, root, run};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The wasm-bindgen version of the workspace's lockfile.
fn locked_wasm_bindgen() -> Result<String, String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).map_err(|e| e.to_string())?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_owned());
            }
        }
    }
    Err("wasm-bindgen is not in Cargo.lock".into())
}

fn ensure_chromium() -> Result<(), String> {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return Ok(());
    }
    let install = || {
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "chromium",
                "chromium-driver",
            ]))
    };
    install().or_else(|_| {
        run(Command::new("apt-get").arg("update"))?;
        install()
    })
}

fn ensure_wasm_bindgen(version: &str) -> Result<(), String> {
    let have = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if have == format!("wasm-bindgen {version}") {
        return Ok(());
    }
    // `--locked` fails to resolve one of its dependencies (NOTES.md).
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", version]))
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root().join(p) })
        .unwrap_or_else(|| root().join("target"))
}

/// Builds `pdc-web/pkg`: the wasm in the `wasm` profile (opt-level "z",
/// fat LTO) and its bindings for `--target web`, without the name and
/// producers sections (wasm-opt -Oz made the result larger here).
pub fn build_pkg() -> Result<(), String> {
    ensure_wasm_bindgen(&locked_wasm_bindgen()?)?;
    run(cargo().current_dir(root()).args([
        "build",
        "--profile",
        "wasm",
        "--target",
        "wasm32-unknown-unknown",
        "-p",
        "pdc-web",
    ]))?;
    run(Command::new("wasm-bindgen")
        .current_dir(root())
        .args([
            "--target",
            "web",
            "--remove-name-section",
            "--remove-producers-section",
            "--out-dir",
            "pdc-web/pkg",
        ])
        .arg(target_dir().join("wasm32-unknown-unknown/wasm/pdc_web.wasm")))
}

/// Everything above; `pdc` is the binary the end-to-end test serves with.
pub fn run_tests(pdc: &Path) -> Result<(), String> {
    ensure_chromium()?;
    build_pkg()?;
    // pdc-store's conformance suites on the OPFS backend, in a dedicated
    // worker (wasm-bindgen-test; Chromium's options in pdc-web/webdriver.json).
    run(cargo()
        .current_dir(root().join("pdc-web"))
        .args([
            "test",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "pdc-web",
            "--test",
            "opfs",
        ])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("CHROMEDRIVER", CHROMEDRIVER))?;
    let dir = root().join("pdc-web/tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        run(Command::new("npm")
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]))?;
    }
    if !pdc.exists() {
        run(cargo().current_dir(root()).args(["build", "-p", "pdc-cli"]))?;
    }
    let db = std::env::var("PDC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    for test in ["smoke.mjs", "e2e.mjs"] {
        run(Command::new("node")
            .current_dir(&dir)
            .arg(test)
            .env("PDC", pdc)
            .env("DATABASE_URL", &db)
            .env("CHROMIUM", CHROMIUM))?;
    }
    Ok(())
}
