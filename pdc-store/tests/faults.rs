//! A fault-injecting storage backend: writes and syncs start failing on
//! command, as when the disk fills up. A sale that could not be made
//! durable is an error, and the store stays consistent: what was committed
//! before is intact, and after the fault clears, ids continue without a
//! repeat.
#![allow(clippy::unwrap_used)]

use pdc_store::{NewItem, Store, StoreError};
use pdc_sync::{Priority, StreamKey};
use pdc_test::FlakyBackend;

fn sale(i: u64) -> NewItem {
    NewItem {
        stream: StreamKey(i),
        priority: Priority::High,
        kind: 2,
        created_at_ms: i,
        payload: vec![i as u8; 100],
    }
}

#[test]
fn a_failed_commit_is_an_error_and_the_store_stays_consistent() {
    let disk = FlakyBackend::new();
    let store = Store::open_with_backend(disk.clone()).unwrap();
    let first = store.append_many((0..10).map(sale).collect()).unwrap();
    assert_eq!(first.last().unwrap().local_id, 10);

    disk.fail(true);
    let mut refused = 0;
    for i in 10..20 {
        match store.append(sale(i)) {
            Ok(it) => panic!(
                "append {} reported durable while the disk fails",
                it.local_id
            ),
            Err(StoreError::WriteFailed(_) | StoreError::Storage(_) | StoreError::Corrupt(_)) => {
                refused += 1
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(refused, 10);

    disk.fail(false);
    // After an I/O error the store refuses further writes rather than guess.
    assert!(store.append(sale(98)).is_err());
    drop(store);

    // Reopened (as after a restart): what was committed before the fault is
    // intact, nothing of the failed appends is, and ids continue at 11.
    let store = Store::open_with_backend(disk).unwrap();
    let (pending, q) = store.pending().unwrap();
    assert!(q.is_empty());
    assert_eq!(
        pending.iter().map(|i| i.local_id).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(store.append(sale(99)).unwrap().local_id, 11);
}
