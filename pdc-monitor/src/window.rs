//! Sliding windows over sketches with bounded memory: 60 one-minute slots
//! and 24 one-hour slots, so the last minute, hour and day are each a merge
//! of at most 60 sketches.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::Sketch;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// A windowed distribution (wall time in ms, as reports carry it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Windowed {
    /// (minute start, sketch), oldest first, at most 60.
    minutes: VecDeque<(u64, Sketch)>,
    /// (hour start, sketch), oldest first, at most 24.
    hours: VecDeque<(u64, Sketch)>,
}

/// The spans a [`Windowed`] answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    /// The current and previous minute slot (60 to 120 s of data).
    LastMinute,
    /// The last 60 minute slots.
    LastHour,
    /// The last 24 hour slots.
    LastDay,
}

impl Windowed {
    /// An empty window set.
    pub fn new() -> Self {
        Windowed::default()
    }

    /// Records `v` at wall time `now_ms`.
    pub fn record(&mut self, now_ms: u64, v: f64) {
        let minute = now_ms - now_ms % MINUTE_MS;
        let hour = now_ms - now_ms % HOUR_MS;
        slot(&mut self.minutes, minute, 60).record(v);
        slot(&mut self.hours, hour, 24).record(v);
    }

    /// The merged sketch of a window ending at `now_ms`.
    pub fn get(&self, window: Window, now_ms: u64) -> Sketch {
        let (slots, from) = match window {
            Window::LastMinute => (
                &self.minutes,
                now_ms.saturating_sub(MINUTE_MS) - now_ms.saturating_sub(MINUTE_MS) % MINUTE_MS,
            ),
            Window::LastHour => (&self.minutes, now_ms.saturating_sub(HOUR_MS - MINUTE_MS)),
            Window::LastDay => (&self.hours, now_ms.saturating_sub(24 * HOUR_MS - HOUR_MS)),
        };
        let mut out = Sketch::default();
        for (start, s) in slots {
            if *start + slot_len(window) > from && *start <= now_ms {
                // Same alpha by construction: merge cannot fail.
                let _ = out.merge(s);
            }
        }
        out
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.minutes
            .iter()
            .chain(&self.hours)
            .map(|(_, s)| s.memory_bytes() + 8)
            .sum()
    }
}

fn slot_len(w: Window) -> u64 {
    match w {
        Window::LastDay => HOUR_MS,
        _ => MINUTE_MS,
    }
}

fn slot(slots: &mut VecDeque<(u64, Sketch)>, start: u64, keep: usize) -> &mut Sketch {
    let fresh = slots.back().is_none_or(|(s, _)| *s < start);
    if fresh {
        slots.push_back((start, Sketch::default()));
        while slots.len() > keep {
            slots.pop_front();
        }
    }
    // A value with a wall time before the newest slot (clock set back)
    // goes into the newest slot rather than reopening history.
    let last = slots.len() - 1;
    &mut slots[last].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_what_they_should_and_stay_bounded() {
        let mut w = Windowed::new();
        // One value per second for 3 hours: value = hour index + 1.
        for sec in 0..3 * 3600u64 {
            w.record(sec * 1000, (sec / 3600 + 1) as f64);
        }
        let now = 3 * 3600 * 1000 - 1;
        assert_eq!(w.get(Window::LastMinute, now).count(), 120);
        assert_eq!(w.get(Window::LastHour, now).count(), 3600);
        assert_eq!(w.get(Window::LastDay, now).count(), 3 * 3600);
        assert!((w.get(Window::LastHour, now).quantile(0.5).unwrap() - 3.0).abs() < 0.05);
        // A week later: memory stays bounded.
        for sec in 0..7 * 24 * 3600u64 {
            if sec % 60 == 0 {
                w.record(3 * 3_600_000 + sec * 1000, 1.0);
            }
        }
        assert!(w.minutes.len() <= 60 && w.hours.len() <= 24);
    }
}
