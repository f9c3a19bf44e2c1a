//! The server's ledgers applying batches of 50 orders (with the POS Apply
//! hook writing the orders table): the embedded redb ledger, PostgreSQL's
//! one-statement UNNEST batch, and the study's one-INSERT-per-item loop in
//! the same run; a batch of resends against a fresh batch; and a batch
//! with one poison item (isolated by bisection) against a clean one.
//!
//! PostgreSQL: `PDC_TEST_DATABASE_URL` (skipped, loudly, when unset).
#![allow(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pdc_codec::Codec;
use pdc_server::{
    Accepted, Apply, Ledger, PgLedger, PgOptions, PosApply, RedbLedger, RedbOptions, Refusals,
    Rejection, ServerError,
};
use pdc_sync::{OutboxItem, Priority, StoreId, StreamKey};

const S: StoreId = StoreId([5; 16]);

/// The POS hook, except that writing an item of kind 98 fails (a poison
/// item on the embedded ledger, where PosApply itself cannot fail).
struct PoisonKind98(PosApply);

impl Apply for PoisonKind98 {
    fn check(&self, t: &str, i: &OutboxItem) -> Result<(), Rejection> {
        self.0.check(t, i)
    }
    fn apply_redb(
        &self,
        tx: &redb::WriteTransaction,
        items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        if items.iter().any(|a| a.item.kind == 98) {
            return Err(ServerError::Apply("poison".into()));
        }
        self.0.apply_redb(tx, items)
    }
}

/// A batch whose 26th item cannot be stored: on redb by kind (see
/// [`PoisonKind98`]), on PostgreSQL by a timestamp beyond its range.
fn poisoned(first: u64, payloads: &[pdc_codec::Order], redb: bool) -> Vec<OutboxItem> {
    let mut b = batch(first, payloads);
    if redb {
        b[25].kind = 98;
    } else {
        let codec = Codec::new();
        let mut o: pdc_codec::Order = codec.decode(&b[25].payload).expect("order");
        o.created_at_ms = 9_000_000_000_000_000_000;
        b[25].payload = codec.encode(&o).expect("order");
    }
    b
}

const BATCH: u64 = 50;

/// Checks, before timing, that a scenario answers what it claims (all
/// applied, or 49 applied and one `storage` rejection): a bench that
/// silently measures rejections measures nothing.
fn expect_applied(results: &[pdc_sync::ItemResult], poison: bool) {
    let applied = results
        .iter()
        .filter(|r| matches!(r, pdc_sync::ItemResult::Applied { .. }))
        .count();
    let storage = results
        .iter()
        .filter(|r| matches!(r, pdc_sync::ItemResult::Rejected { code, .. } if code == "storage"))
        .count();
    assert_eq!(
        (applied, storage),
        if poison { (49, 1) } else { (50, 0) },
        "{results:?}"
    );
}

fn payloads() -> Vec<pdc_codec::Order> {
    pdc_datasets::orders(1_000, 3)
}

/// 50 orders, each with its own order id (the local id): a real till never
/// sends one order id twice, and the POS hook refuses a reused one.
fn batch(first: u64, orders: &[pdc_codec::Order]) -> Vec<OutboxItem> {
    let codec = Codec::new();
    (first..first + BATCH)
        .map(|id| {
            let mut o = orders[(id % orders.len() as u64) as usize].clone();
            o.id = id;
            OutboxItem {
                local_id: id,
                stream: StreamKey(id % 8),
                priority: Priority::High,
                kind: 2,
                created_at_ms: 1_764_000_000_000,
                payload: codec.encode(&o).expect("orders encode"),
            }
        })
        .collect()
}

fn bench_ledger(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let p = payloads();
    let mut g = c.benchmark_group("ledger_batch50");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(20);
    g.measurement_time(std::time::Duration::from_secs(6));

    let dir = tempfile::tempdir().expect("tempdir");
    let redb: Arc<dyn Ledger> = Arc::new(
        RedbLedger::open(
            &dir.path().join("l.redb"),
            Arc::new(PoisonKind98(PosApply::new())),
            RedbOptions::default(),
        )
        .expect("ledger"),
    );
    let next = AtomicU64::new(1);
    expect_applied(
        &rt.block_on(redb.push(
            "bench",
            S,
            batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
            0,
        ))
        .expect("push"),
        false,
    );
    g.bench_function("redb/fresh", |b| {
        b.iter_batched(
            || batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
            |items| rt.block_on(redb.push("bench", S, items, 0)).expect("push"),
            criterion::BatchSize::SmallInput,
        )
    });
    let resend = batch(1, &p);
    g.bench_function("redb/resend", |b| {
        b.iter(|| {
            rt.block_on(redb.push("bench", S, resend.clone(), 0))
                .expect("push")
        })
    });
    expect_applied(
        &rt.block_on(redb.push(
            "bench",
            S,
            poisoned(next.fetch_add(BATCH, Ordering::Relaxed), &p, true),
            0,
        ))
        .expect("push"),
        true,
    );
    g.bench_function("redb/poison1", |b| {
        b.iter_batched(
            || poisoned(next.fetch_add(BATCH, Ordering::Relaxed), &p, true),
            |items| rt.block_on(redb.push("bench", S, items, 0)).expect("push"),
            criterion::BatchSize::SmallInput,
        )
    });

    match std::env::var("PDC_TEST_DATABASE_URL") {
        Err(_) => eprintln!(
            "\n*** PostgreSQL ledger benches SKIPPED: PDC_TEST_DATABASE_URL is not set ***\n"
        ),
        Ok(url) => {
            let schema = format!("pdc_bench_{}", std::process::id());
            let pg = rt
                .block_on(PgLedger::connect(
                    &url,
                    Arc::new(PosApply::new()),
                    PgOptions {
                        schema: Some(schema.clone()),
                        insert: pdc_server::InsertForm::Unnest,
                        ..PgOptions::default()
                    },
                ))
                .expect("postgres ledger");
            expect_applied(
                &rt.block_on(pg.push(
                    "bench",
                    S,
                    batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
                    0,
                ))
                .expect("push"),
                false,
            );
            g.bench_function("postgres/unnest_fresh", |b| {
                b.iter_batched(
                    || batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
                    |items| rt.block_on(pg.push("bench", S, items, 0)).expect("push"),
                    criterion::BatchSize::SmallInput,
                )
            });
            expect_applied(
                &rt.block_on(pg.push_per_item(
                    "bench",
                    S,
                    &batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
                    0,
                ))
                .expect("push"),
                false,
            );
            let values = rt
                .block_on(PgLedger::connect(
                    &url,
                    Arc::new(PosApply::new()),
                    PgOptions {
                        schema: Some(schema.clone()),
                        insert: pdc_server::InsertForm::Values,
                        ..PgOptions::default()
                    },
                ))
                .expect("postgres ledger, VALUES inserts");
            expect_applied(
                &rt.block_on(values.push(
                    "bench",
                    S,
                    batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
                    0,
                ))
                .expect("push"),
                false,
            );
            // Alternating with UNNEST in one run, same table, same batches.
            g.bench_function("postgres/values_fresh", |b| {
                b.iter_batched(
                    || batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
                    |items| {
                        rt.block_on(values.push("bench", S, items, 0))
                            .expect("push")
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
            g.bench_function("postgres/unnest_fresh_again", |b| {
                b.iter_batched(
                    || batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
                    |items| rt.block_on(pg.push("bench", S, items, 0)).expect("push"),
                    criterion::BatchSize::SmallInput,
                )
            });
            g.bench_function("postgres/per_item_fresh", |b| {
                b.iter_batched(
                    || batch(next.fetch_add(BATCH, Ordering::Relaxed), &p),
                    |items| {
                        rt.block_on(pg.push_per_item("bench", S, &items, 0))
                            .expect("push")
                    },
                    criterion::BatchSize::SmallInput,
                )
            });
            let first = next.fetch_add(BATCH, Ordering::Relaxed);
            let resend = batch(first, &p);
            rt.block_on(pg.push("bench", S, resend.clone(), 0))
                .expect("push");
            g.bench_function("postgres/unnest_resend", |b| {
                b.iter(|| {
                    rt.block_on(pg.push("bench", S, resend.clone(), 0))
                        .expect("push")
                })
            });
            expect_applied(
                &rt.block_on(pg.push(
                    "bench",
                    S,
                    poisoned(next.fetch_add(BATCH, Ordering::Relaxed), &p, false),
                    0,
                ))
                .expect("push"),
                true,
            );
            g.bench_function("postgres/unnest_poison1", |b| {
                b.iter_batched(
                    || poisoned(next.fetch_add(BATCH, Ordering::Relaxed), &p, false),
                    |items| rt.block_on(pg.push("bench", S, items, 0)).expect("push"),
                    criterion::BatchSize::SmallInput,
                )
            });
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                    .await;
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_ledger);
criterion_main!(benches);
