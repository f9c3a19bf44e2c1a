//! pdc-cache's memory tier beside quick_cache (unsync), lru (behind a
//! mutex, as a shared cache must be) and moka (sync): get-hit and
//! insert-with-eviction, u64 keys and values, 100k capacity; and the tiered
//! cache's L1 hit path against the memory tier alone.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::Mutex;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pdc_cache::{DatasetPolicy, MemoryCache, MemoryLimits, Refresh, TieredCache};

const CAP: usize = 100_000;
const OPS: u64 = 10_000;

fn keys() -> Vec<u64> {
    // A pseudo-random walk over the resident keys.
    (0..OPS)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) % CAP as u64)
        .collect()
}

/// Get-hit on uniformly random resident keys (a xorshift over 0..n) at
/// 1k to 1M entries, pdc beside quick_cache: the table's cache misses grow
/// with the size, which one size hides.
fn get_hit_by_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_get_hit_random");
    g.throughput(Throughput::Elements(OPS));
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let ks: Vec<u64> = (0..OPS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % n as u64
            })
            .collect();
        let mut pdc: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(n));
        let mut qc: quick_cache::unsync::Cache<u64, u64> = quick_cache::unsync::Cache::new(n);
        for k in 0..n as u64 {
            pdc.insert(k, k, 1, u64::MAX, 0);
            qc.insert(k, k);
        }
        assert!(ks
            .iter()
            .all(|k| pdc.get(k, 1).is_some() && qc.get(k).is_some()));
        g.bench_function(format!("pdc/{n}"), |b| {
            b.iter(|| {
                for k in &ks {
                    black_box(pdc.get(k, 1));
                }
            })
        });
        g.bench_function(format!("quick_cache/{n}"), |b| {
            b.iter(|| {
                for k in &ks {
                    black_box(qc.get(k));
                }
            })
        });
    }
    g.finish();
}

fn get_hit(c: &mut Criterion) {
    let ks = keys();
    let mut g = c.benchmark_group("cache_get_hit");
    g.throughput(Throughput::Elements(OPS));
    let mut pdc: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(CAP));
    let mut qc: quick_cache::unsync::Cache<u64, u64> = quick_cache::unsync::Cache::new(CAP);
    let lru = Mutex::new(lru::LruCache::<u64, u64>::new(
        NonZeroUsize::new(CAP).unwrap(),
    ));
    let moka: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(CAP as u64);
    for k in 0..CAP as u64 {
        pdc.insert(k, k, 1, u64::MAX, 0);
        qc.insert(k, k);
        lru.lock().unwrap().put(k, k);
        moka.insert(k, k);
    }
    g.bench_function("pdc", |b| {
        b.iter(|| {
            for k in &ks {
                black_box(pdc.get(k, 1));
            }
        })
    });
    g.bench_function("quick_cache", |b| {
        b.iter(|| {
            for k in &ks {
                black_box(qc.get(k));
            }
        })
    });
    g.bench_function("lru", |b| {
        b.iter(|| {
            for k in &ks {
                black_box(lru.lock().unwrap().get(k).copied());
            }
        })
    });
    g.bench_function("moka", |b| {
        b.iter(|| {
            for k in &ks {
                black_box(moka.get(k));
            }
        })
    });

    // The tiered cache's synchronous L1 path on the same keys.
    let policy = DatasetPolicy {
        dataset: "d".into(),
        ttl_ms: u64::MAX / 4,
        tiers: vec!["memory".into()],
        invalidate_on: vec![],
        refresh: Refresh::OnExpiry,
        offline_ttl_ms: 0,
    };
    let mut tiered = TieredCache::new(MemoryLimits::entries(CAP), vec![], vec![policy]).unwrap();
    let d = tiered.dataset("d").unwrap();
    let skeys: Vec<String> = ks.iter().map(|k| k.to_string()).collect();
    let mut mem_str: MemoryCache<String, u64> = MemoryCache::new(MemoryLimits::entries(CAP));
    for k in 0..CAP as u64 {
        pollster::block_on(tiered.put(d, &k.to_string(), &k.to_le_bytes(), &[], 0)).unwrap();
        mem_str.insert(k.to_string(), k, 1, u64::MAX, 0);
    }
    g.bench_function("tiered_l1_str", |b| {
        b.iter(|| {
            for k in &skeys {
                black_box(tiered.get_cached(d, k, 1));
            }
        })
    });
    g.bench_function("pdc_str", |b| {
        b.iter(|| {
            for k in &skeys {
                black_box(mem_str.get(k.as_str(), 1));
            }
        })
    });
    g.finish();
}

fn insert_evict(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_insert_evict");
    g.throughput(Throughput::Elements(OPS));
    let mut pdc: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(CAP));
    let mut qc: quick_cache::unsync::Cache<u64, u64> = quick_cache::unsync::Cache::new(CAP);
    let lru = Mutex::new(lru::LruCache::<u64, u64>::new(
        NonZeroUsize::new(CAP).unwrap(),
    ));
    let moka: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(CAP as u64);
    let mut next = [0u64; 4];
    g.bench_function("pdc", |b| {
        b.iter(|| {
            for _ in 0..OPS {
                next[0] += 1;
                pdc.insert(next[0], next[0], 1, u64::MAX, 0);
            }
        })
    });
    g.bench_function("quick_cache", |b| {
        b.iter(|| {
            for _ in 0..OPS {
                next[1] += 1;
                qc.insert(next[1], next[1]);
            }
        })
    });
    g.bench_function("lru", |b| {
        b.iter(|| {
            for _ in 0..OPS {
                next[2] += 1;
                lru.lock().unwrap().put(next[2], next[2]);
            }
        })
    });
    g.bench_function("moka", |b| {
        b.iter(|| {
            for _ in 0..OPS {
                next[3] += 1;
                moka.insert(next[3], next[3]);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, get_hit, get_hit_by_size, insert_evict);
criterion_main!(benches);
