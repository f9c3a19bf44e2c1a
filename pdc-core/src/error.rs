/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The durable store failed. For `record`: the sale was NOT saved.
    #[error(transparent)]
    Store(#[from] pdc_store::StoreError),
    /// The sync machine refused an input.
    #[error(transparent)]
    Sync(#[from] pdc_sync::SyncError),
    /// Login or session refused.
    #[error(transparent)]
    Auth(#[from] pdc_auth::AuthError),
    /// Reference data lookup failed.
    #[error(transparent)]
    Cache(#[from] pdc_cache::CacheError),
    /// The transport failed (pull, ping).
    #[error(transparent)]
    Transport(#[from] pdc_sync::TransportError),
    /// A metrics report could not be built.
    #[error(transparent)]
    Monitor(#[from] pdc_monitor::MonitorError),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] pdc_codec::CodecError),
}
