//! Chain-scale reference data (pdc-sync `ScopedDataset`): the pull answer
//! of a store's view of a 50k-record catalogue with 100 changes (its view
//! digest cached, and recomputed after a change of its layers), beside
//! the unscoped `ServerDataset` answering the same terminal. Printed once
//! at start, on two record shapes (pdc-datasets products and opaque
//! 120-byte records): the bytes of a store terminal's first pull in a
//! chain of 1,000 stores × 5,000 products with 5% per-store price
//! overrides against a single-store dataset of the same size, and the
//! dataset's memory for 100 and 1,000 scopes.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use pdc_codec::{Codec, Product};
use pdc_sync::{
    DatasetState, Entry, LocalDataset, PullResponse, Scope, ScopedDataset, ServerDataset, View,
};

/// Record bodies for ids 1..=n, and the body of a store's own price.
trait Shape {
    fn name(&self) -> &'static str;
    fn body(&self, id: u32) -> Vec<u8>;
    fn override_body(&self, id: u32, store: u32) -> Vec<u8>;
}

struct Products(Vec<Product>);

impl Shape for Products {
    fn name(&self) -> &'static str {
        "pdc-datasets products"
    }
    fn body(&self, id: u32) -> Vec<u8> {
        Codec::new().encode(&self.0[(id - 1) as usize]).unwrap()
    }
    fn override_body(&self, id: u32, store: u32) -> Vec<u8> {
        let mut p = self.0[(id - 1) as usize].clone();
        p.price_cents += i64::from(store % 50) + 1;
        Codec::new().encode(&p).unwrap()
    }
}

struct Opaque;

impl Shape for Opaque {
    fn name(&self) -> &'static str {
        "opaque 120-byte records"
    }
    fn body(&self, id: u32) -> Vec<u8> {
        (0..120u32)
            .map(|i| (id.wrapping_mul(2_654_435_761) >> (i % 24)) as u8 ^ i as u8)
            .collect()
    }
    fn override_body(&self, id: u32, store: u32) -> Vec<u8> {
        let mut b = self.body(id);
        b[0] ^= (store as u8) | 1;
        b[1] = (store >> 8) as u8;
        b
    }
}

fn chain(shape: &dyn Shape, products: u32, stores: u32, pct: u32) -> ScopedDataset {
    let mut d = ScopedDataset::new("products", 10_000);
    let c = d
        .plan_replace(
            &Scope::Chain,
            (1..=products)
                .map(|id| (u64::from(id), Entry::Record(shape.body(id))))
                .collect(),
        )
        .unwrap();
    d.apply(&c);
    let per_store = products * pct / 100;
    for s in 0..stores {
        let scope = Scope::store(&format!("s{s}")).unwrap();
        let ids = (0..per_store).map(|k| (k * 7919 + s * 104_729) % products + 1);
        let c = d
            .plan_replace(
                &scope,
                ids.map(|id| (u64::from(id), Entry::Record(shape.override_body(id, s))))
                    .collect(),
            )
            .unwrap();
        d.apply(&c);
    }
    d
}

fn first_pull_bytes(d: &ScopedDataset, view: &View) -> usize {
    let state = LocalDataset::new("products").state();
    Codec::new()
        .encode(&PullResponse {
            datasets: vec![d.answer(&state, view)],
        })
        .unwrap()
        .len()
}

fn rss_kib() -> u64 {
    pdc_test::proc_status_kib("VmRSS:").unwrap_or(0)
}

fn figures() {
    let shapes: [Box<dyn Shape>; 2] = [
        Box::new(Products(pdc_datasets::catalog(5_000, 11))),
        Box::new(Opaque),
    ];
    for (n, shape) in shapes.iter().enumerate() {
        let single = chain(shape.as_ref(), 5_000, 0, 0);
        let single_bytes = first_pull_bytes(&single, &View::chain());
        let rss0 = rss_kib();
        let big = chain(shape.as_ref(), 5_000, 1_000, 5);
        for s in [0, 499, 999] {
            let v = View::store(&format!("s{s}")).unwrap();
            let b = first_pull_bytes(&big, &v);
            eprintln!(
                "[{}] first pull of store s{s} in a chain of 1,000 stores x 5,000 products, 5% overrides: {b} B vs single-store {single_bytes} B = {:.3}x",
                shape.name(),
                b as f64 / single_bytes as f64
            );
        }
        // Every store's view summarised once (what 1,000 connected stores
        // cost the server).
        for s in 0..1_000 {
            black_box(big.digest(&View::store(&format!("s{s}")).unwrap()));
        }
        let rss1 = rss_kib();
        let small = chain(shape.as_ref(), 5_000, 100, 5);
        for s in 0..100 {
            black_box(small.digest(&View::store(&format!("s{s}")).unwrap()));
        }
        // RSS only on the first shape: later ones reuse what the
        // allocator kept from it.
        let rss = if n == 0 {
            format!(
                "; 1,000 stores by RSS +{:.1} MB",
                rss1.saturating_sub(rss0) as f64 / 1024.0
            )
        } else {
            String::new()
        };
        eprintln!(
            "[{}] memory: chain alone {:.1} MB, 100 stores {:.1} MB, 1,000 stores {:.1} MB (estimate){rss}",
            shape.name(),
            single.memory_bytes() as f64 / 1e6,
            small.memory_bytes() as f64 / 1e6,
            big.memory_bytes() as f64 / 1e6,
        );
    }
}

fn pull(c: &mut Criterion) {
    figures();
    // A 50k-record catalogue, 100 stores with 5% overrides; a terminal of
    // store s7 at version v; then 100 changes its view sees (50 to the
    // chain, 50 to its store) and 100 to other stores.
    let shape = Opaque;
    let mut d = chain(&shape, 50_000, 100, 5);
    let view = View::store("s7").unwrap();
    let mut local = LocalDataset::new("products");
    local.apply(&d.answer(&local.state(), &view)).unwrap();
    let state = local.state();
    let mut plain = ServerDataset::new("products", 10_000);
    for id in 1..=50_000u32 {
        plain.upsert(u64::from(id), shape.body(id));
    }
    let plain_state = {
        let mut l = LocalDataset::new("products");
        l.apply(&plain.answer(&l.state())).unwrap();
        l.state()
    };
    let store = Scope::store("s7").unwrap();
    let other = Scope::store("s8").unwrap();
    for k in 0..50u32 {
        let id = k * 997 + 1;
        let ch = d
            .plan_update(
                &Scope::Chain,
                vec![(u64::from(id), Entry::Record(shape.override_body(id, 1_000)))],
                vec![],
            )
            .unwrap();
        d.apply(&ch);
        plain.upsert(u64::from(id), shape.override_body(id, 1_000));
        let id = k * 991 + 5;
        let ch = d
            .plan_update(
                &store,
                vec![(u64::from(id), Entry::Record(shape.override_body(id, 1_001)))],
                vec![],
            )
            .unwrap();
        d.apply(&ch);
        plain.upsert(u64::from(id), shape.override_body(id, 1_001));
        let ch = d
            .plan_update(
                &other,
                vec![(u64::from(id), Entry::Record(shape.override_body(id, 1_002)))],
                vec![],
            )
            .unwrap();
        d.apply(&ch);
    }
    let mut check = local.clone();
    let a = d.answer(&state, &view);
    check.apply(&a).unwrap();
    let pdc_sync::DatasetChange::Delta { upserts, .. } = &a.change else {
        panic!("expected a delta");
    };
    eprintln!(
        "scoped answer, 50k records, 100 changes seen by the view: {} upserts",
        upserts.len()
    );
    let mut g = c.benchmark_group("scoped_pull");
    g.bench_function("unscoped_50k_100_changed", |b| {
        b.iter(|| plain.answer(black_box(&plain_state)))
    });
    g.bench_function("store_view_50k_100_changed", |b| {
        b.iter(|| d.answer(black_box(&state), &view))
    });
    // The first answer after a change of the view's layers also digests
    // the whole view again (here: a terminal one change behind).
    let mut n = 0u32;
    g.bench_function("store_view_50k_first_after_change", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let before = DatasetState {
                    dataset: "products".into(),
                    version: Some(d.version()),
                    buckets: vec![],
                };
                let ch = d
                    .plan_update(
                        &store,
                        vec![(3, Entry::Record(shape.override_body(3, n)))],
                        vec![],
                    )
                    .unwrap();
                d.apply(&ch);
                let t = Instant::now();
                black_box(d.answer(black_box(&before), &view));
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, pull);
criterion_main!(benches);
