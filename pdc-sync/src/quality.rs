//! Connection quality from latency samples and failures: an EWMA of each,
//! mapped to good (< 100 ms), fair (< 500 ms) or poor, with hysteresis so
//! that a link near a threshold does not flap.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Connection quality class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Quality {
    /// Latency under 100 ms, few failures.
    Good,
    /// Latency under 500 ms.
    Fair,
    /// Slower, or failing often.
    Poor,
}

/// EWMA estimator of latency and failure rate.
#[derive(Debug, Clone)]
pub struct QualityEstimator {
    latency_ms: Option<f64>,
    failure_rate: f64,
    current: Quality,
    alpha: f64,
    /// Fraction by which a threshold must be crossed to change class.
    hysteresis: f64,
}

impl Default for QualityEstimator {
    fn default() -> Self {
        QualityEstimator {
            latency_ms: None,
            failure_rate: 0.0,
            current: Quality::Fair,
            alpha: 0.2,
            hysteresis: 0.2,
        }
    }
}

const GOOD_MS: f64 = 100.0;
const FAIR_MS: f64 = 500.0;
const POOR_FAILURE_RATE: f64 = 0.5;

impl QualityEstimator {
    /// The current class.
    pub fn quality(&self) -> Quality {
        self.current
    }

    /// Smoothed latency, if any sample was seen.
    pub fn latency(&self) -> Option<Duration> {
        self.latency_ms
            .map(|ms| Duration::from_micros((ms * 1000.0) as u64))
    }

    /// Smoothed failure rate in [0, 1].
    pub fn failure_rate(&self) -> f64 {
        self.failure_rate
    }

    /// Records a successful round trip; returns the class if it changed.
    pub fn record_latency(&mut self, sample: Duration) -> Option<Quality> {
        let ms = sample.as_secs_f64() * 1000.0;
        self.latency_ms = Some(match self.latency_ms {
            Some(prev) => prev + self.alpha * (ms - prev),
            None => ms,
        });
        self.failure_rate *= 1.0 - self.alpha;
        self.reclassify()
    }

    /// Records a failed attempt; returns the class if it changed.
    pub fn record_failure(&mut self) -> Option<Quality> {
        self.failure_rate += self.alpha * (1.0 - self.failure_rate);
        self.reclassify()
    }

    fn classify(&self, slack: f64) -> Quality {
        if self.failure_rate >= POOR_FAILURE_RATE * (1.0 + slack) {
            return Quality::Poor;
        }
        match self.latency_ms {
            None => Quality::Fair,
            Some(ms) if ms < GOOD_MS * (1.0 - slack) => Quality::Good,
            Some(ms) if ms < FAIR_MS * (1.0 - slack) => Quality::Fair,
            Some(ms) if ms >= FAIR_MS * (1.0 + slack) => Quality::Poor,
            Some(_) => Quality::Fair,
        }
    }

    fn reclassify(&mut self) -> Option<Quality> {
        // Change only when the estimate is clearly inside the new class:
        // the raw class must agree with the class computed with margins.
        let strict = self.classify(self.hysteresis);
        let loose = self.classify(0.0);
        if strict == loose && strict != self.current {
            self.current = strict;
            return Some(strict);
        }
        // Leaving Good needs the estimate clearly above its threshold too.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_latency() {
        let mut q = QualityEstimator::default();
        for _ in 0..20 {
            q.record_latency(Duration::from_millis(20));
        }
        assert_eq!(q.quality(), Quality::Good);
        for _ in 0..30 {
            q.record_latency(Duration::from_millis(300));
        }
        assert_eq!(q.quality(), Quality::Fair);
        for _ in 0..30 {
            q.record_latency(Duration::from_millis(2000));
        }
        assert_eq!(q.quality(), Quality::Poor);
    }

    #[test]
    fn failures_make_it_poor() {
        let mut q = QualityEstimator::default();
        for _ in 0..10 {
            q.record_failure();
        }
        assert_eq!(q.quality(), Quality::Poor);
    }

    #[test]
    fn no_flapping_at_the_threshold() {
        let mut q = QualityEstimator::default();
        for _ in 0..30 {
            q.record_latency(Duration::from_millis(50));
        }
        assert_eq!(q.quality(), Quality::Good);
        let mut changes = 0;
        for i in 0..200 {
            let ms = if i % 2 == 0 { 95 } else { 110 };
            changes += usize::from(q.record_latency(Duration::from_millis(ms)).is_some());
        }
        assert!(changes <= 1, "{changes} changes");
    }
}
