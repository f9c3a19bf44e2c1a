//! Test-only helpers shared by pdc's crates; unpublished.
//!
//! [`crash_rounds`] is the SIGKILL harness of the crash-safety tests: the
//! test binary re-runs itself as a child (one test, selected by name, that
//! does real work only when an environment variable names the store), the
//! child prints `id N` after each durable write, and the parent kills it
//! at pseudo-random moments, collects what the child confirmed, and hands
//! it to the caller's checks after every kill.
//!
//! ```no_run
//! use pdc_test::{crash_rounds, kills_from_env};
//! # let path = std::path::Path::new("/tmp/x");
//! let confirmed = crash_rounds("my_child_test", "MY_CHILD_ENV", path, kills_from_env(), |round, confirmed| {
//!     // reopen the store and check that every id in `confirmed` is there
//!     let _ = (round, confirmed);
//! });
//! assert!(!confirmed.is_empty());
//! ```
//!
//! [`FlakyBackend`] is a redb storage backend in memory whose writes and
//! syncs fail on command, as when the disk fills up.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod flaky;
pub use flaky::FlakyBackend;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A field of this process's `/proc/self/status`, in kB (`"VmRSS:"`,
/// `"VmHWM:"`); `None` where there is no such file or field (not Linux).
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A command that runs only `child_test` of the current test binary, on
/// one thread and with its output shown, with `child_env` set to `value`:
/// the child side of a test that needs a process of its own.
///
/// Panics (it is a test harness) if the test binary's path is unknown.
pub fn child_test_command(child_test: &str, child_env: &str, value: impl AsRef<OsStr>) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no test binary path: {e}"));
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(child_env, value);
    cmd
}

/// Kills per crash test: `PDC_CRASH_KILLS`, default 30.
pub fn kills_from_env() -> u32 {
    std::env::var("PDC_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// Runs `kills` rounds of: start the current test binary running only
/// `child_test` with `child_env` set to `store`, wait 30–200 ms, SIGKILL it,
/// add the ids it confirmed to the set, then call `check(round, &all
/// confirmed ids)`. Returns every confirmed id.
///
/// Panics (it is a test harness) if the child cannot be started or an id is
/// confirmed twice.
pub fn crash_rounds(
    child_test: &str,
    child_env: &str,
    store: &Path,
    kills: u32,
    mut check: impl FnMut(u32, &BTreeSet<u64>),
) -> BTreeSet<u64> {
    let mut confirmed = BTreeSet::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..kills {
        let mut child = child_test_command(child_test, child_env, store)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the child: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("child has no stdout"));
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("id ").and_then(|s| s.parse::<u64>().ok()))
                .collect::<Vec<_>>()
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(30 + seed % 170));
        // SIGKILL on Unix: no destructor, no flush, no shutdown.
        child
            .kill()
            .unwrap_or_else(|e| panic!("cannot kill the child: {e}"));
        let _ = child.wait();
        let ids = reader
            .join()
            .unwrap_or_else(|_| panic!("reader thread panicked"));
        for id in ids {
            assert!(
                confirmed.insert(id),
                "round {round}: id {id} confirmed twice"
            );
        }
        check(round, &confirmed);
    }
    confirmed
}
