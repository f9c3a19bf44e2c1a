/// Why a store operation failed. After an error nothing was half-written:
/// every operation is one redb transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not a pdc store (another redb file, or not a
    /// redb file at all).
    #[error("{0} is not a pdc store")]
    NotAStore(String),
    /// The file was written by a newer pdc: upgrade the software.
    #[error("store schema version {found} is newer than this build's {supported}")]
    NewerSchema {
        /// Version in the file.
        found: u64,
        /// Newest this build reads.
        supported: u64,
    },
    /// The file is damaged beyond what record quarantine can handle.
    #[error("store is damaged: {0}")]
    Corrupt(String),
    /// The disk is full or the write failed: the operation was not made
    /// durable (for `append`: the sale is NOT saved; tell the cashier).
    #[error("store write failed, nothing was saved: {0}")]
    WriteFailed(String),
    /// Another process holds the store open.
    #[error("store is in use by another process")]
    Locked,
    /// No such record (dead letter, quarantined record).
    #[error("no record {0}")]
    NotFound(u64),
    /// A value could not be encoded.
    #[error(transparent)]
    Codec(#[from] pdc_codec::CodecError),
    /// The store is encrypted and was opened without a key.
    #[error("the store is encrypted: open it with its key")]
    KeyRequired,
    /// No key given opens the store's current key generation.
    #[error("wrong key: none of the keys given opens this store")]
    WrongKey,
    /// A key rotation ([`crate::Store::rekey`]) was interrupted: the store
    /// still holds values sealed by an earlier key, which was not given.
    #[error("a key rotation was interrupted: open the store with the previous key (generation {0}) too, then rekey again")]
    KeyRotationUnfinished(u32),
    /// Keys were given for a store created without encryption.
    #[error("the store was created without encryption: it cannot be opened with a key")]
    NotEncrypted,
    /// A key is not 32 bytes.
    #[error("bad store key: {0}")]
    BadKey(String),
    /// A sealed value failed to open: damaged, or moved from another row
    /// or store.
    #[error("a sealed value does not open: {0}")]
    Unsealed(String),
    /// Any other storage engine error.
    #[error("storage: {0}")]
    Storage(String),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)) => {
                StoreError::Corrupt(m)
            }
            other => StoreError::Storage(other.to_string()),
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Storage(e.to_string())
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Corrupted(m) => StoreError::Corrupt(m),
            other => StoreError::Storage(other.to_string()),
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::WriteFailed(e.to_string())
    }
}
