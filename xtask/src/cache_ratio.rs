//! `cargo xtask cache-ratio [--json]`: hit ratios of pdc's memory cache,
//! quick_cache and lru on a Zipf(0.99) stream over 1M keys with capacity
//! 10k, and on the same stream polluted by one-off sequential scans (a
//! terminal paging through the whole catalogue); plus pdc's memory per
//! entry for u64 → u64.

use std::num::NonZeroUsize;

use pdc_cache::{MemoryCache, MemoryLimits};
use rand::{Rng, SeedableRng};

const KEYS: usize = 1_000_000;
const CAP: usize = 10_000;
const REQUESTS: usize = 2_000_000;

fn zipf_stream(seed: u64) -> Vec<u64> {
    let mut acc = 0.0;
    let cdf: Vec<f64> = (1..=KEYS)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(0.99);
            acc
        })
        .collect();
    let total = acc;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..REQUESTS)
        .map(|_| {
            let u = r.gen::<f64>() * total;
            cdf.partition_point(|&c| c < u) as u64
        })
        .collect()
}

/// Every 20,000 requests, a scan of 5,000 keys never seen again.
fn scan_polluted(zipf: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(zipf.len() * 5 / 4);
    let mut next_scan = KEYS as u64 + 1;
    for (i, &k) in zipf.iter().enumerate() {
        if i % 20_000 == 0 {
            for _ in 0..5_000 {
                out.push(next_scan);
                next_scan += 1;
            }
        }
        out.push(k);
    }
    out
}

fn ratio(stream: &[u64], mut get_or_insert: impl FnMut(u64) -> bool) -> f64 {
    let hits = stream.iter().filter(|&&k| get_or_insert(k)).count();
    hits as f64 / stream.len() as f64
}

fn pdc(stream: &[u64]) -> f64 {
    let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(CAP));
    ratio(stream, |k| {
        if c.get(&k, 0).is_some() {
            true
        } else {
            c.insert(k, k, 1, u64::MAX, 0);
            false
        }
    })
}

fn quick(stream: &[u64]) -> f64 {
    let mut c: quick_cache::unsync::Cache<u64, u64> = quick_cache::unsync::Cache::new(CAP);
    ratio(stream, |k| {
        if c.get(&k).is_some() {
            true
        } else {
            c.insert(k, k);
            false
        }
    })
}

fn lru(stream: &[u64]) -> f64 {
    let mut c = lru::LruCache::<u64, u64>::new(NonZeroUsize::new(CAP).unwrap_or(NonZeroUsize::MIN));
    ratio(stream, |k| {
        if c.get(&k).is_some() {
            true
        } else {
            c.put(k, k);
            false
        }
    })
}

fn memory_per_entry() -> f64 {
    let n = 100_000usize;
    let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(n));
    // Fill twice over so that the ghost queue is full too.
    for k in 0..(2 * n) as u64 {
        c.insert(k, k, 1, u64::MAX, 0);
    }
    c.memory_bytes() as f64 / c.len() as f64
}

pub fn run(json: bool) -> Result<(), String> {
    let zipf = zipf_stream(1);
    let scan = scan_polluted(&zipf);
    let results = [
        ("zipf_pdc", pdc(&zipf)),
        ("zipf_quick_cache", quick(&zipf)),
        ("zipf_lru", lru(&zipf)),
        ("scan_pdc", pdc(&scan)),
        ("scan_quick_cache", quick(&scan)),
        ("scan_lru", lru(&scan)),
        ("memory_bytes_per_entry_pdc", memory_per_entry()),
    ];
    if json {
        let obj: serde_json::Map<String, serde_json::Value> = results
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        println!("{}", serde_json::Value::Object(obj));
    } else {
        println!("Hit ratio, capacity {CAP}, {REQUESTS} Zipf(0.99) requests over {KEYS} keys (scan: + 5,000-key scans every 20,000 requests)");
        for (k, v) in results {
            println!("{k:<28} {v:.4}");
        }
    }
    Ok(())
}
