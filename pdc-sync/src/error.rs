use pdc_codec::CodecError;

/// Why the sync machine refused an input.
///
/// Refused inputs change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The local id is not above every id enqueued before: ids must be
    /// unique and increasing per terminal (the store's counter guarantees it).
    #[error("local id {local_id} is not above the last enqueued id {last}")]
    LocalIdNotIncreasing {
        /// The refused id.
        local_id: u64,
        /// The highest id enqueued so far.
        last: u64,
    },
    /// The item's encoding exceeds the configured item size limit.
    #[error("item {local_id} is {size} bytes encoded, limit is {limit}")]
    ItemTooLarge {
        /// The refused item.
        local_id: u64,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// An integer of the item is above what the wire accepts
    /// ([`crate::MAX_WIRE_INT`]).
    #[error("{field} {value} is above 2^63-1, the largest the server stores")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// No batch with this id is in flight (it timed out and was resent, or
    /// the id is wrong). The late answer is ignored.
    #[error("no batch {0} in flight")]
    UnknownBatch(u64),
    /// The server's answer does not match the request (wrong number of
    /// results, or undecodable); the batch was put back and will be resent.
    #[error("server answer violates the protocol: {0}")]
    ProtocolViolation(String),
    /// No quarantined item has this id.
    #[error("no quarantined item {0}")]
    NotQuarantined(u64),
    /// A scope (region or store name, layer) breaks the rules.
    #[error("invalid scope: {0}")]
    InvalidScope(String),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}
