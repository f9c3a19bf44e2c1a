//! The sync state machine: inputs in, batches and events out, no I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use pdc_clock::Instant;
use pdc_codec::Codec;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, BackoffConfig};
use crate::protocol::{
    ItemResult, OutboxItem, Priority, PushRequest, PushResponse, StoreId, StreamKey, MAX_WIRE_INT,
    PROTOCOL_VERSION,
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
    pub refused: Vec<(OutboxItem, SyncError)>,
}

/// Sync machine configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncConfig {
    /// This terminal's id, sent with every push.
    pub terminal_id: String,
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
}

fn default_halt_probe() -> Duration {
    Duration::from_secs(60)
}

impl SyncConfig {
    /// Defaults for a terminal with this id.
    pub fn new(terminal_id: impl Into<String>) -> Self {
        SyncConfig {
            terminal_id: terminal_id.into(),
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
        item: OutboxItem,
        /// Server's code.
        code: String,
        /// Server's message.
        message: String,
    },
    /// The item failed alone too often; its stream waits until an operator
    /// re-queues it ([`SyncMachine::requeue_quarantined`]).
    Quarantined {
        /// The item.
        item: OutboxItem,
        /// Last failure.
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
    quarantine: BTreeMap<u64, OutboxItem>,
    drained: bool,
    last_push_ok: Option<Instant>,
    last_pull_ok: Option<Instant>,
    bytes_up: u64,
    bytes_down: u64,
    halted: Option<Halt>,
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
            config,
            codec: Codec::new(),
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
            drained: true,
            last_push_ok: None,
            last_pull_ok: None,
            bytes_up: 0,
            bytes_down: 0,
            halted: None,
        }
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

    /// Adds an item to send. Its local id must be above every id enqueued
    /// before; a refused item changes nothing.
    pub fn enqueue(&mut self, item: OutboxItem, now: Instant) -> Result<(), SyncError> {
        if item.local_id <= self.last_local_id {
            return Err(SyncError::LocalIdNotIncreasing {
                local_id: item.local_id,
                last: self.last_local_id,
            });
        }
        let size = self.admissible(&item)?;
        self.last_local_id = item.local_id;
        self.queue.push(item, size, now);
        self.drained = false;
        Ok(())
    }

    /// Whether the machine takes this item, and its encoded size: its
    /// integers within the wire's range and its size within
    /// `max_item_bytes`. [`SyncMachine::enqueue`] and
    /// [`SyncMachine::restore`] check the same; a host checks before it
    /// saves an item (with the largest local id it may get, for the
    /// worst-case size), so that nothing saved is refused.
    pub fn admissible(&self, item: &OutboxItem) -> Result<usize, SyncError> {
        check_wire_ints(item)?;
        let size = item_size(item);
        if size > self.config.max_item_bytes {
            return Err(SyncError::ItemTooLarge {
                local_id: item.local_id,
                size,
                limit: self.config.max_item_bytes,
            });
        }
        Ok(size)
    }

    /// Re-adds the pending items of a durable outbox after a restart, in
    /// any order. Items already held are skipped. An item the machine can
    /// no longer send (over a lowered size limit, say) is not added but
    /// returned in [`Restored::refused`] with the reason, for the host to
    /// dead-letter: a restore never fails on a stored item.
    pub fn restore(&mut self, mut items: Vec<OutboxItem>, now: Instant) -> Restored {
        items.sort_by_key(|i| i.local_id);
        let mut restored = Restored::default();
        for item in items {
            if self.queue.contains(item.local_id) || self.quarantine.contains_key(&item.local_id) {
                continue;
            }
            // Refused items still count for the id order: ids never repeat.
            self.last_local_id = self.last_local_id.max(item.local_id);
            match self.admissible(&item) {
                Ok(size) => {
                    self.queue.push(item, size, now);
                    restored.added += 1;
                }
                Err(e) => restored.refused.push((item, e)),
            }
        }
        if restored.added > 0 {
            self.drained = false;
        }
        restored
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

    /// The next batch to send at `now`, if any may go.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Batch> {
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
        let mut max_items = self.config.max_batch_items.min(self.split_limit).max(1);
        if let Some(h) = &mut self.halted {
            if h.probe_at > now {
                return None;
            }
            // A probe: one item, then wait for its answer or the next turn.
            h.probe_at = now + self.config.halt_probe;
            max_items = 1;
        }
        let budget = self.config.max_batch_bytes.saturating_sub(REQUEST_OVERHEAD);
        let items = self.queue.take_batch(now, max_items, budget);
        if items.is_empty() {
            return None;
        }
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        let request = PushRequest {
            schema: PROTOCOL_VERSION,
            terminal_id: self.config.terminal_id.clone(),
            store_id: self.config.store_id,
            batch_id: id,
            items,
        };
        let bytes = match self.codec.encode(&request) {
            Ok(b) => b,
            Err(e) => {
                // Items passed the size check, so this is not expected; put
                // them back and back off rather than lose or spin on them.
                let ids: Vec<u64> = request.items.iter().map(|i| i.local_id).collect();
                self.fail(id, ids, FailKind::Transient, None, e.to_string(), now);
                return None;
            }
        };
        self.bytes_up += bytes.len() as u64;
        self.in_flight.insert(
            id,
            InFlight {
                ids: request.items.iter().map(|i| i.local_id).collect(),
                sent_at: now,
                deadline: now + self.config.in_flight_timeout,
            },
        );
        Some(Batch {
            id,
            items: request.items,
            request: bytes,
        })
    }

    /// When a partial batch stops waiting for more items.
    fn linger_until(&self) -> Option<Instant> {
        if self.config.linger.is_zero()
            || self.queue.ready_len() >= self.config.max_batch_items.min(self.split_limit)
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
                    self.solitary_failures.remove(&id);
                    self.queue.settle(id, true);
                    self.events.push_back(SyncEvent::Acked {
                        local_id: id,
                        server_seq,
                        duplicate,
                    });
                }
                ItemResult::Rejected { code, message } => {
                    self.solitary_failures.remove(&id);
                    if let Some(item) = self.queue.settle(id, true) {
                        self.events.push_back(SyncEvent::DeadLettered {
                            item,
                            code,
                            message,
                        });
                    }
                }
                ItemResult::Conflict { message } => {
                    self.solitary_failures.remove(&id);
                    if let Some(item) = self.queue.settle(id, true) {
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
            self.split_limit = (self.split_limit * 2).min(self.config.max_batch_items.max(1));
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
                    self.solitary_failures.remove(&id);
                    if let Some(item) = self.queue.settle(id, true) {
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
                    self.solitary_failures.remove(&id);
                    if let Some(item) = self.queue.settle(id, true) {
                        self.queue.set_quarantined(item.stream, true);
                        self.quarantine.insert(id, item.clone());
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

    fn check_drained(&mut self) {
        if !self.drained && self.queue.is_empty() && self.in_flight.is_empty() {
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
    pub fn quarantined(&self) -> impl Iterator<Item = &OutboxItem> {
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
        let size = item_size(&item);
        self.queue.push(item, size, now);
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

/// Encoded size of an item inside a push request (postcard).
fn item_size(item: &OutboxItem) -> usize {
    fn varint(v: u64) -> usize {
        (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
    }
    varint(item.local_id)
        + varint(item.stream.0)
        + 1
        + varint(u64::from(item.kind))
        + varint(item.created_at_ms)
        + varint(item.payload.len() as u64)
        + item.payload.len()
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
                item_size(&item),
                postcard::to_allocvec(&item).unwrap().len()
            );
        }
    }
}
