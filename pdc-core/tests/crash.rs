//! Crash safety of `OfflineEngine::record`: a child process records sales
//! through the engine and is killed with SIGKILL at random moments; after
//! each reopen every sale whose `record` returned is pending exactly once,
//! restored into the sync machine, and ids never repeat.
//! `PDC_CRASH_KILLS=N` sets the number of kills (default 30); pdc-store's
//! own crash test covers the store alone.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Write;

use pdc_clock::SystemClock;
use pdc_core::{EngineConfig, OfflineEngine};
use pdc_store::NewItem;
use pdc_sync::{LoopbackTransport, Priority, StreamKey};

const CHILD_ENV: &str = "PDC_ENGINE_CRASH_CHILD_STORE";

fn config(path: &str) -> EngineConfig {
    let mut c = EngineConfig::new("till-1".parse().unwrap(), path);
    c.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    c.seed = Some(1);
    c
}

#[test]
fn engine_crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let engine =
        OfflineEngine::open(config(&path), LoopbackTransport::new(), SystemClock::new()).unwrap();
    engine.set_online(false); // sales accumulate, as during an outage
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let id = engine
            .record(NewItem {
                stream: StreamKey(i % 4),
                priority: Priority::High,
                kind: 100, // opaque (kind 2 must be a valid order)
                created_at_ms: i,
                payload: vec![i as u8; 80],
            })
            .unwrap();
        writeln!(out, "id {id}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn every_recorded_sale_survives_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let kills = pdc_test::kills_from_env();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    let path_str = path.to_string_lossy().into_owned();
    let confirmed = pdc_test::crash_rounds(
        "engine_crash_child",
        CHILD_ENV,
        &path,
        kills,
        |round, confirmed| {
            let engine = OfflineEngine::open(
                config(&path_str),
                LoopbackTransport::new(),
                SystemClock::new(),
            )
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
            let held: BTreeSet<u64> = engine
                .store()
                .pending()
                .unwrap()
                .0
                .iter()
                .map(|i| i.local_id)
                .collect();
            let lost: Vec<&u64> = confirmed.difference(&held).collect();
            assert!(
                lost.is_empty(),
                "round {round}: recorded sales lost: {lost:?}"
            );
            assert_eq!(
                engine.pending(),
                held.len(),
                "round {round}: the sync machine holds what the store holds"
            );
        },
    );
    eprintln!(
        "{kills} SIGKILLs of a recording engine, {} confirmed sales, none lost or repeated",
        confirmed.len()
    );
    assert!(confirmed.len() > kills as usize);
}

const SELL_CHILD_ENV: &str = "PDC_ENGINE_SELL_CRASH_CHILD_STORE";

fn product() -> pdc_codec::Product {
    pdc_codec::Product {
        id: 7001,
        name: "Espresso".into(),
        barcode: "4006381333900".into(),
        category: "Drinks".into(),
        price_cents: 240,
        tax_rate_bp: 700,
        active: true,
    }
}

/// The selling child's store key: the receipt test runs with encryption
/// at rest on (the plain store is the other tests').
fn sell_key() -> pdc_store::StoreKey {
    pdc_store::StoreKey::from_bytes([0x3C; 32])
}

#[test]
fn sell_crash_child() {
    let Ok(path) = std::env::var(SELL_CHILD_ENV) else {
        return;
    };
    let mut c = config(&path);
    c.store_keys = vec![sell_key()];
    let engine = OfflineEngine::open(c, LoopbackTransport::new(), SystemClock::new()).unwrap();
    engine.set_online(false);
    let mut out = std::io::stdout().lock();
    for i in 0u32.. {
        let sale = pdc_core::Sale::new(1)
            .add(&product(), 1 + i % 3)
            .pay_rest(pdc_codec::PaymentMethod::Cash);
        let receipt = engine.sell(&sale).unwrap();
        writeln!(out, "id {}", receipt.seq).unwrap();
        out.flush().unwrap();
    }
}

/// Receipt numbers under SIGKILL, on an encrypted store: after each reopen
/// (which needs the key) the stored orders
/// carry sale numbers 1..=n with no gap and no repeat, every number a
/// `sell` returned is among them, and the next sale continues at n + 1.
#[test]
fn receipt_numbers_survive_sigkill_without_a_gap_or_a_repeat() {
    if std::env::var(SELL_CHILD_ENV).is_ok() {
        return;
    }
    let kills = pdc_test::kills_from_env().div_ceil(2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    let codec = pdc_codec::Codec::new();
    let confirmed = pdc_test::crash_rounds(
        "sell_crash_child",
        SELL_CHILD_ENV,
        &path,
        kills,
        |round, confirmed| {
            assert!(matches!(
                pdc_store::Store::open(&path),
                Err(pdc_store::StoreError::KeyRequired)
            ));
            let store = pdc_store::Store::open_with_options(
                &path,
                pdc_store::StoreOptions::encrypted(sell_key()),
            )
            .unwrap();
            let ids: Vec<u64> = store
                .pending()
                .unwrap()
                .0
                .iter()
                .map(|i| codec.decode::<pdc_codec::Order>(&i.payload).unwrap().id)
                .collect();
            let base = ids.first().map_or(0, |id| id - 1);
            let seqs: Vec<u64> = ids.iter().map(|id| id - base).collect();
            let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
            assert_eq!(seqs, expected, "round {round}: a gap or a repeat");
            let held: BTreeSet<u64> = seqs.iter().copied().collect();
            let lost: Vec<&u64> = confirmed.difference(&held).collect();
            assert!(
                lost.is_empty(),
                "round {round}: sold receipts lost: {lost:?}"
            );
            assert_eq!(store.next_sale_number().unwrap(), seqs.len() as u64 + 1);
        },
    );
    eprintln!(
        "{kills} SIGKILLs of a selling engine, {} confirmed receipts, numbered without a gap",
        confirmed.len()
    );
    assert!(confirmed.len() > kills as usize);
}
