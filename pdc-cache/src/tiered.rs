//! The tiered cache: L1 memory, then any [`CacheTier`]s, then a [`Loader`].

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use hashbrown::Equivalent;
use pdc_codec::{Codec, RecordKind};

use crate::memory::{MemoryCache, MemoryLimits};
use crate::{CacheError, CacheStats, CacheTier, DatasetPolicy, Refresh, TierEntry};

/// Frame kind of cached values in persistent tiers.
pub const CACHE_VALUE_KIND: RecordKind = RecordKind(6);

/// The server fetch behind the cache.
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait Loader {
    /// Loads the current value of `key` in `dataset`, or says why not.
    async fn load(&self, dataset: &str, key: &str) -> Result<Vec<u8>, String>;
}

/// A dataset's handle: resolve a name once, then look up without hashing
/// the dataset name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatasetId(u16);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct L1Key(u16, Box<str>);

#[derive(Hash)]
struct L1Ref<'a>(u16, &'a str);

impl Equivalent<L1Key> for L1Ref<'_> {
    fn equivalent(&self, k: &L1Key) -> bool {
        self.0 == k.0 && self.1 == &*k.1
    }
}

#[derive(Debug, Clone)]
struct L1Value {
    bytes: Arc<[u8]>,
    fresh_until: u64,
}

#[derive(Debug)]
struct Compiled {
    policy: DatasetPolicy,
    in_l1: bool,
    /// Indices into `tiers`, top first.
    lower: Vec<usize>,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The memory tier.
    Memory,
    /// A lower tier (index in the order given to [`TieredCache::new`]).
    Tier(usize),
    /// The loader.
    Loader,
}

/// A permission to refresh one stale key: only one exists per key at a time
/// (single-flight). Pass it to [`TieredCache::refresh`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a stale value was served: run the refresh or drop the ticket to allow another"]
pub struct RefreshTicket {
    dataset: DatasetId,
    key: String,
}

/// The answer to a lookup.
#[derive(Debug)]
pub struct Lookup {
    /// The value.
    pub value: Arc<[u8]>,
    /// Whether it is past its TTL (served under stale-while-revalidate, or
    /// offline): a UI can show a "refresh" badge.
    pub stale: bool,
    /// Where it came from.
    pub source: Source,
    /// Present when this lookup must start the key's refresh.
    pub refresh: Option<RefreshTicket>,
}

/// Counters of the tiered cache and each tier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TieredStats {
    /// The memory tier's counters.
    pub memory: CacheStats,
    /// Per lower tier: (name, hits, misses, corrupt entries removed).
    pub tiers: Vec<(String, u64, u64, u64)>,
    /// Loads from the loader.
    pub loads: u64,
    /// Loads that failed.
    pub load_failures: u64,
    /// Stale values served (SWR or offline).
    pub stale_served: u64,
    /// Refreshes started (tickets issued).
    pub refreshes_started: u64,
    /// Refreshes that failed (the stale value was kept).
    pub refreshes_failed: u64,
    /// Entries promoted from a lower tier to the tiers above.
    pub promotions: u64,
    /// Errors from lower tiers that were skipped.
    pub tier_errors: u64,
}

impl TieredStats {
    /// Hits over lookups across all tiers (a lookup hit in any tier counts once).
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.memory.hits + self.memory.misses;
        let lower_hits: u64 = self.tiers.iter().map(|t| t.1).sum();
        if lookups == 0 {
            return 0.0;
        }
        (self.memory.hits + lower_hits) as f64 / lookups as f64
    }
}

/// The multi-tier cache (see the crate docs).
pub struct TieredCache {
    /// Shared so a lookup can hold its dataset's policy across awaits
    /// without copying it.
    compiled: Vec<Arc<Compiled>>,
    names: HashMap<String, u16>,
    events: HashMap<String, Vec<u16>>,
    l1: MemoryCache<L1Key, L1Value>,
    tiers: Vec<Box<dyn CacheTier>>,
    codec: Codec,
    refreshing: HashSet<(u16, String)>,
    stats: TieredStats,
}

impl std::fmt::Debug for TieredCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredCache")
            .field("datasets", &self.names)
            .field("l1", &self.l1)
            .finish_non_exhaustive()
    }
}

impl TieredCache {
    /// A cache with an L1 of `l1` limits, the lower `tiers` in order, and
    /// the dataset policies. Every tier a policy names must exist
    /// (`memory` is the L1).
    pub fn new(
        l1: MemoryLimits,
        tiers: Vec<Box<dyn CacheTier>>,
        policies: Vec<DatasetPolicy>,
    ) -> Result<Self, CacheError> {
        let mut compiled = Vec::new();
        let mut names = HashMap::new();
        let mut events: HashMap<String, Vec<u16>> = HashMap::new();
        for (i, policy) in policies.into_iter().enumerate() {
            let id =
                u16::try_from(i).map_err(|_| CacheError::UnknownDataset(policy.dataset.clone()))?;
            let mut in_l1 = false;
            let mut lower = Vec::new();
            for t in &policy.tiers {
                if t == "memory" {
                    in_l1 = true;
                } else {
                    let idx = tiers.iter().position(|x| x.name() == t).ok_or_else(|| {
                        CacheError::UnknownTier {
                            dataset: policy.dataset.clone(),
                            tier: t.clone(),
                        }
                    })?;
                    lower.push(idx);
                }
            }
            for e in &policy.invalidate_on {
                events.entry(e.clone()).or_default().push(id);
            }
            names.insert(policy.dataset.clone(), id);
            compiled.push(Arc::new(Compiled {
                policy,
                in_l1,
                lower,
            }));
        }
        let stats = TieredStats {
            tiers: tiers
                .iter()
                .map(|t| (t.name().to_owned(), 0, 0, 0))
                .collect(),
            ..TieredStats::default()
        };
        Ok(TieredCache {
            compiled,
            names,
            events,
            l1: MemoryCache::new(l1),
            tiers,
            codec: Codec::new(),
            refreshing: HashSet::new(),
            stats,
        })
    }

    /// The handle of a dataset.
    pub fn dataset(&self, name: &str) -> Result<DatasetId, CacheError> {
        self.names
            .get(name)
            .map(|&i| DatasetId(i))
            .ok_or_else(|| CacheError::UnknownDataset(name.into()))
    }

    fn policy(&self, ds: DatasetId) -> Arc<Compiled> {
        Arc::clone(&self.compiled[usize::from(ds.0)])
    }

    /// The L1 hit path: a fresh value from memory, synchronous and
    /// allocation-free (a borrow). `None` means "ask [`get`](Self::get)".
    #[inline]
    pub fn get_cached(&mut self, ds: DatasetId, key: &str, now_ms: u64) -> Option<&[u8]> {
        let v = self.l1.get(&L1Ref(ds.0, key), now_ms)?;
        if v.fresh_until > now_ms {
            Some(&v.bytes)
        } else {
            None
        }
    }

    fn ticket(&mut self, ds: DatasetId, key: &str) -> Option<RefreshTicket> {
        if self.refreshing.insert((ds.0, key.to_owned())) {
            self.stats.refreshes_started += 1;
            Some(RefreshTicket {
                dataset: ds,
                key: key.to_owned(),
            })
        } else {
            None
        }
    }

    /// Read-through lookup: memory, then each lower tier the policy names
    /// (a hit is promoted to the tiers above it; a corrupt entry is removed,
    /// counted and skipped), then the loader (its value is stored in the
    /// policy's tiers). A stale value is served at once under
    /// stale-while-revalidate (with a refresh ticket for the first reader),
    /// or when the loader fails within the offline TTL; both are flagged.
    pub async fn get(
        &mut self,
        ds: DatasetId,
        key: &str,
        now_ms: u64,
        loader: &(dyn Loader + Sync),
    ) -> Result<Lookup, CacheError> {
        let c = self.policy(ds);
        let (in_l1, lower, policy) = (c.in_l1, &c.lower, &c.policy);
        let swr_grace = match policy.refresh {
            Refresh::StaleWhileRevalidate { grace_ms } => Some(grace_ms),
            Refresh::OnExpiry => None,
        };
        let mut stale: Option<(Arc<[u8]>, u64, Source)> = None;
        if in_l1 {
            if let Some(v) = self.l1.get(&L1Ref(ds.0, key), now_ms) {
                if v.fresh_until > now_ms {
                    return Ok(Lookup {
                        value: Arc::clone(&v.bytes),
                        stale: false,
                        source: Source::Memory,
                        refresh: None,
                    });
                }
                stale = Some((Arc::clone(&v.bytes), v.fresh_until, Source::Memory));
            }
        }
        if stale.is_none() {
            for (pos, &t) in lower.iter().enumerate() {
                let entry = match self.tiers[t].get(key, now_ms).await {
                    Ok(Some(e)) if e.dataset == policy.dataset => e,
                    Ok(_) => {
                        self.stats.tiers[t].2 += 1;
                        continue;
                    }
                    Err(_) => {
                        self.stats.tier_errors += 1;
                        continue;
                    }
                };
                let value: Arc<[u8]> = match self.codec.open(&entry.value) {
                    Ok(frame) if frame.kind == CACHE_VALUE_KIND => frame.payload.into(),
                    _ => {
                        // Corrupt: never returned; removed and counted.
                        self.stats.tiers[t].3 += 1;
                        if self.tiers[t].remove(key).await.is_err() {
                            self.stats.tier_errors += 1;
                        }
                        continue;
                    }
                };
                self.stats.tiers[t].1 += 1;
                // Write back to the tiers above that the policy names.
                self.stats.promotions += 1;
                if in_l1 {
                    self.put_l1(ds, key, &value, entry.fresh_until_ms, entry.expires_at_ms);
                }
                for &above in &lower[..pos] {
                    if self.tiers[above].put(key, entry.clone()).await.is_err() {
                        self.stats.tier_errors += 1;
                    }
                }
                if entry.fresh_until_ms > now_ms {
                    return Ok(Lookup {
                        value,
                        stale: false,
                        source: Source::Tier(t),
                        refresh: None,
                    });
                }
                stale = Some((value, entry.fresh_until_ms, Source::Tier(t)));
                break;
            }
        }
        if let (Some((value, fresh_until, source)), Some(grace)) = (&stale, swr_grace) {
            if now_ms < fresh_until.saturating_add(grace) {
                self.stats.stale_served += 1;
                let refresh = self.ticket(ds, key);
                return Ok(Lookup {
                    value: Arc::clone(value),
                    stale: true,
                    source: *source,
                    refresh,
                });
            }
        }
        self.stats.loads += 1;
        match loader.load(&policy.dataset, key).await {
            Ok(bytes) => {
                self.put(ds, key, &bytes, &[], now_ms).await?;
                Ok(Lookup {
                    value: bytes.into(),
                    stale: false,
                    source: Source::Loader,
                    refresh: None,
                })
            }
            Err(e) => {
                self.stats.load_failures += 1;
                match stale {
                    Some((value, fresh_until, source))
                        if now_ms < fresh_until.saturating_add(policy.offline_ttl_ms) =>
                    {
                        self.stats.stale_served += 1;
                        Ok(Lookup {
                            value,
                            stale: true,
                            source,
                            refresh: None,
                        })
                    }
                    _ => Err(CacheError::Load(e)),
                }
            }
        }
    }

    /// Runs a refresh: loads and stores the new value; on failure keeps the
    /// stale value and counts the failure. Releases the ticket either way.
    pub async fn refresh(
        &mut self,
        ticket: RefreshTicket,
        loader: &(dyn Loader + Sync),
        now_ms: u64,
    ) -> Result<(), CacheError> {
        self.refreshing
            .remove(&(ticket.dataset.0, ticket.key.clone()));
        let name = self.policy(ticket.dataset).policy.dataset.clone();
        match loader.load(&name, &ticket.key).await {
            Ok(bytes) => {
                self.put(ticket.dataset, &ticket.key, &bytes, &[], now_ms)
                    .await
            }
            Err(e) => {
                self.stats.refreshes_failed += 1;
                Err(CacheError::Load(e))
            }
        }
    }

    fn put_l1(
        &mut self,
        ds: DatasetId,
        key: &str,
        value: &Arc<[u8]>,
        fresh_until: u64,
        expires_at: u64,
    ) {
        let w = u32::try_from(value.len() + key.len() + 48).unwrap_or(u32::MAX);
        self.l1.insert(
            L1Key(ds.0, key.into()),
            L1Value {
                bytes: Arc::clone(value),
                fresh_until,
            },
            w,
            expires_at,
            ds.0,
        );
    }

    /// Stores a value in every tier the dataset's policy names.
    pub async fn put(
        &mut self,
        ds: DatasetId,
        key: &str,
        value: &[u8],
        tags: &[&str],
        now_ms: u64,
    ) -> Result<(), CacheError> {
        let c = self.policy(ds);
        let (in_l1, lower, policy) = (c.in_l1, &c.lower, &c.policy);
        let fresh_until = now_ms.saturating_add(policy.ttl_ms);
        let expires_at = fresh_until.saturating_add(policy.keep_past_ttl_ms());
        if in_l1 {
            let v: Arc<[u8]> = value.into();
            self.put_l1(ds, key, &v, fresh_until, expires_at);
        }
        if !lower.is_empty() {
            let frame = self
                .codec
                .seal(CACHE_VALUE_KIND, 1, false, value)
                .map_err(|e| CacheError::Tier {
                    tier: "codec".into(),
                    message: e.to_string(),
                })?;
            let entry = TierEntry {
                value: frame,
                dataset: policy.dataset.clone(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                fresh_until_ms: fresh_until,
                expires_at_ms: expires_at,
            };
            for &t in lower {
                self.tiers[t].put(key, entry.clone()).await?;
            }
        }
        Ok(())
    }

    /// Invalidates the datasets that name `event` in their policy, and only
    /// their entries, in every tier. Returns entries removed.
    pub async fn invalidate_event(&mut self, event: &str) -> Result<usize, CacheError> {
        let Some(ids) = self.events.get(event).cloned() else {
            return Ok(0);
        };
        let mut removed = 0;
        for id in ids {
            removed += self.invalidate_dataset(DatasetId(id)).await?;
        }
        Ok(removed)
    }

    /// Removes one dataset's entries from every tier.
    pub async fn invalidate_dataset(&mut self, ds: DatasetId) -> Result<usize, CacheError> {
        let mut removed = self.l1.invalidate_group(ds.0);
        let c = self.policy(ds);
        for &t in &c.lower {
            removed += self.tiers[t].invalidate_dataset(&c.policy.dataset).await?;
        }
        Ok(removed)
    }

    /// Removes one key of a dataset from every tier.
    pub async fn remove(&mut self, ds: DatasetId, key: &str) -> Result<(), CacheError> {
        self.l1.remove(&L1Ref(ds.0, key));
        for &t in &self.policy(ds).lower {
            self.tiers[t].remove(key).await?;
        }
        Ok(())
    }

    /// Purges up to `max` expired entries from each tier.
    pub async fn purge_expired(&mut self, now_ms: u64, max: usize) -> Result<usize, CacheError> {
        let mut n = self.l1.purge_expired(now_ms, max);
        for t in &self.tiers {
            n += t.purge_expired(now_ms, max).await?;
        }
        Ok(n)
    }

    /// Counters.
    pub fn stats(&self) -> TieredStats {
        TieredStats {
            memory: self.l1.stats().clone(),
            ..self.stats.clone()
        }
    }
}

// Keep the hash of the lookup key and the stored key the same: both hash
// the dataset id then the key's str.
const _: fn() = || {
    fn assert_hash<T: Hash>() {}
    assert_hash::<L1Key>();
    assert_hash::<L1Ref<'static>>();
};
