//! `cargo xtask cache-ratio [--json] [--keys N] [--requests N] [--seed S]`:
//! hit ratios of pdc's memory cache beside quick_cache, moka and lru on the
//! seven trace families of `pdc_datasets::traces`, each at capacities of
//! 1%, 5% and 10% of the keys (default 100,000 keys, 1,000,000 requests,
//! seed 1); plus pdc's memory per entry for u64 → u64. Every cell is
//! printed (no averages); the ratios are deterministic up to the hash
//! seeds of the caches' tables.

use std::num::NonZeroUsize;

use lru::LruCache;
use pdc_cache::{MemoryCache, MemoryLimits};
use pdc_datasets::traces::Family;

/// The caches compared, in column order.
const CACHES: [&str; 4] = ["pdc", "quick_cache", "moka", "lru"];

/// A cache as the suite drives it: read, and insert on a miss.
trait ReadThrough {
    fn hit(&mut self, k: u64) -> bool;
    fn put(&mut self, k: u64);
}

impl ReadThrough for MemoryCache<u64, u64> {
    fn hit(&mut self, k: u64) -> bool {
        self.get(&k, 0).is_some()
    }
    fn put(&mut self, k: u64) {
        self.insert(k, k, 1, u64::MAX, 0);
    }
}

impl ReadThrough for quick_cache::unsync::Cache<u64, u64> {
    fn hit(&mut self, k: u64) -> bool {
        self.get(&k).is_some()
    }
    fn put(&mut self, k: u64) {
        self.insert(k, k);
    }
}

impl ReadThrough for moka::sync::Cache<u64, u64> {
    fn hit(&mut self, k: u64) -> bool {
        self.get(&k).is_some()
    }
    fn put(&mut self, k: u64) {
        self.insert(k, k);
    }
}

impl ReadThrough for lru::LruCache<u64, u64> {
    fn hit(&mut self, k: u64) -> bool {
        self.get(&k).is_some()
    }
    fn put(&mut self, k: u64) {
        LruCache::put(self, k, k);
    }
}

fn ratio(stream: &[u64], mut cache: impl ReadThrough) -> f64 {
    let mut hits = 0usize;
    for &k in stream {
        if cache.hit(k) {
            hits += 1;
        } else {
            cache.put(k);
        }
    }
    hits as f64 / stream.len().max(1) as f64
}

/// The hit ratio of cache `name` with `cap` entries on `stream`, each miss
/// followed by an insert (a read-through cache).
pub fn hit_ratio(name: &str, cap: usize, stream: &[u64]) -> f64 {
    match name {
        "pdc" => ratio(stream, MemoryCache::new(MemoryLimits::entries(cap))),
        "quick_cache" => ratio(stream, quick_cache::unsync::Cache::new(cap)),
        "moka" => ratio(stream, moka::sync::Cache::new(cap as u64)),
        _ => ratio(
            stream,
            LruCache::new(NonZeroUsize::new(cap).unwrap_or(NonZeroUsize::MIN)),
        ),
    }
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

fn flag(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let json = args.iter().any(|a| a == "--json");
    let keys = flag(args, "--keys", 100_000)? as usize;
    let requests = flag(args, "--requests", 1_000_000)? as usize;
    let seed = flag(args, "--seed", 1)?;
    let mut cells = Vec::new();
    if !json {
        println!(
            "Hit ratio: {keys} keys, {requests} requests, seed {seed}; capacity as % of the keys"
        );
        println!("| trace | capacity | pdc | quick_cache | moka | lru | pdc − quick_cache |");
        println!("|---|---|---|---|---|---|---|");
    }
    for family in Family::ALL {
        let trace = family.trace(keys, requests, seed);
        for percent in [1usize, 5, 10] {
            let cap = (keys * percent / 100).max(1);
            let r: Vec<f64> = CACHES.iter().map(|c| hit_ratio(c, cap, &trace)).collect();
            if !json {
                println!(
                    "| {} | {percent}% ({cap}) | {:.4} | {:.4} | {:.4} | {:.4} | {:+.4} |",
                    family.name(),
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[0] - r[1]
                );
            }
            cells.push(serde_json::json!({
                "trace": family.name(), "capacity_percent": percent, "capacity": cap,
                "pdc": r[0], "quick_cache": r[1], "moka": r[2], "lru": r[3],
            }));
        }
    }
    let memory = memory_per_entry();
    if json {
        let out = serde_json::json!({
            "keys": keys, "requests": requests, "seed": seed, "cells": cells,
            "memory_bytes_per_entry_pdc": memory,
        });
        println!("{out}");
    } else {
        println!("memory_bytes_per_entry_pdc {memory:.1}");
    }
    Ok(())
}
