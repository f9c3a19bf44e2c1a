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

/// A `pdc serve` child, killed on drop; its URL from its first line.
struct Serve(std::process::Child, String);

impl Serve {
    fn start(url: &str) -> Serve {
        Serve::with(&["--database-url", url])
    }

    fn with(args: &[&str]) -> Serve {
        let mut child = pdc()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line.split_whitespace().nth(2).unwrap().to_owned();
        Serve(child, addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The HTTP status of a pull by `till-1` with `token`.
fn pull_status(rt: &tokio::runtime::Runtime, url: &str, token: &str) -> u16 {
    rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{url}/v1/pull"))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(r#"{"schema":1,"terminal_id":"till-1","datasets":[]}"#)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

/// Issue 16, weakness 3: a token revoked with `pdc terminal revoke` while
/// servers ran kept working for about 10 s (each process's token cache),
/// and a token could not be rotated. Two `pdc serve` processes on one
/// PostgreSQL: a revocation and a rotation through the CLI take effect on
/// both within the 1 s bound (`pdc_server::TOKEN_CACHE_TTL`; the wait below
/// is that bound plus a margin, not a latency figure).
#[test]
fn a_revoked_token_keeps_working_for_10_s_on_running_servers() {
    let Ok(base) = std::env::var("PDC_TEST_DATABASE_URL") else {
        eprintln!("*** skipped: PDC_TEST_DATABASE_URL is not set ***");
        return;
    };
    let schema = format!("pdc_revoke_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&base, tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(conn);
    rt.block_on(client.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    )))
    .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let cli = |args: &[&str]| {
        let out = pdc()
            .args(args)
            .args(["--database-url", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let token = cli(&["terminal", "add", "till-1"])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let servers = [Serve::start(&url), Serve::start(&url)];
    for s in &servers {
        assert_eq!(pull_status(&rt, &s.1, &token), 200);
    }
    let bound = pdc_server::TOKEN_CACHE_TTL + std::time::Duration::from_millis(300);

    cli(&["terminal", "revoke", "till-1"]);
    std::thread::sleep(bound);
    for s in &servers {
        assert_eq!(
            pull_status(&rt, &s.1, &token),
            401,
            "revoked token on {}",
            s.1
        );
    }

    let rotated = cli(&["terminal", "rotate", "till-1"]);
    let new_token = rotated.split_whitespace().nth(1).unwrap().to_owned();
    assert_ne!(new_token, token);
    for s in &servers {
        assert_eq!(
            pull_status(&rt, &s.1, &new_token),
            200,
            "new token on {}",
            s.1
        );
    }
    cli(&["terminal", "rotate", "till-1"]);
    std::thread::sleep(bound);
    for s in &servers {
        assert_eq!(
            pull_status(&rt, &s.1, &new_token),
            401,
            "rotated-out token on {}",
            s.1
        );
    }
    drop(servers);
    rt.block_on(client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")))
        .unwrap();
}

/// Issue 18: there was no way to see what the ledger holds for a terminal
/// (`pdc inspect` refuses a ledger file). `pdc ledger show --terminal ID`
/// lists its items with their sequences or refusals.
#[test]
fn nothing_shows_what_the_ledger_holds_for_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.redb");
    let ledger = ledger.to_str().unwrap();
    let items: Vec<serde_json::Value> = (1..=3)
        .map(|i| {
            serde_json::json!({"local_id": i, "stream": 1, "priority": "High", "kind": 70,
            "created_at_ms": 1, "payload": [1, 2, 3]})
        })
        .collect();
    let out = push_then_show(ledger, items);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = v["items"].as_array().unwrap();
    assert_eq!(shown.len(), 3, "{v}");
    assert!(
        shown
            .iter()
            .all(|i| i["result"] == "applied" && i["server_seq"].is_u64()),
        "{v}"
    );
    assert_eq!(shown[2]["local_id"], 3);
    assert_eq!(shown[0]["store"], "07070707070707070707070707070707");
    let text = pdc()
        .args([
            "ledger",
            "show",
            "--terminal",
            "till-1",
            "--limit",
            "1",
            "--ledger",
            ledger,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("1 item(s) shown") && text.contains("\t3\tapplied seq"),
        "{text}"
    );
}

/// Issue 18 (same defect as the listing verbs): `pdc terminal add` printed
/// its token with `print!`, which panics when the reader has closed the
/// pipe. It ends quietly now; the terminal is added all the same.
#[test]
fn terminal_add_panics_on_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.redb");
    let mut child = pdc()
        .args(["terminal", "add", "till-1", "--ledger"])
        .arg(&ledger)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{stderr}");
    let list = pdc()
        .args(["terminal", "list", "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("till-1"));
}

/// Registers till-1 on `ledger`, pushes `items` through a `pdc serve`, stops
/// it and runs `pdc ledger show --terminal till-1 --json`.
fn push_then_show(ledger: &str, items: Vec<serde_json::Value>) -> std::process::Output {
    let out = pdc()
        .args(["terminal", "add", "till-1", "--ledger", ledger])
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let server = Serve::with(&["--ledger", ledger]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = serde_json::json!({"schema": 2, "terminal_id": "till-1",
        "store_id": "07070707070707070707070707070707", "batch_id": 1, "items": items});
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/push", server.1))
            .header("content-type", "application/json")
            .bearer_auth(&token)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    drop(server);
    pdc()
        .args([
            "ledger",
            "show",
            "--terminal",
            "till-1",
            "--json",
            "--ledger",
            ledger,
        ])
        .output()
        .unwrap()
}

/// Issue 18: `pdc ledger show` listed a terminal's items but not its
/// orders: the receipt, total and lines the back office asks about were
/// only in `PosApply`'s tables.
#[test]
fn ledger_show_lists_no_orders() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.redb");
    let ledger = ledger.to_str().unwrap();
    let order = pdc_codec::Order {
        id: 41,
        cashier_id: 3,
        customer_id: None,
        created_at_ms: 1_764_000_000_000,
        lines: vec![pdc_codec::OrderLine {
            product_id: 7,
            quantity: 2,
            unit_price_cents: 250,
            discount_cents: 0,
            tax_rate_bp: 700,
            ..Default::default()
        }],
        payments: vec![pdc_codec::Payment {
            method: pdc_codec::PaymentMethod::Cash,
            amount_cents: 500,
            ..Default::default()
        }],
        receipt: Some("till-1-0A0B0C0D-000041".into()),
        ..Default::default()
    };
    let payload = pdc_codec::Codec::new().encode(&order).unwrap();
    let items = vec![
        serde_json::json!({"local_id": 1, "stream": 41, "priority": "High",
        "kind": 2, "created_at_ms": 1, "payload": payload}),
    ];
    let out = push_then_show(ledger, items);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let orders = v["orders"].as_array().expect("an orders list");
    assert_eq!(orders.len(), 1, "{v}");
    assert_eq!(orders[0]["order_id"], 41);
    assert_eq!(orders[0]["receipt"], "till-1-0A0B0C0D-000041");
    assert_eq!(orders[0]["total_cents"], 500);
    assert_eq!(orders[0]["lines"], 1);
    assert_eq!(orders[0]["cashier_id"], 3);
    assert_eq!(v["items"][0]["server_seq"], orders[0]["server_seq"]);
}
