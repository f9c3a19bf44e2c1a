//! Escalating lockout after failed PIN attempts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a lockout counter is kept for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockKey {
    /// One user, on every terminal that shares the store.
    User(String),
    /// One terminal, across users (an attacker cycling user ids).
    Terminal(String),
}

/// A lockout counter as persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LockoutState {
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// Wall time of the last failure (ms since the epoch).
    pub last_failure_ms: u64,
    /// Latest wall time this counter has seen (for display; the lock
    /// itself does not read the wall clock).
    pub last_seen_ms: u64,
    /// Lock time still to be served, in ms: counted down on the monotonic
    /// clock only while a process observes it (time while the app is closed
    /// does not count, and no wall-clock jump moves it), never above the
    /// policy's delay. `None` for a counter stored before this field
    /// existed: the policy's full delay.
    pub remaining_ms: Option<u64>,
}

/// The delay schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutPolicy {
    /// Failures allowed without any delay (default 4).
    pub free_failures: u32,
    /// Delays after each further failure (default Android's 1, 5, 15, 30,
    /// 90, 243 minutes).
    pub delays: Vec<Duration>,
    /// Each failure past the schedule multiplies the last delay by this
    /// (default 3).
    pub growth: u32,
    /// Failures after which only an online login or an administrator
    /// unlocks (default 20; NIST SP 800-63B allows at most 100).
    pub hard_limit: u32,
}

impl LockoutPolicy {
    /// The default for a terminal's counter (wrong PINs of any user at one
    /// till): 15 failures free, then the user schedule, hard limit 100
    /// (NIST SP 800-63B's most). Higher than a user's, so that a few wrong
    /// PINs spread over several cashiers do not lock every cashier out; the
    /// price is that an attacker cycling user ids gets 15 guesses at the
    /// till before any delay (each user's own counter still allows only 4
    /// free and 20 in all per account).
    pub fn terminal_default() -> Self {
        LockoutPolicy {
            free_failures: 15,
            hard_limit: 100,
            ..LockoutPolicy::default()
        }
    }
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        LockoutPolicy {
            free_failures: 4,
            delays: vec![min(1), min(5), min(15), min(30), min(90), min(243)],
            growth: 3,
            hard_limit: 20,
        }
    }
}

/// Longest delay the schedule produces (30 days); beyond it the hard limit
/// is what stops an attacker.
const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

impl LockoutPolicy {
    /// The wait imposed after `failures` consecutive failures.
    pub fn delay_after(&self, failures: u32) -> Duration {
        if failures <= self.free_failures {
            return Duration::ZERO;
        }
        let idx = (failures - self.free_failures - 1) as usize;
        if let Some(d) = self.delays.get(idx) {
            return (*d).min(MAX_DELAY);
        }
        let Some(&last) = self.delays.last() else {
            return Duration::ZERO;
        };
        let extra = (idx + 1 - self.delays.len()) as u32;
        let mut d = last;
        for _ in 0..extra {
            d = d.saturating_mul(self.growth);
            if d >= MAX_DELAY {
                return MAX_DELAY;
            }
        }
        d
    }

    /// Failures left before the first delay.
    pub fn attempts_before_delay(&self, failures: u32) -> u32 {
        self.free_failures.saturating_sub(failures)
    }

    /// Wrong guesses an attacker at the till gets on one account before
    /// only an online login or an administrator unlocks it: the
    /// `hard_limit`-th failure is the last guess.
    pub fn max_guesses(&self) -> u32 {
        self.hard_limit
    }

    /// Shortest time an attacker at the till needs for `guesses` wrong
    /// guesses on one account, or `None` if the hard limit stops them first.
    pub fn time_for_guesses(&self, guesses: u32) -> Option<Duration> {
        if guesses > self.max_guesses() {
            return None;
        }
        Some(
            (1..guesses)
                .map(|f| self.delay_after(f))
                .fold(Duration::ZERO, |a, d| a.saturating_add(d)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_exact() {
        let p = LockoutPolicy::default();
        let mins: Vec<u64> = (0..=12).map(|f| p.delay_after(f).as_secs() / 60).collect();
        assert_eq!(mins, vec![0, 0, 0, 0, 0, 1, 5, 15, 30, 90, 243, 729, 2187]);
        assert_eq!(p.delay_after(40), MAX_DELAY);
        assert_eq!(p.time_for_guesses(21), None);
        // 20 guesses: 4 free, then 1+5+15+30+90+243+729+2187+... minutes.
        assert!(p.time_for_guesses(20).unwrap() > Duration::from_secs(30 * 24 * 3600));
    }
}

#[cfg(test)]
mod figures {
    use super::*;

    /// The documented online-guessing figure: the 20th guess (the last)
    /// comes 202,344 + 43,200 (the 30-day cap) minutes after the first.
    #[test]
    fn twenty_guesses_take_245544_minutes() {
        let p = LockoutPolicy::default();
        assert_eq!(
            p.time_for_guesses(20),
            Some(Duration::from_secs(245_544 * 60))
        );
    }
}
