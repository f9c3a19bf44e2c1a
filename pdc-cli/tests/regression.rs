//! One test per defect found in the `pdc` binary, named after it.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn pdc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pdc"))
}

/// Issue 18: `pdc terminal list | head` panicked on the broken pipe. A
/// reader that closes the pipe before the first line ends the verb
/// quietly: success, nothing on stderr.
#[test]
fn a_closed_pipe_panics_the_listing_verbs() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.redb");
    for i in 0..3 {
        let out = pdc()
            .args(["terminal", "add", &format!("till-{i}"), "--ledger"])
            .arg(&ledger)
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    for verb in [&["terminal", "list"][..], &["dataset", "show"][..]] {
        let mut child = pdc()
            .args(verb)
            .arg("--ledger")
            .arg(&ledger)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before anything is written.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "pdc {verb:?}: {stderr}");
        assert!(stderr.is_empty(), "pdc {verb:?} said: {stderr}");
    }
}

/// Issue 18: `pdc serve` wrote ANSI colour codes into its log when stderr
/// was not a terminal (a file, a pipe, journald).
#[test]
fn serve_colours_its_log_when_it_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = pdc()
        .args(["serve", "--listen", "127.0.0.1:0", "--ledger"])
        .arg(dir.path().join("l.redb"))
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let listening = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("listening on"));
    assert!(listening);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("INFO"), "no log line: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log: {log:?}"
    );
}
