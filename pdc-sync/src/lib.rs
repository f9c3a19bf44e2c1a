//! pdc-sync: the sans-IO sync engine of a POS terminal.
//!
//! **Pure logic**: no I/O, no clock, no async runtime; builds for
//! `wasm32-unknown-unknown`. Time is a parameter (`now`) and randomness is
//! injected, so every behaviour is deterministic under test.
//!
//! After any outage every sale must reach the server exactly once, urgent
//! items first, in compact batches, without hammering a struggling server.
//! [`SyncMachine`] does the deciding, in the style of quinn-proto:
//!
//! ```text
//!   enqueue / restore ──▶┌─────────────┐──▶ poll_transmit(now) → Batch (encoded PushRequest)
//!   set_connectivity  ──▶│ SyncMachine │──▶ poll_timeout()      → next wake-up
//!   handle_response   ──▶│  OutboxQueue│──▶ poll_event()        → Acked / DeadLettered /
//!   handle_error      ──▶│  Backoff    │                          Quarantined / BatchRetried / Drained
//!   handle_timeout    ──▶└─────────────┘
//! ```
//!
//! The parts are public and tested on their own: [`OutboxQueue`] (priority
//! classes, per-stream order, aging), [`Backoff`] (decorrelated jitter ×
//! connection quality, retry-after floor), [`QualityEstimator`],
//! [`DeltaTracker`] and [`ServerDataset`]/[`LocalDataset`] (delta push and
//! pull reconciliation), the [`protocol`] messages and the
//! [`SyncTransport`] seam with an in-memory [`MemoryServer`].
//!
//! ```
//! use pdc_clock::Instant;
//! use pdc_codec::Codec;
//! use pdc_sync::{MemoryServer, OutboxItem, Priority, PushRequest, StreamKey, SyncConfig, SyncEvent, SyncMachine};
//! use rand::SeedableRng;
//!
//! let rng = Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(7));
//! let mut machine = SyncMachine::new(SyncConfig::new("till-1".parse()?), rng);
//! let now = Instant::ZERO;
//! for id in 1..=3 {
//!     let item = OutboxItem { local_id: id, stream: StreamKey(id), priority: Priority::High,
//!                             kind: 1, created_at_ms: 0, payload: b"sale".to_vec() };
//!     machine.enqueue(item, now)?;
//! }
//! // Lingering for more items (100 ms by default), then one batch.
//! assert!(machine.poll_transmit(now).is_none());
//! let now = machine.poll_timeout().unwrap();
//! let batch = machine.poll_transmit(now).unwrap();
//! assert_eq!(batch.items.len(), 3);
//!
//! // The host sends batch.request; here an in-memory server answers.
//! let mut server = MemoryServer::default();
//! let request: PushRequest = Codec::new().decode(&batch.request)?;
//! let response = server.push(&request).unwrap();
//! machine.handle_response(batch.id, response, now)?;
//! let mut acked = 0;
//! while let Some(ev) = machine.poll_event() {
//!     if let SyncEvent::Acked { .. } = ev { acked += 1 }
//! }
//! assert_eq!(acked, 3);
//! assert!(machine.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Invariants
//! * An item is never sent before an earlier item of its stream; a stream
//!   with an item in flight sends nothing else until the outcome is known.
//! * An item leaves the machine only as `Acked` (applied or duplicate),
//!   `DeadLettered` (rejected or in conflict at the server, or refused
//!   alone as too large, 413) or `Quarantined` (failed alone with 5xx N
//!   times); never for a transient failure, whatever the attempt count.
//! * A whole-request refusal (any other 4xx but 401/403/408/429) halts
//!   sending (`SyncEvent::Halted`): nothing is dead-lettered; one item goes
//!   alone every `halt_probe`, and an accepted probe or
//!   `SyncMachine::resume` resumes. A fatal state stays fatal until then.
//! * Every wait ends in an attempt: when items are ready and the machine is
//!   online, `poll_timeout` is `Some`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backoff;
pub mod delta;
mod error;
mod machine;
pub mod protocol;
mod quality;
mod queue;
pub mod scoped;
mod transport;
pub mod transport_conformance;

pub use backoff::{Backoff, BackoffConfig};
pub use delta::{Delta, DeltaTracker, LocalDataset, ServerDataset};
pub use error::SyncError;
pub use machine::{
    check_wire_ints, Batch, Connectivity, ItemSource, Loaded, QueueHealth, Restored, SyncConfig,
    SyncEvent, SyncMachine,
};
pub use pdc_codec::TerminalId;
pub use protocol::{
    DatasetChange, DatasetDelta, DatasetRecord, DatasetState, ItemRef, ItemResult, MetricsReport,
    OutboxItem, Priority, PullRequest, PullResponse, PushRequest, PushResponse, ServerLimits,
    StockLevel, StockPage, StoreId, StreamKey, BASE_SCHEMA, MAX_WIRE_INT, PROTOCOL_VERSION,
    STOCK_PAGE_MAX,
};
pub use quality::{Quality, QualityEstimator};
pub use queue::OutboxQueue;
pub use scoped::{Entry, Scope, ScopedChange, ScopedDataset, View};
pub use transport::{LoopbackTransport, MemoryServer, SyncTransport, TransportError};
