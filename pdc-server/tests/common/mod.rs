//! Helpers shared by the pdc-server integration tests: a fresh PostgreSQL
//! schema per test, and POS orders to push.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use pdc_codec::{Codec, Order, OrderLine, Payment, PaymentMethod};
use pdc_server::PgLedger;
use pdc_server::PgOptions;
use pdc_sync::{OutboxItem, Priority, StreamKey};

/// A fresh schema per test on the test database, or `None` (and a loud
/// note) when no database is configured.
pub async fn pg(apply: Arc<dyn pdc_server::Apply>) -> Option<(PgLedger, String)> {
    let Ok(url) = std::env::var("PDC_TEST_DATABASE_URL") else {
        eprintln!(
            "\n*** PostgreSQL ledger tests SKIPPED: PDC_TEST_DATABASE_URL is not set \
             (.ci/run sets it) ***\n"
        );
        return None;
    };
    let schema = fresh_schema();
    let ledger = PgLedger::connect(
        &url,
        apply,
        PgOptions {
            schema: Some(schema.clone()),
            pool_size: 8,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
    Some((ledger, schema))
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "pdc_test_{}_{}_{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A plain client on the test database with `search_path` set to `schema`.
pub async fn sql(schema: &str) -> tokio_postgres::Client {
    let url = std::env::var("PDC_TEST_DATABASE_URL").unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("SET search_path = {schema}"))
        .await
        .unwrap();
    client
}

/// Drops a test's schema.
pub async fn drop_schema(schema: &str) {
    let client = sql("public").await;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

/// A valid order with this id and `lines` lines of product 5 at 1.50.
pub fn order(id: u64, lines: usize) -> Order {
    Order {
        receipt: None,
        id,
        cashier_id: 2,
        customer_id: None,
        created_at_ms: 1_700_000_000_000,
        lines: (0..lines)
            .map(|_| OrderLine {
                product_id: 5,
                quantity: 1,
                unit_price_cents: 150,
                discount_cents: 0,
                tax_rate_bp: 2000,
                ..Default::default()
            })
            .collect(),
        payments: vec![Payment {
            method: PaymentMethod::Card,
            amount_cents: 150 * lines as i64,
            ..Default::default()
        }],
        discount_cents: 0,
    }
}

/// An outbox item carrying `order` (kind 2).
pub fn order_item(local_id: u64, order: &Order) -> OutboxItem {
    OutboxItem {
        local_id,
        stream: StreamKey(1),
        priority: Priority::High,
        kind: 2,
        created_at_ms: order.created_at_ms,
        payload: Codec::new().encode(order).unwrap(),
    }
}

/// Opens a redb-backed server state with the POS hook at `path`, waiting
/// for a just-stopped server's ledger to close.
pub async fn open_state(
    path: &std::path::Path,
    limits: pdc_server::Limits,
) -> Arc<pdc_server::AppState> {
    use pdc_server::{AppState, DatasetHub, Ledger, PosApply};
    let pos = Arc::new(PosApply::new().with_stock());
    let ledger: Arc<dyn Ledger> = Arc::new(open_redb(path, pos.clone()).await);
    let hub = Arc::new(
        DatasetHub::load(ledger.clone(), &pdc_server::DEFAULT_DATASETS, 1000)
            .await
            .unwrap(),
    );
    AppState::new(ledger, hub, Some(pos), limits).await.unwrap()
}

/// The embedded ledger's file at `path` as a plain redb database, to read
/// its tables, once a dropped ledger's writer thread has let it go (up to
/// 5 s).
pub async fn closed_redb(path: &std::path::Path) -> redb::Database {
    for _ in 0..500 {
        if let Ok(db) = redb::Database::open(path) {
            return db;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    redb::Database::open(path).unwrap()
}

/// Opens the embedded ledger at `path`, waiting (up to 5 s) while a
/// just-stopped ledger's writer thread still holds the file.
pub async fn open_redb(
    path: &std::path::Path,
    apply: Arc<dyn pdc_server::Apply>,
) -> pdc_server::RedbLedger {
    let mut tries = 0;
    loop {
        match pdc_server::RedbLedger::open(path, apply.clone(), pdc_server::RedbOptions::default())
        {
            Ok(l) => return l,
            Err(pdc_server::ServerError::Unavailable(_)) if tries < 250 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Serves a redb-backed state at `addr` (retrying while the port is still
/// held by a just-stopped server).
pub async fn start(
    path: &std::path::Path,
    limits: pdc_server::Limits,
    addr: std::net::SocketAddr,
) -> pdc_server::ServerHandle {
    let state = open_state(path, limits).await;
    let mut tries = 0;
    loop {
        match pdc_server::spawn(
            addr,
            state.clone(),
            std::time::Duration::from_secs(30 * 86_400),
        )
        .await
        {
            Ok(h) => return h,
            Err(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// An ephemeral loopback port.
pub fn any_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}
