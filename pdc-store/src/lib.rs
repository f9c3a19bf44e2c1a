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
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod auth;
mod cache_tier;
mod create;
mod datasets;
mod error;
mod store;

pub use cache_tier::RedbTier;
pub use create::{create_atomically, creating_path};
pub use error::StoreError;
pub use store::{DeadLetter, NewItem, Quarantined, Refusal, Settlement, Store, SCHEMA_VERSION};
