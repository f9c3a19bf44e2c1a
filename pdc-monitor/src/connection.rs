//! Connection-state history: transitions (last N), time in each state,
//! mode switches.

use std::collections::VecDeque;
use std::time::Duration;

use pdc_clock::Instant;
use serde::{Deserialize, Serialize};

/// The terminal's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectionState {
    /// Online, good link.
    Online,
    /// No connection.
    Offline,
    /// Online but slow.
    Slow,
    /// Online on a metered link.
    Metered,
    /// Back online, draining the outbox.
    OfflineSync,
    /// Not known yet: no probe has answered or failed since the start.
    /// (Last, so that reports written before it decode unchanged.)
    Unknown,
}

impl ConnectionState {
    /// All states, in index order.
    pub const ALL: [ConnectionState; 6] = [
        ConnectionState::Online,
        ConnectionState::Offline,
        ConnectionState::Slow,
        ConnectionState::Metered,
        ConnectionState::OfflineSync,
        ConnectionState::Unknown,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name for export.
    pub fn name(self) -> &'static str {
        match self {
            ConnectionState::Online => "online",
            ConnectionState::Offline => "offline",
            ConnectionState::Slow => "slow",
            ConnectionState::Metered => "metered",
            ConnectionState::OfflineSync => "offline_sync",
            ConnectionState::Unknown => "unknown",
        }
    }
}

/// One change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Wall time, ms since the epoch.
    pub at_ms: u64,
    /// Previous state.
    pub from: ConnectionState,
    /// New state.
    pub to: ConnectionState,
}

/// History of connection states (durations on the monotonic clock).
#[derive(Debug, Clone)]
pub struct ConnectionHistory {
    current: ConnectionState,
    since: Instant,
    time_in: [Duration; ConnectionState::ALL.len()],
    switches: u64,
    transitions: VecDeque<Transition>,
    keep: usize,
}

impl ConnectionHistory {
    /// Starts in `state` at `now`, keeping the last `keep` transitions
    /// (the study kept 100).
    pub fn new(state: ConnectionState, now: Instant, keep: usize) -> Self {
        ConnectionHistory {
            current: state,
            since: now,
            time_in: [Duration::ZERO; ConnectionState::ALL.len()],
            switches: 0,
            transitions: VecDeque::new(),
            keep,
        }
    }

    /// Records the state at `now`; a repeat of the current state changes
    /// nothing.
    pub fn set(&mut self, state: ConnectionState, now: Instant, wall_ms: u64) {
        if state == self.current {
            return;
        }
        self.time_in[self.current.index()] += now - self.since;
        self.transitions.push_back(Transition {
            at_ms: wall_ms,
            from: self.current,
            to: state,
        });
        while self.transitions.len() > self.keep {
            self.transitions.pop_front();
        }
        self.switches += 1;
        self.current = state;
        self.since = now;
    }

    /// The current state.
    pub fn current(&self) -> ConnectionState {
        self.current
    }

    /// Number of state changes.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Time spent in `state` up to `now`.
    pub fn time_in(&self, state: ConnectionState, now: Instant) -> Duration {
        let mut d = self.time_in[state.index()];
        if state == self.current {
            d += now - self.since;
        }
        d
    }

    /// The kept transitions, oldest first.
    pub fn transitions(&self) -> impl Iterator<Item = &Transition> {
        self.transitions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_switches() {
        let t = |ms| Instant::from_millis(ms);
        let mut h = ConnectionHistory::new(ConnectionState::Online, t(0), 2);
        h.set(ConnectionState::Offline, t(1000), 1);
        h.set(ConnectionState::Offline, t(1500), 2);
        h.set(ConnectionState::OfflineSync, t(4000), 3);
        h.set(ConnectionState::Online, t(4500), 4);
        assert_eq!(h.switches(), 3);
        assert_eq!(
            h.time_in(ConnectionState::Online, t(5000)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            h.time_in(ConnectionState::Offline, t(5000)),
            Duration::from_millis(3000)
        );
        assert_eq!(
            h.time_in(ConnectionState::OfflineSync, t(5000)),
            Duration::from_millis(500)
        );
        assert_eq!(h.transitions().count(), 2);
        assert_eq!(h.transitions().next().map(|x| x.at_ms), Some(3));
    }
}
