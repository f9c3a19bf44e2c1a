//! Delta tracking (push side) and dataset reconciliation (pull side).
//!
//! Digests are SHA-256 truncated to 16 bytes (the study's ADR-002).
//!
//! **Push**: [`DeltaTracker`] remembers, per dataset, the digest of every
//! record *the server acknowledged*. [`DeltaTracker::diff`] gives what
//! changed since then; the new digests are committed only by
//! [`DeltaTracker::commit`] after the server acknowledged the delta, so a
//! failed sync never loses a change (the study stored them before sending).
//!
//! **Pull**: [`ServerDataset`] keeps records with a version and a bounded
//! change log; [`ServerDataset::answer`] gives a terminal only what changed
//! since its version, or the buckets whose digests differ when there is no
//! common version, or a snapshot when that is smaller. [`LocalDataset`]
//! applies an answer atomically and checks the resulting digest.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sha2::{Digest as _, Sha256};

use crate::protocol::{DatasetChange, DatasetDelta, DatasetRecord, DatasetState, Digest16};
use crate::SyncError;

/// Number of buckets ids are hashed into for digest reconciliation.
pub const BUCKETS: usize = 64;

/// SHA-256 of `bytes`, truncated to 16 bytes.
pub fn digest16(bytes: &[u8]) -> Digest16 {
    let d = Sha256::digest(bytes);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// The bucket of a record id (a multiplicative hash, stable across builds).
pub fn bucket_of(id: u64) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % BUCKETS
}

pub(crate) fn fold_digest<'a>(entries: impl Iterator<Item = (u64, &'a Digest16)>) -> Digest16 {
    let mut h = Sha256::new();
    for (id, d) in entries {
        h.update(id.to_le_bytes());
        h.update(d);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

/// Digest of a whole dataset given each record's digest, in id order.
pub fn dataset_digest(digests: &BTreeMap<u64, Digest16>) -> Digest16 {
    fold_digest(digests.iter().map(|(&id, d)| (id, d)))
}

/// Per-bucket digests of a dataset.
pub fn bucket_digests(digests: &BTreeMap<u64, Digest16>) -> Vec<Digest16> {
    let mut per: Vec<Vec<(u64, &Digest16)>> = vec![Vec::new(); BUCKETS];
    for (&id, d) in digests {
        per[bucket_of(id)].push((id, d));
    }
    per.into_iter()
        .map(|b| fold_digest(b.into_iter()))
        .collect()
}

/// What changed in a dataset since the last acknowledged sync.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delta {
    /// Records new or changed.
    pub upserts: Vec<DatasetRecord>,
    /// Ids gone.
    pub deletes: Vec<u64>,
    digests: Vec<(u64, Option<Digest16>)>,
}

impl Delta {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// Acknowledged record digests per dataset (push side).
#[derive(Debug, Clone, Default)]
pub struct DeltaTracker {
    acked: BTreeMap<String, BTreeMap<u64, Digest16>>,
}

impl DeltaTracker {
    /// An empty tracker (everything is new).
    pub fn new() -> Self {
        DeltaTracker::default()
    }

    /// Compares `records` (the dataset's full current contents) with the
    /// acknowledged digests. Changes nothing.
    pub fn diff<'a>(
        &self,
        dataset: &str,
        records: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Delta {
        let empty = BTreeMap::new();
        let acked = self.acked.get(dataset).unwrap_or(&empty);
        let mut delta = Delta::default();
        let mut seen = BTreeSet::new();
        for (id, body) in records {
            seen.insert(id);
            let d = digest16(body);
            if acked.get(&id) != Some(&d) {
                delta.upserts.push(DatasetRecord {
                    id,
                    body: body.to_vec(),
                });
                delta.digests.push((id, Some(d)));
            }
        }
        for &id in acked.keys() {
            if !seen.contains(&id) {
                delta.deletes.push(id);
                delta.digests.push((id, None));
            }
        }
        delta
    }

    /// Records that the server acknowledged `delta`.
    pub fn commit(&mut self, dataset: &str, delta: &Delta) {
        let acked = self.acked.entry(dataset.to_owned()).or_default();
        for (id, d) in &delta.digests {
            match d {
                Some(d) => acked.insert(*id, *d),
                None => acked.remove(id),
            };
        }
    }

    /// Acknowledged records of a dataset.
    pub fn acked_len(&self, dataset: &str) -> usize {
        self.acked.get(dataset).map_or(0, BTreeMap::len)
    }
}

/// Bytes of a postcard varint.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Encoded size of one `DatasetRecord` in postcard.
pub(crate) fn record_size(id: u64, body: &[u8]) -> usize {
    varint_len(id) + varint_len(body.len() as u64) + body.len()
}

/// The encoded size of a change (postcard, as it travels).
pub(crate) fn change_size(change: &DatasetChange) -> usize {
    postcard::to_allocvec(change).map_or(usize::MAX, |v| v.len())
}

/// The server's copy of a reference dataset, versioned, with a bounded
/// change log.
#[derive(Debug, Clone)]
pub struct ServerDataset {
    name: String,
    version: u64,
    records: BTreeMap<u64, Vec<u8>>,
    /// Encoded size of the records in a snapshot, kept up to date so that
    /// choosing between a delta and a snapshot never builds the snapshot.
    records_bytes: usize,
    digests: BTreeMap<u64, Digest16>,
    /// (version, id) of each change, oldest first.
    log: VecDeque<(u64, u64)>,
    max_log: usize,
}

impl ServerDataset {
    /// An empty dataset at version 0 keeping the last `max_log` changes.
    pub fn new(name: impl Into<String>, max_log: usize) -> Self {
        ServerDataset {
            name: name.into(),
            version: 0,
            records: BTreeMap::new(),
            records_bytes: 0,
            digests: BTreeMap::new(),
            log: VecDeque::new(),
            max_log,
        }
    }

    /// Current version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Rebuilds a dataset from storage: each entry is a record id, the
    /// version of its last change, and its body (`None`: deleted). The
    /// change log is rebuilt from those versions (the newest `max_log`), so
    /// terminals a few versions behind still get deltas after a restart.
    pub fn restore(
        name: impl Into<String>,
        max_log: usize,
        version: u64,
        entries: impl IntoIterator<Item = (u64, u64, Option<Vec<u8>>)>,
    ) -> Self {
        let mut d = ServerDataset::new(name, max_log);
        let mut log: Vec<(u64, u64)> = Vec::new();
        for (id, changed_at, body) in entries {
            if let Some(body) = body {
                d.digests.insert(id, digest16(&body));
                d.records_bytes += record_size(id, &body);
                if let Some(old) = d.records.insert(id, body) {
                    d.records_bytes -= record_size(id, &old);
                }
            }
            log.push((changed_at, id));
        }
        log.sort_unstable();
        let skip = log.len().saturating_sub(max_log);
        d.log = log.into_iter().skip(skip).collect();
        d.version = version.max(d.log.back().map_or(0, |&(v, _)| v));
        d
    }

    /// One record's body.
    pub fn get(&self, id: u64) -> Option<&[u8]> {
        self.records.get(&id).map(Vec::as_slice)
    }

    /// All records by id.
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.records.iter().map(|(&id, b)| (id, b.as_slice()))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the dataset is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn log_change(&mut self, id: u64) {
        self.version += 1;
        self.log.push_back((self.version, id));
        while self.log.len() > self.max_log {
            self.log.pop_front();
        }
    }

    /// Adds or replaces a record.
    pub fn upsert(&mut self, id: u64, body: Vec<u8>) {
        self.digests.insert(id, digest16(&body));
        self.records_bytes += record_size(id, &body);
        if let Some(old) = self.records.insert(id, body) {
            self.records_bytes -= record_size(id, &old);
        }
        self.log_change(id);
    }

    /// Removes a record.
    pub fn delete(&mut self, id: u64) {
        if let Some(old) = self.records.remove(&id) {
            self.records_bytes -= record_size(id, &old);
            self.digests.remove(&id);
            self.log_change(id);
        }
    }

    /// The encoded size of a full snapshot of this dataset (postcard, as
    /// it travels), without building it.
    pub fn snapshot_size(&self) -> usize {
        // Variant tag (one varint byte), record count, then the records.
        1 + varint_len(self.records.len() as u64) + self.records_bytes
    }

    fn snapshot(&self) -> DatasetChange {
        DatasetChange::Snapshot {
            records: self
                .records
                .iter()
                .map(|(&id, b)| DatasetRecord {
                    id,
                    body: b.clone(),
                })
                .collect(),
        }
    }

    /// What a terminal in `state` needs to catch up: the changes since its
    /// version if the log covers it, else the buckets whose digests differ,
    /// else a snapshot; a snapshot also whenever it is smaller.
    pub fn answer(&self, state: &DatasetState) -> DatasetDelta {
        let oldest_logged = self.log.front().map_or(self.version + 1, |&(v, _)| v);
        let change = match state.version {
            Some(v) if v == self.version => DatasetChange::Delta {
                upserts: vec![],
                deletes: vec![],
            },
            Some(v) if v < self.version && v + 1 >= oldest_logged => {
                let ids: BTreeSet<u64> = self
                    .log
                    .iter()
                    .filter(|&&(ver, _)| ver > v)
                    .map(|&(_, id)| id)
                    .collect();
                let mut upserts = Vec::new();
                let mut deletes = Vec::new();
                for id in ids {
                    match self.records.get(&id) {
                        Some(b) => upserts.push(DatasetRecord {
                            id,
                            body: b.clone(),
                        }),
                        None => deletes.push(id),
                    }
                }
                DatasetChange::Delta { upserts, deletes }
            }
            _ if state.buckets.len() == BUCKETS => {
                let ours = bucket_digests(&self.digests);
                let differing: BTreeSet<usize> = (0..BUCKETS)
                    .filter(|&b| ours[b] != state.buckets[b])
                    .collect();
                DatasetChange::Buckets {
                    buckets: differing.iter().map(|&b| b as u16).collect(),
                    records: self
                        .records
                        .iter()
                        .filter(|(&id, _)| differing.contains(&bucket_of(id)))
                        .map(|(&id, b)| DatasetRecord {
                            id,
                            body: b.clone(),
                        })
                        .collect(),
                }
            }
            _ => self.snapshot(),
        };
        // A terminal that is up to date gets the empty delta, even where an
        // (empty) snapshot would be a byte smaller: it must read "nothing
        // changed".
        let change = if matches!(change, DatasetChange::Snapshot { .. })
            || state.version == Some(self.version)
        {
            change
        } else if self.snapshot_size() < change_size(&change) {
            self.snapshot()
        } else {
            change
        };
        DatasetDelta {
            dataset: self.name.clone(),
            version: self.version,
            digest: dataset_digest(&self.digests),
            change,
        }
    }
}

/// A terminal's copy of a reference dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalDataset {
    /// Dataset name.
    pub name: String,
    /// Server version applied, if any.
    pub version: Option<u64>,
    /// Records by id.
    pub records: BTreeMap<u64, Vec<u8>>,
}

impl LocalDataset {
    /// An empty dataset.
    pub fn new(name: impl Into<String>) -> Self {
        LocalDataset {
            name: name.into(),
            ..LocalDataset::default()
        }
    }

    fn digests(&self) -> BTreeMap<u64, Digest16> {
        self.records
            .iter()
            .map(|(&id, b)| (id, digest16(b)))
            .collect()
    }

    /// What to tell the server: the version, or bucket digests when there
    /// is none (records from another source, e.g. a bundled catalogue).
    pub fn state(&self) -> DatasetState {
        DatasetState {
            dataset: self.name.clone(),
            version: self.version,
            buckets: match self.version {
                Some(_) => vec![],
                None if self.records.is_empty() => vec![],
                None => bucket_digests(&self.digests()),
            },
        }
    }

    /// Applies an answer whole or not at all: the result must match the
    /// server's digest, else nothing changes and the caller should pull a
    /// snapshot (ask again with no version and no buckets).
    pub fn apply(&mut self, delta: &DatasetDelta) -> Result<(), SyncError> {
        let mut next = self.records.clone();
        match &delta.change {
            DatasetChange::Delta { upserts, deletes } => {
                for r in upserts {
                    next.insert(r.id, r.body.clone());
                }
                for id in deletes {
                    next.remove(id);
                }
            }
            DatasetChange::Buckets { buckets, records } => {
                let set: BTreeSet<usize> = buckets.iter().map(|&b| b as usize).collect();
                next.retain(|&id, _| !set.contains(&bucket_of(id)));
                for r in records {
                    next.insert(r.id, r.body.clone());
                }
            }
            DatasetChange::Snapshot { records } => {
                next = records.iter().map(|r| (r.id, r.body.clone())).collect();
            }
        }
        let digests: BTreeMap<u64, Digest16> =
            next.iter().map(|(&id, b)| (id, digest16(b))).collect();
        if dataset_digest(&digests) != delta.digest {
            return Err(SyncError::ProtocolViolation(format!(
                "dataset {} does not match the server's digest after applying version {}",
                self.name, delta.version
            )));
        }
        self.records = next;
        self.version = Some(delta.version);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u64, u8),
        Del(u64),
        Sync { ok: bool },
    }

    proptest! {
        /// The snapshot size kept up to date equals the encoded snapshot.
        #[test]
        fn snapshot_size_matches_the_encoding(
            ops in proptest::collection::vec((any::<u64>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300))), 0..60),
        ) {
            let mut d = ServerDataset::new("p", 10);
            let mut ids = Vec::new();
            for (id, body) in ops {
                match body {
                    Some(b) => { d.upsert(id, b); ids.push(id); }
                    None => { if let Some(&x) = ids.last() { d.delete(x) } else { d.delete(id) } }
                }
                let encoded = postcard::to_allocvec(&d.snapshot()).unwrap().len();
                prop_assert_eq!(d.snapshot_size(), encoded);
            }
            let restored = ServerDataset::restore("p", 10, d.version(),
                d.records().map(|(id, b)| (id, 1, Some(b.to_vec()))).collect::<Vec<_>>());
            prop_assert_eq!(restored.snapshot_size(), d.snapshot_size());
        }

        /// A dataset restored from (id, last-change version, body) answers
        /// a terminal at any logged version so that it ends equal to the
        /// original: what a server restart must not break.
        #[test]
        fn restored_dataset_serves_the_same_catch_up(
            ops in proptest::collection::vec((0u64..30, proptest::option::of(any::<u8>())), 1..60),
            behind in 0usize..60,
        ) {
            let mut live = ServerDataset::new("p", 1000);
            let mut last: BTreeMap<u64, (u64, Option<Vec<u8>>)> = BTreeMap::new();
            let mut client = LocalDataset::new("p");
            let catch_up_at = ops.len().saturating_sub(behind);
            for (n, (id, v)) in ops.iter().enumerate() {
                if n == catch_up_at {
                    client.apply(&live.answer(&client.state())).unwrap();
                }
                let before = live.version();
                match v {
                    Some(b) => live.upsert(*id, vec![*b]),
                    None => live.delete(*id),
                }
                if live.version() != before {
                    last.insert(*id, (live.version(), live.get(*id).map(<[u8]>::to_vec)));
                }
            }
            let restored = ServerDataset::restore(
                "p", 1000, live.version(),
                last.into_iter().map(|(id, (ver, body))| (id, ver, body)),
            );
            let answer = restored.answer(&client.state());
            client.apply(&answer).unwrap();
            prop_assert_eq!(restored.version(), live.version());
            prop_assert_eq!(client.records.len(), live.len());
            for (id, body) in live.records() {
                prop_assert_eq!(client.records.get(&id).map(Vec::as_slice), Some(body));
            }
        }
    }

    proptest! {
        /// Model: the server's copy after a successful sync equals the local
        /// data, whatever syncs failed before. No change is ever lost.
        #[test]
        fn no_change_lost_across_failed_syncs(ops in proptest::collection::vec(prop_oneof![
            3 => (0u64..20, any::<u8>()).prop_map(|(i, v)| Op::Put(i, v)),
            1 => (0u64..20).prop_map(Op::Del),
            2 => any::<bool>().prop_map(|ok| Op::Sync { ok }),
        ], 1..80)) {
            let mut local: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut server: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut tracker = DeltaTracker::new();
            let sync = |local: &BTreeMap<u64, Vec<u8>>, server: &mut BTreeMap<u64, Vec<u8>>, tracker: &mut DeltaTracker, ok: bool| {
                let delta = tracker.diff("carts", local.iter().map(|(&k, v)| (k, v.as_slice())));
                if ok {
                    for r in &delta.upserts { server.insert(r.id, r.body.clone()); }
                    for id in &delta.deletes { server.remove(id); }
                    tracker.commit("carts", &delta);
                }
            };
            for op in ops {
                match op {
                    Op::Put(i, v) => { local.insert(i, vec![v; 3]); }
                    Op::Del(i) => { local.remove(&i); }
                    Op::Sync { ok } => sync(&local, &mut server, &mut tracker, ok),
                }
            }
            sync(&local, &mut server, &mut tracker, true);
            prop_assert_eq!(&server, &local);
            prop_assert!(tracker.diff("carts", local.iter().map(|(&k, v)| (k, v.as_slice()))).is_empty());
        }

        /// Model: whatever a terminal holds (any version, any bucket state,
        /// nothing), applying the server's answer gives the server's data.
        #[test]
        fn pull_converges_from_any_state(
            initial in proptest::collection::btree_map(0u64..200, any::<u8>(), 0..100),
            changes in proptest::collection::vec((0u64..200, proptest::option::of(any::<u8>())), 0..60),
            seen_after in 0usize..60,
            mode in 0u8..3,
            max_log in 1usize..100,
        ) {
            let mut server = ServerDataset::new("products", max_log);
            for (&id, &v) in &initial { server.upsert(id, vec![v; 4]); }
            let mut local = LocalDataset::new("products");
            let snapshot_version_state = |server: &ServerDataset, local: &mut LocalDataset| {
                let d = server.answer(&local.state());
                local.apply(&d).unwrap();
            };
            // The terminal synced at some point during the changes.
            let cut = seen_after.min(changes.len());
            for (i, (id, v)) in changes.iter().enumerate() {
                if i == cut { snapshot_version_state(&server, &mut local); }
                match v { Some(v) => server.upsert(*id, vec![*v; 4]), None => server.delete(*id) }
            }
            if cut == changes.len() { snapshot_version_state(&server, &mut local); }
            match mode {
                0 => {}
                1 => local.version = None,                       // bucket reconciliation
                _ => { local.version = None; local.records.clear(); } // nothing held
            }
            let answer = server.answer(&local.state());
            local.apply(&answer).unwrap();
            prop_assert_eq!(local.version, Some(server.version()));
            prop_assert_eq!(&local.records, &server.records);
        }
    }

    #[test]
    fn a_wrong_digest_changes_nothing() {
        let mut server = ServerDataset::new("users", 10);
        server.upsert(1, b"alice".to_vec());
        let mut local = LocalDataset::new("users");
        let mut answer = server.answer(&local.state());
        answer.digest[0] ^= 1;
        assert!(local.apply(&answer).is_err());
        assert_eq!(local, LocalDataset::new("users"));
    }
}
