//! One test per fixed bug of pdc-store, named after the bug.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use pdc_store::Store;

const CHILD_ENV: &str = "PDC_CREATE_CHILD_DIR";

/// The child: creates fresh stores one after another in the directory the
/// parent names, until it is killed.
#[test]
fn creation_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    for i in 0u64.. {
        let path = std::path::Path::new(&dir).join(format!("s{i}.pdc"));
        drop(Store::open(&path).unwrap());
    }
}

/// Issue 14, defect 4: a process killed while redb wrote a new store's
/// header left a file that every later open refused as "not a pdc store".
/// A child creates stores back to back and is SIGKILLed at random
/// instants, 100 times (`PDC_CREATE_KILLS` for more); after each kill,
/// every store file in the directory opens.
#[test]
fn a_kill_during_the_first_open_bricks_the_store() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let rounds: u32 = std::env::var("PDC_CREATE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut opened = 0usize;
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "creation_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(5_000 + seed % 60_000));
        child.kill().unwrap();
        let _ = child.wait();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            // A creation the kill interrupted leaves only its temporary
            // file beside the path: opening the path starts afresh.
            let path = match path.to_str().and_then(|p| p.strip_suffix(".creating")) {
                Some(p) => std::path::PathBuf::from(p),
                None => path,
            };
            Store::open(&path)
                .unwrap_or_else(|e| panic!("round {round}: {} does not open: {e}", path.display()));
            opened += 1;
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".creating"))
            .collect();
        assert!(
            left.is_empty(),
            "round {round}: temporary files left: {left:?}"
        );
    }
    eprintln!("{rounds} kills during store creation, {opened} stores reopened");
}
