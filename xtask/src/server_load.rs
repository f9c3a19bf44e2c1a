//! `cargo xtask server-load [--postgres URL] [--stock] [--values]`: the server targets of
//! BENCHMARKS.md with real processes: `pdc serve` (embedded ledger, or
//! PostgreSQL) and `pdc loadtest` on the same machine: flat out and at
//! 20,000 items/s with 500 terminals, 20 % resends, and a reconnect storm
//! of 1,000 terminals with 200 queued sales each.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{cargo, root, run};

pub(crate) fn pdc() -> PathBuf {
    root().join("target/release/pdc")
}

pub(crate) struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

pub(crate) fn serve(ledger: &[String]) -> Result<(Serve, String), String> {
    let mut child = Command::new(pdc())
        .arg("serve")
        .args(ledger)
        .args(["--listen", "127.0.0.1:0", "--rate", "200", "--burst", "400"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("pdc serve: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let url = line
        .split_whitespace()
        .nth(2)
        .ok_or(format!("pdc serve said {line:?}"))?
        .to_owned();
    Ok((Serve(child), url))
}

fn loadtest(url: &str, tokens: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new(pdc())
        .args(["loadtest", "--url", url, "--tokens"])
        .arg(tokens)
        .args(args)
        .arg("--json")
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "pdc loadtest {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// Runs the scenarios and prints one line each.
pub fn run_report(args: &[String]) -> Result<(), String> {
    run(cargo()
        .current_dir(root())
        .args(["build", "--release", "-p", "pdc-cli"]))?;
    let dir = std::env::temp_dir().join(format!("pdc-server-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut ledger: Vec<String> = match args.iter().position(|a| a == "--postgres") {
        Some(i) => {
            let url = args.get(i + 1).ok_or("--postgres URL")?;
            vec!["--database-url".into(), url.clone()]
        }
        None => vec![
            "--ledger".into(),
            dir.join("ledger.redb").display().to_string(),
        ],
    };
    // `--stock`: per-store stock from the sales (PosApply::with_stock);
    // `--values`: multi-row VALUES push inserts (InsertForm::Values).
    let mut toml = String::new();
    if args.iter().any(|a| a == "--stock") {
        toml.push_str("track_stock = true\n");
    }
    if args.iter().any(|a| a == "--values") {
        toml.push_str("push_insert = \"values\"\n");
    }
    if !toml.is_empty() {
        let config = dir.join("pdc.toml");
        std::fs::write(&config, toml).map_err(|e| e.to_string())?;
        ledger.extend(["--config".into(), config.display().to_string()]);
    }
    let tokens = dir.join("tokens.txt");
    let prefix = format!("lt{}", std::process::id());
    let status = Command::new(pdc())
        .args([
            "terminal",
            "add",
            &prefix,
            "--count",
            "1000",
            "--tokens-file",
        ])
        .arg(&tokens)
        .args(&ledger)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("pdc terminal add failed".into());
    }
    let (server, url) = serve(&ledger)?;
    let line = |name: &str, v: &serde_json::Value| {
        println!(
            "{name:<34} {:>8.0} items/s {:>6.0} req/s (peak {:>5.0})  p50 {:>6.2} ms  p99 {:>7.2} ms  applied {:>7} dup {:>6}  {}{}",
            v["items_per_s"].as_f64().unwrap_or(0.0),
            v["requests_per_s"].as_f64().unwrap_or(0.0),
            v["peak_requests_per_s"].as_f64().unwrap_or(0.0),
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["applied"],
            v["duplicates"],
            if v["check_ok"] == true { "check OK" } else { "CHECK FAILED" },
            v["drain_ms"].as_u64().map(|d| format!("  drained in {d} ms")).unwrap_or_default(),
        );
    };
    let flat = loadtest(
        &url,
        &tokens,
        &["--terminals", "500", "--batch", "50", "--seconds", "10"],
    )?;
    line("500 terminals, flat out", &flat);
    let paced = loadtest(
        &url,
        &tokens,
        &[
            "--terminals",
            "500",
            "--batch",
            "50",
            "--seconds",
            "10",
            "--rate",
            "400",
        ],
    )?;
    line("500 terminals, 400 pushes/s", &paced);
    let resend = loadtest(
        &url,
        &tokens,
        &[
            "--terminals",
            "500",
            "--batch",
            "50",
            "--seconds",
            "10",
            "--resend",
            "0.2",
        ],
    )?;
    line("500 terminals, flat out, 20% resent", &resend);
    let storm = loadtest(
        &url,
        &tokens,
        &["--terminals", "1000", "--batch", "50", "--storm", "200"],
    )?;
    line("storm: 1000 terminals x 200 sales", &storm);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
