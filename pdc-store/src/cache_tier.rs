//! The persistent [`CacheTier`]: entries in pdc-codec frames, an expiry
//! index for bounded purges, and a byte budget enforced by evicting the
//! entries closest to expiry (the study's auto-cleanup).

use std::sync::atomic::{AtomicU64, Ordering};

use pdc_cache::{CacheError, CacheStats, CacheTier, TierEntry};
use pdc_codec::RecordKind;
use redb::{ReadableTable, TableDefinition};

use crate::{Store, StoreError};

pub(crate) const CACHE: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("cache");
const CACHE_EXP: TableDefinition<'static, (u64, &'static str), ()> =
    TableDefinition::new("cache_by_expiry");
const KIND_CACHE: RecordKind = RecordKind(42);

/// A cache tier in the store's file.
#[derive(Debug)]
pub struct RedbTier {
    store: Store,
    name: String,
    max_bytes: u64,
    bytes: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    invalidations: AtomicU64,
}

fn tier_err(name: &str) -> impl Fn(StoreError) -> CacheError + '_ {
    move |e| CacheError::Tier {
        tier: name.to_owned(),
        message: e.to_string(),
    }
}

impl RedbTier {
    /// A tier named `name` (as policies refer to it, e.g. `l3`) over the
    /// store, holding at most `max_bytes` of entries.
    pub fn new(store: Store, name: impl Into<String>, max_bytes: u64) -> Result<Self, StoreError> {
        let tier = RedbTier {
            store,
            name: name.into(),
            max_bytes,
            bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
        };
        let tx = tier.store.db.begin_write()?;
        let mut total = 0u64;
        {
            let t = tx.open_table(CACHE)?;
            tx.open_table(CACHE_EXP)?;
            for row in t.range::<&str>(..)? {
                let (k, v) = row?;
                total += (k.value().len() + v.value().len()) as u64;
            }
        }
        tx.commit()?;
        tier.bytes.store(total, Ordering::Relaxed);
        Ok(tier)
    }

    /// The entry stored under `key` (`None`: damaged, or sealed under a
    /// key the store no longer holds: a miss either way).
    fn decode(&self, key: &str, raw: &[u8]) -> Option<TierEntry> {
        let frame = self.store.open_row(CACHE, &key, raw).ok()?;
        self.store
            .codec
            .decode_value::<TierEntry>(KIND_CACHE, &frame)
            .ok()
            .map(|(_, e)| e)
    }

    fn remove_keys(&self, keys: &[(String, u64)]) -> Result<usize, StoreError> {
        let tx = self.store.db.begin_write()?;
        let mut n = 0;
        {
            let mut t = tx.open_table(CACHE)?;
            let mut idx = tx.open_table(CACHE_EXP)?;
            for (k, exp) in keys {
                if let Some(old) = t.remove(k.as_str())? {
                    self.bytes
                        .fetch_sub((k.len() + old.value().len()) as u64, Ordering::Relaxed);
                    n += 1;
                }
                idx.remove((*exp, k.as_str()))?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Evicts entries closest to expiry until `incoming` more bytes fit
    /// in `budget`; returns entries evicted.
    fn evict_to(&self, budget: u64, incoming: u64) -> Result<usize, StoreError> {
        if self.bytes.load(Ordering::Relaxed) + incoming <= budget {
            return Ok(0);
        }
        let mut victims = Vec::new();
        {
            let rtx = self.store.db.begin_read()?;
            let idx = rtx.open_table(CACHE_EXP)?;
            let t = rtx.open_table(CACHE)?;
            let mut freed = 0u64;
            let need = self.bytes.load(Ordering::Relaxed) + incoming - budget;
            for row in idx.range::<(u64, &str)>(..)? {
                let (k, _) = row?;
                let (exp, key) = k.value();
                let size =
                    t.get(key)?.map(|g| g.value().len() as u64).unwrap_or(0) + key.len() as u64;
                victims.push((key.to_owned(), exp));
                freed += size;
                if freed >= need {
                    break;
                }
            }
        }
        let n = self.remove_keys(&victims)?;
        self.evictions.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn scan_where(
        &self,
        pred: impl Fn(&TierEntry) -> bool,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rtx = self.store.db.begin_read()?;
        let t = rtx.open_table(CACHE)?;
        let mut out = Vec::new();
        for row in t.range::<&str>(..)? {
            let (k, v) = row?;
            match self.decode(k.value(), v.value()) {
                Some(e) if pred(&e) => out.push((k.value().to_owned(), e.expires_at_ms)),
                Some(_) => {}
                // Undecodable entries go with any invalidation: they are misses anyway.
                None => out.push((k.value().to_owned(), 0)),
            }
        }
        Ok(out)
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl CacheTier for RedbTier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &str, now_ms: u64) -> Result<Option<TierEntry>, CacheError> {
        let raw = (|| -> Result<Option<Vec<u8>>, StoreError> {
            let rtx = self.store.db.begin_read()?;
            let t = rtx.open_table(CACHE)?;
            Ok(t.get(key)?.map(|g| g.value().to_vec()))
        })()
        .map_err(tier_err(&self.name))?;
        let Some(raw) = raw else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        match self.decode(key, &raw) {
            Some(e) if e.expires_at_ms > now_ms => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Ok(Some(e))
            }
            Some(e) => {
                self.remove_keys(&[(key.to_owned(), e.expires_at_ms)])
                    .map_err(tier_err(&self.name))?;
                self.expirations.fetch_add(1, Ordering::Relaxed);
                self.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            None => {
                // A damaged envelope: drop it, report a miss.
                self.remove_keys(&[(key.to_owned(), 0)])
                    .map_err(tier_err(&self.name))?;
                self.misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    async fn put(&self, key: &str, entry: TierEntry) -> Result<(), CacheError> {
        let err = tier_err(&self.name);
        let frame = self
            .store
            .codec
            .encode_value(KIND_CACHE, 1, &entry)
            .map_err(|e| err(e.into()))?;
        // Sealed here, outside the write: a value sealed under a key that a
        // rotation retires meanwhile is read as a miss, which a cache may.
        let frame = self
            .store
            .seal_row(CACHE, &key, &frame)
            .map_err(&err)?
            .into_owned();
        let size = (key.len() + frame.len()) as u64;
        if size > self.max_bytes {
            return Ok(());
        }
        let old = self.scan_key(key).map_err(&err)?;
        if let Some(exp) = old {
            self.remove_keys(&[(key.to_owned(), exp)]).map_err(&err)?;
        }
        self.evict_to(self.max_bytes, size).map_err(&err)?;
        (|| -> Result<(), StoreError> {
            let tx = self.store.db.begin_write()?;
            {
                tx.open_table(CACHE)?.insert(key, frame.as_slice())?;
                tx.open_table(CACHE_EXP)?
                    .insert((entry.expires_at_ms, key), ())?;
            }
            tx.commit()?;
            Ok(())
        })()
        .map_err(&err)?;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<bool, CacheError> {
        let err = tier_err(&self.name);
        match self.scan_key(key).map_err(&err)? {
            Some(exp) => Ok(self.remove_keys(&[(key.to_owned(), exp)]).map_err(&err)? > 0),
            None => Ok(false),
        }
    }

    async fn invalidate_dataset(&self, dataset: &str) -> Result<usize, CacheError> {
        let err = tier_err(&self.name);
        let keys = self.scan_where(|e| e.dataset == dataset).map_err(&err)?;
        let n = self.remove_keys(&keys).map_err(&err)?;
        self.invalidations.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<usize, CacheError> {
        let err = tier_err(&self.name);
        let keys = self
            .scan_where(|e| e.tags.iter().any(|t| t == tag))
            .map_err(&err)?;
        let n = self.remove_keys(&keys).map_err(&err)?;
        self.invalidations.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    async fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize, CacheError> {
        let err = tier_err(&self.name);
        let victims = (|| -> Result<Vec<(String, u64)>, StoreError> {
            let rtx = self.store.db.begin_read()?;
            let idx = rtx.open_table(CACHE_EXP)?;
            let mut v = Vec::new();
            for row in idx.range::<(u64, &str)>(..=(now_ms, ""))?.take(max) {
                let (k, _) = row?;
                let (exp, key) = k.value();
                if exp <= now_ms {
                    v.push((key.to_owned(), exp));
                }
            }
            Ok(v)
        })()
        .map_err(&err)?;
        let n = self.remove_keys(&victims).map_err(&err)?;
        self.expirations.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    async fn entry_count(&self) -> Result<usize, CacheError> {
        (|| -> Result<usize, StoreError> {
            let rtx = self.store.db.begin_read()?;
            Ok(redb::ReadableTableMetadata::len(&rtx.open_table(CACHE)?)? as usize)
        })()
        .map_err(tier_err(&self.name))
    }

    async fn bytes(&self) -> Result<u64, CacheError> {
        Ok(self.bytes.load(Ordering::Relaxed))
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            promotions: 0,
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
        }
    }
}

impl RedbTier {
    /// The expiry of `key`'s entry, if present (to find its index row).
    fn scan_key(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let rtx = self.store.db.begin_read()?;
        let t = rtx.open_table(CACHE)?;
        Ok(t.get(key)?
            .map(|g| self.decode(key, g.value()).map_or(0, |e| e.expires_at_ms)))
    }

    /// Evicts cache entries to free at least `bytes` (used when the disk is
    /// full: the cache goes before any sale). Returns entries evicted.
    pub fn shed(&self, bytes: u64) -> Result<usize, StoreError> {
        let target = self.bytes.load(Ordering::Relaxed).saturating_sub(bytes);
        self.evict_to(target, 0)
    }
}
