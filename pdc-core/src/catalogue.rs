//! The catalogue: reference datasets (products, users, config) pulled from
//! the server into the store, served from a memory cache over it.
//!
//! A host calls, in this order:
//!
//! 1. [`Catalogue::new`] once, with the datasets to follow;
//! 2. [`Catalogue::pull`] at start and on a timer (the driver: every
//!    5 minutes): only what changed since the held version is fetched and
//!    applied atomically; a digest mismatch refetches a snapshot; what a
//!    change names is dropped from the memory cache;
//! 3. [`Catalogue::warm`] after login (the whole catalogue into memory,
//!    ready for scanning), then [`Catalogue::reference`] per lookup.
//!
//! The cache's lock is async and held only for a lookup or an update,
//! never across a network round trip.

use pdc_cache::{DatasetId, DatasetPolicy, Loader, MemoryLimits, Refresh, TieredCache};
use pdc_codec::Codec;
use pdc_store::Store;
use pdc_sync::{DatasetChange, DatasetDelta, PullRequest, PullResponse, SyncTransport};
use std::sync::Arc;

use crate::EngineError;

/// Reads reference records from the store for the memory cache.
struct StoreLoader(Store);

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Loader for StoreLoader {
    async fn load(&self, dataset: &str, key: &str) -> Result<Vec<u8>, String> {
        let id: u64 = key.parse().map_err(|_| format!("bad record id {key:?}"))?;
        self.0
            .dataset_get(dataset, id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{dataset}/{id} not found"))
    }
}

/// A dataset a pull changed: what was applied (the delta, or the snapshot
/// that replaced it after a digest mismatch).
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The change as applied.
    pub applied: DatasetDelta,
}

/// The dataset that holds the catalogue's products ([`pdc_codec::Product`]
/// records by id), as pdc-server serves it.
pub const PRODUCTS: &str = "products";

/// The reference datasets of one terminal.
pub struct Catalogue {
    store: Store,
    cache: async_lock::Mutex<TieredCache>,
    loader: StoreLoader,
    datasets: Vec<String>,
    codec: Codec,
    /// Barcode → product id, built from the store at the first barcode
    /// lookup and dropped when a pull changes the products.
    barcodes: std::sync::Mutex<Option<std::collections::HashMap<String, u64>>>,
}

impl std::fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogue")
            .field("datasets", &self.datasets)
            .finish_non_exhaustive()
    }
}

impl Catalogue {
    /// A catalogue over `store` following `datasets`, with a memory cache
    /// of at most `l1`.
    pub fn new(store: Store, datasets: Vec<String>, l1: MemoryLimits) -> Result<Self, EngineError> {
        let policies = datasets
            .iter()
            .map(|d| DatasetPolicy {
                dataset: d.clone(),
                ttl_ms: 24 * 3_600_000,
                tiers: vec!["memory".into()],
                invalidate_on: vec![format!("{d}_updated")],
                refresh: Refresh::OnExpiry,
                offline_ttl_ms: 0,
            })
            .collect();
        Ok(Catalogue {
            cache: async_lock::Mutex::new(TieredCache::new(l1, vec![], policies)?),
            loader: StoreLoader(store.clone()),
            store,
            datasets,
            codec: Codec::new(),
            barcodes: std::sync::Mutex::new(None),
        })
    }

    /// The datasets followed.
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }

    /// Each followed dataset with the version held (0 for none yet).
    pub fn held_versions(&self) -> Result<Vec<(String, u64)>, EngineError> {
        self.datasets
            .iter()
            .map(|d| Ok((d.clone(), self.store.dataset_state(d)?.version.unwrap_or(0))))
            .collect()
    }

    /// Pulls the datasets: only what changed since the held version,
    /// applied atomically; a digest mismatch refetches a snapshot of that
    /// dataset. Returns the datasets that changed, with what was applied;
    /// an unchanged dataset is neither written nor returned.
    pub async fn pull<T: SyncTransport>(
        &self,
        transport: &T,
        terminal_id: &pdc_codec::TerminalId,
    ) -> Result<(Vec<Pulled>, usize, usize), EngineError> {
        let states = self
            .datasets
            .iter()
            .map(|d| self.store.dataset_state(d))
            .collect::<Result<Vec<_>, _>>()?;
        let req = PullRequest {
            schema: pdc_sync::BASE_SCHEMA,
            terminal_id: terminal_id.clone(),
            datasets: states.clone(),
        };
        let body = self.codec.encode(&req)?;
        let up = body.len();
        let resp_bytes = transport.pull(body).await?;
        let down = resp_bytes.len();
        let resp: PullResponse = self.codec.decode(&resp_bytes)?;
        let mut pulled = Vec::new();
        for delta in &resp.datasets {
            // The held version is the server's: nothing changed, whatever
            // form the answer takes (an older server may send an empty
            // snapshot rather than an empty delta).
            let unchanged = states
                .iter()
                .any(|s| s.dataset == delta.dataset && s.version == Some(delta.version));
            if unchanged {
                // Nothing new: no write, no invalidation, no event.
                continue;
            }
            let mut applied = delta.clone();
            if self.store.apply_dataset(delta).is_err() {
                // Digest mismatch: ask for a snapshot of that dataset.
                let req = PullRequest {
                    schema: pdc_sync::BASE_SCHEMA,
                    terminal_id: terminal_id.clone(),
                    datasets: vec![pdc_sync::DatasetState {
                        dataset: delta.dataset.clone(),
                        version: None,
                        buckets: vec![],
                    }],
                };
                let snap: PullResponse = self
                    .codec
                    .decode(&transport.pull(self.codec.encode(&req)?).await?)?;
                for d in &snap.datasets {
                    self.store.apply_dataset(d)?;
                    applied = d.clone();
                }
            }
            self.invalidate(&applied).await?;
            if applied.dataset == PRODUCTS {
                *self.barcodes.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            pulled.push(Pulled { applied });
        }
        Ok((pulled, up, down))
    }

    /// Drops from memory what a change names (a delta), or the whole
    /// dataset (a snapshot).
    async fn invalidate(&self, applied: &DatasetDelta) -> Result<(), EngineError> {
        let mut cache = self.cache.lock().await;
        match (&applied.change, cache.dataset(&applied.dataset)) {
            (DatasetChange::Delta { upserts, deletes }, Ok(ds)) => {
                for id in upserts.iter().map(|r| r.id).chain(deletes.iter().copied()) {
                    cache.remove(ds, &id.to_string()).await?;
                }
            }
            _ => {
                cache
                    .invalidate_event(&format!("{}_updated", applied.dataset))
                    .await?;
            }
        }
        Ok(())
    }

    /// A reference record (e.g. a product by id), from memory when cached,
    /// else from the store; `None` when the dataset has no such record.
    pub async fn reference(
        &self,
        dataset: &str,
        id: u64,
        now_ms: u64,
    ) -> Result<Option<Arc<[u8]>>, EngineError> {
        let mut cache = self.cache.lock().await;
        let ds: DatasetId = cache.dataset(dataset)?;
        let key = id.to_string();
        // `get` checks memory first and hands out the cached `Arc` (no copy);
        // one lookup, counted once.
        match cache.get(ds, &key, now_ms, &self.loader).await {
            Ok(l) => Ok(Some(l.value)),
            Err(pdc_cache::CacheError::Load(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A product by id, decoded from the [`PRODUCTS`] dataset (memory
    /// first, as [`Catalogue::reference`]); `None` when there is no such
    /// product, [`EngineError::Codec`] when its record does not decode,
    /// [`EngineError::Cache`] when the catalogue does not follow
    /// [`PRODUCTS`].
    pub async fn product(
        &self,
        id: u64,
        now_ms: u64,
    ) -> Result<Option<pdc_codec::Product>, EngineError> {
        match self.reference(PRODUCTS, id, now_ms).await? {
            Some(bytes) => Ok(Some(self.codec.decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// A product by barcode (an exact match), through an index of the
    /// products' barcodes built at the first call after a pull changed
    /// them (one pass over the dataset; products that do not decode or
    /// have no barcode are not in it; when two products share a barcode
    /// the lower id wins).
    pub async fn product_by_barcode(
        &self,
        barcode: &str,
        now_ms: u64,
    ) -> Result<Option<pdc_codec::Product>, EngineError> {
        let id = {
            let mut index = self.barcodes.lock().unwrap_or_else(|p| p.into_inner());
            if index.is_none() {
                let mut map = std::collections::HashMap::new();
                // By id, ascending: the first product with a barcode keeps it.
                for (id, body) in self.store.dataset(PRODUCTS)?.records {
                    if let Ok(p) = self.codec.decode::<pdc_codec::Product>(&body) {
                        if !p.barcode.is_empty() {
                            map.entry(p.barcode).or_insert(id);
                        }
                    }
                }
                *index = Some(map);
            }
            index.as_ref().and_then(|m| m.get(barcode).copied())
        };
        match id {
            Some(id) => self.product(id, now_ms).await,
            None => Ok(None),
        }
    }

    /// Loads a whole dataset from the store into memory; returns how many
    /// records were loaded.
    pub async fn warm(&self, dataset: &str, now_ms: u64) -> Result<usize, EngineError> {
        let records = self.store.dataset(dataset)?.records;
        let mut cache = self.cache.lock().await;
        let ds: DatasetId = cache.dataset(dataset)?;
        for (id, body) in &records {
            cache.put(ds, &id.to_string(), body, &[], now_ms).await?;
        }
        Ok(records.len())
    }

    /// The memory cache's hit ratio, when it has served lookups and is not
    /// busy right now.
    pub fn hit_ratio(&self) -> Option<f64> {
        let cache = self.cache.try_lock()?;
        let stats = cache.stats();
        (stats.memory.hits + stats.memory.misses > 0).then(|| stats.hit_ratio())
    }
}
