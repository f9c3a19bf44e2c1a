//! Reference datasets (products, users, config): the server's copy with
//! its version, applied whole or not at all and checked against the
//! server's digest, plus a local overlay of changes the server has not
//! acknowledged yet, which a pull never overwrites.

use std::collections::BTreeMap;

use pdc_sync::{DatasetDelta, DatasetState, LocalDataset};
use redb::TableDefinition;

use crate::{Store, StoreError};

pub(crate) const DS_RECORDS: TableDefinition<'static, (&'static str, u64), &'static [u8]> =
    TableDefinition::new("dataset_records");
pub(crate) const DS_LOCAL: TableDefinition<'static, (&'static str, u64), &'static [u8]> =
    TableDefinition::new("dataset_local_changes");
const DS_VERSION: TableDefinition<'static, &'static str, u64> =
    TableDefinition::new("dataset_versions");

impl Store {
    /// The server's view of a dataset as last applied.
    pub fn dataset(&self, name: &str) -> Result<LocalDataset, StoreError> {
        let rtx = self.db.begin_read()?;
        let mut ds = LocalDataset::new(name);
        match rtx.open_table(DS_VERSION) {
            Ok(t) => ds.version = t.get(name)?.map(|g| g.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(ds),
            Err(e) => return Err(e.into()),
        }
        let t = rtx.open_table(DS_RECORDS)?;
        for row in t.range((name, 0u64)..=(name, u64::MAX))? {
            let (k, v) = row?;
            let body = self.open_row(DS_RECORDS, &k.value(), v.value())?;
            ds.records.insert(k.value().1, body.into_owned());
        }
        Ok(ds)
    }

    /// The version of a dataset as last applied (`None`: never pulled),
    /// without reading its records.
    pub fn dataset_version(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let rtx = self.db.begin_read()?;
        match rtx.open_table(DS_VERSION) {
            Ok(t) => Ok(t.get(name)?.map(|g| g.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What to send in a pull request for this dataset.
    pub fn dataset_state(&self, name: &str) -> Result<DatasetState, StoreError> {
        Ok(self.dataset(name)?.state())
    }

    /// Applies a pull answer atomically. The result must match the server's
    /// digest; on mismatch nothing changes and the error says so (pull again
    /// with no version to get a snapshot).
    pub fn apply_dataset(&self, delta: &DatasetDelta) -> Result<(), StoreError> {
        let before = self.dataset(&delta.dataset)?;
        let mut after = before.clone();
        after
            .apply(delta)
            .map_err(|e| StoreError::Corrupt(format!("dataset {}: {e}", delta.dataset)))?;
        let name = delta.dataset.as_str();
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(DS_RECORDS)?;
            for id in before
                .records
                .keys()
                .filter(|id| !after.records.contains_key(id))
            {
                t.remove((name, *id))?;
            }
            for (id, body) in &after.records {
                if before.records.get(id) != Some(body) {
                    let key = (name, *id);
                    t.insert(key, &*self.seal_row(DS_RECORDS, &key, body)?)?;
                }
            }
            tx.open_table(DS_VERSION)?.insert(name, delta.version)?;
            tx.open_table(DS_LOCAL)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// A record as the terminal sees it: its own unacknowledged change if
    /// any, else the server's.
    pub fn dataset_get(&self, name: &str, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let rtx = self.db.begin_read()?;
        for table in [DS_LOCAL, DS_RECORDS] {
            match rtx.open_table(table) {
                Ok(t) => {
                    if let Some(v) = t.get((name, id))? {
                        return Ok(Some(
                            self.open_row(table, &(name, id), v.value())?.into_owned(),
                        ));
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Records a local change to a reference record (e.g. a customer edited
    /// at the till); pulls will not overwrite it until acknowledged.
    pub fn dataset_put_local(&self, name: &str, id: u64, body: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let key = (name, id);
        tx.open_table(DS_LOCAL)?
            .insert(key, &*self.seal_row(DS_LOCAL, &key, body)?)?;
        tx.commit()?;
        Ok(())
    }

    /// The server acknowledged a local change: the overlay entry goes.
    pub fn dataset_ack_local(&self, name: &str, id: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(DS_LOCAL)?.remove((name, id))?;
        tx.commit()?;
        Ok(())
    }

    /// Local changes not yet acknowledged, by id.
    pub fn dataset_local_changes(&self, name: &str) -> Result<BTreeMap<u64, Vec<u8>>, StoreError> {
        let rtx = self.db.begin_read()?;
        let t = match rtx.open_table(DS_LOCAL) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = BTreeMap::new();
        for row in t.range((name, 0u64)..=(name, u64::MAX))? {
            let (k, v) = row?;
            let body = self.open_row(DS_LOCAL, &k.value(), v.value())?;
            out.insert(k.value().1, body.into_owned());
        }
        Ok(out)
    }
}
