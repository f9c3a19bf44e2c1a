//! Time for pdc, injected rather than read.
//!
//! Every other pdc crate takes the current time as a parameter or through the
//! [`Clock`] trait, so that behaviour involving time (backoff, TTLs, lockouts,
//! lingering batches) is deterministic under test. [`SystemClock`] is the one
//! place in the workspace that reads the operating system's clocks; a tidy
//! test enforces that.
//!
//! Two notions of time are kept apart:
//!
//! * **wall time** ([`Clock::wall_ms`]): milliseconds since the Unix epoch, for
//!   timestamps that leave the process (a sale's `created_at`, cache expiry
//!   stored on disk). It can jump when the device's clock is corrected.
//! * **monotonic time** ([`Clock::now`] → [`Instant`]): never goes backwards,
//!   for timers and durations (backoff expiry, in-flight timeouts).
//!
//! [`Instant`] is pdc's own type (a [`Duration`] since an arbitrary origin)
//! rather than `std::time::Instant`, because the latter cannot be constructed
//! in tests and panics when read on `wasm32-unknown-unknown`.
//!
//! ```
//! use pdc_clock::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new(1_704_067_200_000);
//! let start = clock.now();
//! clock.advance(Duration::from_millis(250));
//! assert_eq!(clock.now() - start, Duration::from_millis(250));
//! assert_eq!(clock.wall_ms(), 1_704_067_200_250);
//! ```
//!
//! # Invariants
//! * `ManualClock` never moves its monotonic time backwards, even through
//!   [`ManualClock::set_wall_ms`].
//! * No I/O; builds for `wasm32-unknown-unknown`. There, [`SystemClock`] is not
//!   available (the platform has no clock without JavaScript); a browser host
//!   implements [`Clock`] over `performance.now()` and `Date.now()`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::ops::{Add, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A point on a monotonic timeline: the time elapsed since the clock's origin.
///
/// Instants from different clocks are not comparable. Arithmetic saturates:
/// subtracting a later instant gives [`Duration::ZERO`], never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(Duration);

impl Instant {
    /// The origin of the timeline.
    pub const ZERO: Instant = Instant(Duration::ZERO);

    /// The instant `elapsed` after the origin.
    pub const fn from_origin(elapsed: Duration) -> Self {
        Instant(elapsed)
    }

    /// The instant `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(Duration::from_millis(ms))
    }

    /// Time elapsed since the origin.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// `self + d`, saturating at the end of the representable range.
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add(rhs)
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// A source of wall and monotonic time.
pub trait Clock: Send + Sync {
    /// Wall time in milliseconds since the Unix epoch.
    fn wall_ms(&self) -> u64;
    /// Monotonic time; never decreases between calls on the same clock.
    fn now(&self) -> Instant;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn wall_ms(&self) -> u64 {
        (**self).wall_ms()
    }
    fn now(&self) -> Instant {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn wall_ms(&self) -> u64 {
        (**self).wall_ms()
    }
    fn now(&self) -> Instant {
        (**self).now()
    }
}

/// The operating system's clocks. The only reader of system time in pdc.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: std::time::Instant,
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
impl SystemClock {
    /// A system clock whose monotonic origin is the moment of this call.
    pub fn new() -> Self {
        SystemClock {
            origin: std::time::Instant::now(),
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
impl Clock for SystemClock {
    fn wall_ms(&self) -> u64 {
        // A clock set before 1970 reads as the epoch rather than failing:
        // timestamps are data, and the caller cannot do better.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
    fn now(&self) -> Instant {
        Instant(self.origin.elapsed())
    }
}

/// A clock that moves only when told to, for deterministic tests.
///
/// Clones share the same time, so a test can hold one handle and give another
/// to the code under test.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    wall_ms: AtomicU64,
    mono_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at wall time `wall_ms` and monotonic time [`Instant::ZERO`].
    pub fn new(wall_ms: u64) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                wall_ms: AtomicU64::new(wall_ms),
                mono_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Moves both wall and monotonic time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .mono_nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(nanos))
            })
            .ok();
        self.inner
            .wall_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                Some(v.saturating_add(ms))
            })
            .ok();
    }

    /// Sets the wall time (as a device's clock correction would); monotonic
    /// time is unaffected.
    pub fn set_wall_ms(&self, wall_ms: u64) {
        self.inner.wall_ms.store(wall_ms, Ordering::SeqCst);
    }

    /// Moves monotonic time forward to `at`; an earlier `at` is ignored, so
    /// monotonic time never goes backwards. Wall time moves by the same amount.
    pub fn advance_to(&self, at: Instant) {
        let now = self.now();
        if at > now {
            self.advance(at - now);
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new(0)
    }
}

impl Clock for ManualClock {
    fn wall_ms(&self) -> u64 {
        self.inner.wall_ms.load(Ordering::SeqCst)
    }
    fn now(&self) -> Instant {
        Instant(Duration::from_nanos(
            self.inner.mono_nanos.load(Ordering::SeqCst),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_advances_and_sets() {
        let c = ManualClock::new(1000);
        let c2 = c.clone();
        c.advance(Duration::from_millis(5));
        assert_eq!(c2.wall_ms(), 1005);
        assert_eq!(c2.now(), Instant::from_millis(5));
        c.set_wall_ms(10);
        assert_eq!(c.wall_ms(), 10);
        assert_eq!(c.now(), Instant::from_millis(5), "monotonic unaffected");
        c.advance_to(Instant::from_millis(3));
        assert_eq!(c.now(), Instant::from_millis(5), "never backwards");
        c.advance_to(Instant::from_millis(9));
        assert_eq!(c.now(), Instant::from_millis(9));
        assert_eq!(c.wall_ms(), 14);
    }

    #[test]
    fn instant_arithmetic_saturates() {
        let a = Instant::from_millis(10);
        let b = Instant::from_millis(4);
        assert_eq!(a - b, Duration::from_millis(6));
        assert_eq!(b - a, Duration::ZERO);
        let far = Instant::from_origin(Duration::MAX);
        assert_eq!(far + Duration::from_secs(1), far);
    }

    #[test]
    fn system_clock_is_monotonic_and_plausible() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        // 2020-01-01 in ms: any machine running these tests is past it.
        assert!(c.wall_ms() > 1_577_836_800_000);
    }
}
