//! `cargo xtask ci`, `wasm` and `fuzz`.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use crate::{cargo, root, run, PURE_CRATES};

/// Everything CI checks, in the order that fails fastest.
pub fn ci() -> Result<(), String> {
    check_lock_pins()?;
    ensure_wasm_target()?;
    ensure_postgres();
    run(cargo()
        .current_dir(root())
        .args(["fmt", "--all", "--check"]))?;
    run(cargo().current_dir(root()).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The API docs build without a warning (broken links, bad code blocks).
    run(cargo()
        .current_dir(root())
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--workspace", "--no-deps"]))?;
    // `cargo test` runs unit, integration and doc tests; the PostgreSQL
    // ledger suite runs against the machine's cluster.
    let pg = std::env::var("PDC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    run(cargo()
        .current_dir(root())
        .env("PDC_TEST_DATABASE_URL", pg)
        .args(["test", "--workspace"]))?;
    wasm()?;
    // pdc-web in headless Chromium, against the `pdc` binary the tests
    // just built.
    crate::browser::run_tests(&crate::browser::target_dir().join("debug/pdc"))
}

/// Cargo.lock pins that a `cargo update` would silently undo: see the
/// comment on `[profile.wasm]` in the workspace's Cargo.toml.
fn check_lock_pins() -> Result<(), String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).map_err(|e| e.to_string())?;
    if lock.contains("name = \"idna_adapter\"\nversion = \"1.0.0\"") {
        Ok(())
    } else {
        Err(
            "Cargo.lock must pin idna_adapter to 1.0.0 (the browser bundle's size): \
             cargo update -p idna_adapter --precise 1.0.0"
                .into(),
        )
    }
}

/// Builds every pure crate present in the workspace for wasm32, and
/// pdc-core in its browser configuration.
pub fn wasm() -> Result<(), String> {
    let mut cmd = cargo();
    cmd.current_dir(root())
        .args(["build", "--target", "wasm32-unknown-unknown"]);
    for krate in PURE_CRATES {
        if root().join(krate).join("Cargo.toml").exists() {
            cmd.args(["-p", krate]);
        }
    }
    run(&mut cmd)?;
    // The engine itself as a browser POS embeds it: no tokio, no reqwest,
    // randomness from the browser, the store on a host-supplied backend.
    run(cargo().current_dir(root()).args([
        "build",
        "--target",
        "wasm32-unknown-unknown",
        "-p",
        "pdc-engine",
        "--no-default-features",
        "--features",
        "browser",
    ]))?;
    // The engine in a browser: pdc-core with its HTTP transport on fetch,
    // the OPFS store, the wasm-bindgen API.
    run(cargo().current_dir(root()).args([
        "build",
        "--target",
        "wasm32-unknown-unknown",
        "-p",
        "pdc-web",
    ]))?;
    run(cargo().current_dir(root()).args([
        "clippy",
        "--target",
        "wasm32-unknown-unknown",
        "-p",
        "pdc-web",
        "--",
        "-D",
        "warnings",
    ]))
}

fn ensure_wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wasm32-unknown-unknown"))
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    run(Command::new("rustup").current_dir(root()).args([
        "target",
        "add",
        "wasm32-unknown-unknown",
    ]))
}

/// Starts the machine's PostgreSQL cluster when nothing listens on 5432.
/// Tests that need it fail with a clear message if it still is not up.
fn ensure_postgres() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 5432));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return;
    }
    let versions = std::fs::read_dir("/etc/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for v in versions {
        let _ = run(Command::new("pg_ctlcluster").args([
            "--skip-systemctl-redirect",
            &v,
            "main",
            "start",
        ]));
    }
    for _ in 0..20 {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("warning: PostgreSQL is not listening on 127.0.0.1:5432");
}

/// The cargo-fuzz targets in `fuzz/fuzz_targets`.
const FUZZ_TARGETS: &[&str] = &["frame_decode", "protocol_decode", "engine_model", "request"];

/// Runs each fuzz target for a bounded time (default 60 s each).
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<u64>().map_err(|e| format!("--seconds: {e}")))
        .transpose()?
        .unwrap_or(60);
    let has_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_fuzz {
        run(Command::new("cargo").args(["+nightly", "install", "cargo-fuzz", "--locked"]))?;
    }
    for target in FUZZ_TARGETS {
        run(Command::new("cargo")
            .current_dir(root().join("fuzz"))
            .args(["+nightly", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg("-rss_limit_mb=1024"))?;
    }
    Ok(())
}
