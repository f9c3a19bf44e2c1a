//! pdc-sync benches: the enqueue → poll_transmit → ack cycle (beside a
//! plain `BinaryHeap` priority queue, which has no per-stream order, no
//! batching and no encoding: the floor a user's hand-rolled queue starts
//! from), delta diff over 100k records, and pull reconciliation of a 50k
//! catalogue. Sizes are printed once at start.
#![allow(missing_docs, clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pdc_clock::Instant;
use pdc_sync::{
    DatasetState, DeltaTracker, ItemResult, LocalDataset, OutboxItem, Priority, PushResponse,
    ServerDataset, StreamKey, SyncConfig, SyncMachine,
};
use rand::SeedableRng;

const N: u64 = 10_000;

fn items() -> Vec<OutboxItem> {
    let prios = [
        Priority::Low,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ];
    (1..=N)
        .map(|id| OutboxItem {
            local_id: id,
            stream: StreamKey(id / 3),
            priority: prios[(id % 4) as usize],
            kind: 1,
            created_at_ms: 1_704_067_200_000 + id,
            payload: vec![7u8; 40],
        })
        .collect()
}

fn cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("sync_cycle/10k_items");
    g.throughput(Throughput::Elements(N));
    g.bench_function("pdc", |b| {
        b.iter_batched(
            items,
            |items| {
                let mut cfg = SyncConfig::new("till-1".parse().unwrap());
                cfg.linger = std::time::Duration::ZERO;
                let mut m =
                    SyncMachine::new(cfg, Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)));
                let now = Instant::ZERO;
                for it in items {
                    m.enqueue(it, now).unwrap();
                }
                let mut seq = 0;
                while let Some(batch) = m.poll_transmit(now) {
                    let results = batch
                        .items
                        .iter()
                        .map(|_| {
                            seq += 1;
                            ItemResult::Applied { server_seq: seq }
                        })
                        .collect();
                    m.handle_response(
                        batch.id,
                        PushResponse {
                            results,
                            retry_after_ms: None,
                        },
                        now,
                    )
                    .unwrap();
                    while m.poll_event().is_some() {}
                }
                assert!(m.is_empty());
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("binary_heap", |b| {
        b.iter_batched(
            items,
            |items| {
                let mut heap = BinaryHeap::new();
                let mut store: Vec<Option<OutboxItem>> = Vec::with_capacity(items.len());
                for (ix, it) in items.into_iter().enumerate() {
                    heap.push((it.priority, Reverse(it.local_id), ix));
                    store.push(Some(it));
                }
                let mut sent = 0;
                while !heap.is_empty() {
                    let batch: Vec<OutboxItem> = (0..50)
                        .filter_map(|_| heap.pop())
                        .filter_map(|(_, _, ix)| store[ix].take())
                        .collect();
                    sent += black_box(batch).len();
                }
                assert_eq!(sent as u64, N);
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn record(i: u64, version: u64) -> Vec<u8> {
    let mut v = format!(
        "{{\"id\":{i},\"name\":\"Product {i}\",\"v\":{version},\"price\":{}}}",
        i * 37 % 10_000
    )
    .into_bytes();
    v.resize(200, b' ');
    v
}

fn delta(c: &mut Criterion) {
    let records: Vec<(u64, Vec<u8>)> = (0..100_000).map(|i| (i, record(i, 0))).collect();
    let mut tracker = DeltaTracker::new();
    let first = tracker.diff("carts", records.iter().map(|(i, b)| (*i, b.as_slice())));
    tracker.commit("carts", &first);
    let changed: Vec<(u64, Vec<u8>)> = records
        .iter()
        .map(|(i, b)| {
            if i % 100 == 0 {
                (*i, record(*i, 1))
            } else {
                (*i, b.clone())
            }
        })
        .collect();
    let d = tracker.diff("carts", changed.iter().map(|(i, b)| (*i, b.as_slice())));
    let full_bytes = postcard::to_allocvec(&first.upserts).unwrap().len();
    let delta_bytes = postcard::to_allocvec(&d.upserts).unwrap().len();
    eprintln!(
        "diff 100k x 200 B, 1% changed: delta request {delta_bytes} B vs full {full_bytes} B = {:.2}%",
        100.0 * delta_bytes as f64 / full_bytes as f64
    );
    let mut g = c.benchmark_group("sync_delta");
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("diff_100k_1pct", |b| {
        b.iter(|| tracker.diff("carts", changed.iter().map(|(i, b)| (*i, b.as_slice()))))
    });
    g.finish();

    // Pull: 50k catalogue, terminal at version v, 100 records changed since.
    let mut server = ServerDataset::new("products", 10_000);
    for i in 0..50_000 {
        server.upsert(i, record(i, 0)[..120].to_vec());
    }
    let mut local = LocalDataset::new("products");
    local.apply(&server.answer(&local.state())).unwrap();
    let snapshot = server.answer(&DatasetState {
        dataset: "products".into(),
        version: None,
        buckets: vec![],
    });
    for i in 0..100 {
        server.upsert(i * 397, record(i * 397, 1)[..120].to_vec());
    }
    let answer = server.answer(&local.state());
    let codec = pdc_codec::Codec::new();
    let pull_bytes = codec
        .encode(&pdc_sync::PullResponse {
            datasets: vec![answer.clone()],
        })
        .unwrap()
        .len();
    let snapshot_bytes = codec
        .encode(&pdc_sync::PullResponse {
            datasets: vec![snapshot],
        })
        .unwrap()
        .len();
    eprintln!(
        "pull 50k catalogue, 100 changed: response {pull_bytes} B vs snapshot {snapshot_bytes} B = {:.2}%",
        100.0 * pull_bytes as f64 / snapshot_bytes as f64
    );
    let state = local.state();
    let mut g = c.benchmark_group("sync_pull");
    g.bench_function("answer_50k_100_changed", |b| {
        b.iter(|| server.answer(black_box(&state)))
    });
    g.finish();
}

criterion_group!(benches, cycle, delta);
criterion_main!(benches);
