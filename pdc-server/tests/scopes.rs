//! Reference data scoped to stores, over HTTP: each terminal pulls its
//! store's view, orders are checked against it, the change stream wakes
//! only the terminals whose view changed; and on PostgreSQL, two server
//! nodes over one database see each other's imports within 1 s, and
//! concurrent imports both land.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pdc_codec::{Codec, Product};
use pdc_server::{add_terminal, AppState, DatasetHub, Ledger, Limits, PosApply, ServerHandle};
use pdc_sync::{
    Entry, ItemResult, LocalDataset, PullRequest, PullResponse, PushRequest, PushResponse, Scope,
    StoreId, View,
};

fn product(id: u32, price: i64) -> Product {
    Product {
        id,
        name: format!("product {id}"),
        barcode: format!("40{id:08}"),
        category: "grocery".into(),
        price_cents: price,
        tax_rate_bp: 2000,
        active: true,
    }
}

fn entries(products: &[Product]) -> Vec<(u64, Entry)> {
    let codec = Codec::new();
    products
        .iter()
        .map(|p| (u64::from(p.id), Entry::Record(codec.encode(p).unwrap())))
        .collect()
}

struct Till {
    id: String,
    token: String,
    products: LocalDataset,
    client: reqwest::Client,
    base: String,
}

impl Till {
    async fn new(server: &ServerHandle, id: &str, view: &View) -> Self {
        let token = add_terminal(&*server.state.ledger, id).await.unwrap();
        assert!(server
            .state
            .ledger
            .set_terminal_view(id, view)
            .await
            .unwrap());
        Till::with_token(server, id, token)
    }

    fn with_token(server: &ServerHandle, id: &str, token: String) -> Self {
        Till {
            id: id.to_owned(),
            token,
            products: LocalDataset::new("products"),
            client: reqwest::Client::new(),
            base: format!("http://{}", server.addr),
        }
    }

    fn on(&self, server: &ServerHandle) -> Self {
        let mut t = Till::with_token(server, &self.id, self.token.clone());
        t.products = self.products.clone();
        t
    }

    async fn pull(&mut self) -> usize {
        let codec = Codec::new();
        let req = PullRequest {
            schema: pdc_sync::BASE_SCHEMA,
            terminal_id: self.id.parse().unwrap(),
            datasets: vec![self.products.state()],
        };
        let r = self
            .client
            .post(format!("{}/v1/pull", self.base))
            .header("content-type", "application/x-pdc")
            .bearer_auth(&self.token)
            .body(codec.encode(&req).unwrap())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let bytes = r.bytes().await.unwrap();
        let resp: PullResponse = codec.decode(&bytes).unwrap();
        for d in &resp.datasets {
            self.products.apply(d).unwrap();
        }
        bytes.len()
    }

    fn price(&self, id: u32) -> Option<i64> {
        self.products
            .records
            .get(&u64::from(id))
            .map(|b| Codec::new().decode::<Product>(b).unwrap().price_cents)
    }

    async fn sell(&self, local_id: u64, product_id: u32) -> ItemResult {
        let mut o = order(local_id, 1);
        o.lines[0].product_id = product_id;
        self.push(order_item(local_id, &o)).await
    }

    /// Refunds one unit of `product_id` (an order of this till's, id
    /// `original`).
    async fn refund(&self, local_id: u64, original: u64, product_id: u32) -> ItemResult {
        let mut o = order(original, 1);
        o.lines[0].product_id = product_id;
        let r = pdc_codec::Refund {
            id: local_id,
            cashier_id: o.cashier_id,
            original_order_id: original,
            original_receipt: None,
            created_at_ms: o.created_at_ms,
            lines: o.lines.clone(),
            payments: o.payments.clone(),
            receipt: None,
        };
        let mut item = order_item(local_id, &o);
        item.kind = 6;
        item.payload = Codec::new().encode(&r).unwrap();
        self.push(item).await
    }

    async fn push(&self, item: pdc_sync::OutboxItem) -> ItemResult {
        let local_id = item.local_id;
        let req = PushRequest {
            schema: pdc_sync::PROTOCOL_VERSION,
            terminal_id: self.id.parse().unwrap(),
            store_id: StoreId([7; 16]),
            batch_id: local_id,
            items: vec![item],
        };
        let codec = Codec::new();
        let r = self
            .client
            .post(format!("{}/v1/push", self.base))
            .header("content-type", "application/x-pdc")
            .bearer_auth(&self.token)
            .body(codec.encode(&req).unwrap())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let resp: PushResponse = codec.decode(&r.bytes().await.unwrap()).unwrap();
        resp.results[0].clone()
    }

    /// `GET /v1/changes` for products at the version held.
    async fn changes(&self, wait_s: u64) -> (Vec<String>, Duration) {
        let t = Instant::now();
        let v = self.products.version.unwrap_or(0);
        let r = self
            .client
            .get(format!(
                "{}/v1/changes?products={v}&wait={wait_s}",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let body: serde_json::Value = r.json().await.unwrap();
        let changed = body["changed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        (changed, t.elapsed())
    }
}

fn rejected_code(r: &ItemResult) -> Option<&str> {
    match r {
        ItemResult::Rejected { code, .. } => Some(code.as_str()),
        _ => None,
    }
}

async fn chain_with_two_stores(state: &AppState) {
    let chain: Vec<Product> = (1..=50).map(|i| product(i, 100 * i64::from(i))).collect();
    state
        .update_scoped("products", &Scope::Chain, entries(&chain), vec![])
        .await
        .unwrap();
    // Store 12: its own price for 3, does not sell 4, sells 100 alone.
    let mut layer = entries(&[product(3, 199), product(100, 5_000)]);
    layer.push((4, Entry::Hidden));
    state
        .update_scoped("products", &Scope::store("12").unwrap(), layer, vec![])
        .await
        .unwrap();
    // Region north: its price for 5, which store 13 (in north) sees.
    state
        .update_scoped(
            "products",
            &Scope::region("north").unwrap(),
            entries(&[product(5, 555)]),
            vec![],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_store_pulls_its_view_and_sells_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    chain_with_two_stores(&server.state).await;
    let mut t12 = Till::new(&server, "till-12", &View::store("12").unwrap()).await;
    let mut t13 = Till::new(
        &server,
        "till-13",
        &View::new(Some("north"), Some("13")).unwrap(),
    )
    .await;
    let mut hq = Till::new(&server, "till-hq", &View::chain()).await;
    t12.pull().await;
    t13.pull().await;
    hq.pull().await;
    assert_eq!(t12.price(3), Some(199));
    assert_eq!(t12.price(4), None);
    assert_eq!(t12.price(100), Some(5_000));
    assert_eq!(t12.price(5), Some(500));
    assert_eq!(t12.products.records.len(), 50);
    assert_eq!(t13.price(3), Some(300));
    assert_eq!(t13.price(4), Some(400));
    assert_eq!(t13.price(5), Some(555));
    assert_eq!(t13.price(100), None);
    assert_eq!(hq.price(5), Some(500));

    // Orders are checked against the store's catalogue.
    assert!(matches!(t12.sell(1, 100).await, ItemResult::Applied { .. }));
    assert_eq!(
        rejected_code(&t12.sell(2, 4).await),
        Some("unknown_product")
    );
    assert_eq!(
        rejected_code(&t13.sell(1, 100).await),
        Some("unknown_product")
    );
    assert!(matches!(t13.sell(2, 4).await, ItemResult::Applied { .. }));

    // A change to store 12's prices sends store 13 nothing but a version.
    server
        .state
        .update_scoped(
            "products",
            &Scope::store("12").unwrap(),
            entries(&[product(7, 1)]),
            vec![],
        )
        .await
        .unwrap();
    let before13 = t13.products.records.clone();
    let bytes13 = t13.pull().await;
    assert_eq!(t13.products.records, before13);
    let bytes12 = t12.pull().await;
    assert_eq!(t12.price(7), Some(1));
    assert!(bytes13 < bytes12, "{bytes13} vs {bytes12}");
    assert!(bytes13 < 100, "an empty delta is a few bytes: {bytes13}");

    // Moving a terminal to another store changes its view at the next
    // pull (after the token cache's second).
    server
        .state
        .ledger
        .set_terminal_view("till-hq", &View::store("12").unwrap())
        .await
        .unwrap();
    server.state.forget_tokens();
    hq.products = LocalDataset::new("products");
    hq.pull().await;
    assert_eq!(hq.price(3), Some(199));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_stream_wakes_only_the_views_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    chain_with_two_stores(&server.state).await;
    let mut t12 = Till::new(&server, "till-12", &View::store("12").unwrap()).await;
    let mut t13 = Till::new(&server, "till-13", &View::store("13").unwrap()).await;
    t12.pull().await;
    t13.pull().await;
    // Up to date: nothing changed, the answer comes after the wait.
    let (changed, took) = t12.changes(1).await;
    assert!(changed.is_empty());
    assert!(took >= Duration::from_millis(900), "{took:?}");

    let state = server.state.clone();
    let change = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        state
            .update_scoped(
                "products",
                &Scope::store("12").unwrap(),
                entries(&[product(9, 9)]),
                vec![],
            )
            .await
            .unwrap();
    });
    let (w12, w13) = tokio::join!(t12.changes(3), t13.changes(2));
    change.await.unwrap();
    assert_eq!(w12.0, vec!["products".to_owned()]);
    assert!(w12.1 < Duration::from_secs(2), "{:?}", w12.1);
    assert!(w13.0.is_empty(), "store 13 was woken for store 12's change");
    t12.pull().await;
    assert_eq!(t12.price(9), Some(9));
    // Behind already: the answer is immediate.
    t13.products.version = Some(0);
    let (c, took) = t13.changes(10).await;
    assert_eq!(c, vec!["products".to_owned()]);
    assert!(took < Duration::from_secs(5));
    // Bad queries are refused.
    let r = reqwest::Client::new()
        .get(format!("http://{}/v1/changes?products=x", server.addr))
        .bearer_auth(&t13.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let r = reqwest::Client::new()
        .get(format!("http://{}/v1/changes?products=1", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    server.shutdown().await.unwrap();
}

/// A node: its own PostgreSQL ledger (pool, listener) over `schema`, its
/// own hub and HTTP server.
async fn node(schema: &str) -> ServerHandle {
    let url = std::env::var("PDC_TEST_DATABASE_URL").unwrap();
    let pos = Arc::new(PosApply::new().with_stock());
    let ledger: Arc<dyn Ledger> = Arc::new(
        pdc_server::PgLedger::connect(
            &url,
            pos.clone(),
            pdc_server::PgOptions {
                schema: Some(schema.to_owned()),
                pool_size: 4,
                ..pdc_server::PgOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let hub = Arc::new(
        DatasetHub::load(ledger.clone(), &pdc_server::DEFAULT_DATASETS, 10_000)
            .await
            .unwrap(),
    );
    let state = AppState::new(ledger, hub, Some(pos), Limits::default())
        .await
        .unwrap();
    pdc_server::spawn(any_port(), state, Duration::from_secs(86_400))
        .await
        .unwrap()
}

async fn until(limit: Duration, mut ok: impl AsyncFnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !ok().await {
        assert!(t.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_see_each_others_imports_within_a_second() {
    if std::env::var("PDC_TEST_DATABASE_URL").is_err() {
        eprintln!("\n*** two-node PostgreSQL test SKIPPED: PDC_TEST_DATABASE_URL is not set ***\n");
        return;
    }
    let schema = fresh_schema();
    let a = node(&schema).await;
    let b = node(&schema).await;
    let mut on_a = Till::new(&a, "till-12", &View::store("12").unwrap()).await;
    chain_with_two_stores(&a.state).await;
    let took = until(Duration::from_secs(1), async || {
        b.state.datasets.version("products").await == a.state.datasets.version("products").await
    })
    .await;
    eprintln!("node b saw node a's import after {took:?}");
    let mut on_b = on_a.on(&b);
    on_a.pull().await;
    on_b.pull().await;
    assert!(on_a.products == on_b.products);
    // Node b's catalogue check knows store 12's own product.
    assert!(matches!(
        on_b.sell(1, 100).await,
        ItemResult::Applied { .. }
    ));

    // Two imports at once, one on each node, to the same dataset: both
    // land (one plans again after losing the compare-and-set).
    let store12 = Scope::store("12").unwrap();
    let (ra, rb) = tokio::join!(
        a.state.update_scoped(
            "products",
            &store12,
            entries(&(200..260).map(|i| product(i, 1)).collect::<Vec<_>>()),
            vec![],
        ),
        b.state.update_scoped(
            "products",
            &store12,
            entries(&(300..360).map(|i| product(i, 2)).collect::<Vec<_>>()),
            vec![],
        ),
    );
    let (va, vb) = (ra.unwrap(), rb.unwrap());
    assert_ne!(va, vb);
    let newest = va.max(vb);
    let took = until(Duration::from_secs(1), async || {
        a.state.datasets.version("products").await == newest
            && b.state.datasets.version("products").await == newest
    })
    .await;
    eprintln!("both nodes at version {newest} after {took:?}");
    on_a.pull().await;
    on_b.pull().await;
    assert!(on_a.products == on_b.products);
    assert_eq!(on_a.price(201), Some(1));
    assert_eq!(on_a.price(301), Some(2));
    // The catalogue check on both nodes uses the new version.
    assert!(matches!(
        on_a.sell(2, 301).await,
        ItemResult::Applied { .. }
    ));
    assert!(matches!(
        on_b.sell(3, 201).await,
        ItemResult::Applied { .. }
    ));
    // Even at once: a sale of a product imported on node a a moment ago,
    // pushed to node b before it polled, is not refused.
    a.state
        .update_scoped(
            "products",
            &Scope::Chain,
            entries(&[product(400, 4)]),
            vec![],
        )
        .await
        .unwrap();
    assert!(matches!(
        on_b.sell(4, 400).await,
        ItemResult::Applied { .. }
    ));

    // Stock moved on both nodes, commutatively: append-only movements
    // plus folded totals, the same levels before and after a fold.
    let c = sql(&schema).await;
    let levels = || async {
        let one: i64 = c
            .query_one(
                "SELECT quantity FROM pos_stock_levels WHERE store = '12' AND product_id = 100",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let sold: i64 = c
            .query_one(
                "SELECT -sum(quantity)::bigint FROM pos_stock_levels WHERE store = '12'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (one, sold)
    };
    assert_eq!(
        levels().await,
        (-1, 4),
        "four single-unit sales at store 12 on two nodes"
    );
    // Two nodes folding at once count every movement once.
    // (One fold at a time: a node that finds another folding skips; the
    // nodes' own upkeep folds too.)
    until(Duration::from_secs(10), async || {
        let (fa, fb) = tokio::join!(a.state.ledger.maintain(), b.state.ledger.maintain());
        fa.unwrap();
        fb.unwrap();
        let left: i64 = c
            .query_one("SELECT count(*) FROM pos_stock_moves", &[])
            .await
            .unwrap()
            .get(0);
        left == 0
    })
    .await;
    assert_eq!(levels().await, (-1, 4));
    // Either node serves the folded feed of store 12.
    let feed = b.state.ledger.stock_since("12", 0, 100).await.unwrap();
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq), "{feed:?}");
    let sold: i64 = feed.iter().map(|l| -l.quantity).sum();
    assert_eq!(sold, 4);
    assert_eq!(
        a.state.ledger.stock_since("12", 0, 100).await.unwrap(),
        feed
    );
    let folded: i64 = c
        .query_one(
            "SELECT quantity FROM pos_stock WHERE store = '12' AND product_id = 100",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(folded, -1);
    // A terminal state built on either node is the same as one from a
    // fresh node started now.
    let c = node(&schema).await;
    let mut on_c = on_a.on(&c);
    on_c.products = LocalDataset::new("products");
    on_c.pull().await;
    on_a.pull().await;
    assert!(on_c.products.records == on_a.products.records);
    assert_eq!(on_c.price(400), Some(4));
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driven_engine_learns_of_its_stores_change_from_the_change_stream() {
    use pdc_core::{DriverConfig, EngineConfig, HttpOptions, HttpTransport, OfflineEngine};
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("l.redb"), Limits::default(), any_port()).await;
    chain_with_two_stores(&server.state).await;
    let till = Till::new(&server, "till-12", &View::store("12").unwrap()).await;
    let transport = HttpTransport::new(
        &format!("http://{}", server.addr),
        &till.token,
        HttpOptions::default(),
    )
    .unwrap();
    let mut config = EngineConfig::new("till-12".parse().unwrap(), dir.path().join("till.pdc"));
    config.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    let engine =
        Arc::new(OfflineEngine::open(config, transport, pdc_clock::SystemClock::new()).unwrap());
    // Periodic pulls an hour apart: only the change stream can bring the
    // new price in time.
    let driver = engine.start(DriverConfig {
        pull_every: Duration::from_secs(3_600),
        stock_every: Duration::from_millis(200),
        ..DriverConfig::default()
    });
    let price = |e: Arc<OfflineEngine<HttpTransport, pdc_clock::SystemClock>>| async move {
        e.reference("products", 3)
            .await
            .unwrap()
            .map(|b| Codec::new().decode::<Product>(&b).unwrap().price_cents)
    };
    until(Duration::from_secs(10), async || {
        price(engine.clone()).await == Some(199)
    })
    .await;
    // Let the driver settle into its wait on the stream.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .state
        .update_scoped(
            "products",
            &Scope::store("12").unwrap(),
            entries(&[product(3, 150)]),
            vec![],
        )
        .await
        .unwrap();
    let took = until(Duration::from_secs(10), async || {
        price(engine.clone()).await == Some(150)
    })
    .await;
    eprintln!("the driven engine held store 12's new price after {took:?}");
    // Stock: a sale at store 12 reaches the driven till's levels.
    assert!(matches!(till.sell(1, 3).await, ItemResult::Applied { .. }));
    until(Duration::from_secs(10), async || {
        engine.stock_level(3).unwrap() == Some(-1)
    })
    .await;
    driver.shutdown().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_move_each_stores_stock_and_the_last_unit_sells_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let server = start(&path, Limits::default(), any_port()).await;
    chain_with_two_stores(&server.state).await;
    let a = Till::new(&server, "till-12a", &View::store("12").unwrap()).await;
    let b = Till::new(&server, "till-12b", &View::store("12").unwrap()).await;
    let c = Till::new(&server, "till-13", &View::store("13").unwrap()).await;
    // Both tills of store 12 sell "the last unit" of product 5: both
    // sales stand, the level goes below zero.
    assert!(matches!(a.sell(1, 5).await, ItemResult::Applied { .. }));
    assert!(matches!(b.sell(1, 5).await, ItemResult::Applied { .. }));
    assert!(matches!(c.sell(1, 5).await, ItemResult::Applied { .. }));
    // The same order again under another local id is refused: no move.
    let mut again = order(1, 1);
    again.lines[0].product_id = 5;
    assert_eq!(
        rejected_code(&a.push(order_item(2, &again)).await),
        Some("duplicate_order")
    );
    // A refund puts one back.
    assert!(matches!(
        b.refund(3, 1, 5).await,
        ItemResult::Applied { .. }
    ));
    // The stock feed: each store's latest level per product, in order.
    let feed = server.state.ledger.stock_since("12", 0, 10).await.unwrap();
    assert_eq!(feed.len(), 1, "{feed:?}");
    assert_eq!((feed[0].product_id, feed[0].quantity), (5, -1));
    assert!(server
        .state
        .ledger
        .stock_since("12", feed[0].seq, 10)
        .await
        .unwrap()
        .is_empty());
    // Without `Accept: application/x-pdc` the page is JSON; another
    // store's feed is its own.
    let json = |token: String| {
        let url = format!("http://{}/v1/stock?since=0", server.addr);
        async move {
            let body = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };
    let page = json(a.token.clone()).await;
    assert_eq!(page["levels"][0]["product_id"], 5);
    assert_eq!(page["levels"][0]["quantity"], -1);
    assert_eq!(page["more"], false);
    assert_eq!(json(c.token.clone()).await["levels"][0]["quantity"], -1);
    // Stock reaches the till of store 12: its level, and a warning for a
    // sale that would leave it low, which the till still makes.
    use pdc_core::{EngineConfig, HttpOptions, HttpTransport, LowStock, OfflineEngine, Sale};
    let transport = HttpTransport::new(
        &format!("http://{}", server.addr),
        &a.token,
        HttpOptions::default(),
    )
    .unwrap();
    let mut config = EngineConfig::new("till-12a".parse().unwrap(), dir.path().join("till.pdc"));
    config.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    let engine = OfflineEngine::open(config, transport, pdc_clock::SystemClock::new()).unwrap();
    assert_eq!(engine.stock_level(5).unwrap(), None);
    assert_eq!(engine.pull_stock().await.unwrap(), Some(1));
    assert_eq!(engine.stock_level(5).unwrap(), Some(-1));
    assert_eq!(engine.pull_stock().await.unwrap(), Some(0), "nothing new");
    let p5 = product(5, 100);
    let sale = Sale::new(1)
        .add(&p5, 2)
        .pay_rest(pdc_codec::PaymentMethod::Cash);
    assert_eq!(
        engine.low_stock(&sale, 0).unwrap(),
        vec![LowStock {
            product_id: 5,
            level: -1,
            after: -3
        }]
    );
    assert!(engine.sell(&sale).is_ok(), "low stock never refuses a sale");
    server.shutdown().await.unwrap();
    let db = closed_redb(&path).await;
    let tx = db.begin_read().unwrap();
    let stock = tx.open_table(pdc_server::REDB_STOCK).unwrap();
    let level = |s: &str, p: u32| stock.get((s, p)).unwrap().map(|v| v.value());
    assert_eq!(level("12", 5), Some(-1));
    assert_eq!(level("13", 5), Some(-1));
    assert_eq!(level("12", 6), None);
}
