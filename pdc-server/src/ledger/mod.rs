//! The `Ledger`: where the server records each (terminal, store, local id)
//! once, with the verdict, sequence and payload digest it answers resends
//! with; also the terminals' token digests, the stores seen per terminal,
//! and the reference datasets.
//!
//! # Exactly once
//!
//! The key is (terminal id, [`StoreId`], local id): a replaced till store
//! has a new random store id, so its local ids (which start at 1 again)
//! never collide with the old store's. The ledger keeps SHA-256 of each
//! recorded item's payload; a resend with the same key and another digest
//! is answered [`ItemResult::Conflict`], never `Duplicate`.
//!
//! # Poison isolation
//!
//! A batch is applied in one transaction. When that transaction fails for
//! a reason tied to its items (see [`transient`] for the split), the ledger
//! isolates the failing items by bisection, applies the others, and answers
//! each failing one `Rejected { code: "storage" }` (recorded, so a resend
//! gets the same answer). Only a transient failure makes the whole batch
//! fail (answered retry-later by the HTTP layer).

use pdc_sync::View;
use pdc_sync::{check_wire_ints, ItemResult, OutboxItem, StoreId, SyncError, MAX_WIRE_INT};
use sha2::{Digest as _, Sha256};

use crate::ServerError;

pub mod conformance;
mod postgres;
mod redb_ledger;

pub use postgres::{placement_sql, InsertForm, PgLedger, PgOptions, Placement, LEDGER_PLACEMENT};
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

/// SHA-256 of an item's payload: what the ledger compares a resend with.
pub type PayloadDigest = [u8; 32];

/// The digest the ledgers keep of an item's payload.
pub fn payload_digest(payload: &[u8]) -> PayloadDigest {
    Sha256::digest(payload).into()
}

/// A store a terminal pushed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSeen {
    /// The store id.
    pub store_id: StoreId,
    /// When the ledger first saw it, ms since the Unix epoch.
    pub first_seen_ms: u64,
}

/// One item a ledger holds for a terminal (`pdc ledger show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerItem {
    /// The till store it came from.
    pub store: StoreId,
    /// Its local id in that store.
    pub local_id: u64,
    /// `Applied { server_seq }`, or `Rejected { code, message }` as first
    /// decided.
    pub result: ItemResult,
    /// When the ledger recorded it, ms since the Unix epoch.
    pub recorded_at_ms: u64,
}

/// An order as [`crate::PosApply`] recorded it (`pdc ledger show`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PosOrder {
    /// The terminal-local order id.
    pub order_id: u64,
    /// The ledger sequence of the item that carried it.
    pub server_seq: u64,
    /// Its receipt number, when the order carried one.
    pub receipt: Option<String>,
    /// The cashier.
    pub cashier_id: u32,
    /// When it was rung up, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// Its total in cents.
    pub total_cents: i64,
    /// How many lines it had.
    pub lines: u32,
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
    /// Its store and region: the reference data it pulls.
    pub view: View,
}

/// One change of a stored dataset's layer, with the version that made it
/// (`entry: None`: removed, kept so that deltas survive restarts).
pub type StoredRecord = pdc_sync::ScopedChange;

/// A dataset as a ledger stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredDataset {
    /// Current version.
    pub version: u64,
    /// The last change of each (layer, id): live entries and tombstones.
    pub records: Vec<StoredRecord>,
}

/// Storage of the sync service. Implementations: [`RedbLedger`] (embedded,
/// no setup) and [`PgLedger`] (PostgreSQL, many server processes); both
/// pass [`conformance`].
#[async_trait::async_trait]
pub trait Ledger: Send + Sync + 'static {
    /// Applies a batch of items pushed by `terminal_id` from `store`, in
    /// order, in one transaction; one result per item: `Applied` for a new
    /// accepted item, `Duplicate` with the original sequence for one seen
    /// before with the same payload, `Conflict` for one seen before with
    /// another payload, `Rejected` (now or, for a resend, as first decided)
    /// when the Apply hook refused it or the database could not store it
    /// (`code: "storage"`, see the module docs). `now_ms` is recorded for
    /// retention. On error (a transient failure, or an item [`check_item`]
    /// refuses) nothing of the batch is kept.
    async fn push(
        &self,
        terminal_id: &str,
        store: StoreId,
        items: Vec<OutboxItem>,
        now_ms: u64,
    ) -> Result<Vec<ItemResult>, ServerError>;

    /// What the ledger answered for these local ids of a terminal's store,
    /// without applying anything: `Duplicate{seq}` for an applied item,
    /// `Rejected` for a refused one, `None` for an unknown one.
    async fn status(
        &self,
        terminal_id: &str,
        store: StoreId,
        local_ids: &[u64],
    ) -> Result<Vec<Option<ItemResult>>, ServerError>;

    /// Records that `terminal_id` pushes from `store`; `true` when the
    /// ledger had never seen that store for the terminal (across every
    /// server process on the same database).
    async fn note_store(
        &self,
        terminal_id: &str,
        store: StoreId,
        now_ms: u64,
    ) -> Result<bool, ServerError>;

    /// The stores a terminal pushed from, oldest first.
    async fn terminal_stores(&self, terminal_id: &str) -> Result<Vec<StoreSeen>, ServerError>;

    /// The last `limit` items the ledger holds for a terminal (every store),
    /// oldest first by server sequence (rejected items, which take a
    /// sequence too, included).
    async fn terminal_items(
        &self,
        terminal_id: &str,
        limit: usize,
    ) -> Result<Vec<LedgerItem>, ServerError>;

    /// The last `limit` orders [`crate::PosApply`] recorded for a terminal,
    /// oldest first by server sequence; empty when the ledger's hook keeps
    /// no orders (its tables do not exist).
    async fn terminal_orders(
        &self,
        terminal_id: &str,
        limit: usize,
    ) -> Result<Vec<PosOrder>, ServerError>;

    /// Counts of what the ledger holds.
    async fn totals(&self) -> Result<LedgerTotals, ServerError>;

    /// Periodic upkeep of the `Apply` hook's tables (PostgreSQL: its
    /// [`Apply::maintain_postgres`](crate::Apply::maintain_postgres) in one
    /// transaction); returns how many rows it handled. Safe to run on every
    /// node at once.
    async fn maintain(&self) -> Result<u64, ServerError> {
        Ok(0)
    }

    /// The stock levels of `store` changed after feed position `since`
    /// (at most `limit`, in feed order; each product once, at its latest
    /// level), as the POS hook folded them (see
    /// [`PosApply::with_stock`](crate::PosApply::with_stock)); empty when
    /// no stock is kept.
    async fn stock_since(
        &self,
        store: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<pdc_sync::StockLevel>, ServerError> {
        let _ = (store, since, limit);
        Ok(Vec::new())
    }

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

    /// Replaces a terminal's token (a revoked terminal is active again
    /// with the new one); the old token stops working at once. `false` if
    /// there is no such terminal.
    async fn rotate_terminal(
        &self,
        terminal_id: &str,
        token: &TokenDigest,
    ) -> Result<bool, ServerError>;

    /// All registered terminals, by id.
    async fn terminals(&self) -> Result<Vec<TerminalInfo>, ServerError>;

    /// The terminal a token belongs to, unless unknown or revoked.
    async fn terminal_for_token(&self, token: &TokenDigest) -> Result<Option<String>, ServerError>;

    /// Sets a terminal's store and region; `false` if there is no such
    /// terminal.
    async fn set_terminal_view(&self, terminal_id: &str, view: &View) -> Result<bool, ServerError>;

    /// A terminal's store and region, unless there is no such terminal.
    async fn terminal_view(&self, terminal_id: &str) -> Result<Option<View>, ServerError>;

    /// A stored dataset (every layer), if any.
    async fn load_dataset(&self, name: &str) -> Result<Option<StoredDataset>, ServerError> {
        self.load_dataset_since(name, 0).await
    }

    /// A dataset's version and its changes (every layer) made after
    /// version `after`; `None` if the dataset was never stored.
    async fn load_dataset_since(
        &self,
        name: &str,
        after: u64,
    ) -> Result<Option<StoredDataset>, ServerError>;

    /// A receiver whose value changes when another process stored a
    /// dataset change (PostgreSQL: `LISTEN pdc_datasets`); `None` when the
    /// ledger sends no notifications (the server then polls
    /// [`Ledger::dataset_version`]).
    fn dataset_notifications(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// A dataset's version (of all its layers), if it was ever stored.
    async fn dataset_version(&self, name: &str) -> Result<Option<u64>, ServerError>;

    /// Records changes to a dataset's layers atomically and sets its
    /// version to `version`, if its version is still `expected` (0 for a
    /// dataset never stored): else nothing changes and the answer is
    /// [`ServerError::DatasetConflict`] (another writer, maybe another
    /// process, got there first: reload and plan again).
    async fn store_dataset(
        &self,
        name: &str,
        expected: u64,
        version: u64,
        changes: &[StoredRecord],
    ) -> Result<(), ServerError>;
}

/// Whether a terminal id is acceptable: 1 to 64 characters of
/// `[A-Za-z0-9._-]`, the rules of [`pdc_codec::TerminalId`] (the one
/// terminal identity, which the protocol's messages carry).
pub fn valid_terminal_id(id: &str) -> bool {
    pdc_codec::TerminalId::is_valid(id)
}

/// Refuses an item whose integers no ledger stores losslessly: `local_id`
/// must be 1 to 2^63−1, `stream` and `created_at_ms` at most 2^63−1. The
/// HTTP layer answers this error 400 before anything is applied; the
/// ledgers check it again for callers of the Rust API.
pub fn check_item(n: usize, item: &OutboxItem) -> Result<(), ServerError> {
    if item.local_id == 0 {
        return Err(ServerError::InvalidItem(format!(
            "items[{n}].local_id 0: local ids start at 1"
        )));
    }
    // The same bound the till checks before it saves an item.
    match check_wire_ints(item) {
        Err(SyncError::OutOfRange { field, value }) => Err(ServerError::InvalidItem(format!(
            "items[{n}].{field} {value} is above 2^63-1 ({MAX_WIRE_INT})"
        ))),
        Err(e) => Err(ServerError::InvalidItem(format!("items[{n}]: {e}"))),
        Ok(()) => Ok(()),
    }
}

/// Whether a failure inside a ledger transaction may pass by itself (the
/// batch is answered retry-later and resent) rather than being tied to the
/// batch's items (which are then isolated, see the module docs). The one
/// place this split is made; PostgreSQL errors are split when converted
/// (see `ServerError::from(tokio_postgres::Error)`).
///
/// Transient: [`ServerError::Unavailable`] (connection lost, pool timeout,
/// serialization failure, deadlock, disk full, I/O error, database
/// shutting down or misconfigured) and [`ServerError::Io`]. Everything else
/// that a push can fail with (a statement's data or constraint error, an
/// Apply hook error) is tied to the items.
pub fn transient(e: &ServerError) -> bool {
    matches!(e, ServerError::Unavailable(_) | ServerError::Io(_))
}

/// A recorded item, as both backends answer a resend of it.
#[derive(Clone)]
pub(crate) struct Recorded {
    pub status: i16,
    pub seq: u64,
    pub code: String,
    pub message: String,
    /// `None` for items recorded before digests existed.
    pub digest: Option<PayloadDigest>,
}

impl Recorded {
    /// What the ledger decided for the item, as [`LedgerItem::result`].
    pub(crate) fn outcome(&self) -> ItemResult {
        if self.status == STATUS_APPLIED {
            ItemResult::Applied {
                server_seq: self.seq,
            }
        } else {
            ItemResult::Rejected {
                code: self.code.clone(),
                message: self.message.clone(),
            }
        }
    }

    /// The answer to a resend whose payload has `digest`: a conflict when
    /// the recorded digest differs, else the original rejection or a
    /// duplicate of the original sequence. Shared by the backends so that
    /// they answer alike.
    pub(crate) fn answer(self, local_id: u64, digest: Option<&PayloadDigest>) -> ItemResult {
        if let (Some(held), Some(new)) = (self.digest.as_ref(), digest) {
            if held != new {
                return ItemResult::Conflict {
                    message: format!(
                        "item {local_id} was recorded with another payload (sha256 {} , resent {})",
                        short_hex(held),
                        short_hex(new)
                    ),
                };
            }
        }
        if self.status == STATUS_REJECTED {
            ItemResult::Rejected {
                code: self.code,
                message: self.message,
            }
        } else {
            ItemResult::Duplicate {
                server_seq: self.seq,
            }
        }
    }
}

fn short_hex(d: &PayloadDigest) -> String {
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The code of a rejection for an item the database could not store.
pub const STORAGE_REJECTION: &str = "storage";

/// Finds the failing items of a batch by bisection, as a loop the ledger
/// drives: [`Bisect::next`] gives the next range of items to apply on top
/// of every range applied before (ranges come in item order, so a stream's
/// items keep their order), [`Bisect::failed`] reports that it failed for a
/// reason tied to the items. A failing range of one item is a poison item:
/// the caller records it. One poison item in `n` costs about 2·log2(n)
/// attempts; a clean batch is never bisected.
#[derive(Debug)]
pub(crate) struct Bisect {
    stack: Vec<std::ops::Range<usize>>,
}

impl Bisect {
    /// Isolation of `n` items (the whole batch is the first attempt).
    pub(crate) fn new(n: usize) -> Self {
        Bisect {
            stack: std::iter::once(0..n).collect(),
        }
    }

    /// Isolation of `n` items whose whole batch is known to fail: starts
    /// with the halves (a lone item is still attempted, so that the
    /// caller sees its error at the leaf).
    pub(crate) fn after_failure(n: usize) -> Self {
        let mut b = Bisect::new(n);
        if n >= 2 {
            b.stack.clear();
            b.failed(0..n);
        }
        b
    }

    /// The next range to attempt, or `None` when done.
    pub(crate) fn next(&mut self) -> Option<std::ops::Range<usize>> {
        while let Some(r) = self.stack.pop() {
            if !r.is_empty() {
                return Some(r);
            }
        }
        None
    }

    /// The attempt of `r` failed because of its items: its halves are
    /// attempted next (a lone item is a leaf, nothing more to split).
    pub(crate) fn failed(&mut self, r: std::ops::Range<usize>) {
        if r.len() >= 2 {
            let mid = r.start + r.len() / 2;
            // First half first.
            self.stack.push(mid..r.end);
            self.stack.push(r.start..mid);
        }
    }
}

/// Row status codes shared by the backends.
pub(crate) const STATUS_APPLIED: i16 = 1;
pub(crate) const STATUS_REJECTED: i16 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against the model "an attempt fails iff it holds a poison
        /// index": bisection finds exactly the poison set, attempts ranges
        /// in order, and stays within 2·p·log2(n)+1 attempts.
        #[test]
        fn bisection_finds_exactly_the_poison_items(
            n in 1usize..200,
            poison in proptest::collection::btree_set(0usize..200, 0..6),
        ) {
            let poison: std::collections::BTreeSet<usize> =
                poison.into_iter().filter(|&p| p < n).collect();
            let mut b = if poison.is_empty() { Bisect::new(n) } else { Bisect::after_failure(n) };
            let mut attempts = 0;
            let mut last_end = 0;
            let mut found = std::collections::BTreeSet::new();
            while let Some(r) = b.next() {
                attempts += 1;
                if poison.range(r.clone()).next().is_some() {
                    if r.len() == 1 {
                        found.insert(r.start);
                    }
                    b.failed(r);
                } else {
                    prop_assert!(r.start >= last_end, "accepted ranges come in order");
                    last_end = r.end;
                }
            }
            prop_assert_eq!(&found, &poison);
            let log = (usize::BITS - n.leading_zeros()) as usize;
            prop_assert!(attempts <= 1 + 2 * poison.len().max(1) * (log + 1), "{} attempts", attempts);
        }
    }

    #[test]
    fn wire_integers_beyond_bigint_are_refused_naming_the_field() {
        let mut item = crate::conformance::item(1, 2);
        assert!(check_item(0, &item).is_ok());
        item.stream = pdc_sync::StreamKey(u64::MAX);
        let e = check_item(3, &item).unwrap_err().to_string();
        assert!(e.contains("items[3].stream"), "{e}");
        item.stream = pdc_sync::StreamKey(MAX_WIRE_INT);
        assert!(check_item(0, &item).is_ok());
        item.created_at_ms = MAX_WIRE_INT + 1;
        assert!(check_item(0, &item)
            .unwrap_err()
            .to_string()
            .contains("created_at_ms"));
        item.created_at_ms = 0;
        item.local_id = 0;
        assert!(check_item(0, &item)
            .unwrap_err()
            .to_string()
            .contains("local_id"));
    }

    #[test]
    fn transient_causes_are_only_unavailability_and_io() {
        assert!(transient(&ServerError::Unavailable("pool timeout".into())));
        assert!(transient(&ServerError::Io(std::io::Error::other("disk"))));
        assert!(!transient(&ServerError::Storage(
            "value out of range".into()
        )));
        assert!(!transient(&ServerError::Apply("hook".into())));
    }
}
