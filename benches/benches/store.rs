//! pdc-store's durable append (redb, immediate durability) beside the
//! minimal durable alternative a user would hand-roll: append to a file and
//! fsync. One sale per commit, and group commits of 100.
#![allow(missing_docs, clippy::unwrap_used)]

use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pdc_store::{NewItem, Store};
use pdc_sync::{Priority, StreamKey};

fn sale(i: u64) -> NewItem {
    NewItem {
        stream: StreamKey(i),
        priority: Priority::High,
        kind: 2,
        created_at_ms: 1_704_067_200_000 + i,
        payload: vec![(i % 251) as u8; 120],
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("bench.pdc")).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("log.bin"))
        .unwrap();
    let record = vec![7u8; 160];
    let mut g = c.benchmark_group("store_append");
    g.sample_size(20);
    let mut i = 0u64;
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("pdc_single", |b| {
        b.iter(|| {
            i += 1;
            store.append(sale(i)).unwrap()
        })
    });
    g.bench_function("file_fsync_single", |b| {
        b.iter(|| {
            file.write_all(&record).unwrap();
            file.sync_data().unwrap();
        })
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("pdc_group100", |b| {
        b.iter(|| {
            let items = (0..100).map(|_| {
                i += 1;
                sale(i)
            });
            store.append_many(items.collect()).unwrap()
        })
    });
    g.bench_function("file_fsync_group100", |b| {
        b.iter(|| {
            for _ in 0..100 {
                file.write_all(&record).unwrap();
            }
            file.sync_data().unwrap();
        })
    });
    g.finish();
}

/// Encryption at rest, without the disk: durable appends and outbox loads on
/// redb's in-memory backend, plain beside sealed (XChaCha20-Poly1305), so
/// the figure is the sealing cost itself; the durable figure with fsync is
/// `cargo xtask engine-figures --encryption`.
fn sealing(c: &mut Criterion) {
    use pdc_store::{StoreKey, StoreOptions};
    let open = |keys: Vec<StoreKey>| {
        Store::open_backend(
            redb::backends::InMemoryBackend::new(),
            StoreOptions {
                cache_bytes: None,
                keys,
            },
        )
        .unwrap()
    };
    let plain = open(Vec::new());
    let sealed = open(vec![StoreKey::from_bytes([9; 32])]);
    let mut g = c.benchmark_group("store_sealing");
    g.throughput(Throughput::Elements(1));
    for (name, store) in [("plain", &plain), ("sealed", &sealed)] {
        let mut i = 0u64;
        g.bench_function(format!("append_{name}"), |b| {
            b.iter(|| {
                i += 1;
                store.append(sale(i)).unwrap()
            })
        });
    }
    g.throughput(Throughput::Elements(100));
    for (name, store) in [("plain", &plain), ("sealed", &sealed)] {
        let ids: Vec<u64> = (1..=100).collect();
        g.bench_function(format!("load100_{name}"), |b| {
            b.iter(|| store.load(&ids).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, append, sealing);
criterion_main!(benches);
