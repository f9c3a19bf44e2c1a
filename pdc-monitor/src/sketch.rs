//! A DDSketch-style quantile sketch: relative error ≤ α on every quantile,
//! constant memory for a given value range, exact merge.
//!
//! Values fall into logarithmic buckets `[γ^i, γ^(i+1))` with `γ = 2^(1/K)`,
//! K buckets per octave (35 by default: α = (γ − 1)/(γ + 1) = 0.99%); a
//! quantile is read as `2γ^(i+1)/(γ + 1)`, within α of every value in the
//! bucket (Masson et al., VLDB 2019). The bucket of a value is its binary
//! exponent times K plus a table lookup on the top 14 bits of its mantissa:
//! no logarithm on the recording path. A table slot is 2^-14 wide (0.006%),
//! so a value near a bucket edge may land in the neighbour bucket; the bound
//! becomes α + 0.006% = 0.996% < 1%.
//! Counts are kept in a dense run of 16-bit counters between the lowest and
//! the highest bucket seen, with a side table for the rare counter that
//! wraps: 1 µs to 1 h at α = 1% is 1,100 buckets, about 2.2 KiB.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::MonitorError;

/// Default buckets per octave (relative accuracy 0.996%, guaranteed < 1%).
pub const DEFAULT_BUCKETS_PER_OCTAVE: u16 = 35;
/// The default's relative accuracy bound, including the table's slot width.
pub const DEFAULT_ALPHA: f64 = 0.00996;
const TABLE_BITS: u32 = 14;

/// Values at or below this are counted as zero (a latency under a
/// nanosecond, in ms).
const MIN_POSITIVE: f64 = 1e-9;
/// Values above this are counted at this value, so that one absurd input
/// cannot grow the counters past a few KiB.
const MAX_TRACKED: f64 = 1e15;
/// Bucket indices a valid sketch can hold (α ≥ 0.0001 over the tracked
/// range), checked when a sketch arrives from elsewhere.
const MAX_INDEX: i32 = 400_000;
/// Extra counters reserved when the range grows (128 bytes).
const GROW_SLACK: usize = 64;

/// A mergeable quantile sketch (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sketch {
    /// Buckets per octave.
    k: u16,
    /// Bucket index of `counts[0]`.
    offset: i32,
    counts: Vec<u16>,
    /// Wraps of 16-bit counters: bucket index → number of 65,536s.
    wraps: BTreeMap<i32, u64>,
    zero: u64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl PartialEq for Sketch {
    /// Equal when they hold the same data (the cached `ln γ` is derived).
    fn eq(&self, o: &Self) -> bool {
        self.k == o.k
            && self.offset == o.offset
            && self.counts == o.counts
            && self.wraps == o.wraps
            && self.zero == o.zero
            && self.count == o.count
            && self.sum == o.sum
            && self.min == o.min
            && self.max == o.max
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::with_buckets_per_octave(DEFAULT_BUCKETS_PER_OCTAVE)
    }
}

/// Summary statistics of a sketch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
}

/// Sub-bucket of each mantissa slot for the default K, built once.
fn default_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let k = f64::from(DEFAULT_BUCKETS_PER_OCTAVE);
        (0..1u32 << TABLE_BITS)
            .map(|t| {
                let mid = 1.0 + (f64::from(t) + 0.5) / f64::from(1u32 << TABLE_BITS);
                (k * mid.log2()).floor() as u8
            })
            .collect()
    })
}

impl Sketch {
    /// An empty sketch with the default accuracy (under 1% relative error).
    pub fn new() -> Self {
        Sketch::default()
    }

    /// An empty sketch with `k` buckets per octave (clamped to 1..=1000):
    /// relative accuracy `(2^(1/k) − 1)/(2^(1/k) + 1)`. Only the default
    /// uses the lookup table; others compute a logarithm per value.
    pub fn with_buckets_per_octave(k: u16) -> Self {
        Sketch {
            k: k.clamp(1, 1000),
            offset: 0,
            counts: Vec::new(),
            wraps: BTreeMap::new(),
            zero: 0,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Relative accuracy bound of the quantiles.
    pub fn alpha(&self) -> f64 {
        let g = 2f64.powf(1.0 / f64::from(self.k));
        let a = (g - 1.0) / (g + 1.0);
        if self.k == DEFAULT_BUCKETS_PER_OCTAVE {
            a + 1.0 / f64::from(1u32 << TABLE_BITS)
        } else {
            a
        }
    }

    #[inline]
    fn index(&self, v: f64) -> i32 {
        let bits = v.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32 - 1023;
        if self.k == DEFAULT_BUCKETS_PER_OCTAVE && exp > -1023 {
            let slot = ((bits >> (52 - TABLE_BITS)) & ((1 << TABLE_BITS) - 1)) as usize;
            exp * i32::from(self.k) + i32::from(default_table()[slot])
        } else {
            (f64::from(self.k) * v.log2()).floor() as i32
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the values.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Records one value. NaN is ignored; negative values count as zero.
    #[inline]
    pub fn record(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.count += 1;
        self.sum += v;
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        if v <= MIN_POSITIVE {
            self.zero += 1;
            return;
        }
        let idx = self.index(v.min(MAX_TRACKED));
        self.add(idx, 1);
    }

    #[inline]
    fn add(&mut self, idx: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = idx;
            self.counts.push(0);
        } else if idx < self.offset {
            let grow = (self.offset - idx) as usize;
            self.counts.reserve_exact(grow + GROW_SLACK);
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = idx;
        } else if (idx - self.offset) as usize >= self.counts.len() {
            let new_len = (idx - self.offset) as usize + 1;
            if new_len > self.counts.capacity() {
                // Grow in small exact steps rather than doubling: the
                // counters are the sketch's whole memory budget.
                self.counts
                    .reserve_exact(new_len - self.counts.len() + GROW_SLACK);
            }
            self.counts.resize(new_len, 0);
        }
        let slot = &mut self.counts[(idx - self.offset) as usize];
        let total = u64::from(*slot).saturating_add(n);
        *slot = (total & 0xffff) as u16;
        if total >> 16 != 0 {
            let w = self.wraps.entry(idx).or_insert(0);
            *w = w.saturating_add(total >> 16);
        }
    }

    fn bucket_count(&self, pos: usize) -> u64 {
        let idx = self.offset + pos as i32;
        u64::from(self.counts[pos]) + (self.wraps.get(&idx).copied().unwrap_or(0) << 16)
    }

    /// Adds everything `other` recorded. Exact: the result equals recording
    /// both streams into one sketch.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), MonitorError> {
        if self.k != other.k {
            return Err(MonitorError::IncompatibleSketch {
                ours: self.k,
                theirs: other.k,
            });
        }
        for pos in 0..other.counts.len() {
            let n = other.bucket_count(pos);
            if n > 0 {
                self.add(other.offset + pos as i32, n);
            }
        }
        self.zero = self.zero.saturating_add(other.zero);
        self.count = self.count.saturating_add(other.count);
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }

    /// The value at quantile `q` in [0, 1], within `alpha` relative error;
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 || q.is_nan() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        if rank < self.zero {
            return Some(self.min.min(0.0).max(self.min));
        }
        let mut seen = self.zero;
        let k = f64::from(self.k);
        let gamma = 2f64.powf(1.0 / k);
        for pos in 0..self.counts.len() {
            seen += self.bucket_count(pos);
            if seen > rank {
                let idx = self.offset + pos as i32;
                let v = 2.0 * 2f64.powf(f64::from(idx + 1) / k) / (gamma + 1.0);
                // Never outside what was recorded.
                return Some(v.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// count, min, max, mean and the standard percentiles.
    pub fn summary(&self) -> Summary {
        let q = |x| self.quantile(x).unwrap_or(0.0);
        Summary {
            count: self.count,
            min: if self.count == 0 { 0.0 } else { self.min },
            max: if self.count == 0 { 0.0 } else { self.max },
            mean: if self.count == 0 {
                0.0
            } else {
                self.sum / self.count as f64
            },
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
        }
    }

    /// Checks a sketch that arrived from elsewhere (a terminal's report):
    /// parameters in range and counts consistent, so that merging it cannot
    /// overflow or allocate without bound.
    pub fn validate(&self) -> Result<(), MonitorError> {
        let bad = |m: &str| Err(MonitorError::InvalidSketch(m.to_owned()));
        if !(1..=1000).contains(&self.k) {
            return bad("buckets per octave out of range");
        }
        let end = i64::from(self.offset) + self.counts.len() as i64;
        if self.offset < -MAX_INDEX || end > i64::from(MAX_INDEX) {
            return bad("bucket index out of range");
        }
        if self
            .wraps
            .keys()
            .any(|&k| k < self.offset || i64::from(k) >= end)
        {
            return bad("wrap entry outside the buckets");
        }
        let total: u128 = (0..self.counts.len())
            .map(|p| u128::from(self.bucket_count(p)))
            .sum::<u128>()
            + u128::from(self.zero);
        if total != u128::from(self.count) {
            return bad("bucket counts do not add up to the count");
        }
        Ok(())
    }

    /// Heap and inline bytes held.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.counts.capacity() * 2 + self.wraps.len() * (4 + 8 + 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    fn within(est: f64, truth: f64, alpha: f64) -> bool {
        (est - truth).abs() <= alpha * truth.abs() + 1e-12
    }

    proptest! {
        #[test]
        fn quantiles_within_alpha_of_exact(values in proptest::collection::vec(1e-3f64..1e7, 1..400)) {
            let mut s = Sketch::default();
            for &v in &values { s.record(v); }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            for q in [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let est = s.quantile(q).unwrap();
                prop_assert!(within(est, exact(&sorted, q), s.alpha()), "q={} est={} exact={}", q, est, exact(&sorted, q));
            }
        }

        #[test]
        fn merge_equals_recording_everything_and_is_associative(
            a in proptest::collection::vec(0f64..1e6, 0..100),
            b in proptest::collection::vec(0f64..1e6, 0..100),
            c in proptest::collection::vec(0f64..1e6, 0..100)) {
            let sk = |v: &[f64]| { let mut s = Sketch::default(); for &x in v { s.record(x); } s };
            let mut all = sk(&a); for &x in b.iter().chain(&c) { all.record(x); }
            let mut left = sk(&a); left.merge(&sk(&b)).unwrap(); left.merge(&sk(&c)).unwrap();
            let mut bc = sk(&b); bc.merge(&sk(&c)).unwrap();
            let mut right = sk(&a); right.merge(&bc).unwrap();
            for q in [0.0, 0.25, 0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(left.quantile(q), all.quantile(q));
                prop_assert_eq!(right.quantile(q), all.quantile(q));
            }
            prop_assert_eq!(left.count(), all.count());
        }
    }

    #[test]
    fn counters_wrap_into_the_side_table_exactly() {
        let mut s = Sketch::default();
        for _ in 0..200_000 {
            s.record(5.0);
        }
        s.record(50.0);
        assert_eq!(s.count(), 200_001);
        assert!(within(s.quantile(0.5).unwrap(), 5.0, 0.01));
        assert!(within(s.quantile(1.0).unwrap(), 50.0, 0.01));
        let mut m = Sketch::default();
        m.merge(&s).unwrap();
        m.merge(&s).unwrap();
        assert_eq!(m.count(), 400_002);
        assert!(within(m.quantile(0.999).unwrap(), 5.0, 0.01));
    }

    #[test]
    fn memory_for_1us_to_1h_at_1pct_is_under_4kib() {
        let mut s = Sketch::default();
        let mut v = 0.001; // ms: 1 µs
        while v <= 3_600_000.0 {
            s.record(v);
            v *= 1.005;
        }
        assert!(s.memory_bytes() <= 4096, "{} bytes", s.memory_bytes());
    }

    #[test]
    fn odd_inputs() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        s.record(f64::NAN);
        s.record(-3.0);
        s.record(0.0);
        s.record(f64::INFINITY);
        assert_eq!(s.count(), 3);
        assert_eq!(s.quantile(0.0), Some(-3.0));
        assert!(Sketch::with_buckets_per_octave(20).merge(&s).is_err());
    }
}
