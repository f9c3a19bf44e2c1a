//! The sync state machine: inputs in, batches and events out, no I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use pdc_clock::Instant;
use pdc_codec::{Codec, TerminalId};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, BackoffConfig};
use crate::protocol::{
    ItemRef, ItemResult, OutboxItem, Priority, PushRequest, PushResponse, ServerLimits, StoreId,
    StreamKey, MAX_WIRE_INT, PROTOCOL_VERSION,
};
use crate::quality::{Quality, QualityEstimator};
use crate::queue::OutboxQueue;
use crate::transport::TransportError;
use crate::SyncError;

/// Refuses an item whose `local_id`, `stream` or `created_at_ms` is above
/// [`MAX_WIRE_INT`]: the server would refuse the whole request.
pub fn check_wire_ints(item: &OutboxItem) -> Result<(), SyncError> {
    for (field, value) in [
        ("local_id", item.local_id),
        ("stream", item.stream.0),
        ("created_at_ms", item.created_at_ms),
    ] {
        if value > MAX_WIRE_INT {
            return Err(SyncError::OutOfRange { field, value });
        }
    }
    Ok(())
}

/// What [`SyncMachine::restore`] did.
#[derive(Debug, Default)]
#[must_use]
pub struct Restored {
    /// Items added.
    pub added: usize,
    /// Items it cannot send, with the reason: dead-letter them.
    pub refused: Vec<(ItemRef, SyncError)>,
}

/// One item as a host's durable outbox hands it to the machine when a
/// batch is built ([`ItemSource`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// The item, whole.
    Item(OutboxItem),
    /// The item cannot be read any more (its record failed its checksum
    /// and the host moved it aside, say): the machine forgets it and
    /// reports [`SyncEvent::Unreadable`].
    Gone {
        /// Why.
        reason: String,
    },
}

/// Where the machine gets the items it holds only by reference
/// ([`SyncMachine::enqueue_ref`], [`SyncMachine::restore_refs`]) when it
/// builds a batch: the host's durable outbox. Closures
/// `FnMut(&[u64]) -> Result<Vec<Loaded>, String>` are sources.
pub trait ItemSource {
    /// The items with these local ids, one answer per id in the same
    /// order. `Err` is a failure to read at all (the batch is put back and
    /// retried after a backoff).
    fn load(&mut self, local_ids: &[u64]) -> Result<Vec<Loaded>, String>;
}

impl<F: FnMut(&[u64]) -> Result<Vec<Loaded>, String>> ItemSource for F {
    fn load(&mut self, local_ids: &[u64]) -> Result<Vec<Loaded>, String> {
        self(local_ids)
    }
}

/// The source of a host that enqueued every item with its payload.
struct NoSource;

impl ItemSource for NoSource {
    fn load(&mut self, local_ids: &[u64]) -> Result<Vec<Loaded>, String> {
        Err(format!(
            "{} items were enqueued by reference: build batches with poll_transmit_with",
            local_ids.len()
        ))
    }
}

/// Sync machine configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncConfig {
    /// This terminal's id, sent with every push.
    pub terminal_id: TerminalId,
    /// The id of the store the items come from, sent with every push
    /// (default [`StoreId::LEGACY`]; pdc-core sets the store's own).
    #[serde(default)]
    pub store_id: StoreId,
    /// Most items in one batch (default 50).
    pub max_batch_items: usize,
    /// Most encoded bytes of items in one batch (default 100 KB).
    pub max_batch_bytes: usize,
    /// Largest accepted item, encoded (default 1 MiB).
    pub max_item_bytes: usize,
    /// How long to wait for more items when fewer than a full batch are
    /// ready (default 100 ms); Critical items never wait.
    pub linger: Duration,
    /// Batches in flight at once (default 1).
    pub max_in_flight: usize,
    /// When an unanswered batch is presumed lost and resent (default 30 s).
    pub in_flight_timeout: Duration,
    /// Wait per class level after which a head overtakes strict priority
    /// (default 30 s: Low is served after at most 90 s).
    pub aging: Duration,
    /// Backoff bounds.
    pub backoff: BackoffConfig,
    /// Server failures of an item sent alone before it is quarantined
    /// (default 3).
    pub quarantine_after: u32,
    /// Spread of the first attempt after connectivity returns (default
    /// 500 ms), so that a fleet does not reconnect in lockstep.
    pub reconnect_jitter: Duration,
    /// While halted by a whole-request refusal, how often one item is sent
    /// alone as a probe (default 60 s); an accepted probe resumes.
    #[serde(default = "default_halt_probe")]
    pub halt_probe: Duration,
    /// Whether final outcomes (acks, dead letters, quarantines) wait for
    /// the host's [`SyncMachine::confirm`] (or [`SyncMachine::revert`])
    /// before the machine forgets the items (default `false`: forgotten at
    /// once). A host that persists outcomes sets it, commits each
    /// response's outcomes, and confirms only after the commit: if the
    /// commit fails, `revert` puts the items back and they are resent.
    #[serde(default)]
    pub confirm_outcomes: bool,
    /// Whether push requests are deflated ([`pdc_codec::Compression::Dense`],
    /// level 6) instead of lz4-compressed (default `false`): 10–20% fewer
    /// bytes up for a few hundred microseconds more per batch, for
    /// metered or slow links. Every pdc server reads both.
    #[serde(default)]
    pub dense_push: bool,
}

fn default_halt_probe() -> Duration {
    Duration::from_secs(60)
}

impl SyncConfig {
    /// Defaults for a terminal with this id.
    pub fn new(terminal_id: TerminalId) -> Self {
        SyncConfig {
            terminal_id,
            store_id: StoreId::LEGACY,
            max_batch_items: 50,
            max_batch_bytes: 100_000,
            max_item_bytes: 1 << 20,
            linger: Duration::from_millis(100),
            max_in_flight: 1,
            in_flight_timeout: Duration::from_secs(30),
            aging: Duration::from_secs(30),
            backoff: BackoffConfig::default(),
            quarantine_after: 3,
            reconnect_jitter: Duration::from_millis(500),
            halt_probe: default_halt_probe(),
            confirm_outcomes: false,
            dense_push: false,
        }
    }
}

/// Whether the host believes the server is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Connectivity {
    /// Try to send.
    Online,
    /// Do not try; keep queueing.
    Offline,
}

/// A batch to send: its id, its items, and the encoded push request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Id to pass back with the outcome.
    pub id: u64,
    /// The items, in the order the server applies them.
    pub items: Vec<OutboxItem>,
    /// The push request as a pdc-codec frame.
    pub request: Vec<u8>,
}

/// Something the host should know about (persist, display, record).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// The server has the item: remove it from the durable outbox.
    Acked {
        /// The item.
        local_id: u64,
        /// Its server sequence.
        server_seq: u64,
        /// The server already had it (a resend after a lost answer).
        duplicate: bool,
    },
    /// The server refused the item for good: move it to the dead letters.
    DeadLettered {
        /// The item.
        item: ItemRef,
        /// Server's code.
        code: String,
        /// Server's message.
        message: String,
    },
    /// The item failed alone too often; its stream waits until an operator
    /// re-queues it ([`SyncMachine::requeue_quarantined`]).
    Quarantined {
        /// The item.
        item: ItemRef,
        /// Last failure.
        reason: String,
    },
    /// The host's [`ItemSource`] could not read the item any more
    /// ([`Loaded::Gone`]): the machine forgot it.
    Unreadable {
        /// The item.
        local_id: u64,
        /// The source's reason.
        reason: String,
    },
    /// The server refused a whole request (a 4xx other than 401, 403,
    /// 408, 413 and 429: a wrong URL, a protocol or schema mismatch): the
    /// machine stops sending, dead-letters nothing, and probes with one
    /// item every `halt_probe` until one is accepted, or the host calls
    /// [`SyncMachine::resume`] (after a configuration change, or an
    /// operator's action).
    Halted {
        /// The refusal.
        reason: String,
    },
    /// Sending resumed after a halt.
    Resumed,
    /// A batch was not (fully) applied and its items will be resent.
    BatchRetried {
        /// The batch.
        batch_id: u64,
        /// Items put back.
        items: usize,
        /// Why.
        reason: String,
        /// Wait before the next attempt.
        delay: Duration,
    },
    /// The wait before the next attempt changed: a new delay after a
    /// failure, or back to none after a success that followed failures.
    BackoffChanged {
        /// The new delay (zero when reset).
        delay: Duration,
        /// Consecutive failures so far.
        failures: u32,
        /// Quality the delay was scaled by.
        quality: Quality,
    },
    /// Connection quality changed class.
    QualityChanged(Quality),
    /// Nothing is left to send or in flight.
    Drained,
}

/// Queue health, for pdc-monitor and operators.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueHealth {
    /// Pending (not in flight) items and the age of the oldest, per
    /// priority (index = `Priority::index`).
    pub pending: [(usize, Option<Duration>); 4],
    /// Batches in flight.
    pub in_flight_batches: usize,
    /// Items in flight.
    pub in_flight_items: usize,
    /// Items in quarantine.
    pub quarantined: usize,
    /// Last fully successful push.
    pub last_push_ok: Option<Instant>,
    /// Last successful pull, as reported by the host.
    pub last_pull_ok: Option<Instant>,
    /// Request bytes sent.
    pub bytes_up: u64,
    /// Response bytes received.
    pub bytes_down: u64,
    /// Consecutive failures.
    pub failures: u32,
    /// Current connection quality.
    pub quality: Quality,
    /// Why sending is halted, when it is (see [`SyncEvent::Halted`]).
    pub halted: Option<String>,
}

#[derive(Debug)]
struct InFlight {
    ids: Vec<u64>,
    sent_at: Instant,
    deadline: Instant,
}

/// The sans-IO sync engine of one terminal.
///
/// A host drives it in this loop (see the crate docs for a full example):
///
/// 1. feed inputs: [`enqueue`](Self::enqueue), [`set_connectivity`](Self::set_connectivity),
///    outcomes of sent batches ([`handle_response`](Self::handle_response) /
///    [`handle_error`](Self::handle_error));
/// 2. send every batch [`poll_transmit`](Self::poll_transmit) gives;
/// 3. act on every [`poll_event`](Self::poll_event) (persist acks, dead letters);
/// 4. sleep until [`poll_timeout`](Self::poll_timeout), then call
///    [`handle_timeout`](Self::handle_timeout) (safe to call early or spuriously).
pub struct SyncMachine {
    config: SyncConfig,
    codec: Codec,
    queue: OutboxQueue,
    in_flight: HashMap<u64, InFlight>,
    next_batch_id: u64,
    last_local_id: u64,
    backoff: Backoff,
    quality: QualityEstimator,
    rng: Box<dyn RngCore + Send>,
    not_before: Option<Instant>,
    connectivity: Connectivity,
    events: VecDeque<SyncEvent>,
    /// Current batch size cap: halved on server errors to isolate a poison
    /// item, doubled back on success.
    split_limit: usize,
    solitary_failures: HashMap<u64, u32>,
    quarantine: BTreeMap<u64, ItemRef>,
    /// Payloads of items enqueued whole (not by reference).
    payloads: HashMap<u64, OutboxItem>,
    /// Final outcomes awaiting the host's confirmation, per batch
    /// (`confirm_outcomes`).
    settling: HashMap<u64, Vec<Settled>>,
    drained: bool,
    last_push_ok: Option<Instant>,
    last_pull_ok: Option<Instant>,
    bytes_up: u64,
    bytes_down: u64,
    halted: Option<Halt>,
    server_limits: Option<ServerLimits>,
}

impl std::fmt::Debug for SyncMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncMachine")
            .field("terminal_id", &self.config.terminal_id)
            .field("pending", &self.queue.len())
            .field("in_flight", &self.in_flight.len())
            .field("connectivity", &self.connectivity)
            .finish_non_exhaustive()
    }
}

/// Bytes a push request adds around its items (schema, terminal id, batch
/// id, item count), generous.
const REQUEST_OVERHEAD: usize = 64;

impl SyncMachine {
    /// A machine with no items, online, with `rng` as its random source
    /// (seed it for reproducible runs).
    pub fn new(config: SyncConfig, rng: Box<dyn RngCore + Send>) -> Self {
        SyncMachine {
            queue: OutboxQueue::new(config.aging),
            backoff: Backoff::new(config.backoff),
            split_limit: config.max_batch_items.max(1),
            codec: if config.dense_push {
                Codec::new().with_compression(pdc_codec::Compression::Dense {
                    min_bytes: 64,
                    level: 6,
                })
            } else {
                Codec::new()
            },
            config,
            in_flight: HashMap::new(),
            next_batch_id: 1,
            last_local_id: 0,
            quality: QualityEstimator::default(),
            rng,
            not_before: None,
            connectivity: Connectivity::Online,
            events: VecDeque::new(),
            solitary_failures: HashMap::new(),
            quarantine: BTreeMap::new(),
            payloads: HashMap::new(),
            settling: HashMap::new(),
            drained: true,
            last_push_ok: None,
            last_pull_ok: None,
            bytes_up: 0,
            bytes_down: 0,
            halted: None,
            server_limits: None,
        }
    }

    /// Most items per batch: the configured number, lowered to the
    /// server's published limit.
    fn max_batch_items(&self) -> usize {
        let server = self.server_limits.map_or(usize::MAX, |l| {
            usize::try_from(l.max_items).unwrap_or(usize::MAX)
        });
        self.config.max_batch_items.min(server)
    }

    /// Most bytes per batch: the configured number, lowered to the
    /// server's body limit.
    fn max_batch_bytes(&self) -> usize {
        let server = self.server_limits.map_or(usize::MAX, |l| {
            usize::try_from(l.max_body_bytes).unwrap_or(usize::MAX)
        });
        self.config.max_batch_bytes.min(server)
    }

    /// Takes the limits a server publishes (`GET /v1/ping`): batches stay
    /// within its item count and body size, and
    /// [`SyncMachine::admissible`] refuses payloads over its item limit,
    /// so that a host refuses them before saving. The configured limits
    /// still apply when lower. Items already held that are over a new limit
    /// stay: the server answers them 413, and a lone one is dead-lettered
    /// with the limit in the reason (a stale limit costs one round trip).
    pub fn apply_server_limits(&mut self, limits: ServerLimits) {
        self.server_limits = Some(limits);
        self.split_limit = self.split_limit.min(self.max_batch_items().max(1));
    }

    /// The server limits in force, if a server published any.
    pub fn server_limits(&self) -> Option<ServerLimits> {
        self.server_limits
    }

    /// The configuration.
    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// Items held: pending or in flight (not quarantined).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is pending or in flight.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The highest local id enqueued.
    pub fn last_local_id(&self) -> u64 {
        self.last_local_id
    }

    /// Adds an item to send, payload and all (a host without a durable
    /// outbox of its own). Its local id must be above every id enqueued
    /// before; a refused item changes nothing.
    pub fn enqueue(&mut self, item: OutboxItem, now: Instant) -> Result<(), SyncError> {
        self.check_increasing(item.local_id)?;
        self.admissible(&item)?;
        let r = item.to_ref();
        self.payloads.insert(item.local_id, item);
        self.push_new(r, now);
        Ok(())
    }

    /// Adds an item by reference: the host keeps it (durably) and hands it
    /// over when a batch is built ([`SyncMachine::poll_transmit_with`]).
    /// The same rules as [`SyncMachine::enqueue`].
    pub fn enqueue_ref(&mut self, item: ItemRef, now: Instant) -> Result<(), SyncError> {
        self.check_increasing(item.local_id)?;
        self.admissible_ref(&item)?;
        self.push_new(item, now);
        Ok(())
    }

    fn check_increasing(&self, local_id: u64) -> Result<(), SyncError> {
        if local_id <= self.last_local_id {
            return Err(SyncError::LocalIdNotIncreasing {
                local_id,
                last: self.last_local_id,
            });
        }
        Ok(())
    }

    fn push_new(&mut self, item: ItemRef, now: Instant) {
        self.last_local_id = item.local_id;
        self.queue.push(item, now);
        self.drained = false;
    }

    /// Whether the machine takes this item, and its encoded size: its
    /// integers within the wire's range and its size within
    /// `max_item_bytes`. [`SyncMachine::enqueue`] and
    /// [`SyncMachine::restore`] check the same; a host checks before it
    /// saves an item (with the largest local id it may get, for the
    /// worst-case size), so that nothing saved is refused.
    pub fn admissible(&self, item: &OutboxItem) -> Result<usize, SyncError> {
        check_wire_ints(item)?;
        let size = item.encoded_size();
        self.check_size(item.local_id, size)?;
        if let Some(l) = self.server_limits {
            if item.payload.len() as u64 > l.max_item_bytes {
                return Err(SyncError::ItemTooLarge {
                    local_id: item.local_id,
                    size: item.payload.len(),
                    limit: usize::try_from(l.max_item_bytes).unwrap_or(usize::MAX),
                });
            }
        }
        Ok(size)
    }

    /// [`SyncMachine::admissible`] for an item held by reference: its
    /// local id and stream within the wire's range (its creation time was
    /// checked when it was saved) and its size within `max_item_bytes`.
    pub fn admissible_ref(&self, item: &ItemRef) -> Result<(), SyncError> {
        for (field, value) in [("local_id", item.local_id), ("stream", item.stream.0)] {
            if value > MAX_WIRE_INT {
                return Err(SyncError::OutOfRange { field, value });
            }
        }
        self.check_size(item.local_id, item.size as usize)
    }

    fn check_size(&self, local_id: u64, size: usize) -> Result<(), SyncError> {
        if size > self.config.max_item_bytes {
            return Err(SyncError::ItemTooLarge {
                local_id,
                size,
                limit: self.config.max_item_bytes,
            });
        }
        Ok(())
    }

    /// Re-adds the pending items of a durable outbox after a restart, in
    /// any order, payload and all. Items already held are skipped. An item
    /// the machine can no longer send (over a lowered size limit, say) is
    /// not added but returned in [`Restored::refused`] with the reason, for
    /// the host to dead-letter: a restore never fails on a stored item.
    pub fn restore(&mut self, items: Vec<OutboxItem>, now: Instant) -> Restored {
        let mut refs = Vec::with_capacity(items.len());
        let mut verdicts = Vec::with_capacity(items.len());
        for item in items {
            let r = item.to_ref();
            verdicts.push(check_wire_ints(&item).and_then(|()| self.admissible_ref(&r)));
            refs.push(r);
            if !self.holds(item.local_id) {
                self.payloads.insert(item.local_id, item);
            }
        }
        let restored = self.restore_checked(refs, verdicts, now);
        for (r, _) in &restored.refused {
            self.payloads.remove(&r.local_id);
        }
        restored
    }

    /// [`SyncMachine::restore`] by reference: the host hands the items over
    /// when a batch is built ([`SyncMachine::poll_transmit_with`]).
    pub fn restore_refs(&mut self, items: Vec<ItemRef>, now: Instant) -> Restored {
        let verdicts = items.iter().map(|r| self.admissible_ref(r)).collect();
        self.restore_checked(items, verdicts, now)
    }

    fn restore_checked(
        &mut self,
        items: Vec<ItemRef>,
        verdicts: Vec<Result<(), SyncError>>,
        now: Instant,
    ) -> Restored {
        let mut restored = Restored::default();
        let mut accepted = Vec::with_capacity(items.len());
        for (r, verdict) in items.into_iter().zip(verdicts) {
            if self.holds(r.local_id) {
                continue;
            }
            // Refused items still count for the id order: ids never repeat.
            self.last_local_id = self.last_local_id.max(r.local_id);
            match verdict {
                Ok(()) => accepted.push(r),
                Err(e) => restored.refused.push((r, e)),
            }
        }
        restored.refused.sort_by_key(|(r, _)| r.local_id);
        restored.added = self.queue.push_many(accepted, now);
        if restored.added > 0 {
            self.drained = false;
        }
        restored
    }

    /// Whether the machine holds this item in any state (pending, in
    /// flight, quarantined, or awaiting confirmation).
    fn holds(&self, local_id: u64) -> bool {
        self.queue.contains(local_id)
            || self.quarantine.contains_key(&local_id)
            || (!self.settling.is_empty()
                && self
                    .settling
                    .values()
                    .any(|v| v.iter().any(|s| s.item.local_id == local_id)))
    }

    /// Re-adds an item a durable outbox holds as quarantined (persisted
    /// from an earlier [`SyncEvent::Quarantined`]): it waits, and its
    /// stream with it, until [`SyncMachine::requeue_quarantined`].
    pub fn restore_quarantined(&mut self, item: ItemRef) {
        if self.holds(item.local_id) {
            return;
        }
        self.last_local_id = self.last_local_id.max(item.local_id);
        self.queue.set_quarantined(item.stream, true);
        self.quarantine.insert(item.local_id, item);
    }

    /// Tells the machine whether the server is reachable. On return to
    /// online, the next attempt comes within `reconnect_jitter`.
    pub fn set_connectivity(&mut self, state: Connectivity, now: Instant) {
        if state == Connectivity::Online && self.connectivity == Connectivity::Offline {
            let jitter_us = self.config.reconnect_jitter.as_micros() as u64;
            let wait = if jitter_us == 0 {
                Duration::ZERO
            } else {
                Duration::from_micros(self.rng.next_u64() % jitter_us)
            };
            let at = now + wait;
            self.not_before = Some(self.not_before.map_or(at, |nb| nb.min(at)));
        }
        self.connectivity = state;
    }

    /// The current connectivity.
    pub fn connectivity(&self) -> Connectivity {
        self.connectivity
    }

    /// Records a latency sample (e.g. from a ping).
    pub fn record_latency(&mut self, sample: Duration) {
        if let Some(q) = self.quality.record_latency(sample) {
            self.events.push_back(SyncEvent::QualityChanged(q));
        }
    }

    /// Records a successful pull of reference data and its bytes.
    pub fn record_pull(&mut self, now: Instant, bytes_up: usize, bytes_down: usize) {
        self.last_pull_ok = Some(now);
        self.bytes_up += bytes_up as u64;
        self.bytes_down += bytes_down as u64;
    }

    /// The next batch to send at `now`, if any may go, for a host that
    /// enqueued every item whole ([`SyncMachine::enqueue`]).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Batch> {
        self.poll_transmit_with(now, &mut NoSource)
    }

    /// The next batch to send at `now`, if any may go; the items held by
    /// reference are read from `source` (only the batch's, only now).
    #[must_use]
    pub fn poll_transmit_with(
        &mut self,
        now: Instant,
        source: &mut dyn ItemSource,
    ) -> Option<Batch> {
        loop {
            if self.connectivity == Connectivity::Offline
                || self.in_flight.len() >= self.config.max_in_flight
                || self.not_before.is_some_and(|nb| nb > now)
                || !self.queue.has_ready()
            {
                return None;
            }
            if let Some(until) = self.linger_until() {
                if until > now {
                    return None;
                }
            }
            let mut max_items = self.max_batch_items().min(self.split_limit).max(1);
            if let Some(h) = &mut self.halted {
                if h.probe_at > now {
                    return None;
                }
                // A probe: one item, then wait for its answer or the next turn.
                h.probe_at = now + self.config.halt_probe;
                max_items = 1;
            }
            let budget = self.max_batch_bytes().saturating_sub(REQUEST_OVERHEAD);
            let refs = self.queue.take_batch(now, max_items, budget);
            if refs.is_empty() {
                return None;
            }
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            let ids: Vec<u64> = refs.iter().map(|r| r.local_id).collect();
            let items = match self.gather(&ids, source) {
                Ok(items) => items,
                Err(reason) => {
                    self.fail(id, ids, FailKind::Transient, None, reason, now);
                    return None;
                }
            };
            if items.is_empty() {
                // Every item was gone; try what is ready next.
                self.check_drained();
                continue;
            }
            let request = PushRequest {
                schema: PROTOCOL_VERSION,
                terminal_id: self.config.terminal_id.clone(),
                store_id: self.config.store_id,
                batch_id: id,
                items,
            };
            let ids: Vec<u64> = request.items.iter().map(|i| i.local_id).collect();
            let bytes = match self.codec.encode(&request) {
                Ok(b) => b,
                Err(e) => {
                    // Items passed the size check, so this is not expected; put
                    // them back and back off rather than lose or spin on them.
                    self.fail(id, ids, FailKind::Transient, None, e.to_string(), now);
                    return None;
                }
            };
            self.bytes_up += bytes.len() as u64;
            self.in_flight.insert(
                id,
                InFlight {
                    ids,
                    sent_at: now,
                    deadline: now + self.config.in_flight_timeout,
                },
            );
            return Some(Batch {
                id,
                items: request.items,
                request: bytes,
            });
        }
    }

    /// The whole items of a batch taken from the queue: held payloads
    /// copied, the rest read from `source`. Items the source reports gone
    /// are forgotten (with an event); `Err` puts the whole batch back.
    fn gather(
        &mut self,
        ids: &[u64],
        source: &mut dyn ItemSource,
    ) -> Result<Vec<OutboxItem>, String> {
        let missing: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| !self.payloads.contains_key(id))
            .collect();
        let mut loaded: HashMap<u64, OutboxItem> = HashMap::new();
        let mut gone: Vec<(u64, String)> = Vec::new();
        if !missing.is_empty() {
            let answers = source
                .load(&missing)
                .map_err(|e| format!("items could not be read: {e}"))?;
            if answers.len() != missing.len() {
                return Err(format!(
                    "item source answered {} items for {}",
                    answers.len(),
                    missing.len()
                ));
            }
            for (&id, answer) in missing.iter().zip(answers) {
                match answer {
                    Loaded::Item(item) if item.local_id == id => {
                        loaded.insert(id, item);
                    }
                    Loaded::Item(item) => {
                        return Err(format!(
                            "item source answered item {} for {id}",
                            item.local_id
                        ))
                    }
                    Loaded::Gone { reason } => gone.push((id, reason)),
                }
            }
        }
        for (id, reason) in gone {
            self.queue.settle(id, true);
            self.solitary_failures.remove(&id);
            self.events.push_back(SyncEvent::Unreadable {
                local_id: id,
                reason,
            });
        }
        Ok(ids
            .iter()
            .filter_map(|id| loaded.remove(id).or_else(|| self.payloads.get(id).cloned()))
            .collect())
    }

    /// When a partial batch stops waiting for more items.
    fn linger_until(&self) -> Option<Instant> {
        if self.config.linger.is_zero()
            || self.queue.ready_len() >= self.max_batch_items().min(self.split_limit)
            || self.queue.ready_class() == Some(Priority::Critical)
        {
            return None;
        }
        self.queue.oldest_ready().map(|t| t + self.config.linger)
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) and
    /// [`poll_transmit`](Self::poll_transmit) next, or `None` if only an
    /// input can make progress.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.in_flight.values().map(|f| f.deadline).min();
        if self.connectivity == Connectivity::Online
            && self.in_flight.len() < self.config.max_in_flight
            && self.queue.has_ready()
        {
            let mut send_at = self.not_before.unwrap_or(Instant::ZERO);
            if let Some(l) = self.linger_until() {
                send_at = send_at.max(l);
            }
            if let Some(h) = &self.halted {
                send_at = send_at.max(h.probe_at);
            }
            at = Some(at.map_or(send_at, |a| a.min(send_at)));
        }
        at
    }

    /// Expires in-flight batches whose deadline passed: their outcome is
    /// unknown, so their items are resent (the server dedups).
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(f) = self.in_flight.remove(&id) {
                self.fail(
                    id,
                    f.ids,
                    FailKind::Transient,
                    None,
                    "timed out".into(),
                    now,
                );
            }
        }
    }

    /// Handles the server's encoded answer to a batch.
    pub fn handle_response_bytes(
        &mut self,
        batch_id: u64,
        body: &[u8],
        now: Instant,
    ) -> Result<(), SyncError> {
        if !self.in_flight.contains_key(&batch_id) {
            return Err(SyncError::UnknownBatch(batch_id));
        }
        self.bytes_down += body.len() as u64;
        match self.codec.decode::<PushResponse>(body) {
            Ok(resp) => self.handle_response(batch_id, resp, now),
            Err(e) => {
                if let Some(f) = self.in_flight.remove(&batch_id) {
                    let reason = format!("undecodable answer: {e}");
                    self.fail(batch_id, f.ids, FailKind::Transient, None, reason, now);
                }
                Err(SyncError::ProtocolViolation(e.to_string()))
            }
        }
    }

    /// Handles the server's answer to a batch.
    pub fn handle_response(
        &mut self,
        batch_id: u64,
        response: PushResponse,
        now: Instant,
    ) -> Result<(), SyncError> {
        let Some(flight) = self.in_flight.remove(&batch_id) else {
            return Err(SyncError::UnknownBatch(batch_id));
        };
        if response.results.len() != flight.ids.len() {
            let reason = format!(
                "{} results for {} items",
                response.results.len(),
                flight.ids.len()
            );
            self.fail(
                batch_id,
                flight.ids,
                FailKind::Transient,
                None,
                reason.clone(),
                now,
            );
            return Err(SyncError::ProtocolViolation(reason));
        }
        self.record_latency(now - flight.sent_at);
        // The server took a request again: whatever refused them is gone.
        if self.halted.take().is_some() {
            self.events.push_back(SyncEvent::Resumed);
        }
        let retry_after = response.retry_after_ms.map(Duration::from_millis);
        let mut retry_ids = Vec::new();
        for (id, result) in flight.ids.into_iter().zip(response.results) {
            match result {
                ItemResult::Applied { server_seq } | ItemResult::Duplicate { server_seq } => {
                    let duplicate = matches!(result, ItemResult::Duplicate { .. });
                    self.finish(batch_id, id, false);
                    self.events.push_back(SyncEvent::Acked {
                        local_id: id,
                        server_seq,
                        duplicate,
                    });
                }
                ItemResult::Rejected { code, message } => {
                    if let Some(item) = self.finish(batch_id, id, false) {
                        self.events.push_back(SyncEvent::DeadLettered {
                            item,
                            code,
                            message,
                        });
                    }
                }
                ItemResult::Conflict { message } => {
                    if let Some(item) = self.finish(batch_id, id, false) {
                        self.events.push_back(SyncEvent::DeadLettered {
                            item,
                            code: "conflict".into(),
                            message,
                        });
                    }
                }
                ItemResult::RetryLater => retry_ids.push(id),
            }
        }
        if retry_ids.is_empty() {
            if self.backoff.failures() > 0 {
                self.events.push_back(SyncEvent::BackoffChanged {
                    delay: Duration::ZERO,
                    failures: 0,
                    quality: self.quality.quality(),
                });
            }
            self.backoff.reset();
            self.split_limit = (self.split_limit * 2).min(self.max_batch_items().max(1));
            self.last_push_ok = Some(now);
            if let Some(ra) = retry_after {
                self.not_before = Some(now + ra);
            }
        } else {
            self.fail(
                batch_id,
                retry_ids,
                FailKind::Transient,
                retry_after,
                "server asked to retry later".into(),
                now,
            );
        }
        self.check_drained();
        Ok(())
    }

    /// Handles a failed send of a batch.
    pub fn handle_error(
        &mut self,
        batch_id: u64,
        error: TransportError,
        now: Instant,
    ) -> Result<(), SyncError> {
        let Some(flight) = self.in_flight.remove(&batch_id) else {
            return Err(SyncError::UnknownBatch(batch_id));
        };
        let (kind, retry_after) = match &error {
            TransportError::Server { .. } => (FailKind::Server, None),
            TransportError::Client { status: 413, .. } => (FailKind::TooLarge, None),
            TransportError::Client { .. } => {
                // A whole-request refusal: sticky, nothing is the items'
                // fault (the server reports item problems per item).
                for id in flight.ids {
                    self.queue.settle(id, false);
                }
                let reason = error.to_string();
                if self.halted.is_none() {
                    self.events.push_back(SyncEvent::Halted {
                        reason: reason.clone(),
                    });
                }
                self.halted = Some(Halt {
                    reason,
                    probe_at: now + self.config.halt_probe,
                });
                return Ok(());
            }
            TransportError::ServerBusy { retry_after } => (FailKind::Transient, *retry_after),
            _ => (FailKind::Transient, None),
        };
        self.fail(
            batch_id,
            flight.ids,
            kind,
            retry_after,
            error.to_string(),
            now,
        );
        Ok(())
    }

    fn fail(
        &mut self,
        batch_id: u64,
        ids: Vec<u64>,
        kind: FailKind,
        retry_after: Option<Duration>,
        reason: String,
        now: Instant,
    ) {
        if let Some(q) = self.quality.record_failure() {
            self.events.push_back(SyncEvent::QualityChanged(q));
        }
        let n = ids.len();
        if n == 1 && kind != FailKind::Transient {
            let id = ids[0];
            let count = self.solitary_failures.entry(id).or_insert(0);
            *count += 1;
            let count = *count;
            match kind {
                // Too large alone: this item can never be sent to this
                // server; the reason carries the server's limit.
                FailKind::TooLarge => {
                    if let Some(item) = self.finish(batch_id, id, false) {
                        self.events.push_back(SyncEvent::DeadLettered {
                            item,
                            code: "item_too_large".into(),
                            message: reason.clone(),
                        });
                    }
                    self.check_drained();
                    return;
                }
                FailKind::Server if count >= self.config.quarantine_after => {
                    if let Some(item) = self.finish(batch_id, id, true) {
                        self.events.push_back(SyncEvent::Quarantined {
                            item,
                            reason: reason.clone(),
                        });
                    }
                    self.check_drained();
                    return;
                }
                _ => {}
            }
        }
        if n > 1 && kind != FailKind::Transient {
            // Split to isolate the failing item (CouchDB's replicator does the same).
            self.split_limit = (n / 2).max(1);
        }
        for id in ids {
            self.queue.settle(id, false);
        }
        let delay = self
            .backoff
            .next_delay(&mut *self.rng, self.quality.quality(), retry_after);
        self.not_before = Some(now + delay);
        self.events.push_back(SyncEvent::BackoffChanged {
            delay,
            failures: self.backoff.failures(),
            quality: self.quality.quality(),
        });
        self.events.push_back(SyncEvent::BatchRetried {
            batch_id,
            items: n,
            reason,
            delay,
        });
    }

    /// A final outcome for an in-flight item: it leaves the queue (to the
    /// quarantine if `quarantine`), and is kept for [`SyncMachine::revert`]
    /// until confirmed when `confirm_outcomes` is set.
    fn finish(&mut self, batch_id: u64, id: u64, quarantine: bool) -> Option<ItemRef> {
        let item = self.queue.settle(id, true)?;
        self.solitary_failures.remove(&id);
        if quarantine {
            self.queue.set_quarantined(item.stream, true);
            self.quarantine.insert(id, item);
        }
        if self.config.confirm_outcomes {
            self.settling.entry(batch_id).or_default().push(Settled {
                item,
                quarantined: quarantine,
            });
        } else if !quarantine {
            self.payloads.remove(&id);
        }
        Some(item)
    }

    /// The host committed batch `batch_id`'s outcomes: the machine forgets
    /// its acknowledged and dead-lettered items (quarantined ones stay in
    /// the quarantine). Returns how many outcomes were confirmed; a no-op
    /// without `confirm_outcomes`.
    pub fn confirm(&mut self, batch_id: u64) -> usize {
        let Some(settled) = self.settling.remove(&batch_id) else {
            return 0;
        };
        for s in &settled {
            if !s.quarantined {
                self.payloads.remove(&s.item.local_id);
            }
        }
        self.check_drained();
        settled.len()
    }

    /// The host could not commit batch `batch_id`'s outcomes: its items go
    /// back to the queue in their places (quarantined ones too) and are
    /// resent; the server answers those it has as duplicates. Returns how
    /// many items came back.
    pub fn revert(&mut self, batch_id: u64, now: Instant) -> usize {
        let Some(settled) = self.settling.remove(&batch_id) else {
            return 0;
        };
        for s in &settled {
            if s.quarantined {
                self.quarantine.remove(&s.item.local_id);
                self.queue.set_quarantined(s.item.stream, false);
            }
            self.queue.push(s.item, now);
        }
        if !settled.is_empty() {
            self.drained = false;
        }
        settled.len()
    }

    fn check_drained(&mut self) {
        if !self.drained
            && self.queue.is_empty()
            && self.in_flight.is_empty()
            && self.settling.is_empty()
        {
            self.drained = true;
            self.events.push_back(SyncEvent::Drained);
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SyncEvent> {
        self.events.pop_front()
    }

    /// Quarantined items, by local id.
    pub fn quarantined(&self) -> impl Iterator<Item = &ItemRef> {
        self.quarantine.values()
    }

    /// Puts a quarantined item back in its place in its stream (an
    /// operator's decision after fixing the cause), unblocking the stream.
    pub fn requeue_quarantined(&mut self, local_id: u64, now: Instant) -> Result<(), SyncError> {
        let item = self
            .quarantine
            .remove(&local_id)
            .ok_or(SyncError::NotQuarantined(local_id))?;
        let stream: StreamKey = item.stream;
        self.queue.push(item, now);
        self.queue.set_quarantined(stream, false);
        self.drained = false;
        Ok(())
    }

    /// Queue health now.
    pub fn health(&self, now: Instant) -> QueueHealth {
        QueueHealth {
            pending: self.queue.depth_and_age(now),
            in_flight_batches: self.in_flight.len(),
            in_flight_items: self.in_flight.values().map(|f| f.ids.len()).sum(),
            quarantined: self.quarantine.len(),
            last_push_ok: self.last_push_ok,
            last_pull_ok: self.last_pull_ok,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            failures: self.backoff.failures(),
            quality: self.quality.quality(),
            halted: self.halted.as_ref().map(|h| h.reason.clone()),
        }
    }

    /// Resumes sending after a halt (the host changed the configuration,
    /// or an operator asked); a no-op when not halted.
    pub fn resume(&mut self, now: Instant) {
        if self.halted.take().is_some() {
            self.not_before = Some(now);
            self.events.push_back(SyncEvent::Resumed);
        }
    }
}

/// A final outcome awaiting the host's confirmation.
#[derive(Debug)]
struct Settled {
    item: ItemRef,
    quarantined: bool,
}

/// A halt: why, and when the next probe goes.
#[derive(Debug)]
struct Halt {
    reason: String,
    probe_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailKind {
    /// Network, timeout, busy, retry-later: never the item's fault.
    Transient,
    /// 5xx: maybe a poison item.
    Server,
    /// 413: the request is too large; halve it, dead-letter a lone item.
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_size_matches_postcard() {
        for (id, stream, kind, ts, len) in [
            (1u64, 0u64, 0u16, 0u64, 0usize),
            (u64::MAX, u64::MAX, u16::MAX, u64::MAX, 300),
            (128, 127, 128, 1_704_067_200_000, 127),
        ] {
            let item = OutboxItem {
                local_id: id,
                stream: StreamKey(stream),
                priority: Priority::Critical,
                kind,
                created_at_ms: ts,
                payload: vec![0; len],
            };
            assert_eq!(
                item.encoded_size(),
                postcard::to_allocvec(&item).unwrap().len()
            );
        }
    }

    fn item(id: u64) -> OutboxItem {
        OutboxItem {
            local_id: id,
            stream: StreamKey(id % 2),
            priority: Priority::High,
            kind: 1,
            created_at_ms: 0,
            payload: vec![id as u8; 10],
        }
    }

    fn machine(confirm: bool) -> SyncMachine {
        use rand::SeedableRng;
        let mut c = SyncConfig::new("t".parse().unwrap());
        c.linger = Duration::ZERO;
        c.confirm_outcomes = confirm;
        SyncMachine::new(c, Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)))
    }

    #[test]
    fn dense_pushes_deflate_and_decode_as_the_same_request() {
        use rand::SeedableRng;
        // Orders as row frames, as the engine stores them.
        let codec = Codec::new();
        let orders: Vec<OutboxItem> = (1..=50u64)
            .map(|i| {
                let order = pdc_codec::Order {
                    id: 5_000_000 + i,
                    cashier_id: 300 + (i % 3) as u32,
                    created_at_ms: 1_764_000_000_000 + i * 40_000,
                    lines: (0..1 + i % 7)
                        .map(|l| {
                            pdc_codec::OrderLine::new(
                                100_000 + ((i * 7919 + l * 104_729) % 900_000) as u32,
                                1 + (l % 3) as u32,
                                99 + ((i * l * 37) % 2_000) as i64,
                                700,
                            )
                        })
                        .collect(),
                    ..pdc_codec::Order::default()
                };
                OutboxItem {
                    local_id: i,
                    stream: StreamKey(1),
                    priority: Priority::High,
                    kind: 2,
                    created_at_ms: order.created_at_ms,
                    payload: codec.encode(&order).unwrap(),
                }
            })
            .collect();
        let mut sizes = Vec::new();
        for dense in [false, true] {
            let mut c = SyncConfig::new("t".parse().unwrap());
            c.linger = Duration::ZERO;
            c.dense_push = dense;
            let mut m = SyncMachine::new(c, Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)));
            for it in &orders {
                m.enqueue(it.clone(), Instant::ZERO).unwrap();
            }
            let b = m.poll_transmit(Instant::ZERO).unwrap();
            assert_eq!(b.items.len(), 50);
            // Flag bit 2 is deflate, bit 0 lz4.
            assert_eq!(b.request[5] & 0b101, if dense { 0b100 } else { 0b001 });
            let back: PushRequest = Codec::new().decode(&b.request).unwrap();
            assert_eq!(back.items, orders);
            sizes.push(b.request.len());
        }
        assert!(sizes[1] < sizes[0], "{sizes:?}");
    }

    #[test]
    fn items_by_reference_are_read_only_when_a_batch_is_built() {
        let mut m = machine(false);
        let store: BTreeMap<u64, OutboxItem> = (1..=4).map(|i| (i, item(i))).collect();
        for it in store.values() {
            m.enqueue_ref(it.to_ref(), Instant::ZERO).unwrap();
        }
        assert!(m.payloads.is_empty(), "no payload held");
        let mut asked = Vec::new();
        let mut source = |ids: &[u64]| -> Result<Vec<Loaded>, String> {
            asked.extend_from_slice(ids);
            Ok(ids
                .iter()
                .map(|id| match id {
                    3 => Loaded::Gone {
                        reason: "checksum".into(),
                    },
                    _ => Loaded::Item(store[id].clone()),
                })
                .collect())
        };
        let b = m.poll_transmit_with(Instant::ZERO, &mut source).unwrap();
        assert_eq!(asked, vec![1, 2, 3, 4]);
        assert_eq!(
            b.items.iter().map(|i| i.local_id).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        assert_eq!(b.items[0], store[&1], "payload as stored");
        let gone: Vec<_> = std::iter::from_fn(|| m.poll_event())
            .filter(|e| matches!(e, SyncEvent::Unreadable { local_id: 3, .. }))
            .collect();
        assert_eq!(gone.len(), 1);
        assert_eq!(m.len(), 3);
        // Without a source, a batch of references is put back, not lost.
        let mut m2 = machine(false);
        m2.enqueue_ref(item(1).to_ref(), Instant::ZERO).unwrap();
        assert!(m2.poll_transmit(Instant::ZERO).is_none());
        assert_eq!(m2.len(), 1);
    }

    #[test]
    fn outcomes_wait_for_confirmation_and_a_revert_resends_them() {
        let mut m = machine(true);
        for i in 1..=3 {
            m.enqueue(item(i), Instant::ZERO).unwrap();
        }
        let b = m.poll_transmit(Instant::ZERO).unwrap();
        let resp = PushResponse {
            results: (1..=3)
                .map(|i| ItemResult::Applied { server_seq: i })
                .collect(),
            retry_after_ms: None,
        };
        m.handle_response(b.id, resp.clone(), Instant::ZERO)
            .unwrap();
        assert!(m.is_empty());
        assert_eq!(m.revert(b.id, Instant::ZERO), 3, "commit failed");
        assert_eq!(m.len(), 3);
        let b2 = m.poll_transmit(Instant::from_millis(1)).unwrap();
        assert_eq!(b2.items, b.items, "resent whole");
        m.handle_response(b2.id, resp, Instant::from_millis(1))
            .unwrap();
        assert_eq!(m.confirm(b2.id), 3);
        assert_eq!(m.revert(b2.id, Instant::ZERO), 0, "confirmed for good");
        assert!(m.is_empty() && m.payloads.is_empty());
    }
}
