//! The store: one redb file per terminal.

use std::path::Path;
use std::sync::Arc;

use pdc_codec::{Codec, RecordKind};
use pdc_sync::{ItemRef, Loaded, OutboxItem, Priority, StoreId, StreamKey};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use crate::seal::{Sealer, StoreKey, StoreOptions, BLIND_KEY, CHECK_PREFIX, GEN_KEY};
use crate::StoreError;

/// Schema version this build writes: 2 adds the store id, 3 the outbox
/// index (what the sync machine schedules by, without payloads) and the
/// held (quarantined) items, 4 encryption at rest (optional: a plain store
/// migrates to 4 unchanged; a build that reads only 3 must not mistake
/// sealed values for damaged ones).
pub const SCHEMA_VERSION: u64 = 4;
const MAGIC: &[u8] = b"pdc-store";

pub(crate) const META: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("pdc_meta");
pub(crate) const OUTBOX: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("outbox");
/// Per pending item, what scheduling needs: stream (8 bytes LE), class
/// (1), encoded size (4 LE). Written in the same transactions as `OUTBOX`.
pub(crate) const OUTBOX_INDEX: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("outbox_index");
/// Pending items the sync machine quarantined, with the reason; they stay
/// in the outbox.
pub(crate) const HELD: TableDefinition<'static, u64, &'static str> =
    TableDefinition::new("outbox_held");
pub(crate) const ATTEMPTS: TableDefinition<'static, u64, u32> =
    TableDefinition::new("outbox_attempts");
pub(crate) const DEAD: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("dead_letters");
/// Card payments taken while offline, by the outbox item that carries
/// them: amount in cents (8 bytes LE, signed), taken at (8 bytes LE, wall
/// ms). Written with the item, removed when its outcome is settled.
pub(crate) const OFFLINE_CARDS: TableDefinition<'static, u64, &'static [u8]> =
    TableDefinition::new("offline_cards");
pub(crate) const QUARANTINE: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("quarantine");

pub(crate) const KIND_OUTBOX: RecordKind = RecordKind(40);
pub(crate) const KIND_DEAD: RecordKind = RecordKind(41);

/// A sale (or any outbox item) before it has a local id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    /// Ordering stream.
    pub stream: StreamKey,
    /// Urgency.
    pub priority: Priority,
    /// Application record kind.
    pub kind: u16,
    /// Wall time of creation, ms.
    pub created_at_ms: u64,
    /// The record.
    pub payload: Vec<u8>,
}

/// An item the server refused for good, with its reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The item.
    pub item: OutboxItem,
    /// Server's code.
    pub code: String,
    /// Server's message.
    pub message: String,
    /// When it was dead-lettered, wall ms.
    pub at_ms: u64,
}

/// An item the server refused for good, named by its local id: the store
/// moves it from the outbox to the dead letters ([`Store::settle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The item.
    pub local_id: u64,
    /// Server's code.
    pub code: String,
    /// Server's message.
    pub message: String,
    /// When, wall ms.
    pub at_ms: u64,
}

/// The outcomes of one server response, committed together by
/// [`Store::settle`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settlement {
    /// Acknowledged items: they leave the outbox.
    pub acked: Vec<u64>,
    /// Refused items: they move to the dead letters.
    pub refused: Vec<Refusal>,
    /// Quarantined items, with the reason: they stay pending but held
    /// until an operator releases them ([`Store::release_held`]).
    pub held: Vec<(u64, String)>,
}

impl Settlement {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.acked.is_empty() && self.refused.is_empty() && self.held.is_empty()
    }
}

fn index_row(item: &ItemRef) -> [u8; 13] {
    let mut row = [0u8; 13];
    row[..8].copy_from_slice(&item.stream.0.to_le_bytes());
    row[8] = item.priority.index() as u8;
    row[9..].copy_from_slice(&item.size.to_le_bytes());
    row
}

fn index_item(local_id: u64, row: &[u8]) -> Option<ItemRef> {
    let stream = u64::from_le_bytes(row.get(..8)?.try_into().ok()?);
    let priority = Priority::from_index(usize::from(*row.get(8)?))?;
    let size = u32::from_le_bytes(row.get(9..13)?.try_into().ok()?);
    Some(ItemRef {
        local_id,
        stream: StreamKey(stream),
        priority,
        size,
    })
}

/// Builds the outbox index from the outbox (migration to schema 3); rows
/// that do not decode are left for [`Store::pending`] to quarantine.
fn build_index(tx: &redb::WriteTransaction, codec: &Codec) -> Result<(), StoreError> {
    let outbox = tx.open_table(OUTBOX)?;
    let mut index = tx.open_table(OUTBOX_INDEX)?;
    for row in outbox.range::<u64>(..)? {
        let (k, v) = row?;
        if let Ok((_, item)) = codec.decode_value::<OutboxItem>(KIND_OUTBOX, v.value()) {
            index.insert(k.value(), index_row(&item.to_ref()).as_slice())?;
        }
    }
    Ok(())
}

/// A record that failed its checksum, moved aside so the rest stays
/// readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Where it was (`outbox/17`).
    pub location: String,
    /// Why.
    pub reason: String,
}

/// The durable store of one terminal.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<Database>,
    pub(crate) codec: Codec,
    store_id: StoreId,
    pub(crate) sealer: Arc<Sealer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// 128 random bits from the OS (the browser's crypto on wasm32 with
/// pdc-core's `browser` feature).
fn new_store_id() -> Result<StoreId, StoreError> {
    loop {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b)
            .map_err(|e| StoreError::Storage(format!("no randomness for the store id: {e}")))?;
        if let Some(id) = StoreId::from_random_bytes(b) {
            return Ok(id);
        }
    }
}

fn foreign(path: &Path) -> StoreError {
    StoreError::NotAStore(path.display().to_string())
}

impl Store {
    /// Opens the store at `path`, creating it if absent. A file that is
    /// not a pdc store, or is damaged, or was written by a newer version, is
    /// an error; an older version is migrated.
    ///
    /// Creation is atomic ([`crate::create_atomically`]): the new store is
    /// made and initialised (magic, schema version, store id, id counter)
    /// under `<path>.creating`, synced, then renamed into place, so a kill
    /// at any instant of a first open leaves no store or a complete one.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Store::open_with_options(path, StoreOptions::default())
    }

    /// [`Store::open`] with options: a page-cache bound, and the keys of an
    /// encrypted store ([`StoreOptions::keys`]; see [`crate::seal`]). A new
    /// store is created encrypted when a key is given. An encrypted store
    /// opened without a key is [`StoreError::KeyRequired`], with a wrong
    /// one [`StoreError::WrongKey`]; a key given for a plain store is
    /// [`StoreError::NotEncrypted`]. Nothing is read or written before the
    /// keys are checked.
    pub fn open_with_options(
        path: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let keys = options.keys.as_slice();
        let cache_bytes = options.cache_bytes;
        let build = || {
            let mut builder = Database::builder();
            if let Some(bytes) = cache_bytes {
                builder.set_cache_size(bytes);
            }
            builder
        };
        crate::create_atomically(path, |tmp| {
            let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build().create(tmp)))
                .map_err(|_| StoreError::Storage(format!("{}: redb panicked", tmp.display())))??;
            // Dropped at once: the file is closed before the rename.
            Store::init_or_check(db, tmp, false, keys).map(drop)
        })?;
        let existed = path.exists()
            && std::fs::metadata(path)
                .map(|m| m.len() > 0)
                .unwrap_or(false);
        // redb 2.6 asserts (panics) on some truncated files instead of
        // returning an error; a damaged file must be an error here.
        let opened =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build().create(path)))
                .map_err(|_| {
                    StoreError::Corrupt(format!("{} is truncated or damaged", path.display()))
                })?;
        let db = match opened {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
                // redb reports a file without its header as invalid data.
                return Err(if existed && e.kind() == std::io::ErrorKind::InvalidData {
                    foreign(path)
                } else {
                    StoreError::Storage(e.to_string())
                });
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(m))) if existed => {
                // redb says "corrupted" both for damage and for a file that
                // was never a redb file.
                return Err(if m.contains("magic") || m.contains("header") {
                    foreign(path)
                } else {
                    StoreError::Corrupt(m)
                });
            }
            Err(e) if existed => {
                return Err(StoreError::Corrupt(format!("{}: {e}", path.display())))
            }
            Err(e) => return Err(e.into()),
        };
        Store::init_or_check(db, path, existed, keys)
    }

    /// Opens a store over any redb storage backend: an in-memory one
    /// (`redb::backends::InMemoryBackend`) for a browser or tests, or a
    /// fault-injecting one to test what happens when the disk fails.
    pub fn open_with_backend(backend: impl redb::StorageBackend) -> Result<Self, StoreError> {
        Store::open_backend(backend, StoreOptions::default())
    }

    /// [`Store::open_with_backend`] with redb's page cache bounded to
    /// `cache_bytes` (redb's default is 1 GiB): in a browser, wasm memory
    /// never shrinks, so a cache that grows with the store would keep the
    /// tab's memory at its high-water mark.
    ///
    /// A non-empty backend that does not start with redb's magic number is
    /// refused (`NotAStore`) before redb reads it: on wasm a panic in redb
    /// traps the whole instance, and `catch_unwind` does not help there.
    pub fn open_with_backend_and_cache(
        backend: impl redb::StorageBackend,
        cache_bytes: Option<usize>,
    ) -> Result<Self, StoreError> {
        Store::open_backend(
            backend,
            StoreOptions {
                cache_bytes,
                keys: Vec::new(),
            },
        )
    }

    /// [`Store::open_with_backend_and_cache`] with every option, the keys
    /// of an encrypted store included (see [`Store::open_with_options`]).
    pub fn open_backend(
        backend: impl redb::StorageBackend,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let cache_bytes = options.cache_bytes;
        const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
        let len = backend
            .len()
            .map_err(|e| StoreError::Storage(e.to_string()))?;
        let existed = len > 0;
        if existed {
            let head = if len >= REDB_MAGIC.len() as u64 {
                backend
                    .read(0, REDB_MAGIC.len())
                    .map_err(|e| StoreError::Storage(e.to_string()))?
            } else {
                Vec::new()
            };
            if head != REDB_MAGIC {
                return Err(StoreError::NotAStore(format!(
                    "<backend>: {len} bytes that are not a redb file"
                )));
            }
        }
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut builder = Database::builder();
            if let Some(bytes) = cache_bytes {
                builder.set_cache_size(bytes);
            }
            builder.create_with_backend(backend)
        }))
        .map_err(|_| StoreError::Corrupt("backend holds a truncated or damaged store".into()))?;
        let db = opened.map_err(StoreError::from)?;
        Store::init_or_check(db, Path::new("<backend>"), existed, &options.keys)
    }

    /// This store's random identity (made with the store; sent with every
    /// push so that the server never mistakes a replaced store for this
    /// one). [`StoreId::LEGACY`] for a store created before schema 2.
    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    /// Whether the store's values are sealed (it was created with a key).
    pub fn is_encrypted(&self) -> bool {
        self.sealer.encrypted()
    }

    fn init_or_check(
        db: Database,
        path: &Path,
        existed: bool,
        keys: &[StoreKey],
    ) -> Result<Store, StoreError> {
        let tx = db.begin_write()?;
        let store_id;
        let sealer;
        {
            let mut meta = tx.open_table(META)?;
            let magic = meta.get("magic")?.map(|g| g.value().to_vec());
            match magic {
                Some(m) if m == MAGIC => {
                    let version = meta
                        .get("schema_version")?
                        .and_then(|g| g.value().try_into().ok().map(u64::from_le_bytes))
                        .ok_or_else(|| StoreError::Corrupt("schema version missing".into()))?;
                    if version > SCHEMA_VERSION {
                        return Err(StoreError::NewerSchema {
                            found: version,
                            supported: SCHEMA_VERSION,
                        });
                    }
                    // Migrations, one step at a time, in this transaction.
                    if version < 2 {
                        // Its pending items may already be applied under the
                        // server's legacy key: it keeps that identity.
                        meta.insert("store_id", StoreId::LEGACY.0.as_slice())?;
                    }
                    if version < 3 {
                        build_index(&tx, &Codec::new())?;
                    }
                    if version < SCHEMA_VERSION {
                        meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                    }
                    store_id = meta
                        .get("store_id")?
                        .and_then(|g| <[u8; 16]>::try_from(g.value()).ok())
                        .map(StoreId)
                        .ok_or_else(|| StoreError::Corrupt("store id missing".into()))?;
                    sealer = existing_sealer(&meta, store_id.0, keys)?;
                }
                Some(_) => return Err(foreign(path)),
                None => {
                    if existed && meta.len()? == 0 && has_foreign_tables(&tx)? {
                        return Err(foreign(path));
                    }
                    store_id = new_store_id()?;
                    meta.insert("magic", MAGIC)?;
                    meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                    meta.insert("store_id", store_id.0.as_slice())?;
                    meta.insert("next_local_id", 1u64.to_le_bytes().as_slice())?;
                    sealer = match keys.first() {
                        None => Sealer::plain(store_id.0),
                        Some(key) => {
                            let check = Sealer::check_record(&store_id.0, key, 1)?;
                            meta.insert(format!("{CHECK_PREFIX}1").as_str(), check.as_slice())?;
                            meta.insert(GEN_KEY, 1u32.to_le_bytes().as_slice())?;
                            let mut sealer =
                                Sealer::with_keys(store_id.0, 1, &[(1, check)], &keys[..1])?;
                            let blind = sealer.new_blind_key(key, 1)?;
                            meta.insert(BLIND_KEY, blind.as_slice())?;
                            sealer
                        }
                    };
                }
            }
            tx.open_table(OUTBOX)?;
            tx.open_table(OUTBOX_INDEX)?;
            tx.open_table(HELD)?;
            tx.open_table(ATTEMPTS)?;
            tx.open_table(DEAD)?;
            tx.open_table(QUARANTINE)?;
        }
        tx.commit()?;
        Ok(Store {
            db: Arc::new(db),
            codec: Codec::new(),
            store_id,
            sealer: Arc::new(sealer),
        })
    }

    /// `plain` as stored in `table` under `key`: sealed in an encrypted
    /// store, as is in a plain one.
    pub(crate) fn seal_row<'p, K: redb::Key + 'static>(
        &self,
        table: TableDefinition<'_, K, &'static [u8]>,
        key: &K::SelfType<'_>,
        plain: &'p [u8],
    ) -> Result<std::borrow::Cow<'p, [u8]>, StoreError> {
        self.sealer
            .seal(table.name(), K::as_bytes(key).as_ref(), plain)
    }

    /// The plain frame of `stored`, read from `table` under `key`.
    pub(crate) fn open_row<'s, K: redb::Key + 'static>(
        &self,
        table: TableDefinition<'_, K, &'static [u8]>,
        key: &K::SelfType<'_>,
        stored: &'s [u8],
    ) -> Result<std::borrow::Cow<'s, [u8]>, StoreError> {
        self.sealer
            .open(table.name(), K::as_bytes(key).as_ref(), stored)
    }

    /// Appends items in one durable commit (group commit) and returns them
    /// with their local ids. Returns only once the commit is on disk: if it
    /// returns `Ok`, the items survive a crash; if `Err`, none was saved.
    pub fn append_many(&self, items: Vec<NewItem>) -> Result<Vec<OutboxItem>, StoreError> {
        let tx = self.db.begin_write()?;
        let out = self.append_in(&tx, items)?;
        tx.commit()?;
        Ok(out)
    }

    /// Appends one item built from the store's next **sale number**, in
    /// the commit that uses it: `make(n)` builds the item for number `n`
    /// (1, 2, 3, … per store). Numbers are gapless: a number is used
    /// exactly when its commit lands — a failed commit, an `Err` from
    /// `make` or a crash before the commit leaves it for the next sale —
    /// and never repeat within the store. Returns the item and its number.
    ///
    /// `offline_card` (amount in cents, taken at wall ms) records a card
    /// payment taken while offline with the item, in the same commit; it
    /// leaves [`Store::offline_cards`] when the item's outcome is settled.
    pub fn append_numbered(
        &self,
        make: impl FnOnce(u64) -> Result<NewItem, StoreError>,
        offline_card: Option<(i64, u64)>,
    ) -> Result<(OutboxItem, u64), StoreError> {
        let tx = self.db.begin_write()?;
        let number = read_counter(&tx.open_table(META)?, "next_sale_number")?.unwrap_or(1);
        // An `Err` here drops the transaction: nothing is written.
        let item = make(number)?;
        let mut out = self.append_in(&tx, vec![item])?;
        tx.open_table(META)?
            .insert("next_sale_number", (number + 1).to_le_bytes().as_slice())?;
        let item = out
            .pop()
            .ok_or_else(|| StoreError::Storage("append produced no item".into()))?;
        if let Some((cents, at_ms)) = offline_card {
            let mut row = [0u8; 16];
            row[..8].copy_from_slice(&cents.to_le_bytes());
            row[8..].copy_from_slice(&at_ms.to_le_bytes());
            tx.open_table(OFFLINE_CARDS)?
                .insert(item.local_id, row.as_slice())?;
        }
        tx.commit()?;
        Ok((item, number))
    }

    /// The card payments taken offline whose sales are not settled yet:
    /// (local id, amount in cents, taken at wall ms), by local id.
    pub fn offline_cards(&self) -> Result<Vec<(u64, i64, u64)>, StoreError> {
        let rtx = self.db.begin_read()?;
        let table = match rtx.open_table(OFFLINE_CARDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in table.range::<u64>(..)? {
            let (k, v) = row?;
            let v = v.value();
            let (Ok(cents), Ok(at)) = (
                <[u8; 8]>::try_from(v.get(..8).unwrap_or_default()),
                <[u8; 8]>::try_from(v.get(8..16).unwrap_or_default()),
            ) else {
                return Err(StoreError::Corrupt(format!(
                    "offline card row {} is {} bytes",
                    k.value(),
                    v.len()
                )));
            };
            out.push((k.value(), i64::from_le_bytes(cents), u64::from_le_bytes(at)));
        }
        Ok(out)
    }

    /// The number [`Store::append_numbered`] gives the next sale.
    pub fn next_sale_number(&self) -> Result<u64, StoreError> {
        let rtx = self.db.begin_read()?;
        Ok(read_counter(&rtx.open_table(META)?, "next_sale_number")?.unwrap_or(1))
    }

    /// Appends `items` in `tx` (not committed here).
    fn append_in(
        &self,
        tx: &redb::WriteTransaction,
        items: Vec<NewItem>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        let mut meta = tx.open_table(META)?;
        let mut next = read_counter(&meta, "next_local_id")?
            .ok_or_else(|| StoreError::Corrupt("local id counter missing".into()))?;
        let mut outbox = tx.open_table(OUTBOX)?;
        let mut index = tx.open_table(OUTBOX_INDEX)?;
        for n in items {
            let item = OutboxItem {
                local_id: next,
                stream: n.stream,
                priority: n.priority,
                kind: n.kind,
                created_at_ms: n.created_at_ms,
                payload: n.payload,
            };
            let frame = self.codec.encode_value(KIND_OUTBOX, 1, &item)?;
            outbox.insert(next, &*self.seal_row(OUTBOX, &next, &frame)?)?;
            index.insert(next, index_row(&item.to_ref()).as_slice())?;
            next += 1;
            out.push(item);
        }
        // The counter moves in the same commit: ids never repeat.
        meta.insert("next_local_id", next.to_le_bytes().as_slice())?;
        Ok(out)
    }

    /// Appends one item durably (see [`Store::append_many`]).
    pub fn append(&self, item: NewItem) -> Result<OutboxItem, StoreError> {
        self.append_many(vec![item])?
            .pop()
            .ok_or_else(|| StoreError::Storage("append produced no item".into()))
    }

    /// Pending items in local-id order, for `SyncMachine::restore`. A record
    /// that fails its checksum is moved to quarantine (reported in the
    /// second list) and the rest is returned.
    pub fn pending(&self) -> Result<(Vec<OutboxItem>, Vec<Quarantined>), StoreError> {
        let mut items = Vec::new();
        let mut bad: Vec<(u64, Vec<u8>, String)> = Vec::new();
        {
            let rtx = self.db.begin_read()?;
            let outbox = rtx.open_table(OUTBOX)?;
            for row in outbox.range::<u64>(..)? {
                let (k, v) = row?;
                match self.decode_outbox(k.value(), v.value()) {
                    Ok(item) if item.local_id == k.value() => items.push(item),
                    Ok(_) => bad.push((
                        k.value(),
                        v.value().to_vec(),
                        "local id does not match its key".into(),
                    )),
                    Err(e) => bad.push((k.value(), v.value().to_vec(), e.to_string())),
                }
            }
        }
        let quarantined = self.quarantine_outbox(bad)?;
        Ok((items, quarantined))
    }

    /// What the sync machine needs of the pending items, in local-id order,
    /// without reading a payload: the items to restore, and those held in
    /// quarantine (with their reasons) by an earlier sync.
    #[allow(clippy::type_complexity)]
    pub fn pending_refs(&self) -> Result<(Vec<ItemRef>, Vec<(ItemRef, String)>), StoreError> {
        let rtx = self.db.begin_read()?;
        let index = rtx.open_table(OUTBOX_INDEX)?;
        let held = rtx.open_table(HELD)?;
        let mut reasons: std::collections::HashMap<u64, String> = std::collections::HashMap::new();
        for row in held.range::<u64>(..)? {
            let (k, v) = row?;
            reasons.insert(k.value(), v.value().to_owned());
        }
        let mut pending = Vec::with_capacity(index.len()? as usize);
        let mut quarantined = Vec::new();
        for row in index.range::<u64>(..)? {
            let (k, v) = row?;
            let item = index_item(k.value(), v.value()).ok_or_else(|| {
                StoreError::Corrupt(format!("outbox index row {} is damaged", k.value()))
            })?;
            match reasons.remove(&item.local_id) {
                Some(reason) => quarantined.push((item, reason)),
                None => pending.push(item),
            }
        }
        Ok((pending, quarantined))
    }

    /// The pending items with these local ids, whole, for a batch. A record
    /// that fails its checksum is moved to quarantine ([`Store::quarantined`])
    /// and answered [`Loaded::Gone`]; so is an id the outbox no longer has.
    pub fn load(&self, local_ids: &[u64]) -> Result<Vec<Loaded>, StoreError> {
        let mut out = Vec::with_capacity(local_ids.len());
        let mut bad: Vec<(u64, Vec<u8>, String)> = Vec::new();
        {
            let rtx = self.db.begin_read()?;
            let outbox = rtx.open_table(OUTBOX)?;
            for &id in local_ids {
                let Some(raw) = outbox.get(id)? else {
                    out.push(Loaded::Gone {
                        reason: "not in the outbox".into(),
                    });
                    continue;
                };
                match self.decode_outbox(id, raw.value()) {
                    Ok(item) if item.local_id == id => out.push(Loaded::Item(item)),
                    Ok(_) => {
                        let reason = "local id does not match its key".to_owned();
                        bad.push((id, raw.value().to_vec(), reason.clone()));
                        out.push(Loaded::Gone { reason });
                    }
                    Err(e) => {
                        bad.push((id, raw.value().to_vec(), e.to_string()));
                        out.push(Loaded::Gone {
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        self.quarantine_outbox(bad)?;
        Ok(out)
    }

    /// An outbox row's item: opened (if sealed), checksummed, decoded.
    fn decode_outbox(&self, local_id: u64, stored: &[u8]) -> Result<OutboxItem, StoreError> {
        let frame = self.open_row(OUTBOX, &local_id, stored)?;
        Ok(self
            .codec
            .decode_value::<OutboxItem>(KIND_OUTBOX, &frame)?
            .1)
    }

    fn quarantine_outbox(
        &self,
        bad: Vec<(u64, Vec<u8>, String)>,
    ) -> Result<Vec<Quarantined>, StoreError> {
        if bad.is_empty() {
            return Ok(Vec::new());
        }
        let tx = self.db.begin_write()?;
        let mut out = Vec::new();
        {
            let mut outbox = tx.open_table(OUTBOX)?;
            let mut index = tx.open_table(OUTBOX_INDEX)?;
            let mut q = tx.open_table(QUARANTINE)?;
            for (id, raw, reason) in bad {
                let location = format!("outbox/{id}");
                let mut rec = reason.clone().into_bytes();
                rec.push(0);
                rec.extend_from_slice(&raw);
                q.insert(location.as_str(), rec.as_slice())?;
                outbox.remove(id)?;
                index.remove(id)?;
                out.push(Quarantined { location, reason });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Records quarantined so far.
    pub fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        let rtx = self.db.begin_read()?;
        let q = rtx.open_table(QUARANTINE)?;
        let mut out = Vec::new();
        for row in q.range::<&str>(..)? {
            let (k, v) = row?;
            let reason = v
                .value()
                .split(|&b| b == 0)
                .next()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .unwrap_or_default();
            out.push(Quarantined {
                location: k.value().to_owned(),
                reason,
            });
        }
        Ok(out)
    }

    /// Removes acknowledged items (one commit).
    pub fn ack(&self, local_ids: &[u64]) -> Result<(), StoreError> {
        self.settle(&Settlement {
            acked: local_ids.to_vec(),
            ..Settlement::default()
        })
    }

    /// Commits the outcomes of one server response in **one** transaction:
    /// the acknowledged items leave the outbox, the refused ones move to
    /// the dead letters with their reasons (read from the outbox inside the
    /// transaction: the caller holds no payload), the quarantined ones are
    /// marked held. All or nothing: on error the outbox is as it was.
    pub fn settle(&self, outcomes: &Settlement) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut outbox = tx.open_table(OUTBOX)?;
            let mut index = tx.open_table(OUTBOX_INDEX)?;
            let mut attempts = tx.open_table(ATTEMPTS)?;
            let mut dead_letters = tx.open_table(DEAD)?;
            let mut held = tx.open_table(HELD)?;
            let mut cards = tx.open_table(OFFLINE_CARDS)?;
            for &id in &outcomes.acked {
                cards.remove(id)?;
                outbox.remove(id)?;
                index.remove(id)?;
                attempts.remove(id)?;
                held.remove(id)?;
            }
            for r in &outcomes.refused {
                cards.remove(r.local_id)?;
                let raw = outbox.remove(r.local_id)?.map(|g| g.value().to_vec());
                index.remove(r.local_id)?;
                attempts.remove(r.local_id)?;
                held.remove(r.local_id)?;
                // An item already gone (acknowledged by an earlier answer)
                // has nothing to move.
                let Some(raw) = raw else { continue };
                let item = self.decode_outbox(r.local_id, &raw)?;
                let frame = self.codec.encode_value(
                    KIND_DEAD,
                    1,
                    &DeadLetter {
                        item,
                        code: r.code.clone(),
                        message: r.message.clone(),
                        at_ms: r.at_ms,
                    },
                )?;
                dead_letters.insert(r.local_id, &*self.seal_row(DEAD, &r.local_id, &frame)?)?;
            }
            for (id, reason) in &outcomes.held {
                if outbox.get(*id)?.is_some() {
                    held.insert(*id, reason.as_str())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Releases an item held in quarantine (an operator re-queued it);
    /// whether it was held.
    pub fn release_held(&self, local_id: u64) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let was = tx.open_table(HELD)?.remove(local_id)?.is_some();
        tx.commit()?;
        Ok(was)
    }

    /// Counts one more send attempt for each item.
    pub fn record_attempts(&self, local_ids: &[u64]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut attempts = tx.open_table(ATTEMPTS)?;
            for &id in local_ids {
                let n = attempts.get(id)?.map(|g| g.value()).unwrap_or(0);
                attempts.insert(id, n.saturating_add(1))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Send attempts of an item.
    pub fn attempts(&self, local_id: u64) -> Result<u32, StoreError> {
        let rtx = self.db.begin_read()?;
        Ok(rtx
            .open_table(ATTEMPTS)?
            .get(local_id)?
            .map(|g| g.value())
            .unwrap_or(0))
    }

    /// Moves an item from the outbox to the dead letters, in one commit.
    pub fn dead_letter(
        &self,
        local_id: u64,
        code: &str,
        message: &str,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.settle(&Settlement {
            refused: vec![Refusal {
                local_id,
                code: code.into(),
                message: message.into(),
                at_ms,
            }],
            ..Settlement::default()
        })
    }

    /// The dead letters, by local id.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rtx = self.db.begin_read()?;
        let t = rtx.open_table(DEAD)?;
        let mut out = Vec::new();
        for row in t.range::<u64>(..)? {
            let (k, v) = row?;
            let frame = self.open_row(DEAD, &k.value(), v.value())?;
            out.push(self.codec.decode_value::<DeadLetter>(KIND_DEAD, &frame)?.1);
        }
        Ok(out)
    }

    /// An operator's re-queue: moves a dead letter back to the outbox under
    /// its original local id (the server dedups on it) and returns it.
    pub fn requeue_dead_letter(&self, local_id: u64) -> Result<OutboxItem, StoreError> {
        let tx = self.db.begin_write()?;
        let item = {
            let mut dead = tx.open_table(DEAD)?;
            let raw = dead
                .remove(local_id)?
                .map(|g| g.value().to_vec())
                .ok_or(StoreError::NotFound(local_id))?;
            let dl: DeadLetter = self
                .codec
                .decode_value(KIND_DEAD, &self.open_row(DEAD, &local_id, &raw)?)?
                .1;
            let frame = self.codec.encode_value(KIND_OUTBOX, 1, &dl.item)?;
            tx.open_table(OUTBOX)?
                .insert(local_id, &*self.seal_row(OUTBOX, &local_id, &frame)?)?;
            tx.open_table(OUTBOX_INDEX)?
                .insert(local_id, index_row(&dl.item.to_ref()).as_slice())?;
            dl.item
        };
        tx.commit()?;
        Ok(item)
    }

    /// Rotates the store's key: every sealed value is re-sealed under
    /// `new`, in write transactions of at most `batch_rows` values each
    /// (sales and syncs go on between them; values written meanwhile are
    /// sealed under `new` already). Returns once the previous key is no
    /// longer needed: from then on the store opens with `new` alone.
    ///
    /// The host must keep both keys until this returns: a crash in the
    /// middle leaves values under both, and the store then opens only with
    /// both ([`StoreError::KeyRotationUnfinished`] names the missing
    /// generation); call `rekey` again (with `new` or yet another key) to
    /// finish. A plain store is [`StoreError::NotEncrypted`].
    pub fn rekey(&self, new: &StoreKey, batch_rows: usize) -> Result<RekeyReport, StoreError> {
        if !self.sealer.encrypted() {
            return Err(StoreError::NotEncrypted);
        }
        let batch = batch_rows.max(1);
        let mut report = RekeyReport::default();
        let generation = {
            let tx = self.db.begin_write()?;
            let generation = self
                .sealer
                .generations()
                .into_iter()
                .max()
                .unwrap_or(0)
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("key generations exhausted".into()))?;
            let check = Sealer::check_record(&self.store_id.0, new, generation)?;
            {
                let mut meta = tx.open_table(META)?;
                meta.insert(
                    format!("{CHECK_PREFIX}{generation}").as_str(),
                    check.as_slice(),
                )?;
                meta.insert(GEN_KEY, generation.to_le_bytes().as_slice())?;
                let blind = self.sealer.sealed_blind_key(new, generation)?;
                meta.insert(BLIND_KEY, blind.as_slice())?;
            }
            tx.commit()?;
            self.sealer.add_current(generation, new);
            generation
        };
        report.generation = generation;
        report.transactions += 1;
        reseal_table(self, OUTBOX, generation, batch, &mut report)?;
        reseal_table(self, DEAD, generation, batch, &mut report)?;
        reseal_table(self, crate::auth::USERS, generation, batch, &mut report)?;
        reseal_table(self, crate::auth::LOCKOUTS, generation, batch, &mut report)?;
        reseal_table(self, crate::auth::SESSIONS, generation, batch, &mut report)?;
        reseal_table(
            self,
            crate::datasets::DS_RECORDS,
            generation,
            batch,
            &mut report,
        )?;
        reseal_table(
            self,
            crate::datasets::DS_LOCAL,
            generation,
            batch,
            &mut report,
        )?;
        reseal_table(
            self,
            crate::cache_tier::CACHE,
            generation,
            batch,
            &mut report,
        )?;
        reseal_table(self, crate::stock::STOCK, generation, batch, &mut report)?;
        // The last pass, in one transaction: what a writer sealed under
        // the old key while the first step committed, then the old checks
        // go. Nothing but such stragglers and unreadable rows is left.
        let tx = self.db.begin_write()?;
        {
            let mut last = |r: (u64, u64)| {
                report.resealed += r.0;
                report.unreadable += r.1;
            };
            last(final_pass(self, &tx, OUTBOX, generation)?);
            last(final_pass(self, &tx, DEAD, generation)?);
            last(final_pass(self, &tx, crate::auth::USERS, generation)?);
            last(final_pass(self, &tx, crate::auth::LOCKOUTS, generation)?);
            last(final_pass(self, &tx, crate::auth::SESSIONS, generation)?);
            last(final_pass(
                self,
                &tx,
                crate::datasets::DS_RECORDS,
                generation,
            )?);
            last(final_pass(
                self,
                &tx,
                crate::datasets::DS_LOCAL,
                generation,
            )?);
            last(final_pass(self, &tx, crate::cache_tier::CACHE, generation)?);
            last(final_pass(self, &tx, crate::stock::STOCK, generation)?);
            let mut meta = tx.open_table(META)?;
            for old in self.sealer.generations() {
                if old != generation {
                    meta.remove(format!("{CHECK_PREFIX}{old}").as_str())?;
                }
            }
        }
        tx.commit()?;
        report.transactions += 1;
        self.sealer.retire_old();
        Ok(report)
    }

    /// The oldest pending outbox item's local id, and how many are
    /// pending; cheap (no item is decoded).
    pub fn pending_summary(&self) -> Result<(Option<u64>, u64), StoreError> {
        use redb::ReadableTableMetadata;
        let rtx = self.db.begin_read()?;
        let outbox = rtx.open_table(OUTBOX)?;
        let first = outbox.first()?.map(|(k, _)| k.value());
        Ok((first, outbox.len()?))
    }

    /// The next local id that will be assigned.
    pub fn next_local_id(&self) -> Result<u64, StoreError> {
        let rtx = self.db.begin_read()?;
        let meta = rtx.open_table(META)?;
        meta.get("next_local_id")?
            .and_then(|g| g.value().try_into().ok().map(u64::from_le_bytes))
            .ok_or_else(|| StoreError::Corrupt("local id counter missing".into()))
    }
}

/// The sealer of an existing store: plain if it has no key generation
/// (then no key may be given), else every generation's check record must
/// open with one of `keys`.
fn existing_sealer(
    meta: &redb::Table<'_, &'static str, &'static [u8]>,
    store_id: [u8; 16],
    keys: &[StoreKey],
) -> Result<Sealer, StoreError> {
    let Some(current) = meta.get(GEN_KEY)? else {
        return if keys.is_empty() {
            Ok(Sealer::plain(store_id))
        } else {
            Err(StoreError::NotEncrypted)
        };
    };
    let current = <[u8; 4]>::try_from(current.value())
        .map(u32::from_le_bytes)
        .map_err(|_| StoreError::Corrupt("key generation is not 4 bytes".into()))?;
    if keys.is_empty() {
        return Err(StoreError::KeyRequired);
    }
    let mut checks = Vec::new();
    for row in meta.range(CHECK_PREFIX..)? {
        let (k, v) = row?;
        let Some(generation) = k.value().strip_prefix(CHECK_PREFIX) else {
            break;
        };
        let generation = generation
            .parse::<u32>()
            .map_err(|_| StoreError::Corrupt(format!("meta key {}", k.value())))?;
        checks.push((generation, v.value().to_vec()));
    }
    let mut sealer = Sealer::with_keys(store_id, current, &checks, keys)?;
    let blind = meta
        .get(BLIND_KEY)?
        .ok_or_else(|| StoreError::Corrupt("blinding key missing".into()))?;
    sealer.load_blind_key(blind.value())?;
    Ok(sealer)
}

/// A table key the rekey cursor can hold between transactions.
pub(crate) trait SealedKey: redb::Key + 'static {
    /// The key, owned.
    type Owned;
    fn own(k: &Self::SelfType<'_>) -> Self::Owned;
    fn borrow(o: &Self::Owned) -> Self::SelfType<'_>;
}

impl SealedKey for u64 {
    type Owned = u64;
    fn own(k: &u64) -> u64 {
        *k
    }
    fn borrow(o: &u64) -> u64 {
        *o
    }
}

impl SealedKey for &'static str {
    type Owned = String;
    fn own(k: &&str) -> String {
        (*k).to_owned()
    }
    fn borrow(o: &String) -> &str {
        o
    }
}

impl SealedKey for &'static [u8] {
    type Owned = Vec<u8>;
    fn own(k: &&[u8]) -> Vec<u8> {
        k.to_vec()
    }
    fn borrow(o: &Vec<u8>) -> &[u8] {
        o
    }
}

impl SealedKey for (&'static str, u64) {
    type Owned = (String, u64);
    fn own(k: &(&str, u64)) -> (String, u64) {
        (k.0.to_owned(), k.1)
    }
    fn borrow(o: &(String, u64)) -> (&str, u64) {
        (o.0.as_str(), o.1)
    }
}

/// What [`Store::rekey`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// The new key's generation.
    pub generation: u32,
    /// Values re-sealed under it.
    pub resealed: u64,
    /// Values that did not open under any key (damaged before the
    /// rotation): left as they were; reading them fails as it did before.
    pub unreadable: u64,
    /// Write transactions used.
    pub transactions: u64,
}

/// One pass over `def`: re-seals up to `limit` values not sealed by
/// `generation`, after `after`; returns (re-sealed, unreadable, the last
/// key examined when the limit stopped the pass).
fn reseal_batch<K: SealedKey>(
    store: &Store,
    tx: &redb::WriteTransaction,
    def: TableDefinition<'static, K, &'static [u8]>,
    generation: u32,
    after: Option<&K::Owned>,
    limit: usize,
) -> Result<(u64, u64, Option<K::Owned>), StoreError> {
    use std::ops::Bound;
    let mut table = tx.open_table(def)?;
    let mut todo: Vec<(K::Owned, Vec<u8>)> = Vec::new();
    let mut stopped_at = None;
    {
        let rows = match after {
            Some(a) => {
                table.range::<K::SelfType<'_>>((Bound::Excluded(K::borrow(a)), Bound::Unbounded))?
            }
            None => table.range::<K::SelfType<'_>>(..)?,
        };
        for row in rows {
            let (k, v) = row?;
            if crate::seal::generation_of(v.value()) != Some(generation) {
                todo.push((K::own(&k.value()), v.value().to_vec()));
                if todo.len() >= limit {
                    stopped_at = Some(K::own(&k.value()));
                    break;
                }
            }
        }
    }
    let (mut resealed, mut unreadable) = (0, 0);
    for (k, stored) in &todo {
        let key = K::borrow(k);
        let Ok(plain) = store.open_row(def, &key, stored) else {
            unreadable += 1;
            continue;
        };
        let sealed = store.seal_row(def, &key, &plain)?.into_owned();
        table.insert(key, sealed.as_slice())?;
        resealed += 1;
    }
    Ok((resealed, unreadable, stopped_at))
}

/// The whole of `def` in `tx`: (re-sealed, unreadable).
fn final_pass<K: SealedKey>(
    store: &Store,
    tx: &redb::WriteTransaction,
    def: TableDefinition<'static, K, &'static [u8]>,
    generation: u32,
) -> Result<(u64, u64), StoreError> {
    let (resealed, unreadable, _) = reseal_batch(store, tx, def, generation, None, usize::MAX)?;
    Ok((resealed, unreadable))
}

/// Re-seals `def` in transactions of at most `batch` values.
fn reseal_table<K: SealedKey>(
    store: &Store,
    def: TableDefinition<'static, K, &'static [u8]>,
    generation: u32,
    batch: usize,
    report: &mut RekeyReport,
) -> Result<(), StoreError> {
    let mut cursor: Option<K::Owned> = None;
    loop {
        let tx = store.db.begin_write()?;
        let (resealed, _, stopped_at) =
            reseal_batch(store, &tx, def, generation, cursor.as_ref(), batch)?;
        tx.commit()?;
        report.resealed += resealed;
        report.transactions += 1;
        match stopped_at {
            Some(k) => cursor = Some(k),
            None => return Ok(()),
        }
    }
}

fn has_foreign_tables(tx: &redb::WriteTransaction) -> Result<bool, StoreError> {
    Ok(tx.list_tables()?.any(|t| t.name() != "pdc_meta"))
}

/// A little-endian u64 counter from the meta table (`None`: not set yet;
/// a value of another size is corruption).
fn read_counter(
    meta: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    match meta.get(key)? {
        None => Ok(None),
        Some(g) => g
            .value()
            .try_into()
            .map(|b| Some(u64::from_le_bytes(b)))
            .map_err(|_| StoreError::Corrupt(format!("counter {key} is not 8 bytes"))),
    }
}
