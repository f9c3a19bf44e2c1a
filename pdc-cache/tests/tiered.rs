//! The tiered cache through its public API: coherence against a model,
//! stale-while-revalidate single-flight, corrupt lower-tier entries,
//! event invalidation, offline serving.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use pdc_cache::{
    CacheTier, DatasetPolicy, Loader, MemoryLimits, MemoryTier, Refresh, Source, TierEntry,
    TieredCache,
};
use proptest::prelude::*;

/// A server whose data the test controls; can be taken offline.
#[derive(Default)]
struct Server {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
    offline: Mutex<bool>,
    loads: Mutex<u32>,
}

#[async_trait::async_trait]
impl Loader for Server {
    async fn load(&self, _dataset: &str, key: &str) -> Result<Vec<u8>, String> {
        *self.loads.lock().unwrap() += 1;
        if *self.offline.lock().unwrap() {
            return Err("offline".into());
        }
        self.data
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| "not found".into())
    }
}

fn policy(
    name: &str,
    tiers: &[&str],
    ttl: u64,
    refresh: Refresh,
    offline: u64,
    events: &[&str],
) -> DatasetPolicy {
    DatasetPolicy {
        dataset: name.into(),
        ttl_ms: ttl,
        tiers: tiers.iter().map(|s| (*s).to_owned()).collect(),
        invalidate_on: events.iter().map(|s| (*s).to_owned()).collect(),
        refresh,
        offline_ttl_ms: offline,
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Get(u8),
    Remove(u8),
    Invalidate,
    Advance(u16),
}

proptest! {
    /// Model: every update goes to the server and the cache; a lookup must
    /// then always return the server's current value (or fail to load when
    /// the server has none), whatever was evicted, expired or promoted
    /// between memory and two lower tiers.
    #[test]
    fn coherent_with_the_server_across_tiers(ops in proptest::collection::vec(prop_oneof![
        3 => (0u8..30, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        4 => (0u8..30).prop_map(Op::Get),
        1 => (0u8..30).prop_map(Op::Remove),
        1 => Just(Op::Invalidate),
        2 => (0u16..500).prop_map(Op::Advance),
    ], 1..150)) {
        let server = Server::default();
        let l2 = MemoryTier::new("l2", MemoryLimits::entries(8));
        let l3 = MemoryTier::new("l3", MemoryLimits::entries(20));
        let mut cache = TieredCache::new(
            MemoryLimits::entries(4),
            vec![Box::new(l2), Box::new(l3)],
            vec![policy("d", &["memory", "l2", "l3"], 300, Refresh::OnExpiry, 0, &["changed"])],
        ).unwrap();
        let d = cache.dataset("d").unwrap();
        let mut now = 1_000u64;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    server.data.lock().unwrap().insert(k.to_string(), vec![v]);
                    block(cache.put(d, &k.to_string(), &[v], &[], now)).unwrap();
                }
                Op::Get(k) => {
                    let want = server.data.lock().unwrap().get(&k.to_string()).cloned();
                    let got = block(cache.get(d, &k.to_string(), now, &server));
                    match want {
                        Some(w) => prop_assert_eq!(got.unwrap().value.to_vec(), w),
                        None => prop_assert!(got.is_err()),
                    }
                }
                Op::Remove(k) => {
                    server.data.lock().unwrap().remove(&k.to_string());
                    block(cache.remove(d, &k.to_string())).unwrap();
                }
                Op::Invalidate => { block(cache.invalidate_event("changed")).unwrap(); }
                Op::Advance(ms) => now += u64::from(ms),
            }
        }
    }
}

#[test]
fn stale_while_revalidate_is_single_flight_and_keeps_value_on_failure() {
    let server = Server::default();
    server
        .data
        .lock()
        .unwrap()
        .insert("p1".into(), b"v1".to_vec());
    let l3 = MemoryTier::new("l3", MemoryLimits::entries(100));
    let mut cache = TieredCache::new(
        MemoryLimits::entries(100),
        vec![Box::new(l3)],
        vec![policy(
            "product_data",
            &["l3"],
            1000,
            Refresh::StaleWhileRevalidate { grace_ms: 5000 },
            0,
            &[],
        )],
    )
    .unwrap();
    let p = cache.dataset("product_data").unwrap();
    let first = block(cache.get(p, "p1", 0, &server)).unwrap();
    assert_eq!(first.source, Source::Loader);
    server
        .data
        .lock()
        .unwrap()
        .insert("p1".into(), b"v2".to_vec());

    // Stale now: three readers, one ticket, answered at once with the old value.
    let a = block(cache.get(p, "p1", 2000, &server)).unwrap();
    let b = block(cache.get(p, "p1", 2001, &server)).unwrap();
    let c = block(cache.get(p, "p1", 2002, &server)).unwrap();
    assert!(a.stale && b.stale && c.stale);
    assert_eq!(&*a.value, b"v1");
    let ticket = a.refresh.expect("first reader refreshes");
    assert!(b.refresh.is_none() && c.refresh.is_none());
    assert_eq!(*server.loads.lock().unwrap(), 1, "no load on the read path");

    // A failed refresh keeps the stale value and is counted.
    *server.offline.lock().unwrap() = true;
    assert!(block(cache.refresh(ticket, &server, 2100)).is_err());
    assert_eq!(cache.stats().refreshes_failed, 1);
    let again = block(cache.get(p, "p1", 2200, &server)).unwrap();
    assert_eq!(&*again.value, b"v1");
    let ticket = again.refresh.expect("released after the failure");

    *server.offline.lock().unwrap() = false;
    block(cache.refresh(ticket, &server, 2300)).unwrap();
    let fresh = block(cache.get(p, "p1", 2400, &server)).unwrap();
    assert!(!fresh.stale);
    assert_eq!(&*fresh.value, b"v2");
    assert_eq!(cache.stats().refreshes_started, 2);
}

#[test]
fn a_corrupt_lower_tier_entry_is_never_returned() {
    let server = Server::default();
    server
        .data
        .lock()
        .unwrap()
        .insert("u1".into(), b"good".to_vec());
    // A frame damaged in storage: one flipped byte.
    let mut damaged = pdc_codec::Codec::new()
        .seal(pdc_cache::CACHE_VALUE_KIND, 1, false, b"evil")
        .unwrap();
    let n = damaged.len();
    damaged[n - 12] ^= 0x01;
    let entry = TierEntry {
        value: damaged,
        dataset: "users".into(),
        tags: vec![],
        fresh_until_ms: 1000,
        expires_at_ms: 1000,
    };
    let tier = MemoryTier::new("l3", MemoryLimits::entries(10));
    block(tier.put("u1", entry.clone())).unwrap();
    let mut cache2 = TieredCache::new(
        MemoryLimits::entries(10),
        vec![Box::new(tier)],
        vec![policy("users", &["l3"], 1000, Refresh::OnExpiry, 0, &[])],
    )
    .unwrap();
    let u2 = cache2.dataset("users").unwrap();
    let got = block(cache2.get(u2, "u1", 10, &server)).unwrap();
    assert_eq!(
        &*got.value, b"good",
        "loaded from the server, not the corrupt copy"
    );
    assert_eq!(got.source, Source::Loader);
    assert_eq!(cache2.stats().tiers[0].3, 1, "corrupt entry counted");
}

#[test]
fn events_invalidate_exactly_the_datasets_that_name_them() {
    let server = Server::default();
    for k in ["a", "b"] {
        server
            .data
            .lock()
            .unwrap()
            .insert(k.into(), k.as_bytes().to_vec());
    }
    let l3 = MemoryTier::new("l3", MemoryLimits::entries(100));
    let mut cache = TieredCache::new(
        MemoryLimits::entries(100),
        vec![Box::new(l3)],
        vec![
            policy(
                "users",
                &["memory", "l3"],
                10_000,
                Refresh::OnExpiry,
                0,
                &["user_logout"],
            ),
            policy(
                "products",
                &["memory", "l3"],
                10_000,
                Refresh::OnExpiry,
                0,
                &["price_update"],
            ),
        ],
    )
    .unwrap();
    let (u, p) = (
        cache.dataset("users").unwrap(),
        cache.dataset("products").unwrap(),
    );
    for ds in [u, p] {
        for k in ["a", "b"] {
            block(cache.get(ds, k, 0, &server)).unwrap();
        }
    }
    let removed = block(cache.invalidate_event("price_update")).unwrap();
    assert_eq!(removed, 4, "2 keys x (memory + l3) of products only");
    assert!(cache.get_cached(u, "a", 1).is_some());
    assert!(cache.get_cached(p, "a", 1).is_none());
    assert_eq!(block(cache.invalidate_event("nobody_listens")).unwrap(), 0);
}

#[test]
fn offline_stale_within_offline_ttl_is_served_and_flagged() {
    let server = Server::default();
    server
        .data
        .lock()
        .unwrap()
        .insert("c".into(), b"cfg".to_vec());
    let l3 = MemoryTier::new("l3", MemoryLimits::entries(100));
    let mut cache = TieredCache::new(
        MemoryLimits::entries(100),
        vec![Box::new(l3)],
        vec![policy(
            "config",
            &["memory", "l3"],
            1000,
            Refresh::OnExpiry,
            5000,
            &[],
        )],
    )
    .unwrap();
    let c = cache.dataset("config").unwrap();
    block(cache.get(c, "c", 0, &server)).unwrap();
    *server.offline.lock().unwrap() = true;
    let got = block(cache.get(c, "c", 3000, &server)).unwrap();
    assert!(got.stale);
    assert_eq!(&*got.value, b"cfg");
    assert!(
        block(cache.get(c, "c", 7000, &server)).is_err(),
        "past the offline TTL"
    );
    assert!(TieredCache::new(
        MemoryLimits::entries(1),
        vec![],
        vec![policy("x", &["l9"], 1, Refresh::OnExpiry, 0, &[])]
    )
    .is_err());
}

#[test]
fn default_policies_are_the_studys_and_serde_loadable() {
    let d = DatasetPolicy::defaults();
    let json = serde_json::to_string(&d).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<DatasetPolicy>>(&json).unwrap(),
        d
    );
    let users = d.iter().find(|p| p.dataset == "user_data").unwrap();
    assert_eq!(users.ttl_ms, 24 * 3_600_000);
    assert_eq!(users.tiers, vec!["memory", "l2", "l3"]);
    let products = d.iter().find(|p| p.dataset == "product_data").unwrap();
    assert!(matches!(
        products.refresh,
        Refresh::StaleWhileRevalidate { .. }
    ));
}

#[test]
fn ttl_boundaries_are_exact_on_a_manual_clock() {
    use pdc_clock::{Clock, ManualClock};
    use std::time::Duration;
    let clock = ManualClock::new(1_704_067_200_000);
    let server = Server::default();
    server
        .data
        .lock()
        .unwrap()
        .insert("k".into(), b"v".to_vec());
    let l2 = MemoryTier::new("l2", MemoryLimits::entries(10));
    let mut cache = TieredCache::new(
        MemoryLimits::entries(10),
        vec![Box::new(l2)],
        vec![policy(
            "d",
            &["memory", "l2"],
            60_000,
            Refresh::OnExpiry,
            0,
            &[],
        )],
    )
    .unwrap();
    let d = cache.dataset("d").unwrap();
    block(cache.get(d, "k", clock.wall_ms(), &server)).unwrap();
    clock.advance(Duration::from_millis(59_999));
    assert!(
        cache.get_cached(d, "k", clock.wall_ms()).is_some(),
        "fresh 1 ms before its TTL"
    );
    assert_eq!(
        block(cache.get(d, "k", clock.wall_ms(), &server))
            .unwrap()
            .source,
        Source::Memory
    );
    clock.advance(Duration::from_millis(1));
    assert!(
        cache.get_cached(d, "k", clock.wall_ms()).is_none(),
        "expired at its TTL"
    );
    let loads = *server.loads.lock().unwrap();
    assert_eq!(
        block(cache.get(d, "k", clock.wall_ms(), &server))
            .unwrap()
            .source,
        Source::Loader
    );
    assert_eq!(*server.loads.lock().unwrap(), loads + 1);
}
