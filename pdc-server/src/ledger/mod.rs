//! The `Ledger`: where the server records each (terminal, local id) once,
//! with the verdict and sequence it answers resends with; also the
//! terminals' token digests and the reference datasets.

use pdc_sync::{ItemResult, OutboxItem};

use crate::ServerError;

pub mod conformance;
mod postgres;
mod redb_ledger;

pub use postgres::{PgLedger, PgOptions};
pub use redb_ledger::{RedbLedger, RedbOptions};

/// SHA-256 of a terminal token: what ledgers store instead of the token.
pub type TokenDigest = [u8; 32];

/// Totals over everything a ledger holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    /// Items recorded as applied.
    pub applied: u64,
    /// Items recorded as rejected by the Apply hook.
    pub rejected: u64,
}

/// A registered terminal (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalInfo {
    /// The terminal id.
    pub terminal_id: String,
    /// Registration time, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Whether its token was revoked.
    pub revoked: bool,
}

/// One record of a stored dataset, with the version that last changed it;
/// `body: None` is a deletion (kept so that deltas survive restarts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Record id.
    pub id: u64,
    /// Dataset version of its last change.
    pub version: u64,
    /// The record, or `None` when deleted.
    pub body: Option<Vec<u8>>,
}

/// A dataset as a ledger stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDataset {
    /// Current version.
    pub version: u64,
    /// Live records and tombstones.
    pub records: Vec<StoredRecord>,
}

/// Storage of the sync service. Implementations: [`RedbLedger`] (embedded,
/// no setup) and [`PgLedger`] (PostgreSQL, many server processes); both
/// pass [`conformance`].
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Applies a batch of well-formed items pushed by `terminal_id`, in
    /// order, in one transaction; one result per item: `Applied` for a new
    /// accepted item, `Duplicate` with the original sequence for one seen
    /// before, `Rejected` (now or, for a resend, as first decided) when the
    /// Apply hook refused it. `now_ms` is recorded for retention. On error
    /// nothing of the batch is kept.
    async fn push(
        &self,
        terminal_id: &str,
        items: Vec<OutboxItem>,
        now_ms: u64,
    ) -> Result<Vec<ItemResult>, ServerError>;

    /// What the ledger answered for these local ids of a terminal, without
    /// applying anything: `Duplicate{seq}` for an applied item, `Rejected`
    /// for a refused one, `None` for an unknown one.
    async fn status(
        &self,
        terminal_id: &str,
        local_ids: &[u64],
    ) -> Result<Vec<Option<ItemResult>>, ServerError>;

    /// Counts of what the ledger holds.
    async fn totals(&self) -> Result<LedgerTotals, ServerError>;

    /// Deletes at most `chunk` items recorded before `cutoff_ms`; returns
    /// how many. Call in a loop until it returns less than `chunk`.
    async fn purge_before(&self, cutoff_ms: u64, chunk: usize) -> Result<u64, ServerError>;

    /// Registers a terminal with the digest of its token.
    async fn add_terminal(
        &self,
        terminal_id: &str,
        token: &TokenDigest,
        now_ms: u64,
    ) -> Result<(), ServerError>;

    /// Revokes a terminal's token; `false` if there is no such terminal.
    async fn revoke_terminal(&self, terminal_id: &str) -> Result<bool, ServerError>;

    /// All registered terminals, by id.
    async fn terminals(&self) -> Result<Vec<TerminalInfo>, ServerError>;

    /// The terminal a token belongs to, unless unknown or revoked.
    async fn terminal_for_token(&self, token: &TokenDigest) -> Result<Option<String>, ServerError>;

    /// A stored dataset, if any.
    async fn load_dataset(&self, name: &str) -> Result<Option<StoredDataset>, ServerError>;

    /// Records changes to a dataset atomically and sets its version to
    /// `version` (each change carries the version that made it).
    async fn store_dataset(
        &self,
        name: &str,
        version: u64,
        changes: &[StoredRecord],
    ) -> Result<(), ServerError>;
}

/// Whether a terminal id is acceptable: 1 to 64 characters of
/// `[A-Za-z0-9._-]`.
pub fn valid_terminal_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What a resend of an item recorded with this status is answered: the
/// original rejection, or a duplicate of the original sequence. Shared by
/// the backends so that they answer alike.
pub(crate) fn recorded_result(status: i16, seq: u64, code: String, message: String) -> ItemResult {
    if status == STATUS_REJECTED {
        ItemResult::Rejected { code, message }
    } else {
        ItemResult::Duplicate { server_seq: seq }
    }
}

/// Row status codes shared by the backends.
pub(crate) const STATUS_APPLIED: i16 = 1;
pub(crate) const STATUS_REJECTED: i16 = 2;
