#![allow(clippy::unwrap_used)]
//! The ledger conformance suite on the embedded redb ledger and on
//! PostgreSQL (`PDC_TEST_DATABASE_URL`; `.ci/run` sets it).

use std::sync::Arc;

use pdc_server::conformance::{self, RejectKind};
use pdc_server::{Ledger, PgLedger, PgOptions, PosApply, RedbLedger, RedbOptions, ServerError};
use proptest::prelude::*;

fn redb(dir: &tempfile::TempDir) -> Arc<dyn Ledger> {
    Arc::new(
        RedbLedger::open(
            &dir.path().join("ledger.redb"),
            Arc::new(RejectKind),
            RedbOptions::default(),
        )
        .unwrap(),
    )
}

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
    let schema = format!("pdc_test_{}_{}", std::process::id(), rand_suffix());
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

/// Drops a test's schema.
async fn drop_schema(schema: &str) {
    let url = std::env::var("PDC_TEST_DATABASE_URL").unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_ledger_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(redb(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ledger_passes_the_conformance_suite() {
    let Some((ledger, schema)) = pg(Arc::new(RejectKind)).await else {
        return;
    };
    conformance::run(Arc::new(ledger)).await;
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ledger_matches_the_model_and_the_per_item_baseline() {
    let Some((ledger, schema)) = pg(Arc::new(RejectKind)).await else {
        return;
    };
    conformance::against_model(
        &ledger,
        &[
            (1, vec![1, 2, 3]),
            (2, vec![1, 2]),
            (1, vec![3, 4, 1]),
            (2, vec![5, 2]),
        ],
    )
    .await;
    // The per-item baseline answers exactly like the batch statement.
    let items: Vec<_> = (1..=10).map(|i| conformance::item(i, 2)).collect();
    let batch = ledger.push("base-a", items[..5].to_vec(), 0).await.unwrap();
    let naive = ledger.push_per_item("base-a", &items, 0).await.unwrap();
    for (n, b) in naive[..5].iter().zip(&batch) {
        let pdc_sync::ItemResult::Applied { server_seq } = b else {
            panic!("{b:?}")
        };
        assert_eq!(
            *n,
            pdc_sync::ItemResult::Duplicate {
                server_seq: *server_seq
            }
        );
    }
    assert!(naive[5..]
        .iter()
        .all(|r| matches!(r, pdc_sync::ItemResult::Applied { .. })));
    let again = ledger.push("base-a", items.clone(), 0).await.unwrap();
    assert_eq!(
        again
            .iter()
            .filter(|r| matches!(r, pdc_sync::ItemResult::Duplicate { .. }))
            .count(),
        10
    );
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_are_idempotent_and_refuse_a_newer_schema() {
    let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
        return;
    };
    drop(ledger);
    let url = std::env::var("PDC_TEST_DATABASE_URL").unwrap();
    let opts = PgOptions {
        schema: Some(schema.clone()),
        ..PgOptions::default()
    };
    // Reconnecting runs no migration twice, with or without the lock.
    PgLedger::connect(&url, Arc::new(PosApply::new()), opts.clone())
        .await
        .unwrap();
    let unlocked = PgOptions {
        migration_lock: false,
        ..opts.clone()
    };
    PgLedger::connect(&url, Arc::new(PosApply::new()), unlocked)
        .await
        .unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(&format!("INSERT INTO {schema}.pdc_schema VALUES (99)"))
        .await
        .unwrap();
    let err = PgLedger::connect(&url, Arc::new(PosApply::new()), opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServerError::Storage(ref m) if m.contains("99")),
        "{err}"
    );
}

#[test]
fn a_foreign_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-ledger");
    std::fs::write(&path, b"hello, this is not a database at all").unwrap();
    let err = RedbLedger::open(&path, Arc::new(RejectKind), RedbOptions::default()).unwrap_err();
    assert!(matches!(err, ServerError::Storage(_)), "{err}");
}

#[test]
fn a_ledger_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let _a = RedbLedger::open(&path, Arc::new(RejectKind), RedbOptions::default()).unwrap();
    let err = RedbLedger::open(&path, Arc::new(RejectKind), RedbOptions::default()).unwrap_err();
    assert!(
        matches!(err, ServerError::Unavailable(ref m) if m.contains("in use")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_ledger_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.redb");
    let items: Vec<_> = (1..=5).map(|i| conformance::item(i, 2)).collect();
    let first = {
        let l = RedbLedger::open(&path, Arc::new(RejectKind), RedbOptions::default()).unwrap();
        l.push("t", items.clone(), 0).await.unwrap()
    };
    // The writer thread owns a handle until its channel closes.
    let l = loop {
        match RedbLedger::open(&path, Arc::new(RejectKind), RedbOptions::default()) {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    };
    let again = l.push("t", items, 0).await.unwrap();
    for (a, b) in first.iter().zip(&again) {
        let pdc_sync::ItemResult::Applied { server_seq } = a else {
            panic!()
        };
        assert_eq!(
            *b,
            pdc_sync::ItemResult::Duplicate {
                server_seq: *server_seq
            }
        );
    }
    let more = l.push("t", vec![conformance::item(6, 2)], 0).await.unwrap();
    assert!(matches!(more[0], pdc_sync::ItemResult::Applied { server_seq } if server_seq > 5));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Model-based: random pushes with repeats across terminals.
    #[test]
    fn redb_ledger_matches_the_model(ops in proptest::collection::vec(
        (0u8..3, proptest::collection::vec(1u64..40, 0..20)), 1..12)) {
        let ops: Vec<(u8, Vec<u64>)> = ops
            .into_iter()
            .map(|(t, mut ids)| { ids.sort_unstable(); ids.dedup(); (t, ids) })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { conformance::against_model(&*redb(&dir), &ops).await });
    }
}
