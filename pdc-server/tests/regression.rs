#![allow(clippy::unwrap_used, clippy::panic)]
//! One test per fixed bug of pdc-server, named after the bug.

mod common;

use std::sync::Arc;
use std::time::Duration;

use pdc_codec::Codec;
use pdc_core::{EngineConfig, HttpOptions, HttpTransport, OfflineEngine};
use pdc_server::{add_terminal, Ledger, Limits, PosApply, RedbLedger, RedbOptions};
use pdc_store::NewItem;
use pdc_sync::{ItemResult, OutboxItem, Priority, StreamKey};

use pdc_server::conformance::S;

use common::{any_port, drop_schema, order, order_item, pg, sql, start};

fn engine_at(
    addr: std::net::SocketAddr,
    token: &str,
    store: &std::path::Path,
) -> OfflineEngine<HttpTransport, pdc_clock::SystemClock> {
    let transport = HttpTransport::new(
        &format!("http://{addr}"),
        token,
        HttpOptions {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
        },
    )
    .unwrap();
    let mut config = EngineConfig::new("till-1".parse().unwrap(), store);
    config.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    config.sync.linger = Duration::ZERO;
    config.sync.reconnect_jitter = Duration::from_millis(10);
    config.sync.backoff.base = Duration::from_millis(20);
    OfflineEngine::open(config, transport, pdc_clock::SystemClock::new()).unwrap()
}

async fn drain(e: &OfflineEngine<HttpTransport, pdc_clock::SystemClock>) {
    for _ in 0..500 {
        let _ = e.sync_once().await;
        if e.pending() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} still pending", e.pending());
}

/// Issue 13, defect 1: a till whose store was replaced starts its local
/// ids at 1 again; the server answered its new sales `duplicate` and the
/// till dropped them as acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_store_loses_sales_silently() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        &dir.path().join("ledger.redb"),
        Limits::default(),
        any_port(),
    )
    .await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let codec = Codec::new();
    let sale = |id| NewItem {
        stream: StreamKey(1),
        priority: Priority::High,
        kind: 2,
        created_at_ms: 1_700_000_000_000,
        payload: codec.encode(&order(id, 1)).unwrap(),
    };
    let store = dir.path().join("till.pdc");
    {
        let first = engine_at(server.addr, &token, &store);
        assert_eq!(first.record(sale(100)).unwrap(), 1);
        drain(&first).await;
    }
    // The support engineer "starts fresh": same terminal, same token.
    std::fs::remove_file(&store).unwrap();
    let second = engine_at(server.addr, &token, &store);
    assert_eq!(second.record(sale(200)).unwrap(), 1, "local ids restart");
    drain(&second).await;
    let totals = server.state.ledger.totals().await.unwrap();
    assert_eq!(totals.applied, 2, "the new store's sale reached the ledger");
    drop(second);
    server.shutdown().await.unwrap();
}

/// Issue 13, defect 2 (PostgreSQL): an order the checks accept but the
/// database cannot store (a timestamp beyond PostgreSQL's range) made the
/// whole batch retry-later, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_item_blocks_its_terminal_on_postgres() {
    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    let mut items: Vec<OutboxItem> = (1..=50).map(|i| order_item(i, &order(i, 2))).collect();
    let mut poison = order(25, 2);
    poison.created_at_ms = 9_000_000_000_000_000_000;
    items[24] = order_item(25, &poison);
    let results = ledger.push("till-1", S, items, 1).await.unwrap();
    for (n, r) in results.iter().enumerate() {
        if n == 24 {
            assert!(
                matches!(r, ItemResult::Rejected { code, .. } if code == "storage"),
                "{r:?}"
            );
        } else {
            assert!(matches!(r, ItemResult::Applied { .. }), "item {n}: {r:?}");
        }
    }
    let c = sql(&schema).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM pos_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 49);
    drop_schema(&schema).await;
}

/// Issue 13, defect 2 (embedded): one job's hook error failed the whole
/// group commit, and every batch in it got retry-later. (`RejectKind`'s
/// hook cannot write items of kind 98, `POISON_KIND`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_error_fails_the_whole_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(
        RedbLedger::open(
            &dir.path().join("l.redb"),
            Arc::new(pdc_server::conformance::RejectKind),
            RedbOptions::default(),
        )
        .unwrap(),
    );
    let item = |id, kind| pdc_server::conformance::item(id, kind);
    let r = ledger
        .push("till-p", S, vec![item(1, 2), item(2, 98), item(3, 2)], 1)
        .await
        .unwrap();
    assert!(matches!(r[0], ItemResult::Applied { .. }), "{r:?}");
    assert!(
        matches!(&r[1], ItemResult::Rejected { code, .. } if code == "storage"),
        "{r:?}"
    );
    assert!(matches!(r[2], ItemResult::Applied { .. }), "{r:?}");
    // Many batches at once (group commits), one of them poisoned: every
    // other batch is applied.
    let tasks: Vec<_> = (0..32u64)
        .map(|t| {
            let l = Arc::clone(&ledger);
            tokio::spawn(async move {
                let kind = if t == 7 { 98 } else { 2 };
                (
                    t,
                    l.push(&format!("till-{t}"), S, vec![item(1, kind)], 1)
                        .await,
                )
            })
        })
        .collect();
    for task in tasks {
        let (t, r) = task.await.unwrap();
        let r = r.unwrap();
        if t == 7 {
            assert!(matches!(&r[0], ItemResult::Rejected { code, .. } if code == "storage"));
        } else {
            assert!(
                matches!(r[0], ItemResult::Applied { .. }),
                "till-{t}: {r:?}"
            );
        }
    }
}

/// Issue 13, defect 3: two items carrying one order id were both applied;
/// `pos_order_lines` got the second order's lines under the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_order_id_corrupts_the_business_tables() {
    /// The second item with order 77, in the same batch and in another,
    /// is refused `duplicate_order`; the first is applied.
    async fn check(ledger: &dyn Ledger) {
        let items = vec![order_item(1, &order(77, 1)), order_item(2, &order(77, 3))];
        let later = vec![order_item(3, &order(77, 2))];
        let dup = |r: &ItemResult| matches!(r, ItemResult::Rejected { code, .. } if code == "duplicate_order");
        let r = ledger.push("till-1", S, items, 1).await.unwrap();
        assert!(matches!(r[0], ItemResult::Applied { .. }), "{r:?}");
        assert!(dup(&r[1]), "{r:?}");
        let r = ledger.push("till-1", S, later, 1).await.unwrap();
        assert!(dup(&r[0]), "{r:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbLedger::open(
        &dir.path().join("l.redb"),
        Arc::new(PosApply::new()),
        RedbOptions::default(),
    )
    .unwrap();
    check(&redb).await;
    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    check(&ledger).await;
    let c = sql(&schema).await;
    let lines: i64 = c
        .query_one(
            "SELECT count(*) FROM pos_order_lines WHERE order_id = 77",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lines, 1, "only the first order's line");
    drop_schema(&schema).await;
}

/// Issue 13, defect 4: a stream of 2^64-1 was stored as -1 in `pdc_items`,
/// an order id of 2^64-6 as -6 in `pos_orders`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_at_or_above_2_63_wrap() {
    // At the envelope: a 400 that names the field.
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let body = r#"{"schema":1,"terminal_id":"till-1","batch_id":1,"items":[{"local_id":1,"stream":18446744073709551615,"priority":"High","kind":70,"created_at_ms":1,"payload":[1]}]}"#;
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/push", server.addr))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("stream"), "{err}");
    assert_eq!(server.state.ledger.totals().await.unwrap().applied, 0);
    server.shutdown().await.unwrap();

    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    // Through the Rust API: refused, nothing stored.
    let mut wide = pdc_server::conformance::item(1, 70);
    wide.stream = StreamKey(u64::MAX);
    assert!(ledger.push("till-1", S, vec![wide], 1).await.is_err());
    // An order id beyond bigint: refused for good, naming the field.
    let r = ledger
        .push("till-1", S, vec![order_item(2, &order(u64::MAX - 5, 1))], 1)
        .await
        .unwrap();
    assert!(
        matches!(&r[0], ItemResult::Rejected { code, message } if code == "out_of_range" && message.contains("order id")),
        "{r:?}"
    );
    let c = sql(&schema).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM pos_orders WHERE order_id < 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = c
        .query_one("SELECT count(*) FROM pdc_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "only the rejected order is recorded");
    drop_schema(&schema).await;
}

/// Issue 16, defect 1: a small `application/x-pdc` body whose frame
/// decodes to 60 MB was decompressed (60 MB allocated) before any limit
/// applied — the server's codec had the default 64 MiB limit, not its own
/// body limit. Now the frame header's decoded length is checked against
/// the body limit first: 413 `body_too_large`, nothing allocated.
#[tokio::test]
async fn binary_bodies_bypass_the_body_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let req = pdc_sync::PushRequest {
        schema: pdc_sync::PROTOCOL_VERSION,
        terminal_id: "till-1".parse().unwrap(),
        store_id: pdc_sync::StoreId([7; 16]),
        batch_id: 1,
        items: vec![OutboxItem {
            local_id: 1,
            stream: StreamKey(1),
            priority: Priority::High,
            kind: 100,
            created_at_ms: 1,
            payload: vec![0; 60 << 20],
        }],
    };
    let body = Codec::new().encode(&req).unwrap();
    assert!(body.len() < 300 << 10, "{} bytes on the wire", body.len());
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/push", server.addr))
        .header("content-type", "application/x-pdc")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"], "body_too_large", "{v}");
}

/// Issue 16, defect 4 (media types): `APPLICATION/JSON` and `GZIP` were
/// answered 415; media types and content codings are case-insensitive.
#[tokio::test]
async fn media_types_are_compared_case_sensitively() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let pull = br#"{"schema":1,"terminal_id":"till-1","datasets":[]}"#.to_vec();
    let post = |ctype: &'static str, encoding: Option<&'static str>, body: Vec<u8>| {
        let mut r = reqwest::Client::new()
            .post(format!("http://{}/v1/pull", server.addr))
            .header("content-type", ctype)
            .header("authorization", format!("Bearer {token}"))
            .body(body);
        if let Some(e) = encoding {
            r = r.header("content-encoding", e);
        }
        r.send()
    };
    let r = post("APPLICATION/JSON; Charset=UTF-8", None, pull.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &pull).unwrap();
    let r = post("Application/Json", Some("GZIP"), gz.finish().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = post("text/plain", None, pull).await.unwrap();
    assert_eq!(r.status(), 415);
}

/// Issue 16, defect 4 (chunks): a body with a malformed chunk size was
/// answered 413 (every body read error was "too large"); it is a 400.
#[tokio::test]
async fn a_malformed_chunk_size_answers_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "POST /v1/pull HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: Bearer {token}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

/// Reads from `s` until the server closes it (`Ok(bytes read)`), or
/// `Err` if it is still open after `bound`.
async fn closed_within(s: &mut tokio::net::TcpStream, bound: Duration) -> Result<usize, ()> {
    use tokio::io::AsyncReadExt;
    let mut total = 0;
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(bound, read_all).await.map_err(|_| ())
}

/// Issue 16, weakness 2: connections that trickle their headers, send
/// nothing, or sit idle after a request stayed open indefinitely (the
/// request timeout starts only once the headers are parsed). Now the
/// header timeout closes all three (the bound below is 10× the timeout,
/// not a latency figure), and a valid push is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_keep_connections_open_forever() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        header_timeout_ms: 300,
        ..Limits::default()
    };
    let server = start(&dir.path().join("l.redb"), limits, any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let connect = || tokio::net::TcpStream::connect(server.addr);
    let mut silent = connect().await.unwrap();
    let mut trickler = connect().await.unwrap();
    let trickle = tokio::spawn(async move {
        for b in b"POST /v1/push HTTP/1.1\r\nhost: x\r\ncontent-type: appl" {
            if trickler.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed_within(&mut trickler, Duration::from_secs(3)).await
    });
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /v1/ping HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();

    // Meanwhile a till pushes and is answered.
    let engine = engine_at(server.addr, &token, &dir.path().join("till.pdc"));
    engine
        .record(NewItem {
            stream: StreamKey(1),
            priority: Priority::High,
            kind: 2,
            created_at_ms: 1,
            payload: Codec::new().encode(&order(1, 2)).unwrap(),
        })
        .unwrap();
    drain(&engine).await;

    let bound = Duration::from_secs(3);
    assert!(
        closed_within(&mut silent, bound).await.is_ok(),
        "silent connection still open"
    );
    assert!(
        trickle.await.unwrap().is_ok(),
        "trickling connection still open"
    );
    let answered = closed_within(&mut idle, bound).await;
    assert!(
        answered.is_ok_and(|n| n > 0),
        "idle keep-alive connection: {answered:?}"
    );
    server.shutdown().await.unwrap();
}

/// Issue 16, weakness 2: connections were accepted without a limit. Now a
/// connection beyond `max_connections` is closed at once, counted, and a
/// slot freed by a closed connection serves the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_accepted_without_a_limit() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections: 3,
        header_timeout_ms: 60_000,
        ..Limits::default()
    };
    let server = start(&dir.path().join("l.redb"), limits, any_port()).await;
    let connect = || tokio::net::TcpStream::connect(server.addr);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect().await.unwrap());
    }
    // Give the server a moment to accept the three.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = connect().await.unwrap();
    let _ = extra
        .write_all(b"GET /v1/ping HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let n = closed_within(&mut extra, Duration::from_secs(3)).await;
    assert_eq!(n, Ok(0), "the fourth connection is closed unanswered");
    let refused = server.state.metrics().counter(
        &pdc_monitor::MetricKey::new("pdc_server_connections_refused_total", &[]).unwrap(),
    );
    assert!(refused >= 1, "{refused}");
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut next = connect().await.unwrap();
    next.write_all(b"GET /v1/ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(3), next.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
    server.shutdown().await.unwrap();
}

/// Issue 18: `/metrics` counters restarted from zero with the process, so
/// after a restart (or on another process over the same PostgreSQL) the
/// server appeared to hold nothing. The ledger's own totals are now in
/// `/metrics` as `pdc_ledger_items{result=…}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_restart_from_zero_with_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("l.redb");
    let server = start(&ledger_path, Limits::default(), any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let engine = engine_at(server.addr, &token, &dir.path().join("till.pdc"));
    for id in 1..=3 {
        engine
            .record(NewItem {
                stream: StreamKey(id),
                priority: Priority::High,
                kind: 2,
                created_at_ms: 1,
                payload: Codec::new().encode(&order(id, 1)).unwrap(),
            })
            .unwrap();
    }
    drain(&engine).await;
    let addr = server.addr;
    server.shutdown().await.unwrap();
    let server = start(&ledger_path, Limits::default(), addr).await;
    let text = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("pdc_ledger_items{result=\"applied\"} 3"),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

/// Issue 16, weakness 4: a ledger failure was answered with the
/// database's own error text (table and schema names). Now it is a generic
/// message with a request id, also in `x-request-id`, and the text stays
/// in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_echo_internal_error_text_to_clients() {
    use pdc_server::{AppState, DatasetHub};
    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    let ledger: Arc<dyn Ledger> = Arc::new(ledger);
    let token = add_terminal(&*ledger, "till-1").await.unwrap();
    let hub = Arc::new(
        DatasetHub::load(ledger.clone(), &pdc_server::DEFAULT_DATASETS, 1000)
            .await
            .unwrap(),
    );
    let state = AppState::new(ledger, hub, None, Limits::default())
        .await
        .unwrap();
    let server = pdc_server::spawn(any_port(), state, Duration::from_secs(86_400))
        .await
        .unwrap();
    // The database loses its tables under the running server.
    drop_schema(&schema).await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/pull", server.addr))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"schema":1,"terminal_id":"till-1","datasets":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert_eq!(body["request_id"], id.as_str());
    let text = body.to_string();
    for leak in [
        schema.as_str(),
        "does not exist",
        "relation",
        "pdc_terminals",
    ] {
        assert!(!text.contains(leak), "the answer leaks {leak:?}: {text}");
    }
    server.shutdown().await.unwrap();
}

/// Issue 16, weakness 4: every class of malformed request answers its own
/// 4xx with a JSON error code (table-driven).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_answer_the_wrong_status() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_items: 2,
        max_body_bytes: 4_096,
        max_item_bytes: 64,
        ..Limits::default()
    };
    let server = start(&dir.path().join("l.redb"), limits, any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let item = |id: u64, bytes: usize| {
        serde_json::json!({"local_id": id, "stream": 1, "priority": "High", "kind": 70,
            "created_at_ms": 1, "payload": vec![7u8; bytes]})
    };
    let push = |items: Vec<serde_json::Value>| {
        serde_json::json!({"schema": 2, "terminal_id": "till-1", "store_id": "07070707070707070707070707070707",
            "batch_id": 1, "items": items})
        .to_string()
    };
    let auth = format!("Bearer {token}");
    // (what, path, authorization, content-type, body, status, code)
    let cases: Vec<(&str, &str, &str, &str, String, u16, &str)> = vec![
        (
            "no token",
            "/v1/push",
            "",
            "application/json",
            push(vec![item(1, 4)]),
            401,
            "unauthorized",
        ),
        (
            "wrong token",
            "/v1/push",
            "Bearer nope",
            "application/json",
            push(vec![item(1, 4)]),
            401,
            "unauthorized",
        ),
        (
            "media type",
            "/v1/push",
            &auth,
            "text/plain",
            push(vec![item(1, 4)]),
            415,
            "unsupported_media_type",
        ),
        (
            "not JSON",
            "/v1/push",
            &auth,
            "application/json",
            "{".into(),
            400,
            "malformed",
        ),
        (
            "body too large",
            "/v1/push",
            &auth,
            "application/json",
            "x".repeat(5_000),
            413,
            "body_too_large",
        ),
        (
            "too many items",
            "/v1/push",
            &auth,
            "application/json",
            push(vec![item(1, 4), item(2, 4), item(3, 4)]),
            413,
            "too_many_items",
        ),
        (
            "item too large",
            "/v1/push",
            &auth,
            "application/json",
            push(vec![item(1, 100)]),
            413,
            "item_too_large",
        ),
        (
            "same id twice",
            "/v1/push",
            &auth,
            "application/json",
            push(vec![item(1, 4), item(1, 4)]),
            400,
            "malformed_item",
        ),
        (
            "another terminal",
            "/v1/pull",
            &auth,
            "application/json",
            r#"{"schema":1,"terminal_id":"till-2","datasets":[]}"#.into(),
            403,
            "forbidden",
        ),
    ];
    let client = reqwest::Client::new();
    for (what, path, authz, ctype, body, status, code) in cases {
        let mut req = client
            .post(format!("http://{}{path}", server.addr))
            .header("content-type", ctype)
            .body(body);
        if !authz.is_empty() {
            req = req.header("authorization", authz);
        }
        let r = req.send().await.unwrap();
        let got = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(
            (got, &v["error"]),
            (status, &serde_json::json!(code)),
            "{what}: {v}"
        );
    }
    server.shutdown().await.unwrap();
}

/// A till on loopback (never pushes on its own) and a product to sell.
fn offline_till(
    dir: &std::path::Path,
) -> (
    OfflineEngine<pdc_sync::LoopbackTransport, pdc_clock::SystemClock>,
    pdc_codec::Product,
) {
    let mut c = EngineConfig::new("till-1".parse().unwrap(), dir.join("till.pdc"));
    c.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    let till = OfflineEngine::open(
        c,
        pdc_sync::LoopbackTransport::new(),
        pdc_clock::SystemClock::new(),
    )
    .unwrap();
    let product = pdc_codec::Product {
        id: 7001,
        name: "Espresso".into(),
        barcode: "4006381333900".into(),
        category: "Drinks".into(),
        price_cents: 240,
        tax_rate_bp: 700,
        active: true,
    };
    (till, product)
}

/// Issue 18, receipt numbers: the till printed a receipt number the
/// server never saw — the order carried no number, so the back office
/// could not find a sale by its receipt. A sale sold through the engine
/// now carries its receipt number (order schema 2) and both ledgers store
/// it with the order (`pos_receipts` on the embedded ledger, the
/// `receipt` column of `pos_orders` on PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_numbers_are_not_stored_with_the_order_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // The till: a sale, its order as saved in the outbox.
    let (till, product) = offline_till(dir.path());
    let receipt = till
        .sell(
            &pdc_core::Sale::new(1)
                .add(&product, 2)
                .pay_rest(pdc_codec::PaymentMethod::Cash),
        )
        .unwrap();
    assert_eq!(
        receipt.order.receipt.as_deref(),
        Some(receipt.number.as_str())
    );
    let (pending, _) = till.store().pending().unwrap();
    let item = pending.into_iter().next().unwrap();
    let stored: pdc_codec::Order = Codec::new().decode(&item.payload).unwrap();
    assert_eq!(stored.receipt.as_deref(), Some(receipt.number.as_str()));
    let order_id = stored.id;

    // The embedded ledger.
    let path = dir.path().join("ledger.redb");
    {
        let ledger = common::open_redb(&path, Arc::new(PosApply::new())).await;
        let r = ledger
            .push("till-1", S, vec![item.clone()], 1)
            .await
            .unwrap();
        assert!(matches!(r[0], ItemResult::Applied { .. }), "{r:?}");
        // And `pdc ledger show`'s query finds it.
        let shown = ledger.terminal_orders("till-1", 10).await.unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].order_id, order_id);
        assert_eq!(shown[0].receipt.as_deref(), Some(receipt.number.as_str()));
        assert_eq!(shown[0].total_cents, receipt.total_cents);
        assert!(ledger
            .terminal_orders("till-2", 10)
            .await
            .unwrap()
            .is_empty());
    }
    let db = common::closed_redb(&path).await;
    let tx = db.begin_read().unwrap();
    let receipts = tx.open_table(pdc_server::REDB_RECEIPTS).unwrap();
    assert_eq!(
        receipts
            .get(("till-1", order_id))
            .unwrap()
            .map(|g| g.value().to_owned()),
        Some(receipt.number.clone())
    );

    // PostgreSQL.
    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    let r = ledger.push("till-1", S, vec![item], 1).await.unwrap();
    assert!(matches!(r[0], ItemResult::Applied { .. }), "{r:?}");
    let shown = ledger.terminal_orders("till-1", 10).await.unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].order_id, order_id);
    assert_eq!(shown[0].receipt.as_deref(), Some(receipt.number.as_str()));
    assert_eq!(shown[0].total_cents, receipt.total_cents);
    assert_eq!(shown[0].created_at_ms, receipt.order.created_at_ms);
    let c = sql(&schema).await;
    let stored: Option<String> = c
        .query_one(
            "SELECT receipt FROM pos_orders WHERE terminal_id = 'till-1' AND order_id = $1",
            &[&(order_id as i64)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, Some(receipt.number));
    drop_schema(&schema).await;
}

/// The refund test's verdicts: the sale, the refund and the refund of an
/// unknown sale applied; the forged refund refused `total_mismatch`.
fn three_applied_then_a_mismatch(r: &[ItemResult]) {
    assert!(
        r[..3]
            .iter()
            .all(|r| matches!(r, ItemResult::Applied { .. })),
        "{r:?}"
    );
    assert!(
        matches!(&r[3], ItemResult::Rejected { code, .. } if code == "total_mismatch"),
        "{r:?}"
    );
}

/// Issue 18, refunds: a refund could not say which sale it undoes — the
/// only way to record one was a `Transaction` with a free-text reference,
/// never checked against the sale. `engine.refund(original, lines)` saves
/// a `Refund` naming the original order (id and receipt number), numbered
/// in the sales' own sequence and held to the order rules at the till and
/// the server; both ledgers store it with a flag saying whether the
/// server knew the sale — a refund of a sale it has not seen (sold at a
/// till still offline) is kept and flagged, never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_cannot_reference_the_original_sale() {
    let dir = tempfile::tempdir().unwrap();
    let (till, product) = offline_till(dir.path());
    let cash = pdc_codec::PaymentMethod::Cash;
    let sold = till
        .sell(
            &pdc_core::Sale::new(1)
                .add(&product, 3)
                .pay_rest(cash.clone()),
        )
        .unwrap();
    let back = pdc_core::Sale::new(1)
        .add(&product, 1)
        .pay_rest(cash.clone());
    let refund = till.refund(&pdc_core::Original::of(&sold), &back).unwrap();
    assert_eq!((sold.seq, refund.seq), (1, 2), "one gapless sequence");
    assert_eq!(refund.total_cents, 240);
    assert_eq!(refund.refund.original_order_id, sold.order.id);
    assert_eq!(
        refund.refund.receipt.as_deref(),
        Some(refund.number.as_str())
    );
    // A refund whose original this server never sees.
    let stranger = pdc_core::Original {
        order_id: 42,
        receipt: Some("till-9-00000000-000042".into()),
    };
    till.refund(&stranger, &back).unwrap();
    // Paying back more than is taken back is refused at the till.
    let greedy = pdc_core::Sale::new(1)
        .add(&product, 1)
        .pay(cash.clone(), 999);
    assert!(matches!(
        till.refund(&pdc_core::Original::of(&sold), &greedy),
        Err(pdc_core::EngineError::InvalidSale { .. })
    ));
    let (items, _) = till.store().pending().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[1].kind, 6);
    assert_eq!(items[1].priority, Priority::Critical);
    // ... and at the server (the same rules).
    let mut forged = items[1].clone();
    let mut r: pdc_codec::Refund = Codec::new().decode(&forged.payload).unwrap();
    r.payments[0].amount_cents = 999;
    forged.payload = Codec::new().encode(&r).unwrap();
    forged.local_id = 99;

    // The embedded ledger.
    let path = dir.path().join("ledger.redb");
    {
        let ledger = common::open_redb(&path, Arc::new(PosApply::new())).await;
        let mut batch = items.clone();
        batch.push(forged.clone());
        let r = ledger.push("till-1", S, batch, 1).await.unwrap();
        three_applied_then_a_mismatch(&r);
    }
    let db = common::closed_redb(&path).await;
    let tx = db.begin_read().unwrap();
    let refunds = tx.open_table(pdc_server::REDB_REFUNDS).unwrap();
    let row = |id: u64| {
        let g = refunds.get(("till-1", id)).unwrap().unwrap();
        let (_, original, total, known, receipt, original_receipt) = g.value();
        (
            original,
            total,
            known,
            receipt.to_owned(),
            original_receipt.to_owned(),
        )
    };
    assert_eq!(
        row(refund.refund.id),
        (
            sold.order.id,
            240,
            true,
            refund.number.clone(),
            sold.number.clone()
        )
    );
    let strange = Codec::new()
        .decode::<pdc_codec::Refund>(&items[2].payload)
        .unwrap();
    assert!(!row(strange.id).2, "an unknown original is flagged");

    // PostgreSQL.
    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    let mut batch = items.clone();
    batch.push(forged);
    let r = ledger.push("till-1", S, batch, 1).await.unwrap();
    three_applied_then_a_mismatch(&r);
    let c = sql(&schema).await;
    let rows = c
        .query(
            "SELECT refund_id, original_order_id, total_cents, original_known, receipt, \
             original_receipt FROM pos_refunds ORDER BY refund_id",
            &[],
        )
        .await
        .unwrap();
    type Row = (i64, i64, i64, bool, Option<String>, Option<String>);
    let got: Vec<Row> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                refund.refund.id as i64,
                sold.order.id as i64,
                240,
                true,
                Some(refund.number.clone()),
                Some(sold.number.clone())
            ),
            (
                strange.id as i64,
                42,
                240,
                false,
                strange.receipt.clone(),
                Some("till-9-00000000-000042".into())
            ),
        ]
    );
    drop_schema(&schema).await;
}

/// A terminal waiting on `GET /v1/changes` held the server's graceful
/// shutdown until its wait ran out (up to 25 s): in the demo a server
/// "outage" began only after every till's wait ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_change_stream_holds_the_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let url = format!("http://{}/v1/changes?products=0&wait=12", server.addr);
    let waiting = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    server.shutdown().await.unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown waited {took:?} for a change-stream wait"
    );
    assert_eq!(waiting.await.unwrap().unwrap(), reqwest::StatusCode::OK);
}

/// Issue 19: a resend blocked by an in-doubt transaction (a first attempt
/// prepared on a distributed engine and never resolved, or any earlier
/// attempt still holding its rows) waited as long as the lock was held, so
/// the terminal ran into the HTTP request timeout (408) instead of being
/// answered retry-later. Plain PostgreSQL here has no prepared
/// transactions (`max_prepared_transactions = 0`): an open transaction
/// holding the same row blocks the insert the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_blocked_by_an_in_doubt_transaction_waits_for_the_request_timeout() {
    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    let first = order_item(1, &order(1, 2));
    let r = ledger.push("till-1", S, vec![first], 1).await.unwrap();
    assert!(matches!(r[0], ItemResult::Applied { .. }), "{r:?}");
    // The in-doubt attempt of item 2: its row written, never resolved.
    let holder = sql(&schema).await;
    holder
        .batch_execute(
            "BEGIN; INSERT INTO pdc_items (terminal_id, store_id, local_id, status, stream, \
             priority, kind, created_at_ms, applied_at_ms, payload, digest) \
             SELECT terminal_id, store_id, 2, status, stream, priority, kind, created_at_ms, \
             applied_at_ms, payload, digest FROM pdc_items WHERE local_id = 1",
        )
        .await
        .unwrap();
    let resend = order_item(2, &order(2, 2));
    let blocked = tokio::time::timeout(
        Duration::from_secs(10),
        ledger.push("till-1", S, vec![resend.clone()], 2),
    )
    .await
    .expect("the resend waited on the held row for 10 s");
    assert!(
        matches!(&blocked, Err(e) if pdc_server::transient(e)),
        "a blocked resend is retry-later: {blocked:?}"
    );
    // Once the transaction is resolved the resend applies, once.
    holder.batch_execute("ROLLBACK").await.unwrap();
    let r = ledger.push("till-1", S, vec![resend], 3).await.unwrap();
    assert!(matches!(r[0], ItemResult::Applied { .. }), "{r:?}");
    let n: i64 = holder
        .query_one("SELECT count(*) FROM pos_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    drop_schema(&schema).await;
}

/// A grocery order as a real till rings it: a weighed line, an open-price
/// line with its own name, a noted line, an order discount, and a split
/// tender (a gift card with its number, cash with change, a meal ticket).
fn rich_order(id: u64) -> pdc_codec::Order {
    use pdc_codec::{Order, OrderLine, Payment, PaymentMethod, Unit};
    let mut cheese = OrderLine::new(410_233, 742, 2_390, 550);
    cheese.unit = Unit::Kilogram;
    let mut open = OrderLine::new(900_001, 1, 450, 2000);
    open.name = Some("Repair: shoe heel".into());
    let mut sandwich = OrderLine::new(118_020, 2, 399, 1000);
    sandwich.note = Some("no onions".into());
    sandwich.discount_cents = 100;
    let mut gift = Payment::new(PaymentMethod::GiftCard, 1_500);
    gift.reference = Some("GC-6034-9981-0042".into());
    let mut cash = Payment::new(PaymentMethod::Cash, 1_000);
    cash.tendered_cents = Some(2_000);
    Order {
        id,
        cashier_id: 3,
        customer_id: None,
        created_at_ms: 1_764_000_000_000,
        lines: vec![cheese, open, sandwich],
        payments: vec![
            gift,
            cash,
            Payment::new(PaymentMethod::Other("meal_ticket".into()), 200),
        ],
        receipt: None,
        discount_cents: 221,
    }
}

/// Issue 17, on the server: an order's unit and weight, line names and
/// notes, tenders (kind, tendered amount, reference) and order discount
/// had no place in the PostgreSQL tables. They now land in
/// `pos_order_lines`, `pos_payments` and `pos_orders.discount_cents`; an
/// order refused for its taken id changes none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rich_orders_lose_their_units_texts_and_tenders_on_postgres() {
    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    let rich = rich_order(7);
    assert_eq!(rich.check().unwrap(), 2_700);
    // Same id, other discount and tenders: refused as a duplicate order.
    let mut clash = rich_order(7);
    clash.discount_cents = 21;
    clash.payments = vec![pdc_codec::Payment::new(
        pdc_codec::PaymentMethod::Card,
        2_900,
    )];
    let items = vec![
        order_item(1, &rich),
        order_item(2, &order(8, 2)),
        order_item(3, &clash),
    ];
    let r = ledger.push("till-1", S, items, 1).await.unwrap();
    assert!(matches!(r[0], ItemResult::Applied { .. }), "{r:?}");
    assert!(matches!(r[1], ItemResult::Applied { .. }), "{r:?}");
    assert!(matches!(r[2], ItemResult::Rejected { .. }), "{r:?}");
    let c = sql(&schema).await;
    let orders: Vec<(i64, i64, i64)> = c
        .query(
            "SELECT order_id, total_cents, discount_cents FROM pos_orders ORDER BY order_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(orders, [(7, 2_700, 221), (8, 300, 0)]);
    type Line = (i32, i64, String, Option<String>, Option<String>);
    let lines: Vec<Line> = c
        .query(
            "SELECT line_no, quantity, unit, name, note FROM pos_order_lines \
             WHERE order_id = 7 ORDER BY line_no",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        lines,
        [
            (0, 742, "kg".into(), None, None),
            (1, 1, "each".into(), Some("Repair: shoe heel".into()), None),
            (2, 2, "each".into(), None, Some("no onions".into())),
        ]
    );
    type Tender = (i64, i32, String, i64, Option<i64>, Option<String>);
    let tenders: Vec<Tender> = c
        .query(
            "SELECT order_id, payment_no, method, amount_cents, tendered_cents, reference \
             FROM pos_payments ORDER BY order_id, payment_no",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    assert_eq!(
        tenders,
        [
            (
                7,
                0,
                "gift_card".into(),
                1_500,
                None,
                Some("GC-6034-9981-0042".into())
            ),
            (7, 1, "cash".into(), 1_000, Some(2_000), None),
            (7, 2, "meal_ticket".into(), 200, None, None),
            (8, 0, "card".into(), 300, None, None),
        ]
    );
    drop_schema(&schema).await;
}
