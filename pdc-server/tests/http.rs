#![allow(clippy::unwrap_used)]
//! The HTTP API against a server on an ephemeral loopback port: a real
//! pdc-core engine over the HTTP transport, restarts, malformed input,
//! auth, rate limits, pull, metrics.

use std::io::Write;

use std::sync::Arc;
use std::time::Duration;

use pdc_codec::Codec;
use pdc_core::{EngineConfig, HttpOptions, HttpTransport, OfflineEngine};
use pdc_server::{
    add_terminal, spawn, AppState, DatasetHub, Ledger, Limits, PosApply, RedbLedger, RedbOptions,
    ServerHandle, DEFAULT_DATASETS,
};
use pdc_store::NewItem;
use pdc_sync::{ItemResult, Priority, PushResponse, StreamKey};
use reqwest::StatusCode;

mod common;
use common::{any_port, start};

fn orders(n: usize) -> Vec<Vec<u8>> {
    let codec = Codec::new();
    pdc_datasets::orders(n, 7)
        .iter()
        .map(|o| codec.encode(o).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sale_is_applied_once_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_path = dir.path().join("ledger.redb");
    let server = start(&ledger_path, Limits::default(), any_port()).await;
    let addr = server.addr;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let transport = HttpTransport::new(
        &format!("http://{addr}"),
        &token,
        HttpOptions {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
        },
    )
    .unwrap();
    let mut config = EngineConfig::new("till-1".parse().unwrap(), dir.path().join("till.pdc"));
    config.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    config.sync.linger = Duration::ZERO;
    config.sync.reconnect_jitter = Duration::from_millis(10);
    config.sync.backoff.base = Duration::from_millis(20);
    config.sync.backoff.cap = Duration::from_millis(200);
    let engine =
        Arc::new(OfflineEngine::open(config, transport, pdc_clock::SystemClock::new()).unwrap());
    let payloads = orders(300);
    let ids: Vec<u64> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            engine
                .record(NewItem {
                    stream: StreamKey(i as u64 % 5),
                    priority: Priority::High,
                    kind: 2,
                    created_at_ms: 1,
                    payload: p,
                })
                .unwrap()
        })
        .collect();
    // Sync part of it, then the server goes away mid-run.
    let e = engine.clone();
    let syncing = tokio::spawn(async move {
        for _ in 0..2_000 {
            let _ = e.sync_once().await;
            if e.pending() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    while engine.pending() > 250 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = start(&ledger_path, Limits::default(), addr).await;
    engine.set_online(true);
    syncing.await.unwrap();
    assert_eq!(engine.pending(), 0, "everything drained after the restart");
    let totals = server.state.ledger.totals().await.unwrap();
    assert_eq!(totals.applied, 300);
    assert_eq!(totals.rejected, 0);
    // Each local id is in the ledger exactly once, under the till's store.
    let store = engine.store().store_id();
    let held = server
        .state
        .ledger
        .status("till-1", store, &ids)
        .await
        .unwrap();
    assert!(held
        .iter()
        .all(|r| matches!(r, Some(ItemResult::Duplicate { .. }))));
    // A resend with another payload is a conflict, never a duplicate.
    let changed = server
        .state
        .ledger
        .push(
            "till-1",
            store,
            vec![pdc_server::conformance::item(ids[0], 2)],
            0,
        )
        .await
        .unwrap();
    assert!(
        matches!(changed[0], ItemResult::Conflict { .. }),
        "{changed:?}"
    );
    server.shutdown().await.unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    server: ServerHandle,
    token: String,
    client: reqwest::Client,
}

impl Fixture {
    async fn new(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = start(&dir.path().join("l.redb"), limits, any_port()).await;
        let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
        add_terminal(&*server.state.ledger, "till-2").await.unwrap();
        Fixture {
            _dir: dir,
            server,
            token,
            client: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    async fn post(&self, path: &str, ctype: &str, body: Vec<u8>, gzip: bool) -> reqwest::Response {
        let mut r = self
            .client
            .post(self.url(path))
            .header("content-type", ctype)
            .header("authorization", format!("Bearer {}", self.token));
        if gzip {
            r = r.header("content-encoding", "gzip");
        }
        r.body(body).send().await.unwrap()
    }

    async fn applied(&self) -> u64 {
        self.server.state.ledger.totals().await.unwrap().applied
    }
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn json_push(items: &str) -> Vec<u8> {
    format!(r#"{{"schema":1,"terminal_id":"till-1","batch_id":1,"items":[{items}]}}"#).into_bytes()
}

const ITEM: &str =
    r#"{"local_id":1,"stream":5,"priority":"High","kind":70,"created_at_ms":1,"payload":[1,2]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_and_change_nothing() {
    let limits = Limits {
        max_body_bytes: 64 << 10,
        max_items: 10,
        ..Limits::default()
    };
    let f = Fixture::new(limits).await;
    let codec = Codec::new();
    let good = pdc_sync::PushRequest {
        schema: pdc_sync::PROTOCOL_VERSION,
        terminal_id: "till-1".parse().unwrap(),
        store_id: pdc_sync::StoreId([4; 16]),
        batch_id: 1,
        items: vec![pdc_server::conformance::item(1, 70)],
    };
    let frame = codec.encode(&good).unwrap();
    let mut random = vec![0u8; 500];
    for (i, b) in random.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    let many: Vec<String> = (1..=11)
        .map(|i| ITEM.replace("\"local_id\":1", &format!("\"local_id\":{i}")))
        .collect();
    let cases: Vec<(&str, &str, Vec<u8>, bool, u16)> = vec![
        ("random bytes", "application/x-pdc", random, false, 400),
        (
            "truncated frame",
            "application/x-pdc",
            frame[..frame.len() - 3].to_vec(),
            false,
            400,
        ),
        (
            "wrong content type",
            "text/plain",
            frame.clone(),
            false,
            415,
        ),
        (
            "oversized",
            "application/x-pdc",
            vec![0u8; 70 << 10],
            false,
            413,
        ),
        (
            "gzip bomb",
            "application/json",
            gz(&vec![b' '; 8 << 20]),
            true,
            413,
        ),
        (
            "broken gzip",
            "application/json",
            b"\x1f\x8bnot gzip".to_vec(),
            true,
            400,
        ),
        (
            "missing fields",
            "application/json",
            br#"{"schema":1,"items":[]}"#.to_vec(),
            false,
            400,
        ),
        (
            "negative id",
            "application/json",
            json_push(&ITEM.replace("\"local_id\":1", "\"local_id\":-1")),
            false,
            400,
        ),
        (
            "huge id",
            "application/json",
            json_push(&ITEM.replace("\"local_id\":1", "\"local_id\":18446744073709551616")),
            false,
            400,
        ),
        (
            "id over 2^63",
            "application/json",
            json_push(&ITEM.replace("\"local_id\":1", "\"local_id\":9223372036854775809")),
            false,
            400,
        ),
        (
            "zero id",
            "application/json",
            json_push(&ITEM.replace("\"local_id\":1", "\"local_id\":0")),
            false,
            400,
        ),
        (
            "repeated id",
            "application/json",
            json_push(&format!("{ITEM},{ITEM}")),
            false,
            400,
        ),
        (
            "too many items",
            "application/json",
            json_push(&many.join(",")),
            false,
            413,
        ),
        (
            "wrong schema",
            "application/json",
            json_push(ITEM).replace_schema(),
            false,
            400,
        ),
    ];
    for (what, ctype, body, gzip, status) in cases {
        let r = f.post("/v1/push", ctype, body, gzip).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert!(
            err["error"].is_string() && err["message"].is_string(),
            "{what}: {err}"
        );
        assert_eq!(f.applied().await, 0, "{what} changed nothing");
    }
    // And the well-formed request still works, in both formats.
    let r = f.post("/v1/push", "application/x-pdc", frame, false).await;
    assert_eq!(r.status(), StatusCode::OK);
    let resp: PushResponse = codec.decode(&r.bytes().await.unwrap()).unwrap();
    assert!(matches!(resp.results[0], ItemResult::Applied { .. }));
    let r = f
        .post(
            "/v1/push",
            "application/json",
            gz(&serde_json::to_vec(&good).unwrap()),
            true,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let resp: PushResponse = r.json().await.unwrap();
    assert!(matches!(resp.results[0], ItemResult::Duplicate { .. }));
    assert_eq!(f.applied().await, 1);
}

trait ReplaceSchema {
    fn replace_schema(self) -> Vec<u8>;
}

impl ReplaceSchema for Vec<u8> {
    fn replace_schema(self) -> Vec<u8> {
        String::from_utf8(self)
            .unwrap()
            .replacen("\"schema\":1", "\"schema\":9", 1)
            .into_bytes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_identities_and_rates_are_enforced() {
    let limits = Limits {
        rate_per_sec: 5,
        burst: 5,
        ..Limits::default()
    };
    let f = Fixture::new(limits).await;
    // No token, a wrong token: 401.
    let r = f
        .client
        .post(f.url("/v1/push"))
        .header("content-type", "application/json")
        .body(json_push(ITEM))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = f
        .client
        .post(f.url("/v1/push"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer pdc_wrong")
        .body(json_push(ITEM))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // till-1's token pushing as till-2: 403, nothing applied.
    let body = String::from_utf8(json_push(ITEM))
        .unwrap()
        .replace("till-1", "till-2");
    let r = f
        .post("/v1/push", "application/json", body.into_bytes(), false)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.applied().await, 0);
    // A flood: 429 with Retry-After once over the burst.
    let mut limited = None;
    for _ in 0..20 {
        let r = f
            .post("/v1/push", "application/json", json_push(ITEM), false)
            .await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("a flood is rate limited");
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs >= 1);
    assert_eq!(f.applied().await, 1);
    // A revoked token stops working (the cache forgets on revoke).
    assert!(f
        .server
        .state
        .ledger
        .revoke_terminal("till-1")
        .await
        .unwrap());
    f.server.state.forget_tokens();
    let r = f.client.get(f.url("/v1/ping")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = f
        .post(
            "/v1/pull",
            "application/json",
            br#"{"schema":1,"terminal_id":"till-1","datasets":[]}"#.to_vec(),
            false,
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_metrics_and_business_rejections_over_http() {
    let f = Fixture::new(Limits::default()).await;
    let codec = Codec::new();
    let catalog = pdc_datasets::catalog(50, 1);
    let records: Vec<pdc_sync::DatasetRecord> = catalog
        .iter()
        .map(|p| pdc_sync::DatasetRecord {
            id: u64::from(p.id),
            body: codec.encode(p).unwrap(),
        })
        .collect();
    f.server
        .state
        .update_dataset("products", records, vec![])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let transport = HttpTransport::new(&f.url(""), &f.token, HttpOptions::default()).unwrap();
    let mut config = EngineConfig::new("till-1".parse().unwrap(), dir.path().join("t.pdc"));
    config.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    config.sync.linger = Duration::ZERO;
    let engine = OfflineEngine::open(config, transport, pdc_clock::SystemClock::new()).unwrap();
    engine.pull().await.unwrap();
    let p = engine
        .reference("products", u64::from(catalog[3].id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(codec.decode::<pdc_codec::Product>(&p).unwrap(), catalog[3]);

    // An order for an unknown product is rejected for good and
    // dead-lettered; one whose payments do not add up is refused at the
    // till already (the same rules: pdc_codec::Order::check); a good one is
    // applied.
    let mut good = pdc_datasets::orders(1, 1).remove(0);
    good.lines.truncate(1);
    good.lines[0].product_id = catalog[0].id;
    let total = good.total_cents();
    good.payments = vec![pdc_codec::Payment {
        method: pdc_codec::PaymentMethod::Card,
        amount_cents: total,
        ..Default::default()
    }];
    let mut unknown = good.clone();
    unknown.lines[0].product_id = 999_999;
    let mut short = good.clone();
    short.payments[0].amount_cents -= 1;
    let order_item = |o: &pdc_codec::Order| NewItem {
        stream: StreamKey(1),
        priority: Priority::High,
        kind: 2,
        created_at_ms: 1,
        payload: codec.encode(o).unwrap(),
    };
    for o in [&good, &unknown] {
        engine.record(order_item(o)).unwrap();
    }
    assert!(matches!(
        engine.record(order_item(&short)),
        Err(pdc_core::EngineError::InvalidSale {
            rule: pdc_codec::OrderRule::TotalMismatch,
            ..
        })
    ));
    engine.sync_once().await.unwrap();
    assert_eq!(engine.pending(), 0);
    let dead = engine.store().dead_letters().unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(reasons, ["unknown_product"]);
    assert_eq!(f.applied().await, 1);

    // A catalogue change reaches the terminal as a delta.
    let mut changed = catalog[3].clone();
    changed.price_cents += 100;
    f.server
        .state
        .update_dataset(
            "products",
            vec![pdc_sync::DatasetRecord {
                id: u64::from(changed.id),
                body: codec.encode(&changed).unwrap(),
            }],
            vec![],
        )
        .await
        .unwrap();
    engine.pull().await.unwrap();
    let p = engine
        .reference("products", u64::from(changed.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        codec.decode::<pdc_codec::Product>(&p).unwrap().price_cents,
        changed.price_cents
    );

    // Metrics: a terminal report is merged; /metrics shows the counters.
    engine.report_metrics("store-1").await.unwrap();
    assert_eq!(f.server.state.fleet().terminals, 1);
    let text = f
        .client
        .get(f.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("pdc_server_items_total{result=\"applied\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pdc_server_items_total{result=\"rejected\"} 1"),
        "{text}"
    );
    assert!(text.contains("pdc_server_terminals_seen_5m 1"), "{text}");
    assert!(
        text.contains("pdc_sync_push_ms"),
        "fleet histograms: {text}"
    );
}

/// A ledger that can be made unavailable (a database gone away).
struct Flaky {
    inner: Arc<dyn Ledger>,
    down: std::sync::atomic::AtomicBool,
    /// Applies, then takes this long to answer (ms).
    slow_ms: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl Ledger for Flaky {
    async fn push(
        &self,
        terminal_id: &str,
        store: pdc_sync::StoreId,
        items: Vec<pdc_sync::OutboxItem>,
        now_ms: u64,
    ) -> Result<Vec<ItemResult>, pdc_server::ServerError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(pdc_server::ServerError::Unavailable(
                "database unreachable".into(),
            ));
        }
        let r = self.inner.push(terminal_id, store, items, now_ms).await;
        let slow = self.slow_ms.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(slow)).await;
        r
    }
    async fn status(
        &self,
        t: &str,
        store: pdc_sync::StoreId,
        ids: &[u64],
    ) -> Result<Vec<Option<ItemResult>>, pdc_server::ServerError> {
        self.inner.status(t, store, ids).await
    }
    async fn note_store(
        &self,
        t: &str,
        store: pdc_sync::StoreId,
        now_ms: u64,
    ) -> Result<bool, pdc_server::ServerError> {
        self.inner.note_store(t, store, now_ms).await
    }
    async fn terminal_stores(
        &self,
        t: &str,
    ) -> Result<Vec<pdc_server::StoreSeen>, pdc_server::ServerError> {
        self.inner.terminal_stores(t).await
    }
    async fn totals(&self) -> Result<pdc_server::LedgerTotals, pdc_server::ServerError> {
        self.inner.totals().await
    }
    async fn purge_before(
        &self,
        cutoff_ms: u64,
        chunk: usize,
    ) -> Result<u64, pdc_server::ServerError> {
        self.inner.purge_before(cutoff_ms, chunk).await
    }
    async fn add_terminal(
        &self,
        id: &str,
        token: &pdc_server::TokenDigest,
        now_ms: u64,
    ) -> Result<(), pdc_server::ServerError> {
        self.inner.add_terminal(id, token, now_ms).await
    }
    async fn revoke_terminal(&self, id: &str) -> Result<bool, pdc_server::ServerError> {
        self.inner.revoke_terminal(id).await
    }
    async fn rotate_terminal(
        &self,
        id: &str,
        token: &pdc_server::TokenDigest,
    ) -> Result<bool, pdc_server::ServerError> {
        self.inner.rotate_terminal(id, token).await
    }
    async fn terminal_items(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<pdc_server::LedgerItem>, pdc_server::ServerError> {
        self.inner.terminal_items(id, limit).await
    }
    async fn terminal_orders(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Vec<pdc_server::PosOrder>, pdc_server::ServerError> {
        self.inner.terminal_orders(id, limit).await
    }
    async fn terminals(&self) -> Result<Vec<pdc_server::TerminalInfo>, pdc_server::ServerError> {
        self.inner.terminals().await
    }
    async fn terminal_for_token(
        &self,
        token: &pdc_server::TokenDigest,
    ) -> Result<Option<String>, pdc_server::ServerError> {
        self.inner.terminal_for_token(token).await
    }
    async fn set_terminal_view(
        &self,
        terminal_id: &str,
        view: &pdc_sync::View,
    ) -> Result<bool, pdc_server::ServerError> {
        self.inner.set_terminal_view(terminal_id, view).await
    }
    async fn terminal_view(
        &self,
        terminal_id: &str,
    ) -> Result<Option<pdc_sync::View>, pdc_server::ServerError> {
        self.inner.terminal_view(terminal_id).await
    }
    async fn load_dataset_since(
        &self,
        name: &str,
        after: u64,
    ) -> Result<Option<pdc_server::StoredDataset>, pdc_server::ServerError> {
        self.inner.load_dataset_since(name, after).await
    }
    async fn dataset_version(&self, name: &str) -> Result<Option<u64>, pdc_server::ServerError> {
        self.inner.dataset_version(name).await
    }
    async fn store_dataset(
        &self,
        name: &str,
        expected: u64,
        version: u64,
        changes: &[pdc_server::StoredRecord],
    ) -> Result<(), pdc_server::ServerError> {
        self.inner
            .store_dataset(name, expected, version, changes)
            .await
    }
}

/// A server over a [`Flaky`] ledger: (temp dir, the flaky ledger, the
/// ledger as the server sees it, the server, till-1's token).
async fn flaky_server(
    down: bool,
    slow_ms: u64,
    limits: Limits,
) -> (
    tempfile::TempDir,
    Arc<Flaky>,
    Arc<dyn Ledger>,
    ServerHandle,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Ledger> = Arc::new(
        RedbLedger::open(
            &dir.path().join("l.redb"),
            Arc::new(PosApply::new()),
            RedbOptions::default(),
        )
        .unwrap(),
    );
    let flaky = Arc::new(Flaky {
        inner,
        down: std::sync::atomic::AtomicBool::new(down),
        slow_ms: std::sync::atomic::AtomicU64::new(slow_ms),
    });
    let ledger: Arc<dyn Ledger> = flaky.clone();
    let hub = Arc::new(
        DatasetHub::load(ledger.clone(), &DEFAULT_DATASETS, 100)
            .await
            .unwrap(),
    );
    let state = AppState::new(ledger.clone(), hub, None, limits)
        .await
        .unwrap();
    let server = spawn(any_port(), state, Duration::from_secs(86_400))
        .await
        .unwrap();
    let token = add_terminal(&*ledger, "till-1").await.unwrap();
    (dir, flaky, ledger, server, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_ledger_answers_retry_later_and_nothing_is_dead_lettered() {
    let (dir, flaky, ledger, server, token) = flaky_server(true, 0, Limits::default()).await;

    // The raw answer: 200, every item retry-later, with a retry-after.
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/push", server.addr))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(json_push(ITEM))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let resp: PushResponse = r.json().await.unwrap();
    assert_eq!(resp.results, vec![ItemResult::RetryLater]);
    assert_eq!(resp.retry_after_ms, Some(1_000));

    // An engine keeps its sales while the ledger is down, then delivers them.
    let transport = HttpTransport::new(
        &format!("http://{}", server.addr),
        &token,
        HttpOptions::default(),
    )
    .unwrap();
    let mut config = EngineConfig::new("till-1".parse().unwrap(), dir.path().join("t.pdc"));
    config.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    config.sync.linger = Duration::ZERO;
    config.sync.backoff.base = Duration::from_millis(10);
    config.sync.backoff.cap = Duration::from_millis(50);
    let engine = OfflineEngine::open(config, transport, pdc_clock::SystemClock::new()).unwrap();
    for p in orders(5) {
        engine
            .record(NewItem {
                stream: StreamKey(1),
                priority: Priority::High,
                kind: 2,
                created_at_ms: 1,
                payload: p,
            })
            .unwrap();
    }
    engine.sync_once().await.unwrap();
    assert_eq!(engine.pending(), 5);
    assert!(engine.store().dead_letters().unwrap().is_empty());
    flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..200 {
        engine.sync_once().await.unwrap();
        if engine.pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(engine.pending(), 0);
    assert_eq!(ledger.totals().await.unwrap().applied, 5);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_times_out_with_408_and_the_resend_is_a_duplicate() {
    let limits = Limits {
        request_timeout_ms: 200,
        ..Limits::default()
    };
    let (_dir, flaky, ledger, server, token) = flaky_server(false, 1_000, limits).await;
    let push = || async {
        reqwest::Client::new()
            .post(format!("http://{}/v1/push", server.addr))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(json_push(ITEM))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(push().await.status(), StatusCode::REQUEST_TIMEOUT);
    // The ledger applied it; the answer was lost to the timeout. The resend
    // is answered as a duplicate and nothing is applied twice.
    flaky.slow_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let resp: PushResponse = push().await.json().await.unwrap();
    assert!(
        matches!(resp.results[0], ItemResult::Duplicate { .. }),
        "{resp:?}"
    );
    assert_eq!(ledger.totals().await.unwrap().applied, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_transport_passes_the_transport_suite() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-c").await.unwrap();
    let transport = HttpTransport::new(
        &format!("http://{}", server.addr),
        &token,
        HttpOptions::default(),
    )
    .unwrap();
    pdc_sync::transport_conformance::run(&transport, "till-c", 1).await;
    server.shutdown().await.unwrap();
}

/// A real engine over HTTP: a wrong URL (404 for every push) halts sending
/// and dead-letters nothing; an item over the server's item limit is
/// answered 413 and dead-lettered alone with the limit in the reason,
/// while the rest arrives (issue 14, defect 3, end to end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_request_refusals_halt_and_oversized_items_fail_alone() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_item_bytes: 2_000,
        ..Limits::default()
    };
    let server = start(&dir.path().join("l.redb"), limits, any_port()).await;
    let token = add_terminal(&*server.state.ledger, "till-1").await.unwrap();
    let open = |base: String, store: &str| {
        let transport = HttpTransport::new(
            &base,
            &token,
            HttpOptions {
                timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_millis(500),
            },
        )
        .unwrap();
        let mut config = EngineConfig::new("till-1".parse().unwrap(), dir.path().join(store));
        config.kdf = pdc_auth::KdfParams::INSECURE_TEST;
        config.sync.linger = Duration::ZERO;
        config.sync.reconnect_jitter = Duration::ZERO;
        config.sync.backoff.base = Duration::from_millis(10);
        config.sync.backoff.cap = Duration::from_millis(50);
        OfflineEngine::open(config, transport, pdc_clock::SystemClock::new()).unwrap()
    };
    let item = |len: usize| NewItem {
        stream: StreamKey(1),
        priority: Priority::Low,
        kind: 70,
        created_at_ms: 1,
        payload: vec![3; len],
    };
    // Wrong URL: the server answers 404 to /wrong/v1/push.
    let lost = open(format!("http://{}/wrong", server.addr), "a.pdc");
    for _ in 0..5 {
        lost.record(item(10)).unwrap();
    }
    for _ in 0..20 {
        lost.sync_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lost.pending(), 5, "nothing dead-lettered");
    assert!(lost.store().dead_letters().unwrap().is_empty());
    assert!(lost.health().halted.is_some());
    let mut halted = false;
    while let Some(ev) = lost.poll_event() {
        halted |= matches!(ev, pdc_core::EngineEvent::SyncHalted { .. });
    }
    assert!(halted);
    // An oversized item among good ones.
    let engine = open(format!("http://{}", server.addr), "b.pdc");
    for n in 0..6 {
        engine
            .record(item(if n == 2 { 5_000 } else { 10 }))
            .unwrap();
    }
    for _ in 0..200 {
        engine.sync_once().await.unwrap();
        if engine.pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.pending(), 0);
    let dead = engine.store().dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].code, "item_too_large");
    assert!(dead[0].message.contains("2000"), "{}", dead[0].message);
    assert_eq!(server.state.ledger.totals().await.unwrap().applied, 5);
    drop((lost, engine));
    server.shutdown().await.unwrap();
}

/// A page on a configured origin may call the API (preflight for
/// `Authorization` and `application/x-pdc`); another origin gets no CORS
/// headers, and without configuration none are sent at all.
#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let limits = Limits {
        cors_origins: vec!["http://till.example:8080".into()],
        ..Limits::default()
    };
    let f = Fixture::new(limits).await;
    let preflight = |origin: &'static str| {
        f.client
            .request(reqwest::Method::OPTIONS, f.url("/v1/push"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = preflight("http://till.example:8080").await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "http://till.example:8080"
    );
    let allowed = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    let other = preflight("http://elsewhere.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let ping = f
        .client
        .get(f.url("/v1/ping"))
        .header("origin", "http://till.example:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::OK);
    assert_eq!(
        ping.headers()["access-control-allow-origin"],
        "http://till.example:8080"
    );
    let plain = Fixture::new(Limits::default()).await;
    let r = plain
        .client
        .get(plain.url("/v1/ping"))
        .header("origin", "http://till.example:8080")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
