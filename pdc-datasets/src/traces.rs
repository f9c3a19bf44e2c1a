//! Cache access traces: key streams of the shapes a till's reference data
//! sees, from a seed, for hit-ratio suites (`cargo xtask cache-ratio`, the
//! cache's regression test). Each family is a function of the key space,
//! the number of requests and the seed, never of a cache's capacity, so
//! every cache and every capacity sees the same stream.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A trace family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Zipf with exponent 0.9 (a flatter popularity).
    Zipf090,
    /// Zipf with exponent 1.1 (a steeper one).
    Zipf110,
    /// Zipf(0.99) with a catalogue browse loop: a fifth of the requests
    /// page, in order and over and over, through one range of 3% of the
    /// keys (a category screen).
    ZipfBrowse,
    /// A POS day: 200 bestsellers take half the requests, a uniform long
    /// tail 40%, and every 50,000 requests a report scans 10% of the keys
    /// once, in order.
    PosDay,
    /// A loop slightly larger than the largest cache tried: 70% of the
    /// requests walk 12% of the keys in order, the rest are Zipf(0.99).
    Loop,
    /// Zipf(0.99) polluted every 20,000 requests by a scan of 5,000 keys
    /// never seen again.
    ScanPolluted,
    /// Zipf(0.99) whose popular keys change four times (a new catalogue
    /// page, a promotion): the ranks map to fresh keys in each phase.
    Shifting,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 7] = [
        Family::Zipf090,
        Family::Zipf110,
        Family::ZipfBrowse,
        Family::PosDay,
        Family::Loop,
        Family::ScanPolluted,
        Family::Shifting,
    ];

    /// The family's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Family::Zipf090 => "zipf-0.9",
            Family::Zipf110 => "zipf-1.1",
            Family::ZipfBrowse => "zipf+browse-loop",
            Family::PosDay => "pos-day",
            Family::Loop => "loop-12%+zipf",
            Family::ScanPolluted => "zipf+one-off-scans",
            Family::Shifting => "shifting-zipf",
        }
    }

    /// `requests` keys drawn from `0..keys` (scans of never-seen keys go
    /// above it) with `seed`.
    pub fn trace(self, keys: usize, requests: usize, seed: u64) -> Vec<u64> {
        let keys = keys.max(10);
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ (self as u64) << 32);
        match self {
            Family::Zipf090 => Zipf::new(keys, 0.9).stream(&mut r, requests),
            Family::Zipf110 => Zipf::new(keys, 1.1).stream(&mut r, requests),
            Family::ZipfBrowse => {
                let z = Zipf::new(keys, 0.99);
                let (start, len) = (keys as u64 / 2, (keys * 3 / 100).max(1) as u64);
                let mut pos = 0u64;
                (0..requests)
                    .map(|_| {
                        if r.gen_bool(0.2) {
                            pos = (pos + 1) % len;
                            start + pos
                        } else {
                            z.sample(&mut r)
                        }
                    })
                    .collect()
            }
            Family::PosDay => {
                let hot = 200.min(keys as u64 / 2);
                let scan_len = (keys / 10).max(1);
                let mut out = Vec::with_capacity(requests + requests / 50_000 * scan_len);
                for i in 0..requests {
                    if i > 0 && i % 50_000 == 0 {
                        let from = r.gen_range(0..keys - scan_len + 1) as u64;
                        out.extend(from..from + scan_len as u64);
                    }
                    let u: f64 = r.gen();
                    out.push(if u < 0.5 {
                        r.gen_range(0..hot)
                    } else if u < 0.9 {
                        r.gen_range(hot..keys as u64)
                    } else {
                        // The rest: the middle of the catalogue, skewed.
                        hot + (r.gen::<f64>().powi(3) * (keys as u64 - hot) as f64) as u64
                    });
                }
                out.truncate(requests);
                out
            }
            Family::Loop => {
                let z = Zipf::new(keys, 0.99);
                let len = (keys * 12 / 100).max(1) as u64;
                let mut pos = 0u64;
                (0..requests)
                    .map(|_| {
                        if r.gen_bool(0.7) {
                            pos = (pos + 1) % len;
                            // The loop's keys sit after the Zipf head.
                            keys as u64 / 4 + pos
                        } else {
                            z.sample(&mut r)
                        }
                    })
                    .collect()
            }
            Family::ScanPolluted => {
                let z = Zipf::new(keys, 0.99);
                let mut out = Vec::with_capacity(requests);
                let mut next_scan = keys as u64 + 1;
                while out.len() < requests {
                    if out.len() % 25_000 == 0 {
                        out.extend(next_scan..next_scan + 5_000);
                        next_scan += 5_000;
                    }
                    out.push(z.sample(&mut r));
                }
                out.truncate(requests);
                out
            }
            Family::Shifting => {
                let z = Zipf::new(keys, 0.99);
                let phase_len = requests.div_ceil(4).max(1);
                (0..requests)
                    .map(|i| {
                        let phase = (i / phase_len) as u64;
                        // A fixed odd multiplier permutes the ranks per phase.
                        let rank = z.sample(&mut r);
                        (rank + phase * 0x9E37_79B9) % keys as u64
                    })
                    .collect()
            }
        }
    }
}

/// The crate's Zipf sampler, drawing keys.
struct Zipf(crate::Zipf);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        Zipf(crate::Zipf::with_exponent(n, s))
    }

    fn sample(&self, r: &mut ChaCha8Rng) -> u64 {
        self.0.sample(r) as u64
    }

    fn stream(&self, r: &mut ChaCha8Rng, n: usize) -> Vec<u64> {
        (0..n).map(|_| self.sample(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_deterministic_sized_and_shaped() {
        for f in Family::ALL {
            let a = f.trace(10_000, 60_000, 3);
            assert_eq!(a.len(), 60_000, "{}", f.name());
            assert_eq!(a, f.trace(10_000, 60_000, 3), "{}", f.name());
            assert_ne!(a, f.trace(10_000, 60_000, 4), "{}", f.name());
            let distinct: std::collections::HashSet<_> = a.iter().collect();
            assert!(
                distinct.len() > 100,
                "{}: {} keys",
                f.name(),
                distinct.len()
            );
        }
        // Zipf 1.1 is more skewed than 0.9: its top key is more frequent.
        let top = |t: &[u64]| t.iter().filter(|&&k| k == 0).count();
        assert!(
            top(&Family::Zipf110.trace(10_000, 60_000, 1))
                > top(&Family::Zipf090.trace(10_000, 60_000, 1))
        );
    }
}
