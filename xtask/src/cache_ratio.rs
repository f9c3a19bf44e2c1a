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

use crate::engine_figures::rss_kib;

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

/// In a fresh process: fills cache `name` of `n` entries with 4n distinct
/// u64 → u64 inserts (the steady state: full, and the ghost full of the
/// keys pushed out), then prints the RSS growth per entry and, for pdc,
/// what `memory_bytes()` claims per entry.
pub fn rss_child(name: &str, n: usize) -> Result<(), String> {
    let before = rss_kib("VmRSS:");
    let per = |kib: u64| (kib.saturating_sub(before) * 1024) as f64 / n as f64;
    let keys = 0..(4 * n) as u64;
    match name {
        "pdc" => {
            let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(n));
            for k in keys {
                c.put(k);
            }
            let claimed = c.memory_bytes() as f64 / n as f64;
            println!("{name} {n} {:.1} {claimed:.1}", per(rss_kib("VmRSS:")));
            std::hint::black_box(&c);
        }
        "quick_cache" => {
            let mut c = quick_cache::unsync::Cache::<u64, u64>::new(n);
            for k in keys {
                ReadThrough::put(&mut c, k);
            }
            println!("{name} {n} {:.1} -", per(rss_kib("VmRSS:")));
            std::hint::black_box(&c);
        }
        "moka" => {
            let mut c = moka::sync::Cache::<u64, u64>::new(n as u64);
            for k in keys {
                ReadThrough::put(&mut c, k);
            }
            c.run_pending_tasks();
            println!("{name} {n} {:.1} -", per(rss_kib("VmRSS:")));
            std::hint::black_box(&c);
        }
        "lru" => {
            let cap = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
            let mut c = LruCache::<u64, u64>::new(cap);
            for k in keys {
                ReadThrough::put(&mut c, k);
            }
            println!("{name} {n} {:.1} -", per(rss_kib("VmRSS:")));
            std::hint::black_box(&c);
        }
        other => return Err(format!("unknown cache {other}")),
    }
    Ok(())
}

/// `cargo xtask cache-ratio --rss`: [`rss_child`] for every cache at 100k
/// and 1M entries, each in its own process (an allocator that already grew
/// would hide the growth).
pub fn rss() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    println!("| entries | cache | RSS growth per entry | memory_bytes() per entry |");
    println!("|---|---|---|---|");
    for n in [100_000usize, 1_000_000] {
        for name in CACHES {
            let out = std::process::Command::new(&exe)
                .args(["cache-rss-child", name, &n.to_string()])
                .output()
                .map_err(|e| e.to_string())?;
            let line = String::from_utf8_lossy(&out.stdout);
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 4 {
                return Err(format!(
                    "{name}: {line} {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            println!("| {n} | {name} | {} B | {} |", f[2], f[3]);
        }
    }
    Ok(())
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
    if args.iter().any(|a| a == "--rss") {
        return rss();
    }
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
