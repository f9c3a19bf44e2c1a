//! `cargo xtask`: pdc's developer tasks, one module per verb.
//!
//! * `ci`: exactly what `.ci/run` runs (toolchain target, services, fmt,
//!   clippy, tests with doc tests, wasm builds of the pure crates);
//! * `sizes [--json]`: the codec's size table against the formats a user
//!   would pick instead;
//! * `bench [criterion args]`: the criterion benches;
//! * `fuzz [--seconds N]`: the cargo-fuzz targets for a bounded time;
//! * `wasm`: the wasm32 build of the pure crates alone;
//! * `fleet`: the backoff comparison of 100 terminals reconnecting at once;
//! * `cache-ratio [--json] [--keys N] [--requests N] [--seed S]`: hit
//!   ratios of the memory cache and its peers on seven trace families at
//!   three capacities;
//! * `store-latency`: durable append latency and group-commit throughput;
//! * `browser`: pdc-web's tests in headless Chromium (installs what they need).
//! * `engine-figures`: engine open time, lookups, resident memory.
//!
//! The tidy tests (architecture invariants of the workspace) live in
//! `tidy.rs` and run with `cargo test`.

use std::process::{Command, ExitCode};

mod browser;
mod cache_ratio;
mod change_latency;
mod ci;
mod engine_figures;
mod fleet;
mod server_load;
mod sizes;
mod store_latency;
#[cfg(test)]
mod tidy;

/// The pure-logic crates: no I/O, no clock, build for wasm32.
pub const PURE_CRATES: &[&str] = &[
    "pdc-clock",
    "pdc-codec",
    "pdc-datasets",
    "pdc-cache",
    "pdc-sync",
    "pdc-auth",
    "pdc-monitor",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verb = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let result = match verb {
        "ci" => ci::ci(),
        "sizes" if rest.iter().any(|a| a == "--other") => sizes::other_data(),
        "sizes" => sizes::run(rest.iter().any(|a| a == "--json")),
        "bench" => run(cargo()
            .args(["bench", "-p", "pdc-benches", "--"])
            .args(rest)),
        "fuzz" => ci::fuzz(rest),
        "wasm" => ci::wasm(),
        "browser" => browser::run_tests(&browser::target_dir().join("debug/pdc")),
        "fleet" => fleet::run_report(),
        "engine-figures" if rest.first().is_some_and(|a| a == "--build-store") => {
            match (rest.get(1).map(|n| n.parse::<usize>()), rest.get(2)) {
                (Some(Ok(n)), Some(path)) => {
                    engine_figures::build_store_at(n, std::path::Path::new(path))
                }
                _ => Err("engine-figures --build-store N PATH".into()),
            }
        }
        "engine-figures" => {
            if let Some(n) = rest
                .iter()
                .position(|a| a == "--streams")
                .and_then(|i| rest.get(i + 1))
            {
                // Read by the store builder, here and in its child process.
                std::env::set_var("PDC_FIGURES_STREAMS", n);
            }
            let rss = rest.iter().any(|a| a == "--rss");
            let pending = rest
                .iter()
                .position(|a| a == "--pending")
                .and_then(|i| rest.get(i + 1))
                .map_or(Ok(if rss { 1_000 } else { 10_000 }), |v| {
                    v.parse::<usize>()
                        .map_err(|e| format!("--pending {v}: {e}"))
                });
            if rest.iter().any(|a| a == "--encryption") {
                engine_figures::encryption()
            } else if rest.iter().any(|a| a == "--http") {
                pending.and_then(engine_figures::http)
            } else if rss {
                pending.and_then(engine_figures::rss)
            } else {
                pending.and_then(engine_figures::run)
            }
        }
        "store-latency" => store_latency::run(),
        "cache-ratio" => cache_ratio::run(rest),
        "cache-rss-child" => match (rest.first(), rest.get(1).and_then(|n| n.parse().ok())) {
            (Some(name), Some(n)) => cache_ratio::rss_child(name, n),
            _ => Err("cache-rss-child NAME ENTRIES".into()),
        },
        "server-load" => server_load::run_report(rest),
        "change-latency" => change_latency::run_report(rest),
        _ => {
            eprintln!("usage: cargo xtask <ci | browser | sizes [--json | --other] | bench [args] | fuzz [--seconds N] | wasm | fleet | cache-ratio [--json] [--keys N] [--requests N] [--seed S] [--rss] | store-latency | engine-figures [--rss | --http | --encryption] [--pending N] [--streams N] | server-load [--postgres URL] [--stock] [--values] | change-latency [--postgres URL] [--terminals N]>");
            return if verb == "help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {verb}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A `cargo` command from the toolchain that runs xtask.
pub fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs a command, echoing it, and fails if it fails.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// Workspace root (xtask's parent directory).
pub fn root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}
