use crate::RecordKind;

/// Why a frame could not be encoded or decoded.
///
/// Every decode path returns one of these on corrupt, truncated, oversized or
/// hostile input; none panics. Each variant says what the caller can do: a
/// frame that fails to decode should be treated as lost (refetch it, or
/// quarantine the record) and never partially trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended before the frame did.
    #[error("frame truncated: needed at least {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the header says the frame needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The input does not start with pdc's magic bytes: not a pdc frame.
    #[error("not a pdc frame (bad magic bytes)")]
    BadMagic,
    /// The frame's format version is not one this build reads.
    #[error("unsupported frame format version {0} (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// The frame sets flag bits this build does not know.
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// A length field is not a valid varint.
    #[error("malformed length field in frame header")]
    BadLength,
    /// The checksum over header and payload does not match: the bytes were
    /// damaged in storage or transit.
    #[error("frame checksum mismatch: data is corrupt")]
    ChecksumMismatch,
    /// The frame, or the payload it decompresses to, exceeds the configured
    /// limit; nothing was allocated for it.
    #[error("frame too large: {what} is {size} bytes, limit is {limit}")]
    TooLarge {
        /// Which size was too large.
        what: &'static str,
        /// The size claimed or found.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Bytes follow the end of the frame.
    #[error("{0} unexpected bytes after the end of the frame")]
    TrailingBytes(usize),
    /// The compressed payload is corrupt or does not decompress to the size
    /// the header claims.
    #[error("corrupt compressed payload: {0}")]
    CorruptCompression(String),
    /// The frame holds a different kind of record than the caller asked for.
    #[error("frame holds record kind {found:?}, expected {expected:?}")]
    WrongKind {
        /// Kind the caller asked for.
        expected: RecordKind,
        /// Kind in the frame.
        found: RecordKind,
    },
    /// The frame's record schema version has no decoder in this build (it was
    /// written by a newer version of the software).
    #[error("record kind {kind:?} schema version {schema} is not supported by this build")]
    UnsupportedSchema {
        /// The record kind.
        kind: RecordKind,
        /// The schema version found.
        schema: u8,
    },
    /// A batch holds more items than the configured limit.
    #[error("batch holds {count} items, limit is {limit}")]
    TooManyItems {
        /// Items claimed.
        count: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The payload passed the checksum but does not decode as the expected
    /// type (a bug or a version mismatch on the writer's side).
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A value could not be serialised (e.g. a map with non-string keys in a
    /// format that needs them); nothing was written.
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// An order breaks one of the rules every till and server apply
    /// ([`crate::Order::check`]).
    #[error("invalid order ({}): {detail}", rule.code())]
    InvalidOrder {
        /// Which rule.
        rule: crate::OrderRule,
        /// What broke it, for a person.
        detail: String,
    },
    /// A terminal id breaks the rules of [`crate::TerminalId`] (1 to 64
    /// characters of `A-Z a-z 0-9 . _ -`).
    #[error("invalid terminal id {0:?}: 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    InvalidTerminalId(String),
}

impl From<postcard::Error> for CodecError {
    fn from(e: postcard::Error) -> Self {
        CodecError::Malformed(e.to_string())
    }
}
