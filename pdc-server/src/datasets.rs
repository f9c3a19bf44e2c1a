//! Reference datasets served by pull: kept in memory as pdc-sync
//! [`ScopedDataset`]s (chain, region and store layers sharing one version
//! and change log), persisted in the ledger, imported from JSON by an
//! administrator, and refreshed from the ledger when another process
//! changed them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use pdc_auth::{KdfParams, PinHasher, PinPolicy, UserRecord};
use pdc_codec::{Codec, Product};
use pdc_sync::{
    DatasetRecord, Entry, PullRequest, PullResponse, Scope, ScopedChange, ScopedDataset, View,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Mutex, RwLock};

use crate::ledger::Ledger;
use crate::ServerError;

/// The datasets terminals pull by default.
pub const DEFAULT_DATASETS: [&str; 3] = ["products", "users", "config"];

/// How many times a change is planned again after another writer (maybe
/// another process) moved the dataset's version under it.
const CAS_ATTEMPTS: usize = 16;

/// The ids of one dataset as each layer sees them, for checks such as
/// [`crate::PosApply`]'s catalogue: the chain's ids, and per region or
/// store layer the ids it adds or overrides and the ids it hides.
#[derive(Debug, Clone, Default)]
pub struct ScopedIds {
    /// The dataset version these ids are of.
    pub version: u64,
    /// Ids of the chain layer.
    pub chain: HashSet<u64>,
    /// Per layer: id → whether the layer holds a record (`false`: hidden).
    pub layers: HashMap<Scope, HashMap<u64, bool>>,
}

impl ScopedIds {
    /// Whether `view` sees a record under `id`.
    pub fn contains(&self, view: &View, id: u64) -> bool {
        for s in view.layers() {
            if s == Scope::Chain {
                return self.chain.contains(&id);
            }
            if let Some(&present) = self.layers.get(&s).and_then(|l| l.get(&id)) {
                return present;
            }
        }
        false
    }
}

/// The server's datasets.
pub struct DatasetHub {
    ledger: Arc<dyn Ledger>,
    sets: RwLock<BTreeMap<String, ScopedDataset>>,
    writer: Mutex<()>,
    max_log: usize,
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for DatasetHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetHub").finish_non_exhaustive()
    }
}

fn restore(name: &str, max_log: usize, stored: Option<crate::StoredDataset>) -> ScopedDataset {
    match stored {
        Some(stored) => ScopedDataset::restore(name, max_log, stored.version, stored.records),
        None => ScopedDataset::new(name, max_log),
    }
}

impl DatasetHub {
    /// Loads `names` from the ledger (an unknown name starts empty at
    /// version 0), keeping change logs of `max_log` entries.
    pub async fn load(
        ledger: Arc<dyn Ledger>,
        names: &[&str],
        max_log: usize,
    ) -> Result<Self, ServerError> {
        let mut sets = BTreeMap::new();
        for &name in names {
            let stored = ledger.load_dataset(name).await?;
            sets.insert(name.to_owned(), restore(name, max_log, stored));
        }
        Ok(DatasetHub {
            ledger,
            sets: RwLock::new(sets),
            writer: Mutex::new(()),
            max_log,
            changed: watch::channel(0).0,
        })
    }

    /// A receiver whose value changes whenever a dataset here changed
    /// (written in this process or read back from the ledger).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Applies upserts and deletes to the chain layer of a dataset (see
    /// [`DatasetHub::update_scoped`]). Returns the new version.
    pub async fn update(
        &self,
        name: &str,
        upserts: Vec<DatasetRecord>,
        deletes: Vec<u64>,
    ) -> Result<u64, ServerError> {
        self.update_scoped(name, &Scope::Chain, record_entries(upserts), deletes)
            .await
    }

    /// Sets entries of a dataset's layer and removes others (for the
    /// chain: deletes records; for an override layer: falls back to the
    /// layers below): persisted first (compare-and-set on the dataset's
    /// version, planned again when another writer got there first), then
    /// visible to pulls; on error nothing changes. Returns the new version.
    pub async fn update_scoped(
        &self,
        name: &str,
        scope: &Scope,
        upserts: Vec<(u64, Entry)>,
        removes: Vec<u64>,
    ) -> Result<u64, ServerError> {
        check_ids(
            name,
            upserts
                .iter()
                .map(|(id, _)| *id)
                .chain(removes.iter().copied()),
        )?;
        self.write(name, |d| {
            d.plan_update(scope, upserts.clone(), removes.clone())
        })
        .await
    }

    /// Replaces the chain layer's contents: records not in `records` are
    /// deleted, changed ones upserted, identical ones untouched.
    pub async fn replace(
        &self,
        name: &str,
        records: Vec<DatasetRecord>,
    ) -> Result<u64, ServerError> {
        self.replace_scoped(name, &Scope::Chain, record_entries(records))
            .await
    }

    /// Makes a dataset's layer hold exactly `entries` (see
    /// [`DatasetHub::update_scoped`]).
    pub async fn replace_scoped(
        &self,
        name: &str,
        scope: &Scope,
        entries: Vec<(u64, Entry)>,
    ) -> Result<u64, ServerError> {
        check_ids(name, entries.iter().map(|(id, _)| *id))?;
        self.write(name, |d| d.plan_replace(scope, entries.clone()))
            .await
    }

    async fn write(
        &self,
        name: &str,
        plan: impl Fn(&ScopedDataset) -> Result<Vec<ScopedChange>, pdc_sync::SyncError>,
    ) -> Result<u64, ServerError> {
        let _w = self.writer.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let (expected, changes) = {
                let sets = self.sets.read().await;
                let empty;
                let d = match sets.get(name) {
                    Some(d) => d,
                    None => {
                        empty = ScopedDataset::new(name, self.max_log);
                        &empty
                    }
                };
                let changes = plan(d).map_err(|e| ServerError::Dataset(format!("{name}: {e}")))?;
                (d.version(), changes)
            };
            let Some(version) = changes.iter().map(|c| c.version).max() else {
                return Ok(expected);
            };
            match self
                .ledger
                .store_dataset(name, expected, version, &changes)
                .await
            {
                Ok(()) => {
                    let mut sets = self.sets.write().await;
                    sets.entry(name.to_owned())
                        .or_insert_with(|| ScopedDataset::new(name, self.max_log))
                        .apply(&changes);
                    drop(sets);
                    self.bump();
                    return Ok(version);
                }
                Err(ServerError::DatasetConflict { .. }) => {
                    self.refresh_locked(name).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let found = self.ledger.dataset_version(name).await?.unwrap_or(0);
        Err(ServerError::DatasetConflict {
            dataset: name.to_owned(),
            expected: self.version(name).await,
            found,
        })
    }

    /// A dataset's version here (0 when unknown).
    pub async fn version(&self, name: &str) -> u64 {
        self.sets
            .read()
            .await
            .get(name)
            .map_or(0, ScopedDataset::version)
    }

    /// Reads back what other processes changed in the ledger since this
    /// hub last saw it; returns the names of the datasets that changed.
    pub async fn refresh(&self) -> Result<Vec<String>, ServerError> {
        let _w = self.writer.lock().await;
        let names: Vec<String> = self.sets.read().await.keys().cloned().collect();
        let mut changed = Vec::new();
        for name in names {
            if self.refresh_locked(&name).await? {
                changed.push(name);
            }
        }
        Ok(changed)
    }

    /// [`DatasetHub::refresh`] of one dataset, the writer lock held.
    async fn refresh_locked(&self, name: &str) -> Result<bool, ServerError> {
        let ours = self.version(name).await;
        match self.ledger.dataset_version(name).await? {
            Some(v) if v > ours => {}
            _ => return Ok(false),
        }
        let Some(stored) = self.ledger.load_dataset_since(name, ours).await? else {
            return Ok(false);
        };
        let mut sets = self.sets.write().await;
        let d = sets
            .entry(name.to_owned())
            .or_insert_with(|| ScopedDataset::new(name, self.max_log));
        if d.version() != ours {
            // Cannot happen with the writer lock held; reload whole.
            drop(sets);
            let all = self.ledger.load_dataset(name).await?;
            self.sets
                .write()
                .await
                .insert(name.to_owned(), restore(name, self.max_log, all));
        } else {
            let mut changes = stored.records;
            changes.sort_by_key(|c| c.version);
            d.apply(&changes);
            drop(sets);
        }
        self.bump();
        Ok(true)
    }

    /// Answers a pull of a terminal with this view.
    pub async fn answer(&self, req: &PullRequest, view: &View) -> PullResponse {
        let sets = self.sets.read().await;
        PullResponse {
            datasets: req
                .datasets
                .iter()
                .filter_map(|s| sets.get(&s.dataset).map(|d| d.answer(s, view)))
                .collect(),
        }
    }

    /// Per dataset, the version of the last change `view` sees.
    pub async fn view_versions(&self, view: &View) -> BTreeMap<String, u64> {
        self.sets
            .read()
            .await
            .iter()
            .map(|(n, d)| (n.clone(), d.view_version(view)))
            .collect()
    }

    /// A dataset's version and the ids of its chain layer.
    pub async fn ids(&self, name: &str) -> Option<(u64, Vec<u64>)> {
        self.sets.read().await.get(name).map(|d| {
            (
                d.version(),
                d.layer(&Scope::Chain).map(|(id, _)| id).collect(),
            )
        })
    }

    /// A dataset's ids per layer.
    pub async fn scoped_ids(&self, name: &str) -> Option<ScopedIds> {
        self.sets.read().await.get(name).map(|d| {
            let mut ids = ScopedIds {
                version: d.version(),
                ..ScopedIds::default()
            };
            for scope in d.scopes() {
                if *scope == Scope::Chain {
                    ids.chain = d.layer(scope).map(|(id, _)| id).collect();
                } else {
                    ids.layers.insert(
                        scope.clone(),
                        d.layer(scope)
                            .map(|(id, e)| (id, matches!(e, Entry::Record(_))))
                            .collect(),
                    );
                }
            }
            ids
        })
    }

    /// The records of a dataset `view` sees, by id.
    pub async fn view_records(&self, name: &str, view: &View) -> Vec<DatasetRecord> {
        self.sets.read().await.get(name).map_or_else(Vec::new, |d| {
            d.records(view)
                .map(|(id, b)| DatasetRecord {
                    id,
                    body: b.to_vec(),
                })
                .collect()
        })
    }

    /// The encoded size of a full snapshot of a dataset's chain view.
    pub async fn snapshot_bytes(&self, name: &str) -> usize {
        self.snapshot_bytes_for(name, &View::chain()).await
    }

    /// The encoded size of a full snapshot of a dataset as `view` sees it.
    pub async fn snapshot_bytes_for(&self, name: &str, view: &View) -> usize {
        self.sets
            .read()
            .await
            .get(name)
            .map_or(0, |d| d.snapshot_size(view))
    }

    /// Approximate heap bytes of every dataset held.
    pub async fn memory_bytes(&self) -> usize {
        self.sets
            .read()
            .await
            .values()
            .map(ScopedDataset::memory_bytes)
            .sum()
    }
}

fn check_ids(name: &str, mut ids: impl Iterator<Item = u64>) -> Result<(), ServerError> {
    match ids.find(|&id| id > pdc_sync::MAX_WIRE_INT) {
        Some(id) => Err(ServerError::Dataset(format!(
            "{name}: record id {id} is above 2^63-1, the largest a ledger stores"
        ))),
        None => Ok(()),
    }
}

/// A user as imported from JSON: the PIN is hashed at import and never
/// stored in clear.
#[derive(Debug, Deserialize)]
struct UserImport {
    id: u64,
    user_id: String,
    role: String,
    pin: String,
}

/// Builds dataset records from an administrator's JSON file:
///
/// * `products`: an array of pdc-codec `Product`s (`id`, `name`,
///   `barcode`, `category`, `price_cents`, `tax_rate_bp`, `active`), each
///   stored as a pdc-codec frame under its id;
/// * `users`: an array of `{id, user_id, role, pin}`; the PIN is checked
///   against the PIN policy and hashed with `kdf` (Argon2id by default)
///   into a postcard-encoded pdc-auth [`UserRecord`];
/// * `config`: an object of `key: value`; each entry a JSON record
///   `{"key":…,"value":…}` under an id derived from its key.
pub fn records_from_json(
    dataset: &str,
    json: &[u8],
    kdf: KdfParams,
) -> Result<Vec<DatasetRecord>, ServerError> {
    let codec = Codec::new();
    let bad = |e: &dyn std::fmt::Display| ServerError::Dataset(format!("{dataset}: {e}"));
    match dataset {
        "products" => {
            let products: Vec<Product> = serde_json::from_slice(json).map_err(|e| bad(&e))?;
            let mut seen = HashSet::new();
            products
                .iter()
                .map(|p| {
                    if !seen.insert(p.id) {
                        return Err(bad(&format!("product id {} twice", p.id)));
                    }
                    Ok(DatasetRecord {
                        id: u64::from(p.id),
                        body: codec.encode(p).map_err(|e| bad(&e))?,
                    })
                })
                .collect()
        }
        "users" => {
            let users: Vec<UserImport> = serde_json::from_slice(json).map_err(|e| bad(&e))?;
            let hasher = PinHasher::new(kdf, None);
            let policy = PinPolicy::default();
            let mut rng = rand::rngs::OsRng;
            users
                .iter()
                .map(|u| {
                    let pin = policy.enrol(&u.pin).map_err(|e| bad(&e))?;
                    let credential = hasher.hash(&pin, &mut rng).map_err(|e| bad(&e))?;
                    let rec = UserRecord {
                        user_id: u.user_id.clone(),
                        role: u.role.clone(),
                        credential,
                        disabled: false,
                    };
                    Ok(DatasetRecord {
                        id: u.id,
                        body: postcard::to_allocvec(&rec).map_err(|e| bad(&e))?,
                    })
                })
                .collect()
        }
        "config" => {
            let map: BTreeMap<String, serde_json::Value> =
                serde_json::from_slice(json).map_err(|e| bad(&e))?;
            map.iter()
                .map(|(k, v)| {
                    let body = serde_json::to_vec(&serde_json::json!({"key": k, "value": v}))
                        .map_err(|e| bad(&e))?;
                    Ok(DatasetRecord {
                        id: config_id(k),
                        body,
                    })
                })
                .collect()
        }
        other => Err(ServerError::Dataset(format!(
            "unknown dataset {other:?} (products, users, config)"
        ))),
    }
}

/// An override file for a region or store layer: the records it sets
/// (same format as the chain's file) and the ids it hides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LayerImport {
    #[serde(default)]
    records: Option<serde_json::Value>,
    #[serde(default)]
    hidden: Vec<u64>,
}

/// Builds a layer's entries from an administrator's JSON file: the chain's
/// format of [`records_from_json`] (every record set), or for `products`
/// and `users` an object `{"records": [...], "hidden": [ids]}` whose
/// `records` are in the chain's format and whose `hidden` ids are not in
/// the views of the layer (a product the store does not sell, a user not
/// allowed there). The chain layer cannot hide ids.
pub fn entries_from_json(
    dataset: &str,
    scope: &Scope,
    json: &[u8],
    kdf: KdfParams,
) -> Result<Vec<(u64, Entry)>, ServerError> {
    let bad = |e: &dyn std::fmt::Display| ServerError::Dataset(format!("{dataset}: {e}"));
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| bad(&e))?;
    let layered = dataset != "config" && value.is_object();
    let (records, hidden) = if layered {
        let l: LayerImport = serde_json::from_value(value).map_err(|e| bad(&e))?;
        let records = match l.records {
            Some(r) => {
                records_from_json(dataset, &serde_json::to_vec(&r).map_err(|e| bad(&e))?, kdf)?
            }
            None => Vec::new(),
        };
        (records, l.hidden)
    } else {
        (records_from_json(dataset, json, kdf)?, Vec::new())
    };
    if *scope == Scope::Chain && !hidden.is_empty() {
        return Err(bad(
            &"the chain layer cannot hide ids: leave them out instead",
        ));
    }
    let ids: HashSet<u64> = records.iter().map(|r| r.id).collect();
    if let Some(id) = hidden.iter().find(|id| ids.contains(id)) {
        return Err(bad(&format!("id {id} is both set and hidden")));
    }
    let mut entries = record_entries(records);
    entries.extend(hidden.into_iter().map(|id| (id, Entry::Hidden)));
    Ok(entries)
}

/// Records as layer entries that set them.
pub(crate) fn record_entries(records: Vec<DatasetRecord>) -> Vec<(u64, Entry)> {
    records
        .into_iter()
        .map(|r| (r.id, Entry::Record(r.body)))
        .collect()
}

/// The record id of a config key: the first 8 bytes of its SHA-256.
pub fn config_id(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}
