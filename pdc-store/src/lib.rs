//! pdc-store: the embedded durable default of pdc, on redb. One file per
//! terminal, ACID, crash-safe.
//!
//! * **Outbox**: [`Store::append`] returns only once the sale is committed
//!   with immediate durability (fsync), together with the local-id counter,
//!   so ids never repeat after a crash; [`Store::append_many`] group-commits
//!   a bulk import; [`Store::pending`] lists items in local-id order for
//!   `SyncMachine::restore`; [`Store::ack`] removes acknowledged items;
//!   [`Store::dead_letter`] / [`Store::dead_letters`] /
//!   [`Store::requeue_dead_letter`] keep what the server refused.
//! * **Cache tier**: [`RedbTier`] implements pdc-cache's `CacheTier` and
//!   passes its conformance suite (frames with checksums, TTL, expiry index
//!   for bounded purges, byte budget, [`RedbTier::shed`] when the disk is
//!   full: the cache goes before any sale).
//! * **Auth state**: `Store` implements pdc-auth's `AuthStore` and passes
//!   its conformance suite.
//! * **Encryption at rest** ([`seal`]): opened with a [`StoreKey`]
//!   ([`Store::open_with_options`], [`Store::open_backend`]), sales, dead
//!   letters, credentials, reference records and cache entries are sealed
//!   with XChaCha20-Poly1305 under the store id, table and row as
//!   associated data; a missing or wrong key is an error at open;
//!   [`Store::rekey`] rotates the key in bounded batches.
//! * **Safety**: a schema version in the file (a newer one is an error); a
//!   file that is not a pdc store, or is damaged, is an error at open, never
//!   a panic; an outbox record that fails its checksum is quarantined and
//!   the rest stays readable.
//!
//! ```
//! use pdc_store::{NewItem, Store};
//! use pdc_sync::{Priority, StreamKey};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path().join("till.pdc"))?;
//! let sale = store.append(NewItem { stream: StreamKey(1), priority: Priority::High, kind: 2,
//!                                   created_at_ms: 1_704_067_200_000, payload: b"sale".to_vec() })?;
//! assert_eq!(sale.local_id, 1);
//! drop(store);
//! let store = Store::open(dir.path().join("till.pdc"))?; // after a restart
//! let (pending, quarantined) = store.pending()?;
//! assert_eq!(pending, vec![sale]);
//! assert!(quarantined.is_empty());
//! # Ok::<(), pdc_store::StoreError>(())
//! ```
//!
//! Encrypted, with a key the host keeps in its platform keystore:
//!
//! ```
//! use pdc_store::{Store, StoreError, StoreKey, StoreOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("till.pdc");
//! let key = StoreKey::generate()?; // once, then kept by the host
//! let store = Store::open_with_options(&path, StoreOptions::encrypted(key.clone()))?;
//! assert!(store.is_encrypted());
//! drop(store);
//! assert!(matches!(Store::open(&path), Err(StoreError::KeyRequired)));
//! let next = StoreKey::generate()?;
//! let store = Store::open_with_options(&path, StoreOptions::encrypted(key))?;
//! store.rekey(&next, 1_000)?; // from now on `next` alone opens it
//! # Ok::<(), pdc_store::StoreError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod cache_tier;
mod create;
mod datasets;
mod error;
pub mod seal;
mod stock;
mod store;

pub use cache_tier::RedbTier;
pub use create::{create_atomically, creating_path};
pub use error::StoreError;
pub use seal::{StoreKey, StoreOptions};
pub use store::{
    DeadLetter, NewItem, Quarantined, Refusal, RekeyReport, Settlement, Store, SCHEMA_VERSION,
};
