//! A fault-injecting redb backend.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redb::backends::InMemoryBackend;
use redb::StorageBackend;

/// A redb backend in memory whose writes, length changes and syncs fail
/// with "no space left on device" while `failing` is set. Clones share the
/// disk and the switch, so a test can reopen "the same disk" after a fault.
#[derive(Debug, Clone, Default)]
pub struct FlakyBackend {
    /// The disk.
    pub inner: Arc<InMemoryBackend>,
    /// Set to make writes fail.
    pub failing: Arc<AtomicBool>,
}

impl FlakyBackend {
    /// A fresh disk that does not fail yet.
    pub fn new() -> Self {
        FlakyBackend::default()
    }

    /// Makes writes fail (`true`) or succeed again.
    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

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

impl StorageBackend for FlakyBackend {
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
