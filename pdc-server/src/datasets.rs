//! Reference datasets served by pull: kept in memory as pdc-sync
//! [`ServerDataset`]s (version + change log), persisted in the ledger, and
//! imported from JSON by an administrator.

use std::collections::BTreeMap;
use std::sync::Arc;

use pdc_auth::{KdfParams, PinHasher, PinPolicy, UserRecord};
use pdc_codec::{Codec, Product};
use pdc_sync::{DatasetRecord, PullRequest, PullResponse, ServerDataset};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, RwLock};

use crate::ledger::{Ledger, StoredRecord};
use crate::ServerError;

/// The datasets terminals pull by default.
pub const DEFAULT_DATASETS: [&str; 3] = ["products", "users", "config"];

/// The server's datasets.
pub struct DatasetHub {
    ledger: Arc<dyn Ledger>,
    sets: RwLock<BTreeMap<String, ServerDataset>>,
    writer: Mutex<()>,
    max_log: usize,
}

impl std::fmt::Debug for DatasetHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatasetHub").finish_non_exhaustive()
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
            let d = match ledger.load_dataset(name).await? {
                Some(stored) => ServerDataset::restore(
                    name,
                    max_log,
                    stored.version,
                    stored
                        .records
                        .into_iter()
                        .map(|r| (r.id, r.version, r.body)),
                ),
                None => ServerDataset::new(name, max_log),
            };
            sets.insert(name.to_owned(), d);
        }
        Ok(DatasetHub {
            ledger,
            sets: RwLock::new(sets),
            writer: Mutex::new(()),
            max_log,
        })
    }

    /// Applies upserts and deletes to a dataset: persisted first, then
    /// visible to pulls; on error nothing changes. Returns the new version.
    pub async fn update(
        &self,
        name: &str,
        upserts: Vec<DatasetRecord>,
        deletes: Vec<u64>,
    ) -> Result<u64, ServerError> {
        if let Some(id) = upserts
            .iter()
            .map(|r| r.id)
            .chain(deletes.iter().copied())
            .find(|&id| id > pdc_sync::MAX_WIRE_INT)
        {
            return Err(ServerError::Dataset(format!(
                "{name}: record id {id} is above 2^63-1, the largest a ledger stores"
            )));
        }
        let _w = self.writer.lock().await;
        let mut d = self
            .sets
            .read()
            .await
            .get(name)
            .cloned()
            .unwrap_or_else(|| ServerDataset::new(name, self.max_log));
        let mut changes = Vec::with_capacity(upserts.len() + deletes.len());
        for r in upserts {
            if d.get(r.id) == Some(r.body.as_slice()) {
                continue;
            }
            d.upsert(r.id, r.body.clone());
            changes.push(StoredRecord {
                id: r.id,
                version: d.version(),
                body: Some(r.body),
            });
        }
        for id in deletes {
            let before = d.version();
            d.delete(id);
            if d.version() != before {
                changes.push(StoredRecord {
                    id,
                    version: d.version(),
                    body: None,
                });
            }
        }
        if changes.is_empty() {
            return Ok(d.version());
        }
        self.ledger
            .store_dataset(name, d.version(), &changes)
            .await?;
        let v = d.version();
        self.sets.write().await.insert(name.to_owned(), d);
        Ok(v)
    }

    /// Replaces a dataset's contents: records not in `records` are
    /// deleted, changed ones upserted, identical ones untouched.
    pub async fn replace(
        &self,
        name: &str,
        records: Vec<DatasetRecord>,
    ) -> Result<u64, ServerError> {
        let keep: std::collections::BTreeSet<u64> = records.iter().map(|r| r.id).collect();
        let deletes: Vec<u64> = self
            .sets
            .read()
            .await
            .get(name)
            .map(|d| {
                d.records()
                    .map(|(id, _)| id)
                    .filter(|id| !keep.contains(id))
                    .collect()
            })
            .unwrap_or_default();
        self.update(name, records, deletes).await
    }

    /// Answers a pull.
    pub async fn answer(&self, req: &PullRequest) -> PullResponse {
        let sets = self.sets.read().await;
        PullResponse {
            datasets: req
                .datasets
                .iter()
                .filter_map(|s| sets.get(&s.dataset).map(|d| d.answer(s)))
                .collect(),
        }
    }

    /// A dataset's version and record ids.
    pub async fn ids(&self, name: &str) -> Option<(u64, Vec<u64>)> {
        self.sets
            .read()
            .await
            .get(name)
            .map(|d| (d.version(), d.records().map(|(id, _)| id).collect()))
    }

    /// The encoded size of a full snapshot of a dataset.
    pub async fn snapshot_bytes(&self, name: &str) -> usize {
        self.sets
            .read()
            .await
            .get(name)
            .map_or(0, ServerDataset::snapshot_size)
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
            let mut seen = std::collections::HashSet::new();
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

/// The record id of a config key: the first 8 bytes of its SHA-256.
pub fn config_id(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}
