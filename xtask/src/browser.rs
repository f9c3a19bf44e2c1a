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

/// `cargo test --target wasm32-unknown-unknown -p pdc-web --test NAME`
/// under wasm-bindgen-test-runner (Chromium's options in
/// pdc-web/webdriver.json), with `envs` set for the build and the run.
fn wasm_test(name: &str, envs: &[(&str, String)]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.current_dir(root().join("pdc-web"))
        .args([
            "test",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "pdc-web",
            "--test",
            name,
        ])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("CHROMEDRIVER", CHROMEDRIVER);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// A free loopback port (bound, read, released).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A `pdc serve` on an embedded ledger in a fresh directory, killed on drop.
struct Server {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pdc serve` with CORS for `origin` and adds `terminal`;
/// returns the server and the terminal's token.
fn serve_with_terminal(
    pdc: &Path,
    origin: &str,
    terminal: &str,
) -> Result<(Server, String), String> {
    use std::io::BufRead;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ledger = dir.path().join("ledger.redb");
    let out = Command::new(pdc)
        .args(["terminal", "add", terminal, "--ledger"])
        .arg(&ledger)
        .output()
        .map_err(|e| format!("pdc terminal add: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pdc terminal add: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let token = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .ok_or("pdc terminal add printed no token")?
        .to_owned();
    let mut child = Command::new(pdc)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cors-origin",
            origin,
            "--ledger",
        ])
        .arg(&ledger)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("pdc serve: {e}"))?;
    let stdout = child.stdout.take().ok_or("pdc serve: no stdout")?;
    let mut server = Server {
        child,
        url: String::new(),
        _dir: dir,
    };
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(url) = line.split("listening on ").nth(1) {
            server.url = url.split_whitespace().next().unwrap_or_default().to_owned();
            break;
        }
    }
    if server.url.is_empty() {
        return Err("pdc serve exited before listening".into());
    }
    Ok((server, token))
}

/// Everything above; `pdc` is the binary the end-to-end test serves with.
pub fn run_tests(pdc: &Path) -> Result<(), String> {
    ensure_chromium()?;
    build_pkg()?;
    // Always: a stale binary would serve an old till (a no-op when fresh).
    if pdc.starts_with(target_dir().join("debug")) {
        run(cargo().current_dir(root()).args(["build", "-p", "pdc-cli"]))?;
    }
    // pdc-store's conformance suites on the OPFS backend, in a dedicated worker.
    wasm_test("opfs", &[])?;
    // The HTTP transport's conformance suite, from a test page on its own
    // origin to a `pdc serve` that allows it by CORS.
    let page = format!("127.0.0.1:{}", free_port()?);
    let (server, token) = serve_with_terminal(pdc, &format!("http://{page}"), "till-conformance")?;
    wasm_test(
        "transport",
        &[
            ("WASM_BINDGEN_TEST_ADDRESS", page),
            ("PDC_WEB_TEST_SERVER", server.url.clone()),
            ("PDC_WEB_TEST_TOKEN", token),
        ],
    )?;
    drop(server);
    let dir = root().join("pdc-web/tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        run(Command::new("npm")
            .current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund"]))?;
    }
    let db = std::env::var("PDC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    for test in ["smoke.mjs", "e2e.mjs", "report.mjs"] {
        run(Command::new("node")
            .current_dir(&dir)
            .arg(test)
            .env("PDC", pdc)
            .env("DATABASE_URL", &db)
            .env("CHROMIUM", CHROMIUM))?;
    }
    Ok(())
}
