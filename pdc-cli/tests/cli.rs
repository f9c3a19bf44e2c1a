#![allow(clippy::unwrap_used)]
//! The `pdc` binary end to end: demo, serve, terminal, dataset, loadtest,
//! inspect, requeue, and two server processes on one PostgreSQL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

fn pdc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pdc"))
}

fn run(args: &[&str]) -> Output {
    pdc().args(args).env("RUST_LOG", "error").output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "pdc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = pdc()
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Server { child, url }
    }

    /// SIGTERM, then the exit status of a graceful shutdown.
    fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn a_short_demo_loses_nothing_and_doubles_nothing() {
    let out = run(&[
        "demo",
        "--terminals",
        "4",
        "--seconds",
        "4",
        "--seed",
        "7",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "terminals",
        "sales_recorded",
        "sales_applied",
        "duplicates_suppressed",
        "lost",
        "dead_lettered",
        "wire_bytes",
        "json_equivalent_bytes",
        "push_p99_ms",
        "max_drain_ms",
        "offline_logins",
    ] {
        assert!(!r[key].is_null(), "{key} missing from {r}");
    }
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["doubled"], 0, "{r}");
    assert!(r["sales_recorded"].as_u64().unwrap() > 20, "{r}");
    assert_eq!(
        r["sales_applied"].as_u64().unwrap() + r["dead_lettered"].as_u64().unwrap(),
        r["sales_recorded"].as_u64().unwrap(),
        "{r}"
    );
}

fn push_json(
    url: &str,
    token: &str,
    terminal: &str,
    ids: std::ops::Range<u64>,
) -> serde_json::Value {
    let items: Vec<serde_json::Value> = ids
        .map(|i| {
            serde_json::json!({"local_id": i, "stream": 1, "priority": "High", "kind": 70,
                                    "created_at_ms": 1, "payload": [1, 2, 3]})
        })
        .collect();
    let body =
        serde_json::json!({"schema": 1, "terminal_id": terminal, "batch_id": 1, "items": items});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/push"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    })
}

fn token_of(add_output: &str) -> String {
    add_output.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn serve_terminal_dataset_loadtest_on_the_embedded_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.redb");
    let l = ledger.to_str().unwrap();
    let token = token_of(&ok(&["terminal", "add", "till-1", "--ledger", l]));
    assert!(token.starts_with("pdc_") && token.len() == 68, "{token}");
    let tokens = dir.path().join("tokens.txt");
    ok(&[
        "terminal",
        "add",
        "lt",
        "--count",
        "3",
        "--tokens-file",
        tokens.to_str().unwrap(),
        "--ledger",
        l,
    ]);
    let list = ok(&["terminal", "list", "--ledger", l]);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(!list.contains(&token), "tokens are never listed");
    // A bad id and a bad dataset file are one clear error each.
    let bad = run(&["terminal", "add", "till 1", "--ledger", l]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: "));
    let products = dir.path().join("products.json");
    std::fs::write(&products, r#"[{"id":1,"name":"Tea","barcode":"4006381333931","category":"drinks","price_cents":250,"tax_rate_bp":700,"active":true}]"#).unwrap();
    assert!(ok(&[
        "dataset",
        "import",
        "products",
        products.to_str().unwrap(),
        "--ledger",
        l
    ])
    .contains("version 1"));
    std::fs::write(dir.path().join("bad.json"), "[{\"id\":").unwrap();
    let bad = run(&[
        "dataset",
        "import",
        "products",
        dir.path().join("bad.json").to_str().unwrap(),
        "--ledger",
        l,
    ]);
    assert!(!bad.status.success());

    let server = Server::start(&["--ledger", l]);
    let r = push_json(&server.url, &token, "till-1", 1..11);
    assert_eq!(r["results"].as_array().unwrap().len(), 10);
    let load = ok(&[
        "loadtest",
        "--url",
        &server.url,
        "--tokens",
        tokens.to_str().unwrap(),
        "--terminals",
        "3",
        "--seconds",
        "1",
        "--batch",
        "20",
        "--resend",
        "0.2",
        "--json",
    ]);
    let load: serde_json::Value = serde_json::from_str(&load).unwrap();
    assert_eq!(load["check_ok"], true, "{load}");
    assert!(load["applied"].as_u64().unwrap() > 0, "{load}");
    // Wrong tokens: every push refused, and the check says so.
    let bad_tokens = dir.path().join("bad.txt");
    std::fs::write(&bad_tokens, "lt-0001 pdc_not_a_token\n").unwrap();
    let refused = run(&[
        "loadtest",
        "--url",
        &server.url,
        "--tokens",
        bad_tokens.to_str().unwrap(),
        "--terminals",
        "1",
        "--seconds",
        "1",
        "--json",
    ]);
    assert!(!refused.status.success());
    let refused: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(refused["check_ok"], false, "{refused}");
    assert_eq!(refused["statuses"]["401"], 1, "{refused}");
    // A remote target is refused unless asked for.
    let far = run(&[
        "loadtest",
        "--url",
        "http://10.1.2.3:8440",
        "--tokens",
        tokens.to_str().unwrap(),
    ]);
    assert!(!far.status.success());
    assert!(server.stop().success(), "graceful shutdown on SIGTERM");
    // The operator sees which stores a terminal pushed from: the version 1
    // JSON push above came from the legacy store.
    let show = ok(&["terminal", "show", "till-1", "--ledger", l]);
    assert!(show.contains("status\tactive"), "{show}");
    assert!(show.contains("stores\t1"), "{show}");
    assert!(
        show.contains("store\t00000000000000000000000000000000"),
        "{show}"
    );
    assert!(!run(&["terminal", "show", "till-9", "--ledger", l])
        .status
        .success());
}

#[test]
fn inspect_and_requeue_a_terminal_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    {
        let store = pdc_store::Store::open(&path).unwrap();
        let item = |kind| pdc_store::NewItem {
            stream: pdc_sync::StreamKey(1),
            priority: pdc_sync::Priority::Critical,
            kind,
            created_at_ms: 1,
            payload: vec![1],
        };
        store.append(item(2)).unwrap();
        let dead = store.append(item(3)).unwrap();
        store
            .dead_letter(dead.local_id, "total_mismatch", "lines 300, paid 299", 5)
            .unwrap();
    }
    let p = path.to_str().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", p, "--json"])).unwrap();
    assert_eq!(v["pending_by_priority"]["critical"], 1, "{v}");
    assert_eq!(v["dead_letters"][0]["code"], "total_mismatch", "{v}");
    assert!(ok(&["inspect", p]).contains("total_mismatch"));
    ok(&["requeue", p, "2"]);
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", p, "--json"])).unwrap();
    assert_eq!(v["pending"], 2, "{v}");
    let missing = run(&["inspect", "/nonexistent/till.pdc"]);
    assert!(!missing.status.success());
    assert_eq!(String::from_utf8_lossy(&missing.stderr).lines().count(), 1);
}

/// An encrypted store: `pdc inspect` says it needs the key, and reads it
/// with the key from `PDC_STORE_KEY` (never a command-line argument).
#[test]
fn inspect_an_encrypted_store_with_its_key_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    let hex = "5a".repeat(32);
    {
        let key = pdc_store::StoreKey::from_hex(&hex).unwrap();
        let store =
            pdc_store::Store::open_with_options(&path, pdc_store::StoreOptions::encrypted(key))
                .unwrap();
        store
            .append(pdc_store::NewItem {
                stream: pdc_sync::StreamKey(1),
                priority: pdc_sync::Priority::High,
                kind: 100,
                created_at_ms: 1,
                payload: vec![1],
            })
            .unwrap();
    }
    let p = path.to_str().unwrap();
    let refused = run(&["inspect", p]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("encrypted"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = pdc()
        .args(["inspect", p, "--json"])
        .env("PDC_STORE_KEY", &hex)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pending"], 1, "{v}");
}

fn pg_url() -> Option<String> {
    match std::env::var("PDC_TEST_DATABASE_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            eprintln!(
                "\n*** two-process PostgreSQL test SKIPPED: PDC_TEST_DATABASE_URL is not set ***\n"
            );
            None
        }
    }
}

/// A fresh schema on the test database: a runtime, a client, and the
/// database URL whose connections use the schema.
fn fresh_schema(
    base: &str,
    schema: &str,
) -> (tokio::runtime::Runtime, tokio_postgres::Client, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        client
    });
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    (rt, client, url)
}

#[test]
fn two_server_processes_on_one_postgres_apply_each_item_once() {
    let Some(base) = pg_url() else { return };
    let schema = format!("pdc_cli_{}", std::process::id());
    let (rt, client, url) = fresh_schema(&base, &schema);
    let token = token_of(&ok(&["terminal", "add", "till-1", "--database-url", &url]));
    let a = Server::start(&["--database-url", &url]);
    let b = Server::start(&["--database-url", &url]);
    let (ua, ub, t1, t2) = (a.url.clone(), b.url.clone(), token.clone(), token.clone());
    let ha = std::thread::spawn(move || push_json(&ua, &t1, "till-1", 1..201));
    let hb = std::thread::spawn(move || push_json(&ub, &t2, "till-1", 1..201));
    let (ra, rb) = (ha.join().unwrap(), hb.join().unwrap());
    let (ra, rb) = (
        ra["results"].as_array().unwrap(),
        rb["results"].as_array().unwrap(),
    );
    for (x, y) in ra.iter().zip(rb) {
        let applied = [x, y].iter().filter(|r| r.get("applied").is_some()).count();
        let dup = [x, y]
            .iter()
            .filter(|r| r.get("duplicate").is_some())
            .count();
        assert_eq!((applied, dup), (1, 1), "{x} {y}");
        let seq = |r: &serde_json::Value| {
            r.get("applied").or_else(|| r.get("duplicate")).unwrap()["server_seq"].clone()
        };
        assert_eq!(seq(x), seq(y));
    }
    let n: i64 = rt.block_on(async {
        client
            .query_one(&format!("SELECT count(*) FROM {schema}.pdc_items"), &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(n, 200);
    assert!(a.stop().success());
    assert!(b.stop().success());
    rt.block_on(async {
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}

#[test]
fn serve_reads_a_toml_config_and_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pdc.toml");
    let ledger = dir.path().join("l.redb");
    std::fs::write(
        &config,
        format!(
            "ledger_path = {:?}\nretention_days = 7\n[limits]\nmax_items = 5\n",
            ledger.display().to_string()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let token = token_of(&ok(&["terminal", "add", "till-1", "--config", c]));
    let server = Server::start(&["--config", c]);
    // The file's limit applies: 6 items is over max_items = 5.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let items: Vec<_> = (1..=6)
            .map(|i| serde_json::json!({"local_id": i, "stream": 1, "priority": "High", "kind": 70,
                                        "created_at_ms": 1, "payload": []}))
            .collect();
        reqwest::Client::new()
            .post(format!("{}/v1/push", server.url))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(serde_json::json!({"schema": 1, "terminal_id": "till-1", "batch_id": 1, "items": items}).to_string())
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 413);
    assert!(server.stop().success());
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nno_such_key = 1\n").unwrap();
    let bad = run(&["serve", "--config", c]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no_such_key"));
}

#[test]
fn help_and_version() {
    assert!(ok(&["--version"]).starts_with("pdc "));
    let help = ok(&["--help"]);
    for verb in [
        "serve", "terminal", "dataset", "demo", "loadtest", "inspect", "requeue",
    ] {
        assert!(help.contains(verb), "{help}");
    }
}

/// A terminal's products as `url` serves them: (version, id → price).
fn pulled_prices(
    url: &str,
    token: &str,
    terminal: &str,
) -> (u64, std::collections::BTreeMap<u64, i64>) {
    let body = serde_json::json!({"schema": 1, "terminal_id": terminal,
        "datasets": [{"dataset": "products", "version": null, "buckets": []}]});
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r: serde_json::Value = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{url}/v1/pull"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    });
    let d = &r["datasets"][0];
    let records = d["change"]["snapshot"]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let codec = pdc_codec::Codec::new();
    let prices = records
        .iter()
        .map(|rec| {
            let body: Vec<u8> = serde_json::from_value(rec["body"].clone()).unwrap();
            let p: pdc_codec::Product = codec.decode(&body).unwrap();
            (rec["id"].as_u64().unwrap(), p.price_cents)
        })
        .collect();
    (d["version"].as_u64().unwrap_or(0), prices)
}

fn products_json(ids: std::ops::Range<u32>, price: i64) -> String {
    let v: Vec<serde_json::Value> = ids
        .map(|id| {
            serde_json::json!({"id": id, "name": format!("p{id}"), "barcode": format!("{id:013}"),
                "category": "c", "price_cents": price, "tax_rate_bp": 700, "active": true})
        })
        .collect();
    serde_json::to_string(&v).unwrap()
}

#[test]
fn two_server_processes_see_cli_imports_within_a_second_and_concurrent_imports_both_land() {
    let Some(base) = pg_url() else { return };
    let schema = format!("pdc_cli_scopes_{}", std::process::id());
    let (rt, client, url) = fresh_schema(&base, &schema);
    let t12 = token_of(&ok(&[
        "terminal",
        "add",
        "till-12",
        "--store",
        "12",
        "--database-url",
        &url,
    ]));
    let t13 = token_of(&ok(&[
        "terminal",
        "add",
        "till-13",
        "--store",
        "13",
        "--database-url",
        &url,
    ]));
    let a = Server::start(&["--database-url", &url]);
    let b = Server::start(&["--database-url", &url]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let chain = write("chain.json", products_json(1..51, 100));
    ok(&[
        "dataset",
        "import",
        "products",
        &chain,
        "--database-url",
        &url,
    ]);
    let imported = std::time::Instant::now();
    let until = |f: &dyn Fn() -> bool| {
        while !f() {
            assert!(
                imported.elapsed() < std::time::Duration::from_secs(10),
                "not seen in 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        imported.elapsed()
    };
    let took = until(&|| {
        pulled_prices(&a.url, &t12, "till-12").1.len() == 50
            && pulled_prices(&b.url, &t12, "till-12").1.len() == 50
    });
    eprintln!("both server processes served the CLI's import after {took:?}");

    // Two imports at once from two CLI processes, to two stores' layers
    // of the same dataset: both land.
    let s12 = write("s12.json", products_json(1..11, 12));
    let s13 = write("s13.json", products_json(5..21, 13));
    let spawn = |store: &str, file: &str| {
        pdc()
            .args(["dataset", "import", "products", file, "--store", store])
            .args(["--database-url", &url])
            .output()
            .unwrap()
    };
    let (o12, o13) = std::thread::scope(|s| {
        let h12 = s.spawn(|| spawn("12", &s12));
        let h13 = s.spawn(|| spawn("13", &s13));
        (h12.join().unwrap(), h13.join().unwrap())
    });
    assert!(
        o12.status.success(),
        "{}",
        String::from_utf8_lossy(&o12.stderr)
    );
    assert!(
        o13.status.success(),
        "{}",
        String::from_utf8_lossy(&o13.stderr)
    );
    let imported = std::time::Instant::now();
    let seen = |url: &str| {
        let (_, p12) = pulled_prices(url, &t12, "till-12");
        let (_, p13) = pulled_prices(url, &t13, "till-13");
        p12.get(&3) == Some(&12)
            && p12.get(&15) == Some(&100)
            && p13.get(&3) == Some(&100)
            && p13.get(&15) == Some(&13)
    };
    while !(seen(&a.url) && seen(&b.url)) {
        assert!(imported.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!(
        "both processes served both concurrent imports after {:?}",
        imported.elapsed()
    );
    let (va, pa) = pulled_prices(&a.url, &t12, "till-12");
    let (vb, pb) = pulled_prices(&b.url, &t12, "till-12");
    assert_eq!((va, pa.clone()), (vb, pb));
    assert!(a.stop().success());
    assert!(b.stop().success());
    rt.block_on(async {
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}
