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
    /// An item of a push that no ledger can store losslessly (an id
    /// beyond 2^63−1, a zero local id); the message names the field.
    /// Answered 400; nothing of the batch is applied.
    #[error("invalid item: {0}")]
    InvalidItem(String),
    /// A dataset import or record that is not acceptable.
    #[error("invalid dataset: {0}")]
    Dataset(String),
    /// A dataset changed under a writer: its version is no longer the one
    /// the change was planned on (another import, maybe in another
    /// process, landed first). Nothing of this change was stored.
    #[error("dataset {dataset} is at version {found}, not {expected}: changed by another writer")]
    DatasetConflict {
        /// The dataset.
        dataset: String,
        /// The version the change was planned on.
        expected: u64,
        /// The version found.
        found: u64,
    },
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
        // An I/O error (disk full, failing disk) may pass; anything else
        // redb reports (corruption, a schema mismatch) is the file's.
        match e {
            redb::Error::Io(e) => ServerError::Unavailable(format!("ledger file: {e}")),
            e => ServerError::Storage(e.to_string()),
        }
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for ServerError {
            fn from(e: $t) -> Self {
                ServerError::from(redb::Error::from(e))
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
        if pg_transient(&e) {
            ServerError::Unavailable(describe_pg(&e))
        } else {
            ServerError::Storage(describe_pg(&e))
        }
    }
}

/// Whether a PostgreSQL error may pass by itself (see
/// [`crate::ledger::transient`]): anything without a SQLSTATE (connection
/// lost, I/O, protocol) and every SQLSTATE outside the classes tied to the
/// statement's data.
pub(crate) fn pg_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => sqlstate_transient(code.code()),
    }
}

/// The SQLSTATE split. Tied to the data (the item is isolated and refused
/// `storage`): classes 21 (cardinality), 22 (data exception: value out of
/// range, bad datetime, division by zero…), 23 (integrity constraint), 27
/// (triggered data change), 44 (check option) and P0 (raised by a
/// trigger or function). Everything else is transient: 08 connection,
/// 40001/40P01 serialization and deadlock, 53 insufficient resources (disk
/// full, out of memory, too many connections), 57 operator intervention
/// (shutdown, statement timeout), 58 system I/O, XX internal, and 42
/// (undefined table, syntax, privileges: the same for every item, a
/// deployment error that must never dead-letter sales).
pub(crate) fn sqlstate_transient(code: &str) -> bool {
    !matches!(code.get(..2), Some("21" | "22" | "23" | "27" | "44" | "P0"))
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

#[cfg(test)]
mod tests {
    use super::sqlstate_transient;

    /// One case per class of the split (see `sqlstate_transient`).
    #[test]
    fn sqlstates_split_into_transient_and_item_tied() {
        let cases = [
            ("21000", false, "cardinality violation"),
            (
                "22008",
                false,
                "datetime field overflow (a timestamp out of range)",
            ),
            ("22003", false, "numeric value out of range"),
            ("22012", false, "division by zero"),
            ("23505", false, "unique violation"),
            ("23514", false, "check violation"),
            ("27000", false, "triggered data change violation"),
            ("44000", false, "with check option violation"),
            ("P0001", false, "raise exception in a trigger"),
            ("08006", true, "connection failure"),
            ("40001", true, "serialization failure"),
            ("40P01", true, "deadlock detected"),
            ("53100", true, "disk full"),
            ("53200", true, "out of memory"),
            ("53300", true, "too many connections"),
            ("55P03", true, "lock not available"),
            ("57014", true, "statement timeout"),
            ("57P01", true, "admin shutdown"),
            ("58030", true, "I/O error"),
            (
                "42P01",
                true,
                "undefined table: a deployment error, never an item's",
            ),
            ("XX000", true, "internal error"),
        ];
        for (code, transient, what) in cases {
            assert_eq!(sqlstate_transient(code), transient, "{code} {what}");
        }
    }
}
