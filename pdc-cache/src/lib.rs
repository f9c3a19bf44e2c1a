//! pdc-cache: the terminal's reference data (products, users, config,
//! sessions) at hand in microseconds online and still there, within its
//! policy, offline.
//!
//! **Pure logic**: no I/O, no clock (wall time in ms is a parameter), no
//! async runtime (lower tiers are `async` traits the host drives); builds
//! for `wasm32-unknown-unknown`.
//!
//! ```text
//!  get ─▶ L1 MemoryCache (S3-FIFO, TTL, bytes) ─▶ CacheTier … CacheTier ─▶ Loader
//!           ▲ sync, allocation-free hit             (redb, IndexedDB)      (server)
//!           └──────────── promotion (write-back) of lower hits ◀──────────┘
//! ```
//!
//! * [`MemoryCache`]: the L1 engine; S3-FIFO eviction (scan-resistant,
//!   hits only bump a counter), lazy expiry plus bounded incremental purge.
//! * [`CacheTier`]: the async seam for lower tiers; [`MemoryTier`] is an
//!   in-memory one; [`conformance`] is the suite every tier passes
//!   (pdc-store's redb tier too).
//! * [`TieredCache`]: read-through / write-back across tiers by
//!   [`DatasetPolicy`] (the study's four datasets in
//!   [`DatasetPolicy::defaults`]), event invalidation that touches exactly
//!   the datasets naming the event, stale-while-revalidate with
//!   single-flight [`RefreshTicket`]s, offline stale serving, and values in
//!   checksummed pdc-codec frames in lower tiers (a corrupt entry is a
//!   counted miss, never returned).
//!
//! ```
//! use pdc_cache::{DatasetPolicy, Loader, MemoryLimits, MemoryTier, TieredCache};
//!
//! struct Server;
//! #[async_trait::async_trait]
//! impl Loader for Server {
//!     async fn load(&self, _dataset: &str, key: &str) -> Result<Vec<u8>, String> {
//!         Ok(format!("product {key}").into_bytes())
//!     }
//! }
//!
//! let l3 = MemoryTier::new("l3", MemoryLimits::entries(10_000)); // pdc-store gives a redb one
//! let l2 = MemoryTier::new("l2", MemoryLimits::entries(1_000));
//! let mut cache = TieredCache::new(MemoryLimits::entries(100), vec![Box::new(l2), Box::new(l3)],
//!                                  DatasetPolicy::defaults())?;
//! let users = cache.dataset("user_data")?;
//! let now = 1_704_067_200_000;
//! pollster::block_on(async {
//!     let first = cache.get(users, "42", now, &Server).await?;   // loaded, stored in memory+l2+l3
//!     assert_eq!(&*first.value, b"product 42");
//!     Ok::<_, pdc_cache::CacheError>(())
//! })?;
//! assert!(cache.get_cached(users, "42", now + 1).is_some());     // sync L1 hit
//! # Ok::<(), pdc_cache::CacheError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod memory;
mod policy;
mod tier;
mod tiered;

pub use error::CacheError;
pub use memory::{MemoryCache, MemoryLimits};
pub use policy::{DatasetPolicy, Refresh};
pub use tier::{conformance, CacheTier, MemoryTier, TierEntry};
pub use tiered::{
    DatasetId, Loader, Lookup, RefreshTicket, Source, TieredCache, TieredStats, CACHE_VALUE_KIND,
};

/// Counters of one cache tier.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing (or an expired entry).
    pub misses: u64,
    /// Entries moved from the probation queue to the main queue.
    pub promotions: u64,
    /// Entries evicted for capacity.
    pub evictions: u64,
    /// Entries removed because they expired.
    pub expirations: u64,
    /// Entries removed by invalidation.
    pub invalidations: u64,
}

impl CacheStats {
    /// hits / (hits + misses), 0 when nothing was looked up.
    pub fn hit_ratio(&self) -> f64 {
        let n = self.hits + self.misses;
        if n == 0 {
            0.0
        } else {
            self.hits as f64 / n as f64
        }
    }
}
