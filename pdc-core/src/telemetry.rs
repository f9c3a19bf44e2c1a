//! Telemetry: what the engine tells the UI and the fleet — the bounded UI
//! event queue, the metrics registry, the connection history and the
//! alert rules over the metrics.
//!
//! The other parts report into it (`event`, `observe`, `count`); the host
//! reads it: [`Telemetry::poll_event`] after every call that may have
//! changed something, [`Telemetry::check_alerts`] on a timer (the driver:
//! every 10 s), [`Telemetry::metrics`] and [`Telemetry::connection_summary`]
//! for a report. Every method takes `&self` and holds its lock only for the
//! call: never across an `.await`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use pdc_clock::Instant;
use pdc_monitor::{
    AlertEngine, AlertEvent, AlertRule, ConnectionHistory, ConnectionState, MetricKey, Registry,
    Severity,
};

/// Most UI events kept unpolled.
pub const MAX_EVENTS: usize = 1024;

/// What the UI hears about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A sync pass ended: items acknowledged, dead-lettered, bytes moved.
    SyncCompleted {
        /// Items the server acknowledged.
        acked: usize,
        /// Items refused for good.
        dead_lettered: usize,
        /// Request bytes sent.
        bytes_up: u64,
        /// Response bytes received.
        bytes_down: u64,
    },
    /// An item was refused for good (it is in the dead-letter table).
    DeadLettered {
        /// The item.
        local_id: u64,
        /// The server's reason.
        reason: String,
    },
    /// The server refused whole requests (a wrong URL, a protocol or
    /// schema mismatch): sending stopped, nothing was dead-lettered. It
    /// resumes by itself when a probe (one item, every
    /// `SyncConfig::halt_probe`) is accepted, or at
    /// [`crate::OfflineEngine::resume_sync`].
    SyncHalted {
        /// The server's refusal.
        reason: String,
    },
    /// Sending resumed after [`EngineEvent::SyncHalted`].
    SyncResumed,
    /// An item failed alone with server errors too often: it waits (and
    /// its stream with it, across restarts) until
    /// [`crate::OfflineEngine::requeue_quarantined`].
    Quarantined {
        /// The item.
        local_id: u64,
        /// The last failure.
        reason: String,
    },
    /// A pending item's record failed its checksum when a batch was
    /// built: it was moved to the store's quarantine
    /// (`Store::quarantined`), with its bytes, for an operator.
    Unreadable {
        /// The item.
        local_id: u64,
        /// Why.
        reason: String,
    },
    /// The server's answer broke the protocol (wrong number of results,
    /// undecodable); the batch was put back and is resent.
    ProtocolViolation {
        /// What was wrong.
        message: String,
    },
    /// The connection state changed.
    ModeSwitch {
        /// Old state.
        from: ConnectionState,
        /// New state.
        to: ConnectionState,
    },
    /// A sync pass is sending: this many items were pending.
    SyncStarted {
        /// Items in the outbox when the first batch left.
        pending: usize,
    },
    /// An alert rule's condition held for its duration.
    AlertFired {
        /// Rule name.
        rule: String,
        /// Its severity.
        severity: Severity,
        /// The value that fired it.
        value: f64,
    },
    /// A fired alert's value came back.
    AlertResolved {
        /// Rule name.
        rule: String,
        /// The value that resolved it.
        value: f64,
    },
    /// A reference dataset was updated from the server.
    DatasetUpdated {
        /// Which.
        dataset: String,
        /// Its new version.
        version: u64,
    },
    /// An operation against the server failed (`push`, `ping`, `pull`,
    /// `report`). Queued when the failure is new — the first after a
    /// success, or another message — not on every retry; the status's
    /// `last_error` always holds the latest.
    Failed {
        /// Which operation.
        operation: &'static str,
        /// What went wrong.
        message: String,
    },
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves state that is still
    // consistent (every mutation is a single call); keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The engine's events, metrics, connection history and alerts.
#[derive(Debug)]
pub struct Telemetry {
    registry: Mutex<Registry>,
    history: Mutex<ConnectionHistory>,
    alerts: Mutex<AlertEngine>,
    events: Mutex<VecDeque<EngineEvent>>,
    /// The latest failure (operation, message), until that operation
    /// succeeds.
    last_error: Mutex<Option<(&'static str, String)>>,
}

impl Telemetry {
    /// Empty telemetry, starting in `state` at `now`, with these rules.
    pub fn new(state: ConnectionState, now: Instant, rules: Vec<AlertRule>) -> Self {
        Telemetry {
            registry: Mutex::new(Registry::new()),
            history: Mutex::new(ConnectionHistory::new(state, now, 100)),
            alerts: Mutex::new(AlertEngine::new(rules)),
            events: Mutex::new(VecDeque::new()),
            last_error: Mutex::new(None),
        }
    }

    /// Notes a failure of `operation`: the status's last error, and an
    /// [`EngineEvent::Failed`] when it is news.
    pub fn failed(&self, operation: &'static str, message: String) {
        let mut last = lock(&self.last_error);
        let news = last.as_ref() != Some(&(operation, message.clone()));
        *last = Some((operation, message.clone()));
        drop(last);
        if news {
            self.event(EngineEvent::Failed { operation, message });
        }
    }

    /// Notes a success of `operation`: clears its failure.
    pub fn succeeded(&self, operation: &'static str) {
        let mut last = lock(&self.last_error);
        if last.as_ref().is_some_and(|(op, _)| *op == operation) {
            *last = None;
        }
    }

    /// The latest failure, as `"operation: message"`.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error)
            .as_ref()
            .map(|(op, m)| format!("{op}: {m}"))
    }

    /// The connection state now.
    pub fn connection(&self) -> ConnectionState {
        lock(&self.history).current()
    }

    /// Queues a UI event; the oldest are dropped past [`MAX_EVENTS`] so
    /// that a host that never polls does not grow without bound.
    pub fn event(&self, e: EngineEvent) {
        let mut q = lock(&self.events);
        if q.len() >= MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// The next UI event, if any.
    pub fn poll_event(&self) -> Option<EngineEvent> {
        lock(&self.events).pop_front()
    }

    /// Adds a sample to the histogram `name` (no labels).
    pub fn observe(&self, name: &str, value: f64) {
        if let Ok(k) = MetricKey::new(name, &[]) {
            lock(&self.registry).observe(&k, value);
        }
    }

    /// Adds `n` to the counter `name` (no labels).
    pub fn count(&self, name: &str, n: u64) {
        if let Ok(k) = MetricKey::new(name, &[]) {
            lock(&self.registry).count(&k, n);
        }
    }

    /// Moves the connection history to `to`; a change becomes a
    /// [`EngineEvent::ModeSwitch`].
    pub fn set_connection(&self, to: ConnectionState, now: Instant, wall_ms: u64) {
        let mut h = lock(&self.history);
        let from = h.current();
        if from != to {
            h.set(to, now, wall_ms);
            drop(h);
            self.event(EngineEvent::ModeSwitch { from, to });
        }
    }

    /// Time spent in each connection state up to `now` (ms, by state
    /// name) and the number of switches, for a terminal report.
    pub fn connection_summary(
        &self,
        now: Instant,
    ) -> (std::collections::BTreeMap<String, u64>, u64) {
        let h = lock(&self.history);
        let states = ConnectionState::ALL;
        (
            states
                .iter()
                .map(|&s| (s.name().to_owned(), h.time_in(s, now).as_millis() as u64))
                .collect(),
            h.switches(),
        )
    }

    /// A snapshot of the metrics.
    pub fn metrics(&self) -> Registry {
        lock(&self.registry).clone()
    }

    /// Evaluates the alert rules over `metrics` at `now`; fired and
    /// resolved alerts also become [`EngineEvent`]s.
    pub fn check_alerts(&self, metrics: &Registry, now: Instant) -> Vec<AlertEvent> {
        let events = lock(&self.alerts).evaluate(metrics, now);
        for e in &events {
            self.event(match e {
                AlertEvent::Fired {
                    rule,
                    severity,
                    value,
                } => EngineEvent::AlertFired {
                    rule: rule.clone(),
                    severity: *severity,
                    value: *value,
                },
                AlertEvent::Resolved { rule, value } => EngineEvent::AlertResolved {
                    rule: rule.clone(),
                    value: *value,
                },
            });
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_queue_is_bounded_and_keeps_the_newest() {
        let t = Telemetry::new(ConnectionState::Online, Instant::ZERO, vec![]);
        for i in 0..(MAX_EVENTS as u64 + 10) {
            t.event(EngineEvent::SyncStarted {
                pending: i as usize,
            });
        }
        assert_eq!(
            t.poll_event(),
            Some(EngineEvent::SyncStarted { pending: 10 })
        );
        assert_eq!(
            std::iter::from_fn(|| t.poll_event()).count(),
            MAX_EVENTS - 1
        );
    }

    #[test]
    fn a_connection_change_is_one_event_and_no_change_is_none() {
        let t = Telemetry::new(ConnectionState::Online, Instant::ZERO, vec![]);
        t.set_connection(ConnectionState::Online, Instant::from_millis(1), 1);
        assert_eq!(t.poll_event(), None);
        t.set_connection(ConnectionState::Offline, Instant::from_millis(2), 2);
        assert_eq!(
            t.poll_event(),
            Some(EngineEvent::ModeSwitch {
                from: ConnectionState::Online,
                to: ConnectionState::Offline
            })
        );
        let (ms, switches) = t.connection_summary(Instant::from_millis(10));
        assert_eq!(switches, 1);
        assert_eq!(ms["offline"], 8);
    }
}
