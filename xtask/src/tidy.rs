//! Architecture invariants of the workspace, checked as tests (in the
//! manner of rust-analyzer's tidy): every library crate has a `//!` page,
//! pure crates read no clock, sleep no thread, touch no file system and
//! depend on no async runtime or I/O stack, and no crate depends on one in
//! its own or a higher layer of DESIGN.md's diagram.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{root, PURE_CRATES};

/// DESIGN.md's layers. Tooling (xtask, benches, fuzz) sits outside.
fn layer(krate: &str) -> Option<u8> {
    Some(match krate {
        "pdc-clock" | "pdc-codec" => 0,
        "pdc-datasets" | "pdc-cache" | "pdc-sync" | "pdc-auth" | "pdc-monitor" => 1,
        "pdc-store" | "pdc-test" => 2,
        "pdc-engine" | "pdc-server" => 3,
        "pdc-cli" | "pdc-web" => 4,
        _ => return None,
    })
}

const BANNED_CALLS: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread::sleep",
    "std::fs",
];
const BANNED_DEPS: &[&str] = &["tokio", "mio", "redb", "reqwest", "axum"];

fn metadata() -> Value {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["metadata", "--format-version", "1"])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed");
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The workspace's own packages in `cargo metadata`.
fn workspace_packages(meta: &Value) -> Vec<&Value> {
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| members.contains(p["id"].as_str().unwrap_or("")))
        .collect()
}

fn workspace_crates(meta: &Value) -> Vec<(String, PathBuf)> {
    workspace_packages(meta)
        .into_iter()
        .map(|p| {
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("path"));
            (
                p["name"].as_str().expect("name").to_owned(),
                manifest.parent().expect("crate dir").to_path_buf(),
            )
        })
        .collect()
}

#[test]
fn every_library_crate_has_a_doc_page() {
    for (name, dir) in workspace_crates(&metadata()) {
        let lib = dir.join("src/lib.rs");
        if let Ok(text) = std::fs::read_to_string(&lib) {
            assert!(
                text.trim_start().starts_with("//!"),
                "{name}: src/lib.rs must start with a //! page"
            );
            assert!(
                text.contains("```"),
                "{name}: the //! page needs a runnable example"
            );
            assert!(
                text.contains("deny(missing_docs)"),
                "{name}: library crates deny missing docs"
            );
        }
    }
}

#[test]
fn pure_crates_read_no_clock_and_do_no_io() {
    let mut violations = Vec::new();
    for krate in PURE_CRATES {
        let mut files = Vec::new();
        rust_files(&root().join(krate).join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).expect("readable source");
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for banned in BANNED_CALLS {
                    // SystemClock is the one reader of the system's time.
                    let allowed = *krate == "pdc-clock"
                        && matches!(*banned, "Instant::now" | "SystemTime::now");
                    if code.contains(banned) && !allowed {
                        violations.push(format!("{}:{}: {banned}", f.display(), i + 1));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "pure crates must not: {violations:#?}"
    );
}

#[test]
fn pure_crates_depend_on_no_runtime_or_io_stack() {
    let meta = metadata();
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve")
        .iter()
        .map(|n| (n["id"].as_str().unwrap_or(""), n))
        .collect();
    // Normal (non-dev, non-build) dependencies only.
    let normal_deps = |id: &str| -> Vec<String> {
        nodes[id]["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].is_null())
            })
            .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
            .collect()
    };
    for (id, name) in &names {
        if !PURE_CRATES.contains(name) || !nodes.contains_key(id) {
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(cur) = stack.pop() {
            for dep in normal_deps(&cur) {
                let dep_name = names.get(dep.as_str()).copied().unwrap_or("");
                assert!(
                    !BANNED_DEPS.contains(&dep_name),
                    "pure crate {name} depends (transitively) on {dep_name}"
                );
                if seen.insert(dep.clone()) {
                    stack.push(dep);
                }
            }
        }
    }
}

#[test]
fn crates_depend_only_on_lower_layers() {
    let meta = metadata();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().unwrap_or("");
        let Some(own) = layer(name) else { continue };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            if d["kind"].as_str() == Some("dev") {
                continue;
            }
            let dep = d["name"].as_str().unwrap_or("");
            if let Some(theirs) = layer(dep) {
                assert!(
                    theirs < own,
                    "{name} (layer {own}) must not depend on {dep} (layer {theirs})"
                );
            }
        }
    }
}

#[test]
fn the_layer_table_knows_every_library_crate() {
    for (name, dir) in workspace_crates(&metadata()) {
        // Tooling sits outside the layers: nothing depends on it.
        if dir.join("src/lib.rs").exists() && !matches!(name.as_str(), "pdc-benches" | "xtask") {
            assert!(layer(&name).is_some(), "{name} has no layer in tidy.rs");
        }
    }
}

/// Every crate that can be published carries what crates.io and a reader
/// need (description, licence and both licence files, repository, readme,
/// keywords, categories) and a version on every path dependency that is
/// not a dev-dependency (cargo strips those): issue 18. `cargo publish
/// --dry-run --workspace` is the full check; it takes minutes, so CI runs
/// this instead.
#[test]
fn publishable_crates_carry_their_metadata() {
    let meta = metadata();
    let mut checked = 0;
    for p in workspace_packages(&meta) {
        // `publish = false` is an empty registry list.
        if p["publish"].as_array().is_some_and(Vec::is_empty) {
            continue;
        }
        let name = p["name"].as_str().expect("name");
        let dir = PathBuf::from(p["manifest_path"].as_str().expect("path"));
        let dir = dir.parent().expect("crate dir");
        for field in ["description", "license", "repository", "readme"] {
            assert!(
                p[field].as_str().is_some_and(|v| !v.is_empty()),
                "{name}: no {field}"
            );
        }
        for field in ["keywords", "categories"] {
            assert!(
                p[field].as_array().is_some_and(|v| !v.is_empty()),
                "{name}: no {field}"
            );
        }
        for file in ["LICENSE-MIT", "LICENSE-APACHE"] {
            assert!(dir.join(file).is_file(), "{name}: no {file}");
        }
        for dep in p["dependencies"].as_array().expect("deps") {
            if dep["path"].is_string() && dep["kind"].as_str() != Some("dev") {
                assert_ne!(
                    dep["req"].as_str(),
                    Some("*"),
                    "{name}: path dependency {} has no version",
                    dep["name"]
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} publishable crates found");
}

/// The README's "Your first till" is the example that CI compiles.
#[test]
fn the_readme_first_till_is_the_compiled_example() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let example = std::fs::read_to_string(root().join("pdc-core/examples/first_till.rs"))
        .expect("first_till.rs");
    let body = &example[example.find("use std::").expect("the example's first use")..];
    assert!(
        readme.contains(body),
        "README.md's \"Your first till\" differs from pdc-core/examples/first_till.rs"
    );
    // Every line between the fences counts, blank lines and comments too.
    let lines = body.lines().count();
    assert!(lines <= 40, "the first till is {lines} lines (40 at most)");
}
