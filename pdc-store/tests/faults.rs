//! A fault-injecting storage backend: writes and syncs start failing on
//! command, as when the disk fills up. A sale that could not be made
//! durable is an error, and the store stays consistent: what was committed
//! before is intact, and after the fault clears, ids continue without a
//! repeat.
#![allow(clippy::unwrap_used)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pdc_store::{NewItem, Store, StoreError};
use pdc_sync::{Priority, StreamKey};
use redb::backends::InMemoryBackend;
use redb::StorageBackend;

#[derive(Debug)]
struct Flaky {
    inner: Arc<InMemoryBackend>,
    failing: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> io::Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device",
            ))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for Flaky {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> io::Result<()> {
        self.check()?;
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

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
    let failing = Arc::new(AtomicBool::new(false));
    let disk = Arc::new(InMemoryBackend::new());
    let store = Store::open_with_backend(Flaky {
        inner: disk.clone(),
        failing: failing.clone(),
    })
    .unwrap();
    let first = store.append_many((0..10).map(sale).collect()).unwrap();
    assert_eq!(first.last().unwrap().local_id, 10);

    failing.store(true, Ordering::SeqCst);
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

    failing.store(false, Ordering::SeqCst);
    // After an I/O error the store refuses further writes rather than guess.
    assert!(store.append(sale(98)).is_err());
    drop(store);

    // Reopened (as after a restart): what was committed before the fault is
    // intact, nothing of the failed appends is, and ids continue at 11.
    let store = Store::open_with_backend(Flaky {
        inner: disk,
        failing,
    })
    .unwrap();
    let (pending, q) = store.pending().unwrap();
    assert!(q.is_empty());
    assert_eq!(
        pending.iter().map(|i| i.local_id).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(store.append(sale(99)).unwrap().local_id, 11);
}
