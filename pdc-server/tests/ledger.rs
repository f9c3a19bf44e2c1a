#![allow(clippy::unwrap_used)]
//! The ledger conformance suite on the embedded redb ledger and on
//! PostgreSQL (`PDC_TEST_DATABASE_URL`; `.ci/run` sets it).

use std::sync::Arc;

use pdc_server::conformance::{self, RejectKind, S};
use pdc_server::{Ledger, PgLedger, PgOptions, PosApply, RedbLedger, RedbOptions, ServerError};
use proptest::prelude::*;

mod common;
use common::{drop_schema, pg, sql};

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
async fn postgres_ledger_with_values_inserts_passes_the_conformance_suite() {
    let Ok(url) = std::env::var("PDC_TEST_DATABASE_URL") else {
        eprintln!("\n*** PostgreSQL ledger tests SKIPPED: PDC_TEST_DATABASE_URL is not set ***\n");
        return;
    };
    let schema = common::fresh_schema();
    let ledger = PgLedger::connect(
        &url,
        Arc::new(RejectKind),
        PgOptions {
            schema: Some(schema.clone()),
            pool_size: 8,
            insert: pdc_server::InsertForm::Values,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
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
    let batch = ledger
        .push("base-a", S, items[..5].to_vec(), 0)
        .await
        .unwrap();
    let naive = ledger.push_per_item("base-a", S, &items, 0).await.unwrap();
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
    let again = ledger.push("base-a", S, items.clone(), 0).await.unwrap();
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
        l.push("t", S, items.clone(), 0).await.unwrap()
    };
    // The writer thread owns a handle until its channel closes.
    let l = loop {
        match RedbLedger::open(&path, Arc::new(RejectKind), RedbOptions::default()) {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    };
    let again = l.push("t", S, items, 0).await.unwrap();
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
    let more = l
        .push("t", S, vec![conformance::item(6, 2)], 0)
        .await
        .unwrap();
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

/// What the previous version (ledger schema 1) recorded in both fixtures:
/// items 1..=10 of `till-1`, item 4 rejected, the others applied with
/// sequences equal to their local ids.
fn schema1_items() -> Vec<pdc_sync::OutboxItem> {
    (1..=10)
        .map(|i| conformance::item(i, if i == 4 { 1 } else { 70 }))
        .collect()
}

/// Resends the fixtures' items but 6 (an order in the PostgreSQL one) from
/// the legacy store: item 4 keeps its rejection, the others are
/// duplicates of the sequences the previous version gave them.
async fn resend_schema1(ledger: &dyn Ledger) {
    let items: Vec<_> = schema1_items()
        .into_iter()
        .filter(|i| i.local_id != 6)
        .collect();
    let ids: Vec<u64> = items.iter().map(|i| i.local_id).collect();
    let results = ledger
        .push("till-1", pdc_sync::StoreId::LEGACY, items, 1)
        .await
        .unwrap();
    for (id, r) in ids.into_iter().zip(&results) {
        if id == 4 {
            assert!(
                matches!(r, pdc_sync::ItemResult::Rejected { code, .. } if code == "undecodable"),
                "{r:?}"
            );
        } else {
            assert_eq!(
                *r,
                pdc_sync::ItemResult::Duplicate { server_seq: id },
                "item {id}"
            );
        }
    }
}

/// A ledger file written by the previous version (schema 1, made by
/// `RedbLedger` before store ids) opens, migrates in place, and answers a
/// resend of its items (a legacy store) with duplicates of the same
/// sequences; a new store's same local ids are new items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_ledger_of_schema_1_migrates_in_place() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.redb");
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(&include_bytes!("fixtures/ledger-schema1.redb.gz")[..])
        .read_to_end(&mut bytes)
        .unwrap();
    std::fs::write(&path, bytes).unwrap();
    for round in 0..2 {
        // Twice: the migration runs once, a migrated file opens as is.
        let ledger = common::open_redb(&path, Arc::new(PosApply::new())).await;
        resend_schema1(&ledger).await;
        let t = ledger.totals().await.unwrap();
        assert_eq!((t.applied, t.rejected), (9 + round, 1), "round {round}");
        assert_eq!(ledger.terminals().await.unwrap()[0].terminal_id, "till-1");
        let stores = ledger.terminal_stores("till-1").await.unwrap();
        assert_eq!(stores[0].store_id, pdc_sync::StoreId::LEGACY);
        if round == 0 {
            let new = ledger
                .push("till-1", S, vec![conformance::item(1, 70)], 1)
                .await
                .unwrap();
            assert_eq!(new[0], pdc_sync::ItemResult::Applied { server_seq: 11 });
        }
        drop(ledger);
    }
}

/// A PostgreSQL schema written by the previous version (`pg_dump` of a
/// schema 1 ledger with one POS order) migrates under the migration lock
/// and answers a resend of its items with the same sequences; its digests
/// are computed from the stored payloads, so a changed payload is a
/// conflict even for items recorded before the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ledger_of_schema_1_migrates_in_place() {
    let Ok(url) = std::env::var("PDC_TEST_DATABASE_URL") else {
        eprintln!("*** PostgreSQL migration test SKIPPED: PDC_TEST_DATABASE_URL is not set ***");
        return;
    };
    let schema = common::fresh_schema();
    let dump = include_str!("fixtures/pg-ledger-schema1.sql").replace("pdc_fixture_v1", &schema);
    {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.batch_execute(&dump).await.unwrap();
    }
    let connect = || {
        PgLedger::connect(
            &url,
            Arc::new(PosApply::new()),
            PgOptions {
                schema: Some(schema.clone()),
                ..PgOptions::default()
            },
        )
    };
    // Two nodes start at once: the lock lets one migrate.
    let (a, b) = tokio::join!(connect(), connect());
    let (ledger, _other) = (a.unwrap(), b.unwrap());
    resend_schema1(&ledger).await;
    let changed = ledger
        .push(
            "till-1",
            pdc_sync::StoreId::LEGACY,
            vec![conformance::item(6, 70)],
            1,
        )
        .await
        .unwrap();
    assert!(
        matches!(changed[0], pdc_sync::ItemResult::Conflict { .. }),
        "{changed:?}"
    );
    let stores = ledger.terminal_stores("till-1").await.unwrap();
    assert_eq!(stores.len(), 1);
    assert_eq!(stores[0].store_id, pdc_sync::StoreId::LEGACY);
    let c = sql(&schema).await;
    let v: i32 = c
        .query_one("SELECT max(version) FROM pdc_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 3);
    let orders: i64 = c
        .query_one("SELECT count(*) FROM pos_orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 1, "the business tables are kept");
    drop_schema(&schema).await;
}

/// Real PostgreSQL errors, one per class, land on the side of the split
/// `pdc_server::transient` documents (the SQLSTATE survives conversion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_errors_are_split_by_sqlstate() {
    let Ok(url) = std::env::var("PDC_TEST_DATABASE_URL") else {
        return;
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for (code, transient) in [
        ("22008", false),
        ("23505", false),
        ("P0001", false),
        ("40001", true),
        ("40P01", true),
        ("53100", true),
        ("57014", true),
        ("42P01", true),
    ] {
        let e = client
            .batch_execute(&format!(
                "DO $$ BEGIN RAISE EXCEPTION 'case' USING ERRCODE = '{code}'; END $$"
            ))
            .await
            .unwrap_err();
        let e = ServerError::from(e);
        assert_eq!(pdc_server::transient(&e), transient, "{code}: {e}");
    }
    // A real out-of-range timestamp: tied to the data.
    let e = client
        .query_one("SELECT to_timestamp(9e15)", &[])
        .await
        .unwrap_err();
    assert!(!pdc_server::transient(&ServerError::from(e)));
    // A connection the server ends: transient.
    let (victim, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let e = victim.query_one("SELECT 1", &[]).await.unwrap_err();
    assert!(pdc_server::transient(&ServerError::from(e)));
}

/// One push of a random sequence: (store, local id, order id, lines,
/// poison) per item.
type OrderOp = (u8, u64, u64, usize, bool);

fn order_items(batch: &[OrderOp]) -> Vec<(pdc_sync::StoreId, pdc_sync::OutboxItem)> {
    batch
        .iter()
        .map(|&(store, local, order_id, lines, poison)| {
            let mut o = common::order(order_id, lines);
            if poison {
                // Beyond PostgreSQL's timestamp range (fine on redb).
                o.created_at_ms = 9_000_000_000_000_000_000;
            }
            (
                pdc_sync::StoreId([store + 1; 16]),
                common::order_item(local, &o),
            )
        })
        .collect()
}

/// Pushes the batches (each split by store) and returns, per applied
/// order item, (order id, server seq, lines); checks exactly-once on the
/// way.
async fn push_orders(ledger: &dyn Ledger, batches: &[Vec<OrderOp>]) -> Vec<(u64, u64, usize)> {
    let mut applied = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for b in batches {
        for store in 0..2u8 {
            let items: Vec<_> = order_items(b)
                .into_iter()
                .filter(|(s, _)| s.0[0] == store + 1)
                .collect();
            if items.is_empty() {
                continue;
            }
            let sid = items[0].0;
            let ops: Vec<&OrderOp> = b.iter().filter(|o| o.0 == store).collect();
            let items: Vec<_> = items.into_iter().map(|(_, i)| i).collect();
            let results = ledger.push("till-m", sid, items, 1).await.unwrap();
            for (op, r) in ops.iter().zip(&results) {
                if let pdc_sync::ItemResult::Applied { server_seq } = r {
                    assert!(seen.insert((op.0, op.1)), "applied twice: {op:?}");
                    applied.push((op.2, *server_seq, op.3));
                }
            }
        }
    }
    applied
}

fn order_batches() -> impl Strategy<Value = Vec<Vec<OrderOp>>> {
    proptest::collection::vec(
        proptest::collection::vec(
            (
                0u8..2,
                1u64..12,
                1u64..8,
                1usize..4,
                proptest::bool::weighted(0.08),
            ),
            1..6,
        ),
        1..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// After any sequence of pushes (resends, reused order ids, two
    /// stores, poison items), the embedded orders table holds exactly the
    /// applied orders, one per (terminal, order id), with their sequences.
    #[test]
    fn redb_orders_table_matches_the_ledger(batches in order_batches()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let applied = rt.block_on(async {
            let ledger =
                RedbLedger::open(&path, Arc::new(PosApply::new()), RedbOptions::default()).unwrap();
            push_orders(&ledger, &batches).await
        });
        // The ledger's writer thread closes the file when it ends.
        let mut tries = 0;
        let db = loop {
            match redb::Database::open(&path) {
                Ok(db) => break db,
                Err(e) if tries < 500 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let tx = db.begin_read().unwrap();
        let table = tx.open_table(pdc_server::REDB_ORDERS).unwrap();
        let mut rows = std::collections::BTreeMap::new();
        for r in redb::ReadableTable::iter(&table).unwrap() {
            let (k, v) = r.unwrap();
            let (t, order_id) = k.value();
            prop_assert_eq!(t, "till-m");
            let (seq, _, _, _, lines) = v.value();
            rows.insert(order_id, (seq, lines as usize));
        }
        let expected: std::collections::BTreeMap<u64, (u64, usize)> =
            applied.iter().map(|&(o, s, l)| (o, (s, l))).collect();
        prop_assert_eq!(expected.len(), applied.len(), "one applied item per order id");
        prop_assert_eq!(rows, expected);
    }

    /// The same on PostgreSQL, checked with SQL: `pos_orders` holds exactly
    /// the applied order items and `pos_order_lines` exactly their lines.
    #[test]
    fn postgres_orders_tables_match_the_ledger(batches in order_batches()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let Some((ledger, schema)) = pg(Arc::new(PosApply::new())).await else {
                return Ok(());
            };
            let applied = push_orders(&ledger, &batches).await;
            let c = sql(&schema).await;
            let rows = c
                .query("SELECT order_id, server_seq, lines FROM pos_orders ORDER BY order_id", &[])
                .await
                .unwrap();
            let got: Vec<(u64, u64, usize)> = rows
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64, r.get::<_, i32>(2) as usize))
                .collect();
            let mut expected = applied.clone();
            expected.sort();
            prop_assert_eq!(got, expected);
            // Every applied order item of the ledger has its order row, and
            // every line belongs to its order's sequence.
            let orphans: i64 = c
                .query_one(
                    "SELECT count(*) FROM pdc_items i LEFT JOIN pos_orders o \
                     ON o.server_seq = i.server_seq WHERE i.status = 1 AND i.kind = 2 \
                     AND o.server_seq IS NULL",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            prop_assert_eq!(orphans, 0);
            let mismatched: i64 = c
                .query_one(
                    "SELECT count(*) FROM pos_orders o WHERE o.lines <> \
                     (SELECT count(*) FROM pos_order_lines l \
                      WHERE l.terminal_id = o.terminal_id AND l.order_id = o.order_id)",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            prop_assert_eq!(mismatched, 0);
            let lines: i64 = c
                .query_one("SELECT count(*) FROM pos_order_lines", &[])
                .await
                .unwrap()
                .get(0);
            prop_assert_eq!(lines as usize, applied.iter().map(|a| a.2).sum::<usize>());
            drop_schema(&schema).await;
            Ok(())
        })?;
    }
}

/// The embedded ledger's file is created whole or not at all (as a till
/// store, `pdc_store::create_atomically`): what a killed creation leaves
/// beside the path, or an empty file at it, does not stop the next open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_ledger_file_is_created_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.redb");
    std::fs::write(pdc_store::creating_path(&path), b"half a header").unwrap();
    std::fs::write(&path, b"").unwrap();
    let ledger = RedbLedger::open(&path, Arc::new(RejectKind), RedbOptions::default()).unwrap();
    assert!(!pdc_store::creating_path(&path).exists());
    let r = ledger
        .push("t", S, vec![conformance::item(1, 2)], 0)
        .await
        .unwrap();
    assert!(matches!(r[0], pdc_sync::ItemResult::Applied { .. }));
}
