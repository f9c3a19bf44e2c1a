//! The outbox: durable sales and their way to the server.
//!
//! The store's outbox is the one source of truth. The sync machine holds,
//! per pending item, only what scheduling needs ([`pdc_sync::ItemRef`]:
//! id, stream, class, encoded size); payloads are read from the store when
//! a batch is built, so memory does not grow with the queue. The outcomes
//! of one server answer (acks, dead letters, quarantines) are committed in
//! one store transaction, and only then confirmed to the machine; if the
//! commit fails the machine takes the items back and they are resent (the
//! server answers duplicates).
//!
//! A host calls, in this order:
//!
//! 1. [`Outbox::open`] once: the pending items' index into the machine;
//!    items it can no longer send are dead-lettered with their reason, so
//!    opening never fails on a stored item.
//! 2. [`Outbox::record`] / [`Outbox::record_many`] for every sale: checked
//!    against the machine's and the server's limits, then durable, then
//!    queued. An `Err` means nothing was saved.
//! 3. [`Outbox::sync_once`] whenever [`Outbox::next_wakeup`] says so (or
//!    on a poke): it sends every batch allowed now and commits outcomes.
//! 4. [`Outbox::set_connectivity`] on network changes,
//!    [`Outbox::apply_server_limits`] after a ping, and the operator's
//!    [`Outbox::requeue_quarantined`] / [`Outbox::resume`].
//!
//! No lock is held across an `.await`: the machine's lock is taken for
//! each step and released before a request is sent; the commits of
//! outcomes run on tokio's blocking pool when a tokio runtime is current
//! (native builds), so a sync pass does not stall the executor with
//! fsyncs.

use std::sync::Mutex;

use pdc_clock::Clock;
use pdc_store::{NewItem, Refusal, Settlement, Store};
use pdc_sync::{
    Connectivity, ItemRef, OutboxItem, QueueHealth, ServerLimits, SyncConfig, SyncEvent,
    SyncMachine, SyncTransport,
};

use crate::telemetry::{lock, EngineEvent, Telemetry};
use crate::EngineError;

/// The durable outbox and its sync machine.
pub struct Outbox {
    store: Store,
    machine: Mutex<SyncMachine>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

/// Runs `f` on tokio's blocking pool when a tokio runtime is current
/// (native), else inline (a browser worker, `pollster`).
async fn off_executor<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, EngineError> + Send + 'static,
) -> Result<R, EngineError> {
    #[cfg(all(feature = "tokio", not(target_arch = "wasm32")))]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        return handle.spawn_blocking(f).await.unwrap_or_else(|e| {
            Err(EngineError::Store(pdc_store::StoreError::Storage(format!(
                "the commit task failed: {e}"
            ))))
        });
    }
    f()
}

impl Outbox {
    /// Opens the outbox over `store`: pushes carry the store's id, and the
    /// machine confirms outcomes only after the store committed them.
    /// Returns the events of what open did (items dead-lettered as
    /// unsendable).
    pub fn open(
        store: Store,
        mut config: SyncConfig,
        rng: Box<dyn rand::RngCore + Send>,
        clock: &impl Clock,
    ) -> Result<(Outbox, Vec<EngineEvent>), EngineError> {
        // Pushes carry the store's identity: the server's exactly-once key.
        config.store_id = store.store_id();
        config.confirm_outcomes = true;
        let mut machine = SyncMachine::new(config, rng);
        let (pending, held) = store.pending_refs()?;
        let restored = machine.restore_refs(pending, clock.now());
        for (item, _reason) in held {
            machine.restore_quarantined(item);
        }
        // What can no longer be sent goes to the dead letters with its
        // reason: the till always opens.
        let mut events = Vec::new();
        if !restored.refused.is_empty() {
            let at_ms = clock.wall_ms();
            let refused = restored
                .refused
                .iter()
                .map(|(item, e)| Refusal {
                    local_id: item.local_id,
                    code: "unsendable".into(),
                    message: e.to_string(),
                    at_ms,
                })
                .collect();
            store.settle(&Settlement {
                refused,
                ..Settlement::default()
            })?;
            for (item, e) in restored.refused {
                events.push(EngineEvent::DeadLettered {
                    local_id: item.local_id,
                    reason: format!("unsendable: {e}"),
                });
            }
        }
        Ok((
            Outbox {
                store,
                machine: Mutex::new(machine),
            },
            events,
        ))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records a sale: checked, durable before this returns, then queued.
    /// On `Err` the sale was not saved.
    pub fn record(
        &self,
        item: NewItem,
        clock: &impl Clock,
        telemetry: &Telemetry,
    ) -> Result<u64, EngineError> {
        let item = check_new_item(&lock(&self.machine), item)?;
        let stored = self.store.append(item)?;
        let id = stored.local_id;
        self.enqueue(vec![stored.to_ref()], clock, telemetry);
        Ok(id)
    }

    /// Records one item numbered by the store's sale counter in its own
    /// commit ([`Store::append_numbered`]): `probe` is the item at its
    /// largest encoded size, checked against the limits before anything is
    /// written; `make(n)` builds the item for sale number `n`. Returns the
    /// local id and the number.
    pub fn record_numbered(
        &self,
        probe: NewItem,
        make: impl FnOnce(u64) -> Result<NewItem, pdc_store::StoreError>,
        offline_card: Option<(i64, u64)>,
        clock: &impl Clock,
        telemetry: &Telemetry,
    ) -> Result<(u64, u64), EngineError> {
        check_new_item(&lock(&self.machine), probe)?;
        let (stored, number) = self.store.append_numbered(make, offline_card)?;
        let id = stored.local_id;
        self.enqueue(vec![stored.to_ref()], clock, telemetry);
        Ok((id, number))
    }

    /// Records many sales in one durable commit (bulk import); all or
    /// none are saved.
    pub fn record_many(
        &self,
        items: Vec<NewItem>,
        clock: &impl Clock,
        telemetry: &Telemetry,
    ) -> Result<Vec<u64>, EngineError> {
        let items = {
            let machine = lock(&self.machine);
            items
                .into_iter()
                .map(|item| check_new_item(&machine, item))
                .collect::<Result<Vec<_>, _>>()?
        };
        let stored = self.store.append_many(items)?;
        let ids = stored.iter().map(|i| i.local_id).collect();
        self.enqueue(
            stored.iter().map(OutboxItem::to_ref).collect(),
            clock,
            telemetry,
        );
        Ok(ids)
    }

    /// Queues saved items. Two threads recording at once may queue their
    /// ids out of order, so this goes through the machine's restore
    /// (any order, each id once). An item it refuses passed the same check
    /// before it was saved, unless a ping lowered the limits in between:
    /// it is saved, so it goes to the dead letters with the reason rather
    /// than being reported unsaved.
    fn enqueue(&self, items: Vec<ItemRef>, clock: &impl Clock, telemetry: &Telemetry) {
        let restored = lock(&self.machine).restore_refs(items, clock.now());
        for (item, e) in restored.refused {
            let outcome = self.store.dead_letter(
                item.local_id,
                "unsendable",
                &e.to_string(),
                clock.wall_ms(),
            );
            // If even that fails, the item stays in the outbox and the next
            // open dead-letters it.
            if outcome.is_ok() {
                telemetry.event(EngineEvent::DeadLettered {
                    local_id: item.local_id,
                    reason: format!("unsendable: {e}"),
                });
            }
        }
    }

    /// Items waiting to reach the server (pending or in flight; not
    /// quarantined).
    pub fn pending(&self) -> usize {
        lock(&self.machine).len()
    }

    /// The queue's health now.
    pub fn health(&self, clock: &impl Clock) -> QueueHealth {
        lock(&self.machine).health(clock.now())
    }

    /// When [`Outbox::sync_once`] should run next.
    pub fn next_wakeup(&self) -> Option<pdc_clock::Instant> {
        lock(&self.machine).poll_timeout()
    }

    /// Whether the machine believes the server is reachable.
    pub fn connectivity(&self) -> Connectivity {
        lock(&self.machine).connectivity()
    }

    /// Tells the machine whether the server is reachable.
    pub fn set_connectivity(&self, state: Connectivity, clock: &impl Clock) {
        lock(&self.machine).set_connectivity(state, clock.now());
    }

    /// Feeds a latency sample into connection quality.
    pub fn record_latency(&self, rtt: std::time::Duration) {
        lock(&self.machine).record_latency(rtt);
    }

    /// Records a pull's bytes and time.
    pub fn record_pull(&self, clock: &impl Clock, up: usize, down: usize) {
        lock(&self.machine).record_pull(clock.now(), up, down);
    }

    /// Takes the limits the server published: later `record`s refuse what
    /// it would refuse, batches stay within its limits.
    pub fn apply_server_limits(&self, limits: ServerLimits) {
        lock(&self.machine).apply_server_limits(limits);
    }

    /// Takes a quarantined item back into the queue (an operator's action
    /// after fixing the cause); the store forgets the hold first.
    pub fn requeue_quarantined(
        &self,
        local_id: u64,
        clock: &impl Clock,
    ) -> Result<(), EngineError> {
        let mut machine = lock(&self.machine);
        if !machine.quarantined().any(|i| i.local_id == local_id) {
            return Err(pdc_sync::SyncError::NotQuarantined(local_id).into());
        }
        self.store.release_held(local_id)?;
        machine.requeue_quarantined(local_id, clock.now())?;
        Ok(())
    }

    /// Resumes sending after a halt; a no-op when not halted.
    pub fn resume(&self, clock: &impl Clock) {
        lock(&self.machine).resume(clock.now());
    }

    /// One sync pass: sends every batch the machine allows now, commits
    /// each answer's outcomes in one transaction and only then confirms
    /// them. Safe to call at any time and concurrently; a batch
    /// interrupted by a crash is resent after restart.
    pub async fn sync_once<T: SyncTransport, C: Clock>(
        &self,
        transport: &T,
        clock: &C,
        telemetry: &Telemetry,
    ) -> Result<(), EngineError> {
        let (mut acked_total, mut dead) = (0usize, 0usize);
        let mut started = false;
        let before = self.health(clock);
        loop {
            let now = clock.now();
            let batch = {
                let mut m = lock(&self.machine);
                m.handle_timeout(now);
                let store = &self.store;
                let mut source = |ids: &[u64]| store.load(ids).map_err(|e| e.to_string());
                m.poll_transmit_with(now, &mut source)
            };
            // None: nothing ready, lingering, backing off, or offline.
            let Some(batch) = batch else { break };
            if !started {
                started = true;
                telemetry.event(EngineEvent::SyncStarted {
                    pending: self.pending(),
                });
            }
            let sent = clock.now();
            let result = transport.push(batch.request).await;
            let now = clock.now();
            telemetry.observe("pdc_sync_push_ms", (now - sent).as_secs_f64() * 1000.0);
            if let Err(e) = &result {
                telemetry.failed("push", e.to_string());
            }
            let answered = result.is_ok();
            let (events, outcome) = {
                let mut m = lock(&self.machine);
                let outcome = match result {
                    Ok(body) => m.handle_response_bytes(batch.id, &body, now),
                    Err(e) => m.handle_error(batch.id, e, now),
                };
                (
                    std::iter::from_fn(|| m.poll_event()).collect::<Vec<_>>(),
                    outcome,
                )
            };
            match outcome {
                // A late answer after a timeout changes nothing.
                Ok(()) | Err(pdc_sync::SyncError::UnknownBatch(_)) => {}
                // The batch was put back and is resent; the UI hears of it.
                Err(e) => {
                    telemetry.count("pdc_sync_protocol_violations_total", 1);
                    telemetry.event(EngineEvent::ProtocolViolation {
                        message: e.to_string(),
                    });
                }
            }
            // An answer that puts the batch back (busy, retry later) is a
            // failure for the status too.
            match events.iter().find_map(|e| match e {
                SyncEvent::BatchRetried { reason, .. } => Some(reason.clone()),
                _ => None,
            }) {
                // (A transport error was noted above, with its own text.)
                Some(reason) if answered => telemetry.failed("push", reason),
                None if answered => telemetry.succeeded("push"),
                _ => {}
            }
            let (outcomes, later) = settlement(events, clock.wall_ms());
            if !outcomes.is_empty() {
                let store = self.store.clone();
                let committed = {
                    let outcomes = outcomes.clone();
                    off_executor(move || Ok(store.settle(&outcomes)?)).await
                };
                if let Err(e) = committed {
                    // The machine still holds the items: they are resent
                    // and the server answers them as duplicates.
                    lock(&self.machine).revert(batch.id, clock.now());
                    return Err(e);
                }
                lock(&self.machine).confirm(batch.id);
                acked_total += outcomes.acked.len();
                dead += outcomes.refused.len();
            }
            for ev in later {
                telemetry.event(ev);
            }
        }
        // Events of steps that had no answer (an item found unreadable
        // while a batch was built).
        let rest: Vec<SyncEvent> = {
            let mut m = lock(&self.machine);
            std::iter::from_fn(|| m.poll_event()).collect()
        };
        for ev in settlement(rest, clock.wall_ms()).1 {
            telemetry.event(ev);
        }
        let after = self.health(clock);
        let (bytes_up, bytes_down) = (
            after.bytes_up - before.bytes_up,
            after.bytes_down - before.bytes_down,
        );
        // A pass that moved nothing is not news (and would push real
        // events out of the bounded queue).
        if acked_total > 0 || dead > 0 || bytes_up > 0 || bytes_down > 0 {
            telemetry.event(EngineEvent::SyncCompleted {
                acked: acked_total,
                dead_lettered: dead,
                bytes_up,
                bytes_down,
            });
        }
        Ok(())
    }
}

/// The store outcomes of a machine's events, and the UI events to emit
/// once they are committed.
fn settlement(events: Vec<SyncEvent>, at_ms: u64) -> (Settlement, Vec<EngineEvent>) {
    let mut outcomes = Settlement::default();
    let mut later = Vec::new();
    for ev in events {
        match ev {
            SyncEvent::Acked { local_id, .. } => outcomes.acked.push(local_id),
            SyncEvent::DeadLettered {
                item,
                code,
                message,
            } => {
                later.push(EngineEvent::DeadLettered {
                    local_id: item.local_id,
                    reason: format!("{code}: {message}"),
                });
                outcomes.refused.push(Refusal {
                    local_id: item.local_id,
                    code,
                    message,
                    at_ms,
                });
            }
            SyncEvent::Quarantined { item, reason } => {
                outcomes.held.push((item.local_id, reason.clone()));
                later.push(EngineEvent::Quarantined {
                    local_id: item.local_id,
                    reason,
                });
            }
            SyncEvent::Unreadable { local_id, reason } => {
                later.push(EngineEvent::Unreadable { local_id, reason });
            }
            SyncEvent::Halted { reason } => later.push(EngineEvent::SyncHalted { reason }),
            SyncEvent::Resumed => later.push(EngineEvent::SyncResumed),
            _ => {}
        }
    }
    (outcomes, later)
}

/// Refuses, before anything is saved, an item the sync machine would
/// refuse (integers above 2^63−1, size over the item limit, payload over
/// the server's published limit), sized with the largest local id it could
/// get. The item passes through by value: its payload is moved into the
/// probe and back, never copied.
fn check_new_item(sync: &SyncMachine, item: NewItem) -> Result<NewItem, EngineError> {
    let probe = OutboxItem {
        local_id: pdc_sync::MAX_WIRE_INT,
        stream: item.stream,
        priority: item.priority,
        kind: item.kind,
        created_at_ms: item.created_at_ms,
        payload: item.payload,
    };
    sync.admissible(&probe)?;
    Ok(NewItem {
        stream: probe.stream,
        priority: probe.priority,
        kind: probe.kind,
        created_at_ms: probe.created_at_ms,
        payload: probe.payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdc_sync::{Priority, StreamKey};

    #[test]
    fn outcomes_map_to_one_settlement_and_their_events() {
        let r = |id| ItemRef {
            local_id: id,
            stream: StreamKey(id),
            priority: Priority::High,
            size: 10,
        };
        let (s, later) = settlement(
            vec![
                SyncEvent::Acked {
                    local_id: 1,
                    server_seq: 1,
                    duplicate: false,
                },
                SyncEvent::DeadLettered {
                    item: r(2),
                    code: "invalid_sku".into(),
                    message: "no".into(),
                },
                SyncEvent::Quarantined {
                    item: r(3),
                    reason: "500".into(),
                },
                SyncEvent::Drained,
            ],
            7,
        );
        assert_eq!(s.acked, vec![1]);
        assert_eq!(s.refused.len(), 1);
        assert_eq!(s.refused[0].at_ms, 7);
        assert_eq!(s.held, vec![(3, "500".to_owned())]);
        assert_eq!(later.len(), 2, "acks and drains are not UI events here");
    }
}
