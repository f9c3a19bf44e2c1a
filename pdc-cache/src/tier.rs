//! The storage-agnostic seam for one tier, the memory tier that implements
//! it, and the conformance suite every tier passes.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::memory::{MemoryCache, MemoryLimits};
use crate::{CacheError, CacheStats};

/// What a tier stores under a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierEntry {
    /// The value (in persistent tiers, a pdc-codec frame with a checksum).
    pub value: Vec<u8>,
    /// The dataset it belongs to.
    pub dataset: String,
    /// Tags for targeted invalidation.
    pub tags: Vec<String>,
    /// Wall ms after which it is stale.
    pub fresh_until_ms: u64,
    /// Wall ms after which it is gone (≥ `fresh_until_ms`: the
    /// stale-while-revalidate and offline grace).
    pub expires_at_ms: u64,
}

/// One storage tier of the cache. Lower tiers may be asynchronous (a
/// browser's IndexedDB is async-only), so the trait is async; on wasm32 its
/// futures need not be `Send`.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait CacheTier: Send + Sync {
    /// The tier's name, as policies refer to it (`memory`, `l2`, `l3`).
    fn name(&self) -> &str;
    /// The entry under `key` unless it expired by `now_ms` (an expired
    /// entry is removed).
    async fn get(&self, key: &str, now_ms: u64) -> Result<Option<TierEntry>, CacheError>;
    /// Stores an entry, replacing any under `key`.
    async fn put(&self, key: &str, entry: TierEntry) -> Result<(), CacheError>;
    /// Removes `key`; whether it was there.
    async fn remove(&self, key: &str) -> Result<bool, CacheError>;
    /// Removes every entry of `dataset`; how many.
    async fn invalidate_dataset(&self, dataset: &str) -> Result<usize, CacheError>;
    /// Removes every entry tagged `tag`; how many.
    async fn invalidate_tag(&self, tag: &str) -> Result<usize, CacheError>;
    /// Removes up to `max` expired entries; how many.
    async fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize, CacheError>;
    /// Entries held.
    async fn entry_count(&self) -> Result<usize, CacheError>;
    /// Bytes of values held.
    async fn bytes(&self) -> Result<u64, CacheError>;
    /// Counters.
    fn stats(&self) -> CacheStats;
}

/// A [`CacheTier`] in memory over [`MemoryCache`], bounded by entries and
/// bytes.
pub struct MemoryTier {
    name: String,
    inner: Mutex<MemoryCache<String, TierEntry>>,
    /// Dataset name → group id for O(1) group tags on entries.
    groups: Mutex<Vec<String>>,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MemoryTier {
    /// A memory tier.
    pub fn new(name: impl Into<String>, limits: MemoryLimits) -> Self {
        MemoryTier {
            name: name.into(),
            inner: Mutex::new(MemoryCache::new(limits)),
            groups: Mutex::new(Vec::new()),
        }
    }

    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, MemoryCache<String, TierEntry>>, CacheError> {
        self.inner.lock().map_err(|_| CacheError::Tier {
            tier: self.name.clone(),
            message: "lock poisoned".into(),
        })
    }

    fn group(&self, dataset: &str) -> u16 {
        let Ok(mut g) = self.groups.lock() else {
            return u16::MAX;
        };
        match g.iter().position(|d| d == dataset) {
            Some(i) => i as u16,
            None if g.len() < usize::from(u16::MAX) => {
                g.push(dataset.to_owned());
                (g.len() - 1) as u16
            }
            None => u16::MAX,
        }
    }
}

fn weight(key: &str, e: &TierEntry) -> u32 {
    let w = key.len()
        + e.value.len()
        + e.dataset.len()
        + e.tags.iter().map(String::len).sum::<usize>()
        + 64;
    u32::try_from(w).unwrap_or(u32::MAX)
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl CacheTier for MemoryTier {
    fn name(&self) -> &str {
        &self.name
    }
    async fn get(&self, key: &str, now_ms: u64) -> Result<Option<TierEntry>, CacheError> {
        Ok(self.lock()?.get(key, now_ms).cloned())
    }
    async fn put(&self, key: &str, entry: TierEntry) -> Result<(), CacheError> {
        let group = self.group(&entry.dataset);
        let w = weight(key, &entry);
        let exp = entry.expires_at_ms;
        self.lock()?.insert(key.to_owned(), entry, w, exp, group);
        Ok(())
    }
    async fn remove(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.lock()?.remove(key))
    }
    async fn invalidate_dataset(&self, dataset: &str) -> Result<usize, CacheError> {
        let group = self.group(dataset);
        Ok(self.lock()?.invalidate_group(group))
    }
    async fn invalidate_tag(&self, tag: &str) -> Result<usize, CacheError> {
        Ok(self
            .lock()?
            .invalidate_where(|_, e| e.tags.iter().any(|t| t == tag)))
    }
    async fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize, CacheError> {
        Ok(self.lock()?.purge_expired(now_ms, max))
    }
    async fn entry_count(&self) -> Result<usize, CacheError> {
        Ok(self.lock()?.len())
    }
    async fn bytes(&self) -> Result<u64, CacheError> {
        Ok(self.lock()?.weight())
    }
    fn stats(&self) -> CacheStats {
        self.inner
            .lock()
            .map(|c| c.stats().clone())
            .unwrap_or_default()
    }
}

/// The conformance suite for [`CacheTier`] implementations. `make` gives a
/// fresh, empty tier that can hold at least 100 entries of 1 KiB. Panics
/// on the first violation (it is a test helper); drive it with any
/// executor (e.g. `pollster::block_on(conformance(...))`).
pub async fn conformance<T: CacheTier>(make: impl Fn() -> T) {
    let entry = |v: &[u8], ds: &str, tags: &[&str], fresh: u64, exp: u64| TierEntry {
        value: v.to_vec(),
        dataset: ds.into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        fresh_until_ms: fresh,
        expires_at_ms: exp,
    };
    let ok = |r: Result<(), CacheError>| r.unwrap_or_else(|e| panic!("tier failed: {e}"));
    let t = make();
    assert_eq!(t.get("a", 0).await.ok(), Some(None), "empty tier");
    ok(t.put("a", entry(b"1", "products", &["p"], 10, 20)).await);
    assert_eq!(
        t.get("a", 5).await.ok().flatten().map(|e| e.value),
        Some(b"1".to_vec())
    );
    assert_eq!(
        t.get("a", 15).await.ok().flatten().map(|e| e.value),
        Some(b"1".to_vec()),
        "stale but not expired"
    );
    assert_eq!(
        t.get("a", 20).await.ok(),
        Some(None),
        "expired at expires_at_ms"
    );
    ok(t.put("a", entry(b"2", "products", &[], 100, 200)).await);
    ok(t.put("a", entry(b"3", "products", &[], 100, 200)).await);
    assert_eq!(
        t.get("a", 0).await.ok().flatten().map(|e| e.value),
        Some(b"3".to_vec()),
        "put replaces"
    );
    assert_eq!(t.entry_count().await.ok(), Some(1));
    assert_eq!(t.remove("a").await.ok(), Some(true));
    assert_eq!(t.remove("a").await.ok(), Some(false));

    // Invalidation touches exactly the named dataset or tag.
    ok(t.put("p1", entry(b"x", "products", &["promo"], 100, 200))
        .await);
    ok(t.put("p2", entry(b"x", "products", &[], 100, 200)).await);
    ok(t.put("u1", entry(b"x", "users", &["promo"], 100, 200))
        .await);
    ok(t.put("c1", entry(b"x", "config", &[], 100, 200)).await);
    assert_eq!(t.invalidate_tag("promo").await.ok(), Some(2));
    assert_eq!(t.get("p1", 0).await.ok(), Some(None));
    assert_eq!(t.get("u1", 0).await.ok(), Some(None));
    assert!(t.get("p2", 0).await.ok().flatten().is_some());
    assert_eq!(t.invalidate_dataset("products").await.ok(), Some(1));
    assert!(
        t.get("c1", 0).await.ok().flatten().is_some(),
        "other datasets untouched"
    );

    // Purge removes expired entries in bounded steps.
    let t = make();
    for i in 0..50u64 {
        ok(t.put(
            &format!("k{i}"),
            entry(&[0; 1024], "d", &[], 5, if i % 2 == 0 { 10 } else { 1000 }),
        )
        .await);
    }
    let before = t.bytes().await.unwrap_or(0);
    assert!(before > 0, "a tier accounts the bytes it holds");
    let mut purged = 0;
    for _ in 0..100 {
        purged += t.purge_expired(500, 10).await.unwrap_or(0);
    }
    assert_eq!(purged, 25);
    assert_eq!(t.entry_count().await.ok(), Some(25));
    // Tiers may compress; what they hold must shrink with what they drop.
    let after = t.bytes().await.unwrap_or(0);
    assert!(after > 0 && after < before, "bytes {before} -> {after}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_tier_conforms() {
        pollster::block_on(super::conformance(|| {
            super::MemoryTier::new(
                "memory",
                crate::MemoryLimits {
                    max_entries: 1000,
                    max_weight: 10 << 20,
                },
            )
        }));
    }
}
