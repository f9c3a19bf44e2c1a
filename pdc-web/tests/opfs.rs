//! pdc-store on the OPFS backend, in a dedicated worker of headless
//! Chromium (`wasm-bindgen-test`): the shared conformance suites of the
//! cache tier and the auth store, and the outbox across a reopen of the
//! same file. Run by `cargo xtask browser`.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;

use pdc_store::{NewItem, RedbTier, Store};
use pdc_sync::{Priority, StreamKey};
use pdc_web::{open_opfs_file, OpfsBackend};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// `n` new OPFS files with unique names.
async fn fresh(prefix: &str, n: usize) -> Vec<OpfsBackend> {
    let stamp = js_sys::Date::now() as u64;
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            open_opfs_file(&format!("{prefix}-{stamp}-{i}.pdc"))
                .await
                .unwrap(),
        );
    }
    out
}

#[wasm_bindgen_test]
async fn the_cache_tier_passes_the_shared_conformance_suite_on_opfs() {
    let files = RefCell::new(fresh("tier", 24).await);
    pdc_cache::conformance(|| {
        let backend = files
            .borrow_mut()
            .pop()
            .expect("enough files for the suite");
        RedbTier::new(Store::open_with_backend(backend).unwrap(), "l3", 10 << 20).unwrap()
    })
    .await;
}

#[wasm_bindgen_test]
async fn the_auth_store_passes_the_shared_conformance_suite_on_opfs() {
    let mut files = fresh("auth", 24).await;
    pdc_auth::conformance(|| {
        let backend = files.pop().expect("enough files for the suite");
        Store::open_with_backend(backend).unwrap()
    });
}

#[wasm_bindgen_test]
async fn the_outbox_survives_a_reopen_of_the_same_file() {
    let name = format!("reopen-{}.pdc", js_sys::Date::now() as u64);
    let ids: Vec<u64> = {
        let store = Store::open_with_backend(open_opfs_file(&name).await.unwrap()).unwrap();
        let items = (0..100u64)
            .map(|i| NewItem {
                stream: StreamKey(i % 7),
                priority: Priority::High,
                kind: 100,
                created_at_ms: i,
                payload: vec![i as u8; 300],
            })
            .collect();
        store
            .append_many(items)
            .unwrap()
            .iter()
            .map(|i| i.local_id)
            .collect()
    };
    // The first store (and its exclusive handle) is closed: the file opens again.
    let store = Store::open_with_backend(open_opfs_file(&name).await.unwrap()).unwrap();
    let (pending, held) = store.pending_refs().unwrap();
    assert!(held.is_empty());
    assert_eq!(pending.iter().map(|r| r.local_id).collect::<Vec<_>>(), ids);
    let loaded = store.load(&ids[..3]).unwrap();
    assert!(matches!(&loaded[0], pdc_sync::Loaded::Item(i) if i.payload == vec![0u8; 300]));
    // A second handle on an open file is refused, not a panic.
    assert!(open_opfs_file(&name).await.is_err());
}

/// Encryption at rest in the browser: a store created with a key shows
/// none of a sale's bytes in its OPFS file, refuses to open without the
/// key or with another, and opens whole with it; the shared conformance
/// suites pass on sealed values.
#[wasm_bindgen_test]
async fn an_encrypted_store_shows_no_sale_bytes_in_its_opfs_file() {
    use pdc_store::{StoreError, StoreKey, StoreOptions};
    use redb::StorageBackend as _;
    const SALE: &[u8] = b"customer 4711-0815-2342 bought 3 x espresso beans";
    let key = StoreKey::from_bytes([0x77; 32]);
    let name = format!("sealed-{}.pdc", js_sys::Date::now() as u64);
    {
        let store = pdc_web::open_opfs_store(&name, StoreOptions::encrypted(key.clone()))
            .await
            .unwrap();
        for i in 0..50 {
            store
                .append(NewItem {
                    stream: StreamKey(1),
                    priority: Priority::High,
                    kind: 100,
                    created_at_ms: i,
                    payload: SALE.to_vec(),
                })
                .unwrap();
        }
    }
    {
        let file = open_opfs_file(&name).await.unwrap();
        let raw = file.read(0, file.len().unwrap() as usize).unwrap();
        assert!(
            !raw.windows(12).any(|w| w == &SALE[..12]),
            "sale bytes in the file"
        );
    }
    assert!(matches!(
        pdc_web::open_opfs_store(&name, StoreOptions::default()).await,
        Err(pdc_web::OpenError::Store(StoreError::KeyRequired))
    ));
    assert!(matches!(
        pdc_web::open_opfs_store(
            &name,
            StoreOptions::encrypted(StoreKey::from_bytes([1; 32]))
        )
        .await,
        Err(pdc_web::OpenError::Store(StoreError::WrongKey))
    ));
    let store = pdc_web::open_opfs_store(&name, StoreOptions::encrypted(key.clone()))
        .await
        .unwrap();
    let (pending, quarantined) = store.pending().unwrap();
    assert!(quarantined.is_empty());
    assert_eq!(pending.len(), 50);
    assert!(pending.iter().all(|i| i.payload == SALE));
    drop(store);
    let files = RefCell::new(fresh("sealed-tier", 24).await);
    pdc_cache::conformance(|| {
        let backend = files
            .borrow_mut()
            .pop()
            .expect("enough files for the suite");
        RedbTier::new(
            Store::open_backend(backend, StoreOptions::encrypted(key.clone())).unwrap(),
            "l3",
            10 << 20,
        )
        .unwrap()
    })
    .await;
}

/// A first open creates the store beside its name and renames it into
/// place; a partial file left by a killed creation is removed, never
/// opened (issue 14's atomic creation, in the browser).
#[wasm_bindgen_test]
async fn a_first_open_creates_the_store_atomically() {
    use redb::StorageBackend as _;
    let name = format!("atomic-{}.pdc", js_sys::Date::now() as u64);
    let tmp = format!("{name}.creating");
    {
        let partial = open_opfs_file(&tmp).await.unwrap();
        partial.set_len(4096).unwrap();
        partial.write(0, b"redb, half written").unwrap();
    }
    let store = pdc_web::open_opfs_store(
        &name,
        pdc_store::StoreOptions {
            cache_bytes: Some(1 << 20),
            keys: Vec::new(),
        },
    )
    .await
    .unwrap();
    assert!(!pdc_web::opfs_file_exists(&tmp).await.unwrap());
    store
        .append(NewItem {
            stream: StreamKey(1),
            priority: Priority::High,
            kind: 100,
            created_at_ms: 1,
            payload: vec![1; 10],
        })
        .unwrap();
    let id = store.store_id();
    drop(store);
    let again = pdc_web::open_opfs_store(&name, pdc_store::StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(again.store_id(), id, "the same store, not a new one");
    assert_eq!(again.pending_refs().unwrap().0.len(), 1);
}
