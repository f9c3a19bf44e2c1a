#![allow(clippy::unwrap_used)]
//! The PostgreSQL ledger on Citus: the conformance suite, the placement of
//! every table, and two nodes racing on the same items. Gated on
//! `PDC_TEST_CITUS_URL` (a coordinator; `PDC_TEST_CITUS_WORKER_URL`, a
//! worker, for the refusal): these machines have no Citus, so CI prints a
//! loud SKIPPED line.

use std::collections::HashMap;
use std::sync::Arc;

use pdc_server::conformance::{self, RejectKind, S};
use pdc_server::{
    Apply, InsertForm, Ledger, PgLedger, PgOptions, Placement, PosApply, ServerError,
    LEDGER_PLACEMENT,
};
use pdc_sync::ItemResult;

mod common;
use common::{fresh_schema, order, order_item};

fn citus_url() -> Option<String> {
    match std::env::var("PDC_TEST_CITUS_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            eprintln!(
                "\n*** Citus tests SKIPPED: PDC_TEST_CITUS_URL (a Citus coordinator) is not set; \
                 nothing here ran on Citus ***\n"
            );
            None
        }
    }
}

async fn connect(url: &str, apply: Arc<dyn Apply>, schema: &str) -> PgLedger {
    PgLedger::connect(
        url,
        apply,
        PgOptions {
            schema: Some(schema.to_owned()),
            pool_size: 8,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap()
}

async fn drop_schema(url: &str, schema: &str) {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_passes_the_conformance_suite_on_citus() {
    let Some(url) = citus_url() else {
        return;
    };
    let schema = fresh_schema();
    let ledger = connect(&url, Arc::new(RejectKind), &schema).await;
    conformance::run(Arc::new(ledger)).await;
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_table_is_placed_once_and_colocated_by_terminal() {
    let Some(url) = citus_url() else {
        return;
    };
    let schema = fresh_schema();
    let pos: Arc<dyn Apply> = Arc::new(PosApply::new().with_stock());
    let _first = connect(&url, Arc::clone(&pos), &schema).await;
    // Idempotent: a second node (or a restart) finds them placed.
    let _second = connect(&url, Arc::clone(&pos), &schema).await;
    let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c.batch_execute(&format!("SET search_path = {schema}"))
        .await
        .unwrap();
    let rows = c
        .query(
            "SELECT p.logicalrelid::regclass::text, p.partmethod::text, p.colocationid::bigint \
             FROM pg_dist_partition p JOIN pg_class r ON r.oid = p.logicalrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = $1",
            &[&schema],
        )
        .await
        .unwrap();
    let placed: HashMap<String, (String, i64)> = rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let name = name.rsplit('.').next().unwrap_or_default().to_owned();
            (name, (r.get(1), r.get(2)))
        })
        .collect();
    let items = placed["pdc_items"].1;
    for (table, p) in LEDGER_PLACEMENT.iter().chain(pos.postgres_placement()) {
        let (method, group) = placed
            .get(*table)
            .unwrap_or_else(|| panic!("{table} is not placed"));
        match p {
            Placement::ByTerminal => {
                assert_eq!(method, "h", "{table} is hash-distributed");
                assert_eq!(*group, items, "{table} is colocated with pdc_items");
            }
            Placement::Reference => assert_eq!(method, "n", "{table} is a reference table"),
        }
    }
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_on_citus_apply_each_item_once() {
    let Some(url) = citus_url() else {
        return;
    };
    let schema = fresh_schema();
    let pos: Arc<dyn Apply> = Arc::new(PosApply::new());
    let a = Arc::new(connect(&url, Arc::clone(&pos), &schema).await);
    let b = Arc::new(connect(&url, Arc::clone(&pos), &schema).await);
    let items: Vec<_> = (1..=200).map(|i| order_item(i, &order(i, 3))).collect();
    let mut tasks = Vec::new();
    for round in 0..4u64 {
        for ledger in [Arc::clone(&a), Arc::clone(&b)] {
            let items = items.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match ledger.push("till-race", S, items.clone(), round).await {
                        Ok(r) => return r,
                        Err(e) if pdc_server::transient(&e) => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
    }
    let mut applied = vec![0u32; items.len()];
    for t in tasks {
        for (n, r) in t.await.unwrap().iter().enumerate() {
            match r {
                ItemResult::Applied { .. } => applied[n] += 1,
                ItemResult::Duplicate { .. } => {}
                other => panic!("item {n}: {other:?}"),
            }
        }
    }
    assert!(applied.iter().all(|&n| n == 1), "{applied:?}");
    assert_eq!(a.totals().await.unwrap().applied, 200);
    drop_schema(&url, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_url_is_refused() {
    let Ok(url) = std::env::var("PDC_TEST_CITUS_WORKER_URL") else {
        eprintln!(
            "\n*** Citus worker test SKIPPED: PDC_TEST_CITUS_WORKER_URL (a Citus worker) is not set ***\n"
        );
        return;
    };
    let r = PgLedger::connect(
        &url,
        Arc::new(RejectKind),
        PgOptions {
            insert: InsertForm::Auto,
            ..PgOptions::default()
        },
    )
    .await;
    match r {
        Err(ServerError::Config(m)) => assert!(m.contains("coordinator"), "{m}"),
        other => panic!("a worker was accepted: {:?}", other.map(|_| ())),
    }
}
