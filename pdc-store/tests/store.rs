//! pdc-store through its public API: the outbox across restarts, dead
//! letters, the shared conformance suites (cache tier, auth store),
//! foreign, damaged and newer files, quarantine of a damaged record.
#![allow(clippy::unwrap_used)]

use pdc_store::{NewItem, RedbTier, Store, StoreError};
use pdc_sync::{OutboxItem, Priority, StreamKey};
use redb::{Database, ReadableTable, TableDefinition};

fn item(i: u64) -> NewItem {
    NewItem {
        stream: StreamKey(i % 3),
        priority: Priority::High,
        kind: 2,
        created_at_ms: 1_704_067_200_000 + i,
        payload: format!("sale {i}").into_bytes(),
    }
}

fn fresh() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    (dir, path)
}

#[test]
fn outbox_survives_restart_and_ids_never_repeat() {
    let (_dir, path) = fresh();
    let store = Store::open(&path).unwrap();
    let a = store.append_many((0..5).map(item).collect()).unwrap();
    assert_eq!(
        a.iter().map(|i| i.local_id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    store.ack(&[2, 4]).unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    let (pending, q) = store.pending().unwrap();
    assert!(q.is_empty());
    assert_eq!(
        pending.iter().map(|i| i.local_id).collect::<Vec<_>>(),
        vec![1, 3, 5]
    );
    // Acked ids are not reused.
    assert_eq!(store.append(item(9)).unwrap().local_id, 6);
    store.record_attempts(&[1, 1, 3]).unwrap();
    assert_eq!(store.attempts(1).unwrap(), 2);
}

#[test]
fn dead_letters_keep_the_reason_and_can_be_requeued() {
    let (_dir, path) = fresh();
    let store = Store::open(&path).unwrap();
    let it = store.append(item(1)).unwrap();
    store
        .dead_letter(it.local_id, "invalid_sku", "SKU 99 unknown", 5)
        .unwrap();
    assert!(store.pending().unwrap().0.is_empty());
    let dl = store.dead_letters().unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].code, "invalid_sku");
    assert_eq!(dl[0].item, it);
    let back = store.requeue_dead_letter(it.local_id).unwrap();
    assert_eq!(back, it);
    assert_eq!(store.pending().unwrap().0, vec![it]);
    assert!(matches!(
        store.requeue_dead_letter(77),
        Err(StoreError::NotFound(77))
    ));
}

#[test]
fn the_cache_tier_passes_the_shared_conformance_suite() {
    let dirs = std::cell::RefCell::new(Vec::new());
    pollster::block_on(pdc_cache::conformance(|| {
        let (dir, path) = fresh();
        let store = Store::open(&path).unwrap();
        dirs.borrow_mut().push(dir);
        RedbTier::new(store, "l3", 10 << 20).unwrap()
    }));
}

#[test]
fn the_auth_store_passes_the_shared_conformance_suite() {
    let mut dirs = Vec::new();
    pdc_auth::conformance(|| {
        let (dir, path) = fresh();
        let store = Store::open(&path).unwrap();
        dirs.push(dir);
        store
    });
}

/// An encrypted store in memory (the conformance suites on sealed values).
fn encrypted() -> Store {
    Store::open_backend(
        redb::backends::InMemoryBackend::new(),
        pdc_store::StoreOptions::encrypted(pdc_store::StoreKey::from_bytes([0x42; 32])),
    )
    .unwrap()
}

#[test]
fn the_cache_tier_passes_the_shared_conformance_suite_encrypted() {
    pollster::block_on(pdc_cache::conformance(|| {
        RedbTier::new(encrypted(), "l3", 10 << 20).unwrap()
    }));
}

#[test]
fn the_auth_store_passes_the_shared_conformance_suite_encrypted() {
    pdc_auth::conformance(encrypted);
}

#[test]
fn cache_tier_enforces_its_byte_budget_and_sheds() {
    use pdc_cache::{CacheTier, TierEntry};
    let (_dir, path) = fresh();
    let tier = RedbTier::new(Store::open(&path).unwrap(), "l3", 20_000).unwrap();
    for i in 0..100u64 {
        // Incompressible bytes, so that frames keep their size.
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let value: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let e = TierEntry {
            value,
            dataset: "d".into(),
            tags: vec![],
            fresh_until_ms: i,
            expires_at_ms: 1000 + i,
        };
        pollster::block_on(tier.put(&format!("k{i}"), e)).unwrap();
    }
    let bytes = pollster::block_on(tier.bytes()).unwrap();
    assert!(bytes <= 20_000, "{bytes}");
    // Entries closest to expiry went first: the newest are still there.
    assert!(pollster::block_on(tier.get("k99", 0)).unwrap().is_some());
    assert!(pollster::block_on(tier.get("k0", 0)).unwrap().is_none());
    let n = tier.shed(10_000).unwrap();
    assert!(n > 0);
    assert!(pollster::block_on(tier.bytes()).unwrap() <= bytes - 10_000);
}

#[test]
fn foreign_damaged_and_newer_files_are_clear_errors() {
    let (_dir, path) = fresh();
    std::fs::write(&path, b"this is a spreadsheet, not a till").unwrap();
    let e = Store::open(&path).unwrap_err();
    assert!(
        matches!(e, StoreError::NotAStore(_) | StoreError::Corrupt(_)),
        "{e}"
    );

    let (_dir, path) = fresh();
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(TableDefinition::<u64, u64>::new("someone_elses"))
            .unwrap()
            .insert(1, 2)
            .unwrap();
        tx.commit().unwrap();
    }
    assert!(matches!(Store::open(&path), Err(StoreError::NotAStore(_))));

    let (_dir, path) = fresh();
    drop(Store::open(&path).unwrap());
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(TableDefinition::<&str, &[u8]>::new("pdc_meta"))
            .unwrap()
            .insert("schema_version", 5u64.to_le_bytes().as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::NewerSchema {
            found: 5,
            supported: 4
        })
    ));

    // Truncated file: an error, not a panic.
    let (_dir, path) = fresh();
    {
        let s = Store::open(&path).unwrap();
        s.append_many((0..100).map(item).collect()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let _ = Store::open(&path).map(|s| s.pending());
}

#[test]
fn a_damaged_outbox_record_is_quarantined_and_the_rest_stays_readable() {
    let (_dir, path) = fresh();
    {
        let s = Store::open(&path).unwrap();
        s.append_many((0..5).map(item).collect()).unwrap();
    }
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx
                .open_table(TableDefinition::<u64, &[u8]>::new("outbox"))
                .unwrap();
            let mut raw = t.get(3).unwrap().unwrap().value().to_vec();
            let n = raw.len();
            raw[n / 2] ^= 0x20; // bit rot inside the frame
            t.insert(3, raw.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let s = Store::open(&path).unwrap();
    let (pending, q) = s.pending().unwrap();
    assert_eq!(
        pending.iter().map(|i| i.local_id).collect::<Vec<_>>(),
        vec![1, 2, 4, 5]
    );
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].location, "outbox/3");
    assert_eq!(s.quarantined().unwrap().len(), 1);
    assert_eq!(s.pending().unwrap().1.len(), 0, "quarantined once");
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let (_dir, path) = fresh();
    let _a = Store::open(&path).unwrap();
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::Locked | StoreError::Storage(_))
    ));
}

#[test]
fn datasets_apply_whole_check_digests_and_keep_local_changes() {
    use pdc_sync::ServerDataset;
    let (_dir, path) = fresh();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.dataset_version("products").unwrap(), None);
    let mut server = ServerDataset::new("products", 100);
    for id in 0..50 {
        server.upsert(id, format!("p{id}").into_bytes());
    }
    store
        .apply_dataset(&server.answer(&store.dataset_state("products").unwrap()))
        .unwrap();
    assert_eq!(store.dataset("products").unwrap().records.len(), 50);
    assert_eq!(
        store.dataset_version("products").unwrap(),
        store.dataset("products").unwrap().version
    );
    assert!(store.dataset_version("products").unwrap().is_some());
    assert_eq!(store.dataset_version("users").unwrap(), None);

    // A local change survives a pull that touches the same record.
    store
        .dataset_put_local("products", 7, b"edited at the till")
        .unwrap();
    server.upsert(7, b"server price change".to_vec());
    server.delete(9);
    let answer = server.answer(&store.dataset_state("products").unwrap());
    assert!(matches!(
        answer.change,
        pdc_sync::DatasetChange::Delta { .. }
    ));
    store.apply_dataset(&answer).unwrap();
    assert_eq!(
        store.dataset_get("products", 7).unwrap().unwrap(),
        b"edited at the till"
    );
    assert_eq!(store.dataset_get("products", 9).unwrap(), None);
    store.dataset_ack_local("products", 7).unwrap();
    assert_eq!(
        store.dataset_get("products", 7).unwrap().unwrap(),
        b"server price change"
    );

    // A wrong digest changes nothing.
    server.upsert(1, b"new".to_vec());
    let mut bad = server.answer(&store.dataset_state("products").unwrap());
    bad.digest[0] ^= 1;
    let version = store.dataset("products").unwrap().version;
    assert!(store.apply_dataset(&bad).is_err());
    assert_eq!(store.dataset("products").unwrap().version, version);
    assert_eq!(store.dataset_get("products", 1).unwrap().unwrap(), b"p1");
    // Survives a restart.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.dataset("products").unwrap().records.len(), 49);
}

/// Every store gets a random 128-bit id with the file; it survives
/// reopening; two stores never share one; it is never the legacy id.
#[test]
fn a_store_has_a_random_id_made_with_it() {
    let (_d1, p1) = fresh();
    let (_d2, p2) = fresh();
    let a = Store::open(&p1).unwrap().store_id();
    let b = Store::open(&p2).unwrap().store_id();
    assert_ne!(a, b);
    assert_ne!(a, pdc_sync::StoreId::LEGACY);
    assert_eq!(
        Store::open(&p1).unwrap().store_id(),
        a,
        "stable across opens"
    );
    // Replacing the file makes a new identity.
    std::fs::remove_file(&p1).unwrap();
    assert_ne!(Store::open(&p1).unwrap().store_id(), a);
}

/// A schema 1 store (before store ids) keeps its pending items and takes
/// the legacy id, under which the server already keys what it sent.
#[test]
fn a_schema_1_store_migrates_to_the_legacy_id() {
    let (_dir, path) = fresh();
    {
        let s = Store::open(&path).unwrap();
        s.append_many((0..3).map(item).collect()).unwrap();
    }
    {
        // What a schema 1 build left: no store id, version 1.
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut meta = tx
                .open_table(TableDefinition::<&str, &[u8]>::new("pdc_meta"))
                .unwrap();
            meta.remove("store_id").unwrap();
            meta.insert("schema_version", 1u64.to_le_bytes().as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.store_id(), pdc_sync::StoreId::LEGACY);
    assert_eq!(s.pending().unwrap().0.len(), 3);
    drop(s);
    assert_eq!(
        Store::open(&path).unwrap().store_id(),
        pdc_sync::StoreId::LEGACY
    );
}

/// Schema 2 stores (no outbox index) get the index built at open, from
/// the outbox itself.
#[test]
fn a_schema_2_store_gets_its_outbox_index() {
    let (_dir, path) = fresh();
    let appended = {
        let s = Store::open(&path).unwrap();
        s.append_many((0..4).map(item).collect()).unwrap()
    };
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.delete_table(TableDefinition::<u64, &[u8]>::new("outbox_index"))
            .unwrap();
        tx.open_table(TableDefinition::<&str, &[u8]>::new("pdc_meta"))
            .unwrap()
            .insert("schema_version", 2u64.to_le_bytes().as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let s = Store::open(&path).unwrap();
    let (refs, held) = s.pending_refs().unwrap();
    assert!(held.is_empty());
    assert_eq!(
        refs,
        appended.iter().map(OutboxItem::to_ref).collect::<Vec<_>>()
    );
}

/// The outbox against a model: appends, settlements (acks, refusals,
/// holds), releases and damaged records; the index (`pending_refs`) and
/// `load` always agree with the model, and a reopen changes nothing.
mod outbox_model {
    use super::*;
    use pdc_store::{Refusal, Settlement};
    use pdc_sync::Loaded;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        Settle {
            ack: Vec<usize>,
            refuse: Vec<usize>,
            hold: Vec<usize>,
        },
        Release(usize),
        Reopen,
        /// Rotate the key (encrypted runs) in batches of this many rows.
        Rekey(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let picks = || proptest::collection::vec(any::<usize>(), 0..3);
        prop_oneof![
            4 => (1u8..6).prop_map(Op::Append),
            3 => (picks(), picks(), picks()).prop_map(|(ack, refuse, hold)| Op::Settle { ack, refuse, hold }),
            1 => any::<usize>().prop_map(Op::Release),
            1 => Just(Op::Reopen),
            1 => (1usize..5).prop_map(Op::Rekey),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn outbox_index_and_payloads_follow_the_model(
            ops in proptest::collection::vec(op(), 1..40),
            encrypted in any::<bool>(),
        ) {
            use pdc_store::{StoreKey, StoreOptions};
            let (_dir, path) = fresh();
            let mut key = StoreKey::from_bytes([0; 32]);
            let mut rotations = 0u8;
            let open = |key: &StoreKey| {
                let keys = if encrypted { vec![key.clone()] } else { Vec::new() };
                Store::open_with_options(&path, StoreOptions { cache_bytes: None, keys }).unwrap()
            };
            let mut store = open(&key);
            // local id -> (item, held reason)
            let mut model: BTreeMap<u64, (OutboxItem, Option<String>)> = BTreeMap::new();
            let mut dead: BTreeMap<u64, String> = BTreeMap::new();
            let mut n = 0u64;
            for op in ops {
                let ids: Vec<u64> = model.keys().copied().collect();
                let pick = |i: usize| ids.get(i % ids.len().max(1)).copied();
                match op {
                    Op::Append(k) => {
                        let items = (0..k).map(|_| { n += 1; item(n) }).collect();
                        for it in store.append_many(items).unwrap() {
                            model.insert(it.local_id, (it, None));
                        }
                    }
                    Op::Settle { ack, refuse, hold } => {
                        let mut s = Settlement::default();
                        let mut used = std::collections::BTreeSet::new();
                        for id in ack.into_iter().filter_map(pick) {
                            if used.insert(id) { s.acked.push(id); }
                        }
                        for id in refuse.into_iter().filter_map(pick) {
                            if used.insert(id) {
                                s.refused.push(Refusal { local_id: id, code: "c".into(), message: format!("m{id}"), at_ms: 1 });
                            }
                        }
                        for id in hold.into_iter().filter_map(pick) {
                            if used.insert(id) { s.held.push((id, format!("r{id}"))); }
                        }
                        store.settle(&s).unwrap();
                        for id in &s.acked { model.remove(id); }
                        for r in &s.refused { model.remove(&r.local_id); dead.insert(r.local_id, r.message.clone()); }
                        for (id, reason) in &s.held { if let Some(e) = model.get_mut(id) { e.1 = Some(reason.clone()); } }
                    }
                    Op::Release(i) => {
                        if let Some(id) = pick(i) {
                            let was = store.release_held(id).unwrap();
                            let e = model.get_mut(&id).unwrap();
                            prop_assert_eq!(was, e.1.is_some());
                            e.1 = None;
                        }
                    }
                    Op::Reopen => {
                        drop(store);
                        store = open(&key);
                    }
                    Op::Rekey(batch) => {
                        if encrypted {
                            rotations += 1;
                            key = StoreKey::from_bytes([rotations; 32]);
                            let r = store.rekey(&key, batch).unwrap();
                            prop_assert_eq!(r.resealed, (model.len() + dead.len()) as u64);
                        } else {
                            prop_assert!(store.rekey(&key, batch).is_err());
                        }
                    }
                }
                let (refs, held) = store.pending_refs().unwrap();
                let want: Vec<_> = model.values().filter(|e| e.1.is_none()).map(|e| e.0.to_ref()).collect();
                prop_assert_eq!(refs, want);
                let want_held: Vec<_> = model.values().filter_map(|e| e.1.clone().map(|r| (e.0.to_ref(), r))).collect();
                prop_assert_eq!(held, want_held);
                let ids: Vec<u64> = model.keys().copied().chain([n + 1]).collect();
                let loaded = store.load(&ids).unwrap();
                for (id, l) in ids.iter().zip(loaded) {
                    match (model.get(id), l) {
                        (Some(e), Loaded::Item(it)) => prop_assert_eq!(&e.0, &it),
                        (None, Loaded::Gone { .. }) => {}
                        (m, l) => prop_assert!(false, "{id}: model {m:?}, store {l:?}"),
                    }
                }
                let dls: BTreeMap<u64, String> = store.dead_letters().unwrap().into_iter().map(|d| (d.item.local_id, d.message)).collect();
                prop_assert_eq!(&dls, &dead);
            }
        }
    }
}

/// A backend holding bytes that are not a redb file is refused before redb
/// reads it (on wasm a panic in redb would trap the whole instance); a
/// bounded page cache opens as usual.
#[test]
fn a_foreign_backend_is_refused_before_redb_reads_it() {
    use redb::StorageBackend as _;
    let backend = redb::backends::InMemoryBackend::new();
    backend.set_len(4096).unwrap();
    backend.write(0, b"not a redb file at all").unwrap();
    assert!(matches!(
        Store::open_with_backend(backend),
        Err(StoreError::NotAStore(_))
    ));
    let tiny = redb::backends::InMemoryBackend::new();
    tiny.set_len(3).unwrap();
    assert!(matches!(
        Store::open_with_backend(tiny),
        Err(StoreError::NotAStore(_))
    ));
    let fresh =
        Store::open_with_backend_and_cache(redb::backends::InMemoryBackend::new(), Some(1 << 20))
            .unwrap();
    fresh.append(item(1)).unwrap();
    assert_eq!(fresh.pending_refs().unwrap().0.len(), 1);
}
