//! Crash safety: a child process appends sales in a loop and is killed with
//! SIGKILL at random moments. After each reopen, every sale whose `append`
//! returned is present exactly once, ids never repeat, and the store opens
//! cleanly. `PDC_CRASH_KILLS=N` sets the number of kills (default 30); the
//! harness is `pdc_test::crash_rounds`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Write;

use pdc_store::{NewItem, Store, StoreKey, StoreOptions};
use pdc_sync::{Priority, StreamKey};

const CHILD_ENV: &str = "PDC_CRASH_CHILD_STORE";
const KEYED_CHILD_ENV: &str = "PDC_CRASH_CHILD_KEYED_STORE";

/// The two keys the encrypted child rotates between.
fn keys() -> Vec<StoreKey> {
    vec![
        StoreKey::from_bytes([0xA1; 32]),
        StoreKey::from_bytes([0xB2; 32]),
    ]
}

/// The encrypted child: as [`crash_child`], on a store opened with both
/// keys, rotating its key every 40 appends (so kills land inside
/// rotations too).
#[test]
fn crash_child_keyed() {
    let Ok(path) = std::env::var(KEYED_CHILD_ENV) else {
        return;
    };
    let store = Store::open_with_options(
        &path,
        StoreOptions {
            cache_bytes: None,
            keys: keys(),
        },
    )
    .unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        if i % 40 == 39 {
            store.rekey(&keys()[(i / 40 % 2) as usize], 16).unwrap();
        }
        let appended = store
            .append(NewItem {
                stream: StreamKey(i % 7),
                priority: Priority::High,
                kind: 2,
                created_at_ms: i * 100,
                payload: vec![(i % 251) as u8; 64 + (i % 200) as usize],
            })
            .unwrap();
        writeln!(out, "id {}", appended.local_id).unwrap();
        out.flush().unwrap();
    }
}

/// With encryption on and key rotations under way, every returned append
/// survives SIGKILL, opens with the two keys and nothing is quarantined.
#[test]
fn every_returned_append_survives_sigkill_with_encryption_and_rotation() {
    if std::env::var(KEYED_CHILD_ENV).is_ok() || std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let kills = pdc_test::kills_from_env().min(15);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    let confirmed = pdc_test::crash_rounds(
        "crash_child_keyed",
        KEYED_CHILD_ENV,
        &path,
        kills,
        |round, confirmed| {
            assert!(
                matches!(Store::open(&path), Err(pdc_store::StoreError::KeyRequired)),
                "round {round}: an encrypted store opened without a key"
            );
            let store = Store::open_with_options(
                &path,
                StoreOptions {
                    cache_bytes: None,
                    keys: keys(),
                },
            )
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
            let (pending, quarantined) = store.pending().unwrap();
            assert!(quarantined.is_empty(), "round {round}: {quarantined:?}");
            let held: BTreeSet<u64> = pending.iter().map(|i| i.local_id).collect();
            let lost: Vec<&u64> = confirmed.difference(&held).collect();
            assert!(
                lost.is_empty(),
                "round {round}: confirmed sales lost: {lost:?}"
            );
        },
    );
    eprintln!(
        "{kills} SIGKILLs with encryption and rotations, {} confirmed sales, none lost",
        confirmed.len()
    );
    assert!(confirmed.len() > kills as usize);
}

/// The child: runs only when the parent starts this test binary with the
/// store path in the environment.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(&path).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let batch = if i % 5 == 0 { 10 } else { 1 };
        let items = (0..batch)
            .map(|j| NewItem {
                stream: StreamKey(i % 7),
                priority: Priority::High,
                kind: 2,
                created_at_ms: i * 100 + j,
                payload: vec![(i % 251) as u8; 64 + (i % 200) as usize],
            })
            .collect();
        let appended = store.append_many(items).unwrap();
        // Reported only after append returned, i.e. after the durable commit.
        for it in appended {
            writeln!(out, "id {}", it.local_id).unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn every_returned_append_survives_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() || std::env::var(KEYED_CHILD_ENV).is_ok() {
        return;
    }
    let kills = pdc_test::kills_from_env();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    let confirmed = pdc_test::crash_rounds(
        "crash_child",
        CHILD_ENV,
        &path,
        kills,
        |round, confirmed| {
            let store =
                Store::open(&path).unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
            let (pending, quarantined) = store.pending().unwrap();
            assert!(quarantined.is_empty(), "round {round}: {quarantined:?}");
            let held: Vec<u64> = pending.iter().map(|i| i.local_id).collect();
            assert!(
                held.windows(2).all(|w| w[0] < w[1]),
                "round {round}: ids repeat or go back"
            );
            let held: BTreeSet<u64> = held.into_iter().collect();
            let lost: Vec<&u64> = confirmed.difference(&held).collect();
            assert!(
                lost.is_empty(),
                "round {round}: confirmed sales lost: {lost:?}"
            );
            assert!(store.next_local_id().unwrap() > confirmed.last().copied().unwrap_or(0));
        },
    );
    eprintln!(
        "{kills} SIGKILLs, {} confirmed sales, none lost or repeated",
        confirmed.len()
    );
    assert!(
        confirmed.len() > kills as usize,
        "the child made progress: {}",
        confirmed.len()
    );
}
