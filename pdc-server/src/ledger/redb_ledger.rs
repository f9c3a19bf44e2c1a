//! The embedded ledger on redb: one file, no setup. A single writer thread
//! applies concurrent batches in group commits (one durable transaction for
//! every batch waiting, up to `max_group`), so throughput grows with load
//! while each batch is fsync'd before it is answered.
//!
//! When a group's transaction fails for a reason tied to its items (an
//! Apply hook error), the writer finds the failing items by bisection in
//! trial transactions that are never committed (no fsync), then commits
//! the group once with those items recorded as `rejected{storage}`: a
//! failing job fails alone, and within it only its failing items.
//!
//! File schema 2 keys items by (terminal, store id, local id) and keeps
//! each payload's SHA-256; a schema 1 file is migrated in place at open
//! (its items under [`StoreId::LEGACY`], without digests).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use pdc_sync::{Entry, ItemResult, OutboxItem, Scope, StoreId, View};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{
    check_item, payload_digest, transient, Bisect, Ledger, LedgerItem, LedgerTotals, PayloadDigest,
    PosOrder, Recorded, StoreSeen, StoredDataset, StoredRecord, TerminalInfo, TokenDigest,
    STATUS_APPLIED, STATUS_REJECTED, STORAGE_REJECTION,
};
use crate::apply::{Accepted, Apply, Rejection};
use crate::ServerError;

/// (terminal, store id, local id) → [`ItemRow`].
const ITEMS: TableDefinition<'static, (&str, u128, u64), &[u8]> = TableDefinition::new("items_v2");
/// (recorded at ms, seq) → (terminal, store id, local id), for retention.
const BY_TIME: TableDefinition<'static, (u64, u64), (&str, u128, u64)> =
    TableDefinition::new("items_by_time_v2");
/// (terminal, store id) → first seen ms.
const STORES: TableDefinition<'static, (&str, u128), u64> = TableDefinition::new("stores");
const META: TableDefinition<'static, &str, u64> = TableDefinition::new("meta");
const TERMINALS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("terminals");
const TOKENS: TableDefinition<'static, &[u8], &str> = TableDefinition::new("tokens");
const DS_VERSION: TableDefinition<'static, &str, u64> = TableDefinition::new("dataset_versions");
/// (dataset or `dataset@layer`, id) → (version, body) or (version, no
/// body, hidden).
const DS_RECORDS: TableDefinition<'static, (&str, u64), &[u8]> =
    TableDefinition::new("dataset_records");
/// terminal → postcard [`View`].
const TERMINAL_VIEWS: TableDefinition<'static, &str, &[u8]> =
    TableDefinition::new("terminal_views");

/// Schema 1's tables, read once by the migration.
const ITEMS_V1: TableDefinition<'static, (&str, u64), &[u8]> = TableDefinition::new("items");
const BY_TIME_V1: TableDefinition<'static, (u64, u64), (&str, u64)> =
    TableDefinition::new("items_by_time");

const SCHEMA: u64 = 2;

#[derive(Serialize, Deserialize)]
struct ItemRow {
    seq: u64,
    at_ms: u64,
    status: i16,
    code: String,
    message: String,
    /// SHA-256 of the payload; `None` for items migrated from schema 1.
    digest: Option<PayloadDigest>,
}

/// Schema 1's row.
#[derive(Deserialize)]
struct ItemRowV1 {
    seq: u64,
    at_ms: u64,
    status: i16,
    code: String,
    message: String,
}

impl ItemRow {
    fn recorded(self) -> Recorded {
        Recorded {
            status: self.status,
            seq: self.seq,
            code: self.code,
            message: self.message,
            digest: self.digest,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct TerminalRow {
    token: Vec<u8>,
    created_at_ms: u64,
    revoked: bool,
}

/// Tuning of the embedded ledger.
#[derive(Debug, Clone, Copy)]
pub struct RedbOptions {
    /// Most batches applied in one commit.
    pub max_group: usize,
    /// Batches waiting for the writer before pushes are answered
    /// retry-later (back-pressure instead of an unbounded queue).
    pub queue: usize,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            max_group: 64,
            queue: 1024,
        }
    }
}

type Reply = oneshot::Sender<Result<Vec<ItemResult>, ServerError>>;

struct Job {
    terminal: String,
    store: u128,
    items: Vec<OutboxItem>,
    now_ms: u64,
    reply: Reply,
}

/// The embedded redb ledger.
pub struct RedbLedger {
    db: Arc<Database>,
    jobs: SyncSender<Job>,
}

impl std::fmt::Debug for RedbLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbLedger").finish_non_exhaustive()
    }
}

fn storage(e: impl std::fmt::Display) -> ServerError {
    ServerError::Storage(e.to_string())
}

impl RedbLedger {
    /// Revokes a terminal's token (`token: None`) or replaces it (and
    /// reactivates the terminal), in one transaction; `false` when there
    /// is no such terminal.
    async fn update_terminal(
        &self,
        terminal_id: &str,
        token: Option<TokenDigest>,
    ) -> Result<bool, ServerError> {
        let id = terminal_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let found = {
                let mut terminals = tx.open_table(TERMINALS)?;
                let row = terminals
                    .get(id.as_str())?
                    .map(|r| postcard::from_bytes::<TerminalRow>(r.value()))
                    .transpose()
                    .map_err(storage)?;
                match row {
                    None => false,
                    Some(mut row) => {
                        let mut tokens = tx.open_table(TOKENS)?;
                        tokens.remove(row.token.as_slice())?;
                        match token {
                            None => row.revoked = true,
                            Some(new) => {
                                tokens.insert(new.as_slice(), id.as_str())?;
                                row.token = new.to_vec();
                                row.revoked = false;
                            }
                        }
                        terminals.insert(
                            id.as_str(),
                            postcard::to_allocvec(&row).map_err(storage)?.as_slice(),
                        )?;
                        true
                    }
                }
            };
            tx.commit()?;
            Ok(found)
        })
        .await
    }

    /// Opens (or creates) the ledger file. A file that is not a pdc ledger,
    /// is damaged, is of a newer schema, or is open in another process is
    /// a clear error.
    pub fn open(
        path: &Path,
        apply: Arc<dyn Apply>,
        options: RedbOptions,
    ) -> Result<Self, ServerError> {
        // Created whole or not at all: made and initialised beside the
        // path, then renamed into place.
        pdc_store::create_atomically(path, |tmp| {
            let db = open_file(tmp)?;
            init_schema(&db, tmp)
        })?;
        let db = open_file(path)?;
        init_schema(&db, path)?;
        let db = Arc::new(db);
        let (jobs, rx) = mpsc::sync_channel(options.queue.max(1));
        let writer_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("pdc-ledger-writer".into())
            .spawn(move || writer(&writer_db, &*apply, &rx, options.max_group.max(1)))?;
        Ok(RedbLedger { db, jobs })
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, ServerError> + Send + 'static,
    ) -> Result<R, ServerError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| ServerError::Unavailable(e.to_string()))?
    }
}

/// Opens (or creates) the redb file; a file in use is `Unavailable`.
fn open_file(path: &Path) -> Result<Database, ServerError> {
    // redb panics on some truncated files instead of returning an error.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Database::create(path)))
        .map_err(|_| storage(format!("{} is truncated or damaged", path.display())))?
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                ServerError::Unavailable(format!("{} is in use by another process", path.display()))
            }
            e => storage(format!("{}: {e}", path.display())),
        })
}

/// Creates the tables of a new file, migrates an older one, refuses a
/// newer one.
fn init_schema(db: &Database, path: &Path) -> Result<(), ServerError> {
    let tx = db.begin_write()?;
    {
        let mut meta = tx.open_table(META)?;
        let schema = meta.get("schema")?.map(|v| v.value());
        match schema {
            None => {
                meta.insert("schema", SCHEMA)?;
            }
            Some(SCHEMA) => {}
            Some(1) => {
                drop(meta);
                migrate_v1(&tx)?;
                tx.open_table(META)?.insert("schema", SCHEMA)?;
            }
            Some(v) => {
                return Err(storage(format!(
                    "{} has ledger schema {v}, this build reads {SCHEMA}",
                    path.display()
                )))
            }
        }
        tx.open_table(ITEMS)?;
        tx.open_table(BY_TIME)?;
        tx.open_table(STORES)?;
        tx.open_table(TERMINALS)?;
        tx.open_table(TOKENS)?;
        tx.open_table(DS_VERSION)?;
        tx.open_table(DS_RECORDS)?;
        tx.open_table(TERMINAL_VIEWS)?;
    }
    tx.commit()?;
    Ok(())
}

/// Rewrites a schema 1 file's items under [`StoreId::LEGACY`], without
/// digests (schema 1 kept no payloads to digest), in the open transaction.
fn migrate_v1(tx: &redb::WriteTransaction) -> Result<(), ServerError> {
    let legacy = StoreId::LEGACY.as_u128();
    let names: Vec<String> = tx.list_tables()?.map(|t| t.name().to_owned()).collect();
    if names.iter().any(|n| n == ITEMS_V1.name()) {
        let old = tx.open_table(ITEMS_V1)?;
        let mut items = tx.open_table(ITEMS)?;
        let mut stores = tx.open_table(STORES)?;
        for r in old.iter()? {
            let (k, v) = r?;
            let (terminal, local_id) = k.value();
            let row: ItemRowV1 = postcard::from_bytes(v.value()).map_err(storage)?;
            let seen = stores
                .get((terminal, legacy))?
                .map_or(row.at_ms, |s| s.value().min(row.at_ms));
            stores.insert((terminal, legacy), seen)?;
            let row = ItemRow {
                seq: row.seq,
                at_ms: row.at_ms,
                status: row.status,
                code: row.code,
                message: row.message,
                digest: None,
            };
            items.insert(
                (terminal, legacy, local_id),
                postcard::to_allocvec(&row).map_err(storage)?.as_slice(),
            )?;
        }
    }
    if names.iter().any(|n| n == BY_TIME_V1.name()) {
        let old = tx.open_table(BY_TIME_V1)?;
        let mut by_time = tx.open_table(BY_TIME)?;
        for r in old.iter()? {
            let (k, v) = r?;
            let (terminal, local_id) = v.value();
            by_time.insert(k.value(), (terminal, legacy, local_id))?;
        }
    }
    tx.delete_table(ITEMS_V1)?;
    tx.delete_table(BY_TIME_V1)?;
    Ok(())
}

fn writer(db: &Database, apply: &dyn Apply, rx: &Receiver<Job>, max_group: usize) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        match commit_group(db, apply, &group) {
            Ok(results) => {
                for (job, r) in group.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(r));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let transient = transient(&e);
                for job in group {
                    let e = if transient {
                        ServerError::Unavailable(msg.clone())
                    } else {
                        ServerError::Storage(msg.clone())
                    };
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }
}

/// (job index, item index) of one item of a group.
type Slot = (usize, usize);

/// Which items of a group a write covers, and which it records as
/// refused for storage instead of applying.
struct Plan<'a> {
    /// `None`: every item.
    include: Option<&'a HashSet<Slot>>,
    poison: &'a HashMap<Slot, String>,
}

/// Applies a group in one commit; on a failure tied to items, isolates
/// them and commits the rest.
fn commit_group(
    db: &Database,
    apply: &dyn Apply,
    group: &[Job],
) -> Result<Vec<Vec<ItemResult>>, ServerError> {
    let none = HashMap::new();
    let all = Plan {
        include: None,
        poison: &none,
    };
    match write_group(db, apply, group, &all, true) {
        Err(e) if !transient(&e) => {
            tracing::warn!(error = %e, "ledger group failed; isolating its items");
        }
        done => return done,
    }
    let slots: Vec<Slot> = group
        .iter()
        .enumerate()
        .flat_map(|(j, job)| (0..job.items.len()).map(move |i| (j, i)))
        .collect();
    // First, trials of the range under test alone (half the work of
    // replaying the accepted prefix each time); an item that fails only
    // next to earlier ones makes the final write fail, and then the exact
    // search (each trial on top of everything accepted before) runs.
    let mut last = None;
    for with_prefix in [false, true] {
        let poison = find_poison(db, apply, group, &slots, with_prefix)?;
        let plan = Plan {
            include: None,
            poison: &poison,
        };
        match write_group(db, apply, group, &plan, true) {
            Err(e) if !transient(&e) => last = Some(e),
            done => return done,
        }
    }
    Err(last.unwrap_or_else(|| storage("isolation found no failing item")))
}

/// Bisects the group's items in aborted trial transactions; returns the
/// failing ones with their errors.
fn find_poison(
    db: &Database,
    apply: &dyn Apply,
    group: &[Job],
    slots: &[Slot],
    with_prefix: bool,
) -> Result<HashMap<Slot, String>, ServerError> {
    let mut accepted: HashSet<Slot> = HashSet::new();
    let mut poison: HashMap<Slot, String> = HashMap::new();
    // The whole group is known to fail.
    let mut bisect = Bisect::after_failure(slots.len());
    while let Some(r) = bisect.next() {
        let mut trial: HashSet<Slot> = if with_prefix {
            accepted.clone()
        } else {
            HashSet::new()
        };
        trial.extend(&slots[r.clone()]);
        let plan = Plan {
            include: Some(&trial),
            poison: &poison,
        };
        match write_group(db, apply, group, &plan, false) {
            Ok(_) => {
                if with_prefix {
                    accepted = trial;
                }
            }
            Err(e) if transient(&e) => return Err(e),
            Err(e) => {
                if r.len() == 1 {
                    poison.insert(slots[r.start], e.to_string());
                }
                bisect.failed(r);
            }
        }
    }
    Ok(poison)
}

/// Writes the planned items of a group in one transaction, committed when
/// `commit` (else a trial, aborted: nothing reaches the disk).
fn write_group(
    db: &Database,
    apply: &dyn Apply,
    group: &[Job],
    plan: &Plan<'_>,
    commit: bool,
) -> Result<Vec<Vec<ItemResult>>, ServerError> {
    let tx = db.begin_write()?;
    let mut all = Vec::with_capacity(group.len());
    let mut accepted: Vec<Vec<(usize, u64)>> = Vec::with_capacity(group.len());
    {
        let mut items = tx.open_table(ITEMS)?;
        let mut by_time = tx.open_table(BY_TIME)?;
        let mut meta = tx.open_table(META)?;
        let get = |m: &redb::Table<'_, &str, u64>, k: &str| -> Result<u64, ServerError> {
            Ok(m.get(k)?.map_or(0, |v| v.value()))
        };
        let mut next_seq = get(&meta, "next_seq")?.max(1);
        let mut applied = get(&meta, "applied")?;
        let mut rejected = get(&meta, "rejected")?;
        for (j, job) in group.iter().enumerate() {
            let mut results = Vec::with_capacity(job.items.len());
            let mut ok = Vec::new();
            for (i, item) in job.items.iter().enumerate() {
                if plan.include.is_some_and(|inc| !inc.contains(&(j, i))) {
                    results.push(ItemResult::RetryLater);
                    continue;
                }
                let key = (job.terminal.as_str(), job.store, item.local_id);
                let digest = payload_digest(&item.payload);
                if let Some(row) = items.get(key)? {
                    let row: ItemRow = postcard::from_bytes(row.value()).map_err(storage)?;
                    results.push(row.recorded().answer(item.local_id, Some(&digest)));
                    continue;
                }
                let seq = next_seq;
                next_seq += 1;
                let verdict = match plan.poison.get(&(j, i)) {
                    Some(m) => Err(Rejection::new(STORAGE_REJECTION, m.clone())),
                    None => apply.check(&job.terminal, item),
                };
                let (row, result) = match verdict {
                    Ok(()) => {
                        applied += 1;
                        ok.push((i, seq));
                        (
                            ItemRow {
                                seq,
                                at_ms: job.now_ms,
                                status: STATUS_APPLIED,
                                code: String::new(),
                                message: String::new(),
                                digest: Some(digest),
                            },
                            ItemResult::Applied { server_seq: seq },
                        )
                    }
                    Err(r) => {
                        rejected += 1;
                        (
                            ItemRow {
                                seq,
                                at_ms: job.now_ms,
                                status: STATUS_REJECTED,
                                code: r.code.clone(),
                                message: r.message.clone(),
                                digest: Some(digest),
                            },
                            ItemResult::Rejected {
                                code: r.code,
                                message: r.message,
                            },
                        )
                    }
                };
                items.insert(
                    key,
                    postcard::to_allocvec(&row).map_err(storage)?.as_slice(),
                )?;
                by_time.insert((job.now_ms, seq), key)?;
                results.push(result);
            }
            all.push(results);
            accepted.push(ok);
        }
        meta.insert("next_seq", next_seq)?;
        meta.insert("applied", applied)?;
        meta.insert("rejected", rejected)?;
    }
    for ((job, ok), results) in group.iter().zip(&accepted).zip(&mut all) {
        if ok.is_empty() {
            continue;
        }
        let list: Vec<Accepted<'_>> = ok
            .iter()
            .map(|&(i, seq)| Accepted {
                terminal_id: &job.terminal,
                server_seq: seq,
                item: &job.items[i],
            })
            .collect();
        let refused = apply.apply_redb(&tx, &list)?;
        if !refused.is_empty() {
            refuse_applied(&tx, job, ok, &refused, results)?;
        }
    }
    if commit {
        tx.commit()?;
    } else {
        tx.abort()?;
    }
    Ok(all)
}

/// Records items the hook refused after all (e.g. a reused order id) as
/// rejected instead of applied, in the same transaction.
fn refuse_applied(
    tx: &redb::WriteTransaction,
    job: &Job,
    ok: &[(usize, u64)],
    refused: &[(usize, Rejection)],
    results: &mut [ItemResult],
) -> Result<(), ServerError> {
    let mut items = tx.open_table(ITEMS)?;
    let mut meta = tx.open_table(META)?;
    for (n, r) in refused {
        let Some(&(i, _)) = ok.get(*n) else {
            return Err(ServerError::Apply(format!(
                "hook refused item {n} of {} accepted",
                ok.len()
            )));
        };
        let key = (job.terminal.as_str(), job.store, job.items[i].local_id);
        let row = items
            .get(key)?
            .map(|v| postcard::from_bytes::<ItemRow>(v.value()))
            .transpose()
            .map_err(storage)?
            .ok_or_else(|| storage("refused item not recorded"))?;
        let row = ItemRow {
            status: STATUS_REJECTED,
            code: r.code.clone(),
            message: r.message.clone(),
            ..row
        };
        items.insert(
            key,
            postcard::to_allocvec(&row).map_err(storage)?.as_slice(),
        )?;
        results[i] = ItemResult::Rejected {
            code: r.code.clone(),
            message: r.message.clone(),
        };
    }
    let n = refused.len() as u64;
    let applied = meta.get("applied")?.map_or(0, |v| v.value());
    let rejected = meta.get("rejected")?.map_or(0, |v| v.value());
    meta.insert("applied", applied.saturating_sub(n))?;
    meta.insert("rejected", rejected + n)?;
    Ok(())
}

#[async_trait::async_trait]
impl Ledger for RedbLedger {
    async fn push(
        &self,
        terminal_id: &str,
        store: StoreId,
        items: Vec<OutboxItem>,
        now_ms: u64,
    ) -> Result<Vec<ItemResult>, ServerError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        for (n, item) in items.iter().enumerate() {
            check_item(n, item)?;
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            terminal: terminal_id.to_owned(),
            store: store.as_u128(),
            items,
            now_ms,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ServerError::Unavailable("ledger queue full".into()))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ServerError::Unavailable("ledger writer stopped".into()))
            }
        }
        rx.await
            .map_err(|_| ServerError::Unavailable("ledger writer stopped".into()))?
    }

    async fn status(
        &self,
        terminal_id: &str,
        store: StoreId,
        local_ids: &[u64],
    ) -> Result<Vec<Option<ItemResult>>, ServerError> {
        let terminal = terminal_id.to_owned();
        let ids = local_ids.to_vec();
        let store = store.as_u128();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let items = tx.open_table(ITEMS)?;
            ids.iter()
                .map(|&id| {
                    let Some(row) = items.get((terminal.as_str(), store, id))? else {
                        return Ok(None);
                    };
                    let row: ItemRow = postcard::from_bytes(row.value()).map_err(storage)?;
                    Ok(Some(row.recorded().answer(id, None)))
                })
                .collect()
        })
        .await
    }

    async fn terminal_items(
        &self,
        terminal_id: &str,
        limit: usize,
    ) -> Result<Vec<LedgerItem>, ServerError> {
        let terminal = terminal_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let items = tx.open_table(ITEMS)?;
            let range = (terminal.as_str(), 0u128, 0u64)..=(terminal.as_str(), u128::MAX, u64::MAX);
            let mut out = Vec::new();
            for row in items.range(range)? {
                let (k, v) = row?;
                let (_, store, local_id) = k.value();
                let row: ItemRow = postcard::from_bytes(v.value()).map_err(storage)?;
                let at = row.at_ms;
                let seq = row.seq;
                out.push((
                    seq,
                    LedgerItem {
                        store: StoreId::from_u128(store),
                        local_id,
                        result: row.recorded().outcome(),
                        recorded_at_ms: at,
                    },
                ));
            }
            out.sort_by_key(|(seq, _)| *seq);
            let skip = out.len().saturating_sub(limit);
            Ok(out.into_iter().skip(skip).map(|(_, i)| i).collect())
        })
        .await
    }

    async fn terminal_orders(
        &self,
        terminal_id: &str,
        limit: usize,
    ) -> Result<Vec<PosOrder>, ServerError> {
        let terminal = terminal_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let orders = match tx.open_table(crate::REDB_ORDERS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let receipts = match tx.open_table(crate::REDB_RECEIPTS) {
                Ok(t) => Some(t),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let range = (terminal.as_str(), 0u64)..=(terminal.as_str(), u64::MAX);
            let mut out = Vec::new();
            for row in orders.range(range)? {
                let (k, v) = row?;
                let (_, order_id) = k.value();
                let (server_seq, cashier_id, created_at_ms, total_cents, lines) = v.value();
                let receipt = match &receipts {
                    Some(t) => t
                        .get((terminal.as_str(), order_id))?
                        .map(|r| r.value().to_owned()),
                    None => None,
                };
                out.push(PosOrder {
                    order_id,
                    server_seq,
                    receipt,
                    cashier_id,
                    created_at_ms,
                    total_cents,
                    lines,
                });
            }
            out.sort_by_key(|o| o.server_seq);
            let skip = out.len().saturating_sub(limit);
            Ok(out.into_iter().skip(skip).collect())
        })
        .await
    }

    async fn note_store(
        &self,
        terminal_id: &str,
        store: StoreId,
        now_ms: u64,
    ) -> Result<bool, ServerError> {
        let terminal = terminal_id.to_owned();
        let store = store.as_u128();
        let known = self
            .blocking({
                let terminal = terminal.clone();
                move |db| {
                    let tx = db.begin_read()?;
                    let stores = tx.open_table(STORES)?;
                    Ok(stores.get((terminal.as_str(), store))?.is_some())
                }
            })
            .await?;
        if known {
            return Ok(false);
        }
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let new = {
                let mut stores = tx.open_table(STORES)?;
                let new = stores.get((terminal.as_str(), store))?.is_none();
                if new {
                    stores.insert((terminal.as_str(), store), now_ms)?;
                }
                new
            };
            tx.commit()?;
            Ok(new)
        })
        .await
    }

    async fn terminal_stores(&self, terminal_id: &str) -> Result<Vec<StoreSeen>, ServerError> {
        let terminal = terminal_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let stores = tx.open_table(STORES)?;
            let mut out = Vec::new();
            for r in stores.range((terminal.as_str(), 0u128)..=(terminal.as_str(), u128::MAX))? {
                let (k, v) = r?;
                out.push(StoreSeen {
                    store_id: StoreId::from_u128(k.value().1),
                    first_seen_ms: v.value(),
                });
            }
            out.sort_by_key(|s| (s.first_seen_ms, s.store_id));
            Ok(out)
        })
        .await
    }

    async fn totals(&self) -> Result<LedgerTotals, ServerError> {
        self.blocking(|db| {
            let tx = db.begin_read()?;
            let meta = tx.open_table(META)?;
            let get =
                |k: &str| -> Result<u64, ServerError> { Ok(meta.get(k)?.map_or(0, |v| v.value())) };
            Ok(LedgerTotals {
                applied: get("applied")?,
                rejected: get("rejected")?,
            })
        })
        .await
    }

    async fn stock_since(
        &self,
        store: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<pdc_sync::StockLevel>, ServerError> {
        let store = store.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let (feed, stock) = match (
                tx.open_table(crate::REDB_STOCK_FEED),
                tx.open_table(crate::REDB_STOCK),
            ) {
                (Ok(f), Ok(s)) => (f, s),
                (Err(redb::TableError::TableDoesNotExist(_)), _)
                | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
                (Err(e), _) | (_, Err(e)) => return Err(e.into()),
            };
            let mut out = Vec::new();
            let from = since.saturating_add(1);
            for row in feed
                .range((store.as_str(), from)..=(store.as_str(), u64::MAX))?
                .take(limit)
            {
                let (k, v) = row?;
                let product_id = v.value();
                let quantity = stock
                    .get((store.as_str(), product_id))?
                    .map_or(0, |q| q.value());
                out.push(pdc_sync::StockLevel {
                    product_id,
                    quantity,
                    seq: k.value().1,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn purge_before(&self, cutoff_ms: u64, chunk: usize) -> Result<u64, ServerError> {
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let mut n = 0u64;
            {
                let mut items = tx.open_table(ITEMS)?;
                let mut by_time = tx.open_table(BY_TIME)?;
                let mut meta = tx.open_table(META)?;
                type Victim = ((u64, u64), (String, u128, u64));
                let victims: Vec<Victim> = by_time
                    .range(..(cutoff_ms, 0))?
                    .take(chunk)
                    .map(|r| {
                        r.map(|(k, v)| {
                            let (t, store, id) = v.value();
                            (k.value(), (t.to_owned(), store, id))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let (mut applied, mut rejected) = (0u64, 0u64);
                for (k, (t, store, id)) in &victims {
                    by_time.remove(*k)?;
                    if let Some(row) = items.remove((t.as_str(), *store, *id))? {
                        let row: ItemRow = postcard::from_bytes(row.value()).map_err(storage)?;
                        if row.status == STATUS_REJECTED {
                            rejected += 1;
                        } else {
                            applied += 1;
                        }
                    }
                    n += 1;
                }
                for (k, d) in [("applied", applied), ("rejected", rejected)] {
                    let v = meta.get(k)?.map_or(0, |v| v.value());
                    meta.insert(k, v.saturating_sub(d))?;
                }
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    async fn add_terminal(
        &self,
        terminal_id: &str,
        token: &TokenDigest,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        let id = terminal_id.to_owned();
        let token = *token;
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut terminals = tx.open_table(TERMINALS)?;
                if terminals.get(id.as_str())?.is_some() {
                    return Err(ServerError::TerminalExists(id));
                }
                let row = TerminalRow {
                    token: token.to_vec(),
                    created_at_ms: now_ms,
                    revoked: false,
                };
                terminals.insert(
                    id.as_str(),
                    postcard::to_allocvec(&row).map_err(storage)?.as_slice(),
                )?;
                tx.open_table(TOKENS)?
                    .insert(token.as_slice(), id.as_str())?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn revoke_terminal(&self, terminal_id: &str) -> Result<bool, ServerError> {
        self.update_terminal(terminal_id, None).await
    }

    async fn rotate_terminal(
        &self,
        terminal_id: &str,
        token: &TokenDigest,
    ) -> Result<bool, ServerError> {
        self.update_terminal(terminal_id, Some(*token)).await
    }

    async fn terminals(&self) -> Result<Vec<TerminalInfo>, ServerError> {
        self.blocking(|db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(TERMINALS)?;
            let views = tx.open_table(TERMINAL_VIEWS)?;
            let mut out = Vec::with_capacity(t.len()? as usize);
            for r in t.iter()? {
                let (k, v) = r?;
                let row: TerminalRow = postcard::from_bytes(v.value()).map_err(storage)?;
                out.push(TerminalInfo {
                    terminal_id: k.value().to_owned(),
                    created_at_ms: row.created_at_ms,
                    revoked: row.revoked,
                    view: read_view(&views, k.value())?.unwrap_or_default(),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn terminal_for_token(&self, token: &TokenDigest) -> Result<Option<String>, ServerError> {
        let token = *token;
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let t = tx.open_table(TOKENS)?;
            Ok(t.get(token.as_slice())?.map(|v| v.value().to_owned()))
        })
        .await
    }

    async fn set_terminal_view(&self, terminal_id: &str, view: &View) -> Result<bool, ServerError> {
        let id = terminal_id.to_owned();
        let bytes = postcard::to_allocvec(view).map_err(storage)?;
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            let found = tx.open_table(TERMINALS)?.get(id.as_str())?.is_some();
            if found {
                tx.open_table(TERMINAL_VIEWS)?
                    .insert(id.as_str(), bytes.as_slice())?;
            }
            tx.commit()?;
            Ok(found)
        })
        .await
    }

    async fn terminal_view(&self, terminal_id: &str) -> Result<Option<View>, ServerError> {
        let id = terminal_id.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            if tx.open_table(TERMINALS)?.get(id.as_str())?.is_none() {
                return Ok(None);
            }
            Ok(Some(
                read_view(&tx.open_table(TERMINAL_VIEWS)?, &id)?.unwrap_or_default(),
            ))
        })
        .await
    }

    async fn dataset_version(&self, name: &str) -> Result<Option<u64>, ServerError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let v = tx
                .open_table(DS_VERSION)?
                .get(name.as_str())?
                .map(|v| v.value());
            Ok(v)
        })
        .await
    }

    async fn load_dataset_since(
        &self,
        name: &str,
        after: u64,
    ) -> Result<Option<StoredDataset>, ServerError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_read()?;
            let Some(version) = tx
                .open_table(DS_VERSION)?
                .get(name.as_str())?
                .map(|v| v.value())
            else {
                return Ok(None);
            };
            let recs = tx.open_table(DS_RECORDS)?;
            let mut records = Vec::new();
            // The chain layer under the bare name, the others under
            // `name@…` (layer names are ASCII below '~').
            let layered = format!("{name}@");
            let layered_end = format!("{name}@~");
            let chain = recs.range((name.as_str(), 0)..=(name.as_str(), u64::MAX))?;
            let others = recs.range((layered.as_str(), 0)..(layered_end.as_str(), 0))?;
            for r in chain.chain(others) {
                let (k, v) = r?;
                let (qualified, id) = k.value();
                let (_, scope) = Scope::split(qualified).map_err(storage)?;
                let (version, entry) = decode_entry(v.value())?;
                if version > after {
                    records.push(StoredRecord {
                        scope,
                        id,
                        version,
                        entry,
                    });
                }
            }
            Ok(Some(StoredDataset { version, records }))
        })
        .await
    }

    async fn store_dataset(
        &self,
        name: &str,
        expected: u64,
        version: u64,
        changes: &[StoredRecord],
    ) -> Result<(), ServerError> {
        let name = name.to_owned();
        let changes = changes.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_write()?;
            {
                let mut versions = tx.open_table(DS_VERSION)?;
                let found = versions.get(name.as_str())?.map_or(0, |v| v.value());
                if found != expected {
                    return Err(ServerError::DatasetConflict {
                        dataset: name,
                        expected,
                        found,
                    });
                }
                versions.insert(name.as_str(), version)?;
                let mut recs = tx.open_table(DS_RECORDS)?;
                for c in &changes {
                    let v = encode_entry(c.version, c.entry.as_ref())?;
                    recs.insert((c.scope.qualify(&name).as_str(), c.id), v.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}

fn read_view(
    views: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<View>, ServerError> {
    views
        .get(id)?
        .map(|v| postcard::from_bytes::<View>(v.value()))
        .transpose()
        .map_err(storage)
}

/// A dataset entry as stored: `(version, body)` (what schema 2 files
/// hold) or `(version, None, true)` for a hidden id.
fn encode_entry(version: u64, entry: Option<&Entry>) -> Result<Vec<u8>, ServerError> {
    match entry {
        Some(Entry::Record(b)) => postcard::to_allocvec(&(version, Some(b))),
        None => postcard::to_allocvec(&(version, None::<Vec<u8>>)),
        Some(Entry::Hidden) => postcard::to_allocvec(&(version, None::<Vec<u8>>, true)),
    }
    .map_err(storage)
}

fn decode_entry(bytes: &[u8]) -> Result<(u64, Option<Entry>), ServerError> {
    if let Ok((version, None, true)) = postcard::from_bytes::<(u64, Option<Vec<u8>>, bool)>(bytes) {
        return Ok((version, Some(Entry::Hidden)));
    }
    let (version, body): (u64, Option<Vec<u8>>) = postcard::from_bytes(bytes).map_err(storage)?;
    Ok((version, body.map(Entry::Record)))
}
