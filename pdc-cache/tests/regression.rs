//! One test per fixed bug of pdc-cache, named after the bug.
#![allow(clippy::unwrap_used)]

use pdc_cache::{MemoryCache, MemoryLimits};

/// Found while working on issue 17: the probation queue was sized and
/// emptied by entry count only, so a cache bound by its byte budget (far
/// fewer entries fit than `max_entries`) let every new key into main and
/// a scan flushed the working set.
#[test]
fn a_scan_flushes_a_cache_bound_by_weight() {
    let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits {
        max_entries: 100_000,
        max_weight: 1_000,
    });
    for round in 0..5 {
        // The working set is read several times between scans.
        for _ in 0..3 {
            for k in 0..50 {
                if c.get(&k, 0).is_none() {
                    c.insert(k, k, 10, u64::MAX, 0);
                }
            }
        }
        // A one-off scan of 1,000 keys.
        for k in 10_000 + round * 1000..11_000 + round * 1000 {
            c.insert(k, k, 10, u64::MAX, 0);
        }
    }
    assert!(c.weight() <= 1_000);
    let hot = (0..50).filter(|k| c.get(k, 0).is_some()).count();
    assert!(hot >= 45, "{hot} of 50 hot keys survived");
}
