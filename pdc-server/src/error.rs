//! The crate's error type.

/// Everything pdc-server can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The ledger's storage failed (disk, database); the request may be
    /// retried.
    #[error("ledger storage: {0}")]
    Storage(String),
    /// The ledger is saturated or unreachable; retry later.
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// A terminal with this id already exists.
    #[error("terminal {0:?} already exists")]
    TerminalExists(String),
    /// A terminal id or token that is not acceptable.
    #[error("invalid terminal: {0}")]
    InvalidTerminal(String),
    /// A dataset import or record that is not acceptable.
    #[error("invalid dataset: {0}")]
    Dataset(String),
    /// The server configuration is not acceptable.
    #[error("configuration: {0}")]
    Config(String),
    /// The Apply hook failed (not a rejection: an error of its own
    /// storage); the batch is not applied.
    #[error("apply hook: {0}")]
    Apply(String),
    /// Binding or serving the HTTP listener failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<redb::Error> for ServerError {
    fn from(e: redb::Error) -> Self {
        ServerError::Storage(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for ServerError {
            fn from(e: $t) -> Self {
                ServerError::Storage(e.to_string())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<tokio_postgres::Error> for ServerError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Connection-level trouble is transient; anything else is storage.
        if e.is_closed() {
            ServerError::Unavailable(e.to_string())
        } else {
            ServerError::Storage(describe_pg(&e))
        }
    }
}

impl From<deadpool_postgres::PoolError> for ServerError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ServerError::Unavailable(e.to_string())
    }
}

/// A PostgreSQL error with its server message when there is one.
pub(crate) fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
