/// Why a cache operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// No policy for this dataset: configure one.
    #[error("no cache policy for dataset {0:?}")]
    UnknownDataset(String),
    /// A policy names a tier the cache does not have.
    #[error("policy of {dataset:?} names unknown tier {tier:?}")]
    UnknownTier {
        /// Dataset.
        dataset: String,
        /// Tier name.
        tier: String,
    },
    /// A tier failed (I/O, quota); the cache answered from elsewhere if it
    /// could.
    #[error("cache tier {tier} failed: {message}")]
    Tier {
        /// Tier name.
        tier: String,
        /// What happened.
        message: String,
    },
    /// Not cached, and the loader failed (offline, server error).
    #[error("not cached and the load failed: {0}")]
    Load(String),
}
