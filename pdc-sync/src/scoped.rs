//! Reference data at chain scale: one dataset with a chain-wide layer and
//! per-region and per-store overrides, served to each terminal as the view
//! of its place in the chain.
//!
//! A [`ScopedDataset`] holds layers ([`Scope::Chain`], [`Scope::Region`],
//! [`Scope::Store`]). A layer entry is a record (it replaces the record of
//! the same id in the layers below, or adds one) or [`Entry::Hidden`] (the
//! record is not in this region's or store's view: a product the store
//! does not sell, a user not allowed there). A terminal's [`View`] names
//! its region and store; it sees, per id, the store's entry, else the
//! region's, else the chain's.
//!
//! All layers share one version counter and one bounded change log, so a
//! terminal keeps a single version per dataset as before, and the answer
//! to a pull ([`ScopedDataset::answer`]) carries only the changes of the
//! layers its view sees: a price change for store 12 gives a terminal of
//! store 13 an empty delta. Each view's digest and snapshot size are
//! computed once per change of its layers, not on every pull.
//!
//! ```
//! use pdc_sync::scoped::{Entry, Scope, ScopedDataset, View};
//! use pdc_sync::{DatasetChange, DatasetState, LocalDataset};
//!
//! let mut d = ScopedDataset::new("products", 1000);
//! let store12 = Scope::store("12").unwrap();
//! let changes = d.plan_update(&Scope::Chain, vec![(1, Entry::Record(b"tea 2.00".to_vec()))], vec![]).unwrap();
//! d.apply(&changes);
//! let changes = d.plan_update(&store12, vec![(1, Entry::Record(b"tea 1.80".to_vec()))], vec![]).unwrap();
//! d.apply(&changes);
//!
//! let mut till = LocalDataset::new("products");
//! let view = View::store("12").unwrap();
//! till.apply(&d.answer(&till.state(), &view)).unwrap();
//! assert_eq!(till.records[&1], b"tea 1.80");
//!
//! // Another store's till sees the chain's price.
//! let mut other = LocalDataset::new("products");
//! other.apply(&d.answer(&other.state(), &View::store("13").unwrap())).unwrap();
//! assert_eq!(other.records[&1], b"tea 2.00");
//! ```

use std::collections::{btree_map, BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::iter::Peekable;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::delta::{bucket_of, digest16, fold_digest, record_size, varint_len, BUCKETS};
use crate::protocol::{DatasetChange, DatasetDelta, DatasetRecord, DatasetState, Digest16};
use crate::SyncError;

/// A layer of a scoped dataset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// The chain-wide records.
    Chain,
    /// Overrides for every store of a region.
    Region(String),
    /// Overrides for one store.
    Store(String),
}

/// Whether a region or store name keeps the rules: 1 to 64 bytes of
/// `A-Z a-z 0-9 . _ -` (those of terminal ids).
pub fn valid_scope_name(name: &str) -> bool {
    pdc_codec::TerminalId::is_valid(name)
}

fn checked(kind: &str, name: &str) -> Result<String, SyncError> {
    if valid_scope_name(name) {
        Ok(name.to_owned())
    } else {
        Err(SyncError::InvalidScope(format!(
            "{kind} name {name:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

impl Scope {
    /// A region's layer; the name must pass [`valid_scope_name`].
    pub fn region(name: &str) -> Result<Self, SyncError> {
        checked("region", name).map(Scope::Region)
    }

    /// A store's layer; the name must pass [`valid_scope_name`].
    pub fn store(name: &str) -> Result<Self, SyncError> {
        checked("store", name).map(Scope::Store)
    }

    /// The name a ledger stores this layer of `dataset` under:
    /// `products`, `products@region:north`, `products@store:12`.
    pub fn qualify(&self, dataset: &str) -> String {
        match self {
            Scope::Chain => dataset.to_owned(),
            other => format!("{dataset}@{other}"),
        }
    }

    /// Splits a name made by [`Scope::qualify`] into dataset and layer.
    pub fn split(qualified: &str) -> Result<(&str, Scope), SyncError> {
        match qualified.split_once('@') {
            None => Ok((qualified, Scope::Chain)),
            Some((d, s)) => Ok((d, s.parse()?)),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Chain => f.write_str("chain"),
            Scope::Region(r) => write!(f, "region:{r}"),
            Scope::Store(s) => write!(f, "store:{s}"),
        }
    }
}

impl FromStr for Scope {
    type Err = SyncError;

    /// `chain`, `region:NAME` or `store:NAME`.
    fn from_str(s: &str) -> Result<Self, SyncError> {
        match s.split_once(':') {
            None if s == "chain" => Ok(Scope::Chain),
            Some(("region", r)) => Scope::region(r),
            Some(("store", st)) => Scope::store(st),
            _ => Err(SyncError::InvalidScope(format!(
                "{s:?} is not chain, region:NAME or store:NAME"
            ))),
        }
    }
}

/// Where a terminal sits in the chain: the layers it sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct View {
    /// Its region, if any.
    pub region: Option<String>,
    /// Its store, if any (a terminal without one sees the chain's records).
    pub store: Option<String>,
}

impl View {
    /// The chain-wide view (no region, no store).
    pub fn chain() -> Self {
        View::default()
    }

    /// The view of a store outside any region.
    pub fn store(store: &str) -> Result<Self, SyncError> {
        Ok(View {
            region: None,
            store: Some(checked("store", store)?),
        })
    }

    /// A view with both names checked.
    pub fn new(region: Option<&str>, store: Option<&str>) -> Result<Self, SyncError> {
        Ok(View {
            region: region.map(|r| checked("region", r)).transpose()?,
            store: store.map(|s| checked("store", s)).transpose()?,
        })
    }

    /// Whether a change to `scope` can change this view.
    pub fn sees(&self, scope: &Scope) -> bool {
        match scope {
            Scope::Chain => true,
            Scope::Region(r) => self.region.as_deref() == Some(r),
            Scope::Store(s) => self.store.as_deref() == Some(s),
        }
    }

    /// The layers of this view, highest priority first.
    pub fn layers(&self) -> Vec<Scope> {
        let mut out = Vec::with_capacity(3);
        if let Some(s) = &self.store {
            out.push(Scope::Store(s.clone()));
        }
        if let Some(r) = &self.region {
            out.push(Scope::Region(r.clone()));
        }
        out.push(Scope::Chain);
        out
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.region, &self.store) {
            (None, None) => f.write_str("chain"),
            (Some(r), None) => write!(f, "region {r}"),
            (None, Some(s)) => write!(f, "store {s}"),
            (Some(r), Some(s)) => write!(f, "store {s} (region {r})"),
        }
    }
}

/// A layer's entry for one id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Entry {
    /// This record (replacing lower layers' record of the same id).
    Record(Vec<u8>),
    /// No record of this id in the views that see this layer.
    Hidden,
}

/// One change of a layer, as a ledger stores it: `entry: None` removes
/// the layer's entry (for the chain: deletes the record; for an override:
/// falls back to the layers below).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopedChange {
    /// The layer.
    pub scope: Scope,
    /// Record id.
    pub id: u64,
    /// Dataset version of this change.
    pub version: u64,
    /// The new entry, or `None` for none.
    pub entry: Option<Entry>,
}

#[derive(Debug, Clone)]
struct Stored {
    entry: Entry,
    digest: Digest16,
}

#[derive(Debug, Clone, Default)]
struct Layer {
    entries: BTreeMap<u64, Stored>,
    /// Version of the layer's last change.
    changed_at: u64,
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    /// The view version it was computed at.
    at: u64,
    digest: Digest16,
    snapshot_bytes: usize,
    len: usize,
}

/// A dataset with chain, region and store layers (see the module docs).
#[derive(Debug)]
pub struct ScopedDataset {
    name: String,
    version: u64,
    layers: BTreeMap<Scope, Layer>,
    /// (version, layer, id) of each change, oldest first.
    log: VecDeque<(u64, Scope, u64)>,
    max_log: usize,
    summaries: Mutex<HashMap<View, Summary>>,
}

/// Records of a view in id order: the highest-priority layer's entry per
/// id, hidden ones skipped.
struct ViewIter<'a> {
    /// Highest priority first.
    layers: Vec<Peekable<btree_map::Iter<'a, u64, Stored>>>,
}

impl<'a> Iterator for ViewIter<'a> {
    type Item = (u64, &'a [u8], &'a Digest16);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let min = self
                .layers
                .iter_mut()
                .filter_map(|l| l.peek().map(|(&id, _)| id))
                .min()?;
            let mut winner = None;
            for l in &mut self.layers {
                if l.peek().is_some_and(|(&id, _)| id == min) {
                    let taken = l.next();
                    if winner.is_none() {
                        winner = taken.map(|(_, s)| s);
                    }
                }
            }
            match winner {
                Some(Stored {
                    entry: Entry::Record(body),
                    digest,
                }) => return Some((min, body.as_slice(), digest)),
                _ => continue,
            }
        }
    }
}

impl ScopedDataset {
    /// An empty dataset at version 0 keeping the last `max_log` changes.
    pub fn new(name: impl Into<String>, max_log: usize) -> Self {
        let mut layers = BTreeMap::new();
        layers.insert(Scope::Chain, Layer::default());
        ScopedDataset {
            name: name.into(),
            version: 0,
            layers,
            log: VecDeque::new(),
            max_log,
            summaries: Mutex::new(HashMap::new()),
        }
    }

    /// Rebuilds a dataset from stored changes (any order; per layer and id
    /// the highest version wins); the change log is rebuilt from their
    /// versions, so terminals a few versions behind still get deltas after
    /// a restart.
    pub fn restore(
        name: impl Into<String>,
        max_log: usize,
        version: u64,
        mut changes: Vec<ScopedChange>,
    ) -> Self {
        let mut d = ScopedDataset::new(name, max_log);
        changes.sort_by_key(|c| c.version);
        d.apply(&changes);
        d.version = d.version.max(version);
        d
    }

    /// The dataset's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current version (of all layers together).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The layers that hold entries or ever changed.
    pub fn scopes(&self) -> impl Iterator<Item = &Scope> {
        self.layers.keys()
    }

    /// Number of entries of a layer (records and hidden ids).
    pub fn layer_len(&self, scope: &Scope) -> usize {
        self.layers.get(scope).map_or(0, |l| l.entries.len())
    }

    /// A layer's entries by id.
    pub fn layer(&self, scope: &Scope) -> impl Iterator<Item = (u64, &Entry)> {
        self.layers
            .get(scope)
            .into_iter()
            .flat_map(|l| l.entries.iter().map(|(&id, s)| (id, &s.entry)))
    }

    /// Version of the last change any layer of `view` saw: a terminal
    /// holding this version or later has nothing to pull.
    pub fn view_version(&self, view: &View) -> u64 {
        view.layers()
            .iter()
            .filter_map(|s| self.layers.get(s).map(|l| l.changed_at))
            .max()
            .unwrap_or(0)
    }

    /// The record `view` sees under `id`.
    pub fn resolve(&self, view: &View, id: u64) -> Option<&[u8]> {
        for s in view.layers() {
            if let Some(st) = self.layers.get(&s).and_then(|l| l.entries.get(&id)) {
                return match &st.entry {
                    Entry::Record(b) => Some(b),
                    Entry::Hidden => None,
                };
            }
        }
        None
    }

    fn iter_view(&self, view: &View) -> ViewIter<'_> {
        ViewIter {
            layers: view
                .layers()
                .iter()
                .filter_map(|s| self.layers.get(s))
                .map(|l| l.entries.iter().peekable())
                .collect(),
        }
    }

    /// The records `view` sees, by id.
    pub fn records(&self, view: &View) -> impl Iterator<Item = (u64, &[u8])> {
        self.iter_view(view).map(|(id, b, _)| (id, b))
    }

    fn summary(&self, view: &View) -> Summary {
        let at = self.view_version(view);
        let mut cache = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(view) {
            if s.at == at {
                return *s;
            }
        }
        let mut len = 0usize;
        let mut bytes = 0usize;
        let digest = fold_digest(self.iter_view(view).map(|(id, b, d)| {
            len += 1;
            bytes += record_size(id, b);
            (id, d)
        }));
        let s = Summary {
            at,
            digest,
            snapshot_bytes: 1 + varint_len(len as u64) + bytes,
            len,
        };
        cache.insert(view.clone(), s);
        s
    }

    /// Number of records `view` sees.
    pub fn view_len(&self, view: &View) -> usize {
        self.summary(view).len
    }

    /// The encoded size of a snapshot of `view`, without building it.
    pub fn snapshot_size(&self, view: &View) -> usize {
        self.summary(view).snapshot_bytes
    }

    /// The digest of `view`'s records (what a terminal checks).
    pub fn digest(&self, view: &View) -> Digest16 {
        self.summary(view).digest
    }

    /// The changes that set `upserts` and remove `removes` in a layer,
    /// numbered from the next version, leaving out those that change
    /// nothing. Nothing is applied: persist them, then [`Self::apply`].
    pub fn plan_update(
        &self,
        scope: &Scope,
        upserts: Vec<(u64, Entry)>,
        removes: Vec<u64>,
    ) -> Result<Vec<ScopedChange>, SyncError> {
        if *scope == Scope::Chain && upserts.iter().any(|(_, e)| *e == Entry::Hidden) {
            return Err(SyncError::InvalidScope(
                "the chain layer holds records only: delete a record instead of hiding it".into(),
            ));
        }
        let layer = self.layers.get(scope);
        let current = |id: u64| layer.and_then(|l| l.entries.get(&id)).map(|s| &s.entry);
        let mut v = self.version;
        let mut out = Vec::with_capacity(upserts.len() + removes.len());
        let mut last: BTreeMap<u64, Option<Entry>> = BTreeMap::new();
        for (id, e) in upserts {
            last.insert(id, Some(e));
        }
        for id in removes {
            last.insert(id, None);
        }
        for (id, entry) in last {
            if current(id) == entry.as_ref() {
                continue;
            }
            v += 1;
            out.push(ScopedChange {
                scope: scope.clone(),
                id,
                version: v,
                entry,
            });
        }
        Ok(out)
    }

    /// The changes that make a layer hold exactly `entries` (see
    /// [`Self::plan_update`]).
    pub fn plan_replace(
        &self,
        scope: &Scope,
        entries: Vec<(u64, Entry)>,
    ) -> Result<Vec<ScopedChange>, SyncError> {
        let keep: BTreeSet<u64> = entries.iter().map(|(id, _)| *id).collect();
        let removes = self
            .layer(scope)
            .map(|(id, _)| id)
            .filter(|id| !keep.contains(id))
            .collect();
        self.plan_update(scope, entries, removes)
    }

    /// Applies changes (planned here or read back from storage, in version
    /// order); a change at or below the layer entry's version is applied
    /// too (storage holds one change per layer and id).
    pub fn apply(&mut self, changes: &[ScopedChange]) {
        for c in changes {
            let layer = self.layers.entry(c.scope.clone()).or_default();
            match &c.entry {
                Some(e) => {
                    let digest = match e {
                        Entry::Record(b) => digest16(b),
                        Entry::Hidden => [0; 16],
                    };
                    layer.entries.insert(
                        c.id,
                        Stored {
                            entry: e.clone(),
                            digest,
                        },
                    );
                }
                None => {
                    layer.entries.remove(&c.id);
                }
            }
            layer.changed_at = layer.changed_at.max(c.version);
            self.version = self.version.max(c.version);
            self.log.push_back((c.version, c.scope.clone(), c.id));
        }
        if changes.windows(2).any(|w| w[0].version > w[1].version) {
            self.log.make_contiguous().sort_by_key(|e| e.0);
        }
        while self.log.len() > self.max_log {
            self.log.pop_front();
        }
    }

    fn snapshot(&self, view: &View) -> DatasetChange {
        DatasetChange::Snapshot {
            records: self
                .records(view)
                .map(|(id, b)| DatasetRecord {
                    id,
                    body: b.to_vec(),
                })
                .collect(),
        }
    }

    /// What a terminal of `view` in `state` needs to catch up: nothing if
    /// no layer it sees changed since its version; the changes of its
    /// layers since then if the log covers it; else the buckets whose
    /// digests differ; else a snapshot; a snapshot also whenever it is
    /// smaller. The version is the dataset's (all layers).
    pub fn answer(&self, state: &DatasetState, view: &View) -> DatasetDelta {
        let summary = self.summary(view);
        let oldest_logged = self.log.front().map_or(self.version + 1, |e| e.0);
        let up_to_date = matches!(state.version, Some(v) if v >= summary.at && v <= self.version);
        let change = match state.version {
            _ if up_to_date => DatasetChange::Delta {
                upserts: vec![],
                deletes: vec![],
            },
            Some(v) if v < self.version && v + 1 >= oldest_logged => {
                let ids: BTreeSet<u64> = self
                    .log
                    .iter()
                    .filter(|(ver, scope, _)| *ver > v && view.sees(scope))
                    .map(|&(_, _, id)| id)
                    .collect();
                let mut upserts = Vec::new();
                let mut deletes = Vec::new();
                for id in ids {
                    match self.resolve(view, id) {
                        Some(b) => upserts.push(DatasetRecord {
                            id,
                            body: b.to_vec(),
                        }),
                        None => deletes.push(id),
                    }
                }
                DatasetChange::Delta { upserts, deletes }
            }
            _ if state.buckets.len() == BUCKETS => {
                let mut per: Vec<Vec<(u64, &Digest16)>> = vec![Vec::new(); BUCKETS];
                for (id, _, d) in self.iter_view(view) {
                    per[bucket_of(id)].push((id, d));
                }
                let differing: BTreeSet<usize> = per
                    .into_iter()
                    .enumerate()
                    .filter(|(b, e)| {
                        fold_digest(e.iter().map(|&(id, d)| (id, d))) != state.buckets[*b]
                    })
                    .map(|(b, _)| b)
                    .collect();
                DatasetChange::Buckets {
                    buckets: differing.iter().map(|&b| b as u16).collect(),
                    records: self
                        .records(view)
                        .filter(|(id, _)| differing.contains(&bucket_of(*id)))
                        .map(|(id, b)| DatasetRecord {
                            id,
                            body: b.to_vec(),
                        })
                        .collect(),
                }
            }
            _ => self.snapshot(view),
        };
        let change = if matches!(change, DatasetChange::Snapshot { .. }) || up_to_date {
            change
        } else if summary.snapshot_bytes < crate::delta::change_size(&change) {
            self.snapshot(view)
        } else {
            change
        };
        DatasetDelta {
            dataset: self.name.clone(),
            version: self.version,
            digest: summary.digest,
            change,
        }
    }

    /// Approximate heap bytes held (records, digests, log, view caches).
    pub fn memory_bytes(&self) -> usize {
        const NODE: usize = 8 + 16 + 32 + 8; // id, digest, entry, B-tree overhead
        let layers: usize = self
            .layers
            .iter()
            .map(|(s, l)| {
                64 + scope_bytes(s)
                    + l.entries
                        .values()
                        .map(|st| {
                            NODE + match &st.entry {
                                Entry::Record(b) => b.capacity(),
                                Entry::Hidden => 0,
                            }
                        })
                        .sum::<usize>()
            })
            .sum();
        let log: usize = self.log.iter().map(|(_, s, _)| 16 + scope_bytes(s)).sum();
        let views = self.summaries.lock().map_or(0, |m| m.len() * 128);
        layers + log + views
    }
}

fn scope_bytes(s: &Scope) -> usize {
    32 + match s {
        Scope::Chain => 0,
        Scope::Region(n) | Scope::Store(n) => n.capacity(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delta::ServerDataset;
    use crate::LocalDataset;
    use proptest::prelude::*;

    fn scopes() -> Vec<Scope> {
        vec![
            Scope::Chain,
            Scope::Region("north".into()),
            Scope::Store("12".into()),
            Scope::Store("13".into()),
        ]
    }

    fn views() -> Vec<View> {
        vec![
            View::chain(),
            View::store("12").unwrap(),
            View::new(Some("north"), Some("13")).unwrap(),
            View::new(Some("north"), Some("14")).unwrap(),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(usize, u64, Option<u8>),
        Remove(usize, u64),
        Sync(usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, 0..12u64, proptest::option::of(any::<u8>())).prop_map(|(s, id, b)| Op::Set(s, id, b)),
            1 => (0..4usize, 0..12u64).prop_map(|(s, id)| Op::Remove(s, id)),
            2 => (0..4usize, any::<bool>()).prop_map(|(v, lost)| Op::Sync(v, lost)),
        ]
    }

    /// The model: per layer, per id, an entry; a view resolves top down.
    fn model_view(
        model: &BTreeMap<Scope, BTreeMap<u64, Entry>>,
        view: &View,
    ) -> BTreeMap<u64, Vec<u8>> {
        let ids: BTreeSet<u64> = model.values().flat_map(|m| m.keys().copied()).collect();
        ids.into_iter()
            .filter_map(|id| {
                view.layers()
                    .iter()
                    .find_map(|s| model.get(s).and_then(|m| m.get(&id)))
                    .and_then(|e| match e {
                        Entry::Record(b) => Some((id, b.clone())),
                        Entry::Hidden => None,
                    })
            })
            .collect()
    }

    proptest! {
        /// Every view's terminal, syncing now and then (sometimes losing
        /// its state), ends with exactly the model's view of its layers.
        #[test]
        fn each_view_converges_to_the_model(ops in proptest::collection::vec(op(), 0..80), max_log in 1usize..20) {
            let scopes = scopes();
            let views = views();
            let mut d = ScopedDataset::new("p", max_log);
            let mut model: BTreeMap<Scope, BTreeMap<u64, Entry>> = BTreeMap::new();
            let mut tills: Vec<LocalDataset> = views.iter().map(|_| LocalDataset::new("p")).collect();
            for op in ops {
                match op {
                    Op::Set(s, id, b) => {
                        let scope = &scopes[s];
                        let e = match b {
                            Some(b) => Entry::Record(vec![b; (b % 7) as usize + 1]),
                            None if *scope == Scope::Chain => continue,
                            None => Entry::Hidden,
                        };
                        let c = d.plan_update(scope, vec![(id, e.clone())], vec![]).unwrap();
                        d.apply(&c);
                        model.entry(scope.clone()).or_default().insert(id, e);
                    }
                    Op::Remove(s, id) => {
                        let scope = &scopes[s];
                        let c = d.plan_update(scope, vec![], vec![id]).unwrap();
                        d.apply(&c);
                        model.entry(scope.clone()).or_default().remove(&id);
                    }
                    Op::Sync(v, lost) => {
                        if lost {
                            let keep = tills[v].records.clone();
                            tills[v] = LocalDataset::new("p");
                            tills[v].records = keep; // records, no version: buckets path
                        }
                        let a = d.answer(&tills[v].state(), &views[v]);
                        tills[v].apply(&a).unwrap();
                        prop_assert_eq!(&tills[v].records, &model_view(&model, &views[v]));
                    }
                }
            }
            for (v, view) in views.iter().enumerate() {
                let a = d.answer(&tills[v].state(), view);
                tills[v].apply(&a).unwrap();
                prop_assert_eq!(&tills[v].records, &model_view(&model, view));
                prop_assert_eq!(d.view_len(view), tills[v].records.len());
                // Up to date: the next answer is the empty delta.
                let again = d.answer(&tills[v].state(), view);
                prop_assert_eq!(again.change, DatasetChange::Delta { upserts: vec![], deletes: vec![] });
            }
            // Restoring from the stored changes gives the same views.
            let stored: Vec<ScopedChange> = d.layers.iter().flat_map(|(s, l)| l.entries.iter().map(move |(&id, st)| ScopedChange {
                scope: s.clone(), id, version: 1, entry: Some(st.entry.clone()),
            })).collect();
            let r = ScopedDataset::restore("p", max_log, d.version(), stored);
            for view in &views {
                prop_assert_eq!(r.digest(view), d.digest(view));
            }
        }

        /// With only the chain layer, the answers are those of the
        /// unscoped dataset.
        #[test]
        fn the_chain_alone_answers_like_the_unscoped_dataset(
            ops in proptest::collection::vec((0..20u64, proptest::option::of(any::<u8>())), 0..40),
            asks in proptest::collection::vec(proptest::option::of(0..45u64), 1..6),
        ) {
            let mut s = ScopedDataset::new("p", 8);
            let mut u = ServerDataset::new("p", 8);
            for (id, b) in ops {
                let (ups, dels) = match b {
                    Some(b) => (vec![(id, Entry::Record(vec![b; 3]))], vec![]),
                    None => (vec![], vec![id]),
                };
                let c = s.plan_update(&Scope::Chain, ups, dels).unwrap();
                for ch in &c {
                    match &ch.entry {
                        Some(Entry::Record(b)) => u.upsert(ch.id, b.clone()),
                        _ => u.delete(ch.id),
                    }
                }
                s.apply(&c);
                prop_assert_eq!(s.version(), u.version());
            }
            for v in asks {
                let state = DatasetState { dataset: "p".into(), version: v, buckets: vec![] };
                prop_assert_eq!(s.answer(&state, &View::chain()), u.answer(&state));
                prop_assert_eq!(s.answer(&state, &View::store("12").unwrap()), u.answer(&state));
            }
        }
    }

    #[test]
    fn another_stores_change_is_an_empty_delta() {
        let mut d = ScopedDataset::new("products", 100);
        let c = d
            .plan_update(
                &Scope::Chain,
                (0..50)
                    .map(|i| (i, Entry::Record(vec![i as u8; 20])))
                    .collect(),
                vec![],
            )
            .unwrap();
        d.apply(&c);
        let v13 = View::store("13").unwrap();
        let mut till = LocalDataset::new("products");
        till.apply(&d.answer(&till.state(), &v13)).unwrap();
        let c = d
            .plan_update(
                &Scope::store("12").unwrap(),
                vec![(3, Entry::Record(b"cheaper".to_vec()))],
                vec![],
            )
            .unwrap();
        d.apply(&c);
        let a = d.answer(&till.state(), &v13);
        assert_eq!(
            a.change,
            DatasetChange::Delta {
                upserts: vec![],
                deletes: vec![]
            }
        );
        assert!(d.view_version(&v13) < d.version());
        let v12 = View::store("12").unwrap();
        let mut till12 = LocalDataset::new("products");
        till12.version = till.version;
        till12.records = till.records.clone();
        let a = d.answer(&till12.state(), &v12);
        let DatasetChange::Delta { upserts, deletes } = &a.change else {
            panic!("{a:?}")
        };
        assert_eq!((upserts.len(), deletes.len()), (1, 0));
        till12.apply(&a).unwrap();
        assert_eq!(till12.records[&3], b"cheaper");
    }

    #[test]
    fn hiding_in_the_chain_and_bad_names_are_refused() {
        let d = ScopedDataset::new("p", 10);
        assert!(matches!(
            d.plan_update(&Scope::Chain, vec![(1, Entry::Hidden)], vec![]),
            Err(SyncError::InvalidScope(_))
        ));
        assert!(Scope::store("a b").is_err());
        assert!(Scope::store("").is_err());
        assert!("store:".parse::<Scope>().is_err());
        assert!("shop:1".parse::<Scope>().is_err());
        for s in scopes() {
            let q = s.qualify("products");
            assert_eq!(Scope::split(&q).unwrap(), ("products", s));
        }
    }
}
