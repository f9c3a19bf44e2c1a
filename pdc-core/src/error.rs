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
    Codec(pdc_codec::CodecError),
    /// A sale breaks a rule the server would refuse it for (nothing was
    /// saved): `rule.code()` is the server's refusal code.
    #[error("sale refused ({}): {detail}", rule.code())]
    InvalidSale {
        /// Which rule.
        rule: pdc_codec::OrderRule,
        /// What broke it.
        detail: String,
    },
    /// A configuration value is refused.
    #[error("configuration: {0}")]
    Config(String),
    /// A card payment taken offline would break an offline card limit
    /// ([`crate::OfflineCardLimits`]); nothing was saved. Take cash, or
    /// wait for the connection.
    #[error("offline card payment refused ({limit:?}): {detail}")]
    OfflineCardLimit {
        /// Which limit.
        limit: crate::OfflineLimit,
        /// The figures, for a person.
        detail: String,
    },
    /// A wait ran out (e.g. `DriverHandle::wait_synced`).
    #[error("timed out: {0}")]
    Timeout(String),
}

impl From<pdc_codec::CodecError> for EngineError {
    fn from(e: pdc_codec::CodecError) -> Self {
        match e {
            pdc_codec::CodecError::InvalidOrder { rule, detail } => {
                EngineError::InvalidSale { rule, detail }
            }
            other => EngineError::Codec(other),
        }
    }
}
