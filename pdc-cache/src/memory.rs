//! The memory tier's engine: a bounded map with S3-FIFO eviction, TTL and
//! a byte budget, allocation-free on the hit path.
//!
//! **Eviction: S3-FIFO** (Yang et al., SOSP 2023), with quick_cache's
//! admission. A new key enters the main queue while main is below its
//! share of the capacity, else a small probation FIFO (0.5% of capacity);
//! a key read while on probation is promoted to main when it reaches the
//! head, otherwise it is evicted and remembered in a ghost FIFO of key
//! hashes; a key that comes back while remembered goes straight to main.
//! Main is a CLOCK with a 2-bit frequency. One-hit wonders (a catalogue
//! page scanned once) pass through probation without displacing the
//! working set, which is where plain LRU loses, and a hit only bumps a
//! counter: no list surgery, no allocation.
//!
//! **Expiry** is lazy (a `get` of an expired entry removes it and misses)
//! plus an incremental [`MemoryCache::purge_expired`] that visits a bounded
//! number of slots per call: there is no timer per entry and no O(n) scan
//! on any hot path.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};

use hashbrown::{DefaultHashBuilder, Equivalent, HashSet, HashTable};

use crate::CacheStats;

/// Limits of a [`MemoryCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryLimits {
    /// Most entries.
    pub max_entries: usize,
    /// Most weight (bytes, per the weigher the caller uses).
    pub max_weight: u64,
}

impl MemoryLimits {
    /// A limit on entries only.
    pub fn entries(n: usize) -> Self {
        MemoryLimits {
            max_entries: n.max(1),
            max_weight: u64::MAX,
        }
    }
}

/// One entry. Aligned to 32 bytes: a u64 → u64 slot is exactly 32, so
/// two share a 64-byte line and none straddles two (with the allocator's
/// 16-byte alignment half of them did, and a hit on a cache larger than
/// the CPU cache paid two misses: get-hit at 1M entries went from 1.26× to
/// 0.84–1.01× quick_cache over four runs). A larger slot rounds up to a
/// multiple of 32.
#[derive(Debug)]
#[repr(align(32))]
struct Slot<K, V> {
    /// The key: a lookup compares it here, beside the value and expiry it
    /// reads next (one cache line for small keys and values). Its hash is
    /// recomputed when the slot leaves the table rather than stored.
    key: K,
    value: V,
    /// Wall ms after which the entry is expired (`u64::MAX`: never).
    expires_at: u64,
    weight: u32,
    /// Dataset id, for invalidation.
    group: u16,
    /// 0..=3 accesses since insertion or last second chance.
    freq: u8,
    /// Where it is queued: SMALL, MAIN; DEAD when removed but still queued.
    state: u8,
}

/// The frequency cap (2 bits: 2 lost the Zipf cells, 7 the shifting ones).
const MAX_FREQ: u8 = 3;
const SMALL: u8 = 0;
const MAIN: u8 = 1;
const DEAD: u8 = 2;
const FREE: u8 = 3;
/// Share of the entries the small (probation) queue gets, in thousandths.
/// The paper's 10% was tuned on many traces; on the 21 cells of `cargo
/// xtask cache-ratio` (seven trace families × three capacities; chosen on
/// seed 2 with 50,000 keys, checked on seeds 1 and 3 with 100,000 and
/// 200,000), 0.5% with a new key admitted straight to main while main has
/// room (as quick_cache does) leaves no cell more than 0.14 points below
/// quick_cache, where 5% without that admission left 16 cells below, the
/// loop 5.9 points below. Scans are still absorbed: main is full in the
/// steady state, so a scan's keys go to probation and out.
const SMALL_PERMILLE: usize = 5;

/// A bounded in-memory cache with S3-FIFO eviction and TTL.
pub struct MemoryCache<K, V> {
    /// Key → slot index, found by the key's hash (computed once per call):
    /// 4 bytes a bucket (plus hashbrown's 1-byte tag), so the table stays
    /// small enough to stay in the CPU cache; the key is compared in the
    /// slot the hit reads anyway.
    map: HashTable<u32>,
    slots: Vec<Slot<K, V>>,
    free: Vec<u32>,
    small: VecDeque<u32>,
    main: VecDeque<u32>,
    /// Fingerprints (32 bits of the hash) of keys evicted from small.
    ghost: VecDeque<u32>,
    ghost_set: HashSet<u32>,
    hasher: DefaultHashBuilder,
    limits: MemoryLimits,
    len: usize,
    small_len: usize,
    /// Weight of the entries on probation (so main's share is known in
    /// weight as well as in entries).
    small_weight: u64,
    weight: u64,
    purge_cursor: usize,
    stats: CacheStats,
}

impl<K, V> std::fmt::Debug for MemoryCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("len", &self.len)
            .field("weight", &self.weight)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, V> MemoryCache<K, V> {
    /// An empty cache with these limits.
    pub fn new(limits: MemoryLimits) -> Self {
        let limits = MemoryLimits {
            max_entries: limits.max_entries.max(1),
            ..limits
        };
        MemoryCache {
            map: HashTable::with_capacity(limits.max_entries.min(1 << 20)),
            // One spare: an insert lands before the eviction it causes.
            slots: Vec::with_capacity(limits.max_entries.saturating_add(1).min(1 << 20)),
            free: Vec::new(),
            small: VecDeque::new(),
            // Main and the ghost at their steady-state sizes from the start
            // (pages are only resident once used): grown by doubling, the
            // buffers they left behind stayed resident in the allocator and
            // `memory_bytes()` fell 5% short of RSS.
            main: VecDeque::with_capacity(limits.max_entries.min(1 << 20)),
            // One over: an evicted key is queued before the oldest leaves.
            ghost: VecDeque::with_capacity(ghost_cap(limits.max_entries).min(1 << 20) + 1),
            ghost_set: HashSet::with_capacity(ghost_cap(limits.max_entries).min(1 << 20)),
            hasher: DefaultHashBuilder::default(),
            limits,
            len: 0,
            small_len: 0,
            small_weight: 0,
            weight: 0,
            purge_cursor: 0,
            stats: CacheStats::default(),
        }
    }

    #[inline]
    fn find<Q: Hash + Equivalent<K> + ?Sized>(&self, key: &Q) -> (u64, Option<u32>) {
        let h = self.hasher.hash_one(key);
        let slots = &self.slots;
        (
            h,
            self.map
                .find(h, |&i| key.equivalent(&slots[i as usize].key))
                .copied(),
        )
    }

    /// Takes a slot's index out of the table; returns the key's hash.
    fn unmap(&mut self, idx: u32) -> u64 {
        let h = self.hasher.hash_one(&self.slots[idx as usize].key);
        if let Ok(e) = self.map.find_entry(h, |&i| i == idx) {
            e.remove();
        }
        h
    }

    /// Live entries (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total weight held.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// Counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// The limits.
    pub fn limits(&self) -> MemoryLimits {
        self.limits
    }

    /// The value of `key` if present and not expired at `now_ms`. An
    /// expired entry is removed. Allocation-free.
    #[inline]
    pub fn get<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q, now_ms: u64) -> Option<&V> {
        let (_, found) = self.find(key);
        let Some(idx) = found else {
            self.stats.misses += 1;
            return None;
        };
        if self.slots[idx as usize].expires_at <= now_ms {
            self.kill(idx);
            self.stats.expirations += 1;
            self.stats.misses += 1;
            return None;
        }
        self.stats.hits += 1;
        let slot = &mut self.slots[idx as usize];
        // Written only below the cap: a hot entry's line stays clean, so a
        // read-mostly cache larger than the CPU cache writes nothing back.
        if slot.freq < MAX_FREQ {
            slot.freq += 1;
        }
        Some(&slot.value)
    }

    /// Like [`get`](Self::get) but also returns the expiry, and does not
    /// remove expired entries (for stale-while-revalidate).
    pub fn get_with_expiry<Q: Hash + Equivalent<K> + ?Sized>(
        &mut self,
        key: &Q,
    ) -> Option<(&V, u64)> {
        let idx = self.find(key).1?;
        let slot = &mut self.slots[idx as usize];
        if slot.freq < MAX_FREQ {
            slot.freq += 1;
        }
        Some((&slot.value, slot.expires_at))
    }

    /// Inserts or replaces `key` with a weight and an expiry (wall ms), in
    /// dataset `group`; evicts to stay within the limits. An entry heavier
    /// than the whole weight budget is not stored.
    pub fn insert(&mut self, key: K, value: V, weight: u32, expires_at: u64, group: u16) {
        if u64::from(weight) > self.limits.max_weight {
            self.remove(&key);
            return;
        }
        let (h, found) = self.find(&key);
        if let Some(idx) = found {
            let slot = &mut self.slots[idx as usize];
            self.weight = self.weight - u64::from(slot.weight) + u64::from(weight);
            if slot.state == SMALL {
                self.small_weight = self.small_weight - u64::from(slot.weight) + u64::from(weight);
            }
            slot.value = value;
            slot.weight = weight;
            slot.expires_at = expires_at;
            slot.group = group;
            self.evict_to_fit();
            return;
        }
        // Straight to main when remembered by the ghost, or while main is
        // below its share in entries and in weight (the cache filling up,
        // or main evicted into): a cache bound by weight keeps probation.
        let main_len = self.len - self.small_len;
        let main_weight = self.weight - self.small_weight;
        let weight_share = self.limits.max_weight - self.small_weight_target();
        let to_main = self.ghost_set.remove(&(h as u32))
            || (main_len < self.limits.max_entries.saturating_sub(self.small_target())
                && main_weight.saturating_add(u64::from(weight)) <= weight_share);
        let state = if to_main { MAIN } else { SMALL };
        let slot = Slot {
            key,
            value,
            expires_at,
            weight,
            group,
            freq: 0,
            state,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.map
            .insert_unique(h, idx, |&i| hasher.hash_one(&slots[i as usize].key));
        self.len += 1;
        self.weight += u64::from(weight);
        if to_main {
            self.main.push_back(idx);
        } else {
            self.small.push_back(idx);
            self.small_len += 1;
            self.small_weight += u64::from(weight);
        }
        self.evict_to_fit();
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove<Q: Hash + Equivalent<K> + ?Sized>(&mut self, key: &Q) -> bool {
        match self.find(key).1 {
            Some(idx) => {
                self.kill(idx);
                true
            }
            None => false,
        }
    }

    /// Removes every entry of dataset `group`; returns how many. Visits the
    /// slots once: invalidation is an event, not a hot path.
    pub fn invalidate_group(&mut self, group: u16) -> usize {
        let victims: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| {
                let s = &self.slots[i as usize];
                (s.state == SMALL || s.state == MAIN) && s.group == group
            })
            .collect();
        for &i in &victims {
            self.kill(i);
        }
        self.stats.invalidations += victims.len() as u64;
        victims.len()
    }

    /// Removes the entries that satisfy `pred`; returns how many.
    pub fn invalidate_where(&mut self, mut pred: impl FnMut(&K, &V) -> bool) -> usize {
        // The table holds exactly the live entries.
        let slots = &self.slots;
        let victims: Vec<u32> = self
            .map
            .iter()
            .copied()
            .filter(|&i| pred(&slots[i as usize].key, &slots[i as usize].value))
            .collect();
        for &i in &victims {
            self.kill(i);
        }
        self.stats.invalidations += victims.len() as u64;
        victims.len()
    }

    /// Visits at most `max_steps` slots from where the last call stopped and
    /// removes the expired ones; returns how many were removed.
    pub fn purge_expired(&mut self, now_ms: u64, max_steps: usize) -> usize {
        let mut removed = 0;
        for _ in 0..max_steps.min(self.slots.len()) {
            if self.purge_cursor >= self.slots.len() {
                self.purge_cursor = 0;
            }
            let i = self.purge_cursor as u32;
            self.purge_cursor += 1;
            let s = &self.slots[i as usize];
            if (s.state == SMALL || s.state == MAIN) && s.expires_at <= now_ms {
                self.kill(i);
                self.stats.expirations += 1;
                removed += 1;
            }
        }
        removed
    }

    /// Marks a live slot dead: out of the map and the accounting now, out of
    /// its queue when the queue reaches it (then the slot is freed).
    fn kill(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if slot.state == SMALL {
            self.small_len -= 1;
            self.small_weight -= u64::from(slot.weight);
        }
        slot.state = DEAD;
        self.weight -= u64::from(slot.weight);
        self.len -= 1;
        self.unmap(idx);
        // Queues holding only dead slots would grow without bound under
        // heavy invalidation; sweep them when they are mostly dead.
        if self.small.len() + self.main.len() > 2 * self.len + 64 {
            self.sweep_dead();
        }
    }

    fn sweep_dead(&mut self) {
        let slots = &mut self.slots;
        let free = &mut self.free;
        for q in [&mut self.small, &mut self.main] {
            q.retain(|&i| {
                if slots[i as usize].state == DEAD {
                    slots[i as usize].state = FREE;
                    free.push(i);
                    false
                } else {
                    true
                }
            });
        }
    }

    fn small_target(&self) -> usize {
        (self.limits.max_entries * SMALL_PERMILLE / 1000).max(1)
    }

    /// The probation queue's share of the weight budget.
    fn small_weight_target(&self) -> u64 {
        self.limits.max_weight / 1000 * SMALL_PERMILLE as u64
    }

    fn over(&self) -> bool {
        self.len > self.limits.max_entries || self.weight > self.limits.max_weight
    }

    fn evict_to_fit(&mut self) {
        while self.over() {
            let small_target = self.small_target();
            if self.small_len >= small_target
                || self.small_weight > self.small_weight_target()
                || self.main.is_empty()
            {
                if !self.evict_small() && !self.evict_main() {
                    break;
                }
            } else if !self.evict_main() && !self.evict_small() {
                break;
            }
        }
    }

    /// Pops the small queue's head: promoted to main if it was read,
    /// otherwise evicted into the ghost. Returns false if nothing to pop.
    fn evict_small(&mut self) -> bool {
        while let Some(idx) = self.small.pop_front() {
            let slot = &mut self.slots[idx as usize];
            match slot.state {
                // Killed while queued: its slot is reusable now.
                DEAD => self.free_slot(idx),
                _ if slot.freq > 0 => {
                    slot.state = MAIN;
                    slot.freq = 0;
                    self.small_len -= 1;
                    self.small_weight -= u64::from(slot.weight);
                    self.main.push_back(idx);
                    self.stats.promotions += 1;
                    return true;
                }
                _ => {
                    self.small_len -= 1;
                    self.small_weight -= u64::from(slot.weight);
                    // The ghost's fingerprint: 32 bits of the key's hash.
                    let h = self.evict_slot(idx) as u32;
                    self.ghost.push_back(h);
                    self.ghost_set.insert(h);
                    let cap = ghost_cap(self.limits.max_entries);
                    while self.ghost.len() > cap {
                        if let Some(old) = self.ghost.pop_front() {
                            self.ghost_set.remove(&old);
                        }
                    }
                    return true;
                }
            }
        }
        false
    }

    /// One CLOCK step on main: a read entry gets a second chance, an unread
    /// one is evicted. Returns false if main is empty.
    fn evict_main(&mut self) -> bool {
        while let Some(idx) = self.main.pop_front() {
            let slot = &mut self.slots[idx as usize];
            match slot.state {
                // Killed while queued: its slot is reusable now.
                DEAD => self.free_slot(idx),
                _ if slot.freq > 0 => {
                    slot.freq -= 1;
                    self.main.push_back(idx);
                }
                _ => {
                    self.evict_slot(idx);
                    return true;
                }
            }
        }
        false
    }

    fn free_slot(&mut self, idx: u32) {
        self.slots[idx as usize].state = FREE;
        self.free.push(idx);
    }

    /// Evicts a live slot; returns its key's hash.
    fn evict_slot(&mut self, idx: u32) -> u64 {
        self.weight -= u64::from(self.slots[idx as usize].weight);
        self.len -= 1;
        let h = self.unmap(idx);
        self.free_slot(idx);
        self.stats.evictions += 1;
        h
    }

    /// Approximate bytes used per entry at the current capacity (map,
    /// slots, queues, ghost), for the memory budget report.
    pub fn memory_bytes(&self) -> usize {
        let map = table_bytes(self.map.capacity(), std::mem::size_of::<u32>());
        let slots = self.slots.capacity() * std::mem::size_of::<Slot<K, V>>();
        let queues = (self.small.capacity() + self.main.capacity() + self.free.capacity()) * 4;
        let ghost = self.ghost.capacity() * 4 + table_bytes(self.ghost_set.capacity(), 4);
        map + slots + queues + ghost + std::mem::size_of::<Self>()
    }
}

/// How many evicted keys the ghost remembers for a cache of `max_entries`:
/// three quarters. As many as main holds (the paper's choice) let too many
/// tail keys of a Zipf back into main: on `cargo xtask cache-ratio` that
/// left 3–16 of 21 cells below quick_cache on seeds 1–5, three quarters
/// 1–8 (half, quick_cache's own, lost the shifting traces).
fn ghost_cap(max_entries: usize) -> usize {
    (max_entries / 4 * 3).max(1)
}

/// What a hashbrown table that reports `capacity` allocates for items of
/// `item` bytes: its buckets (a power of two; `capacity` is 7/8 of them
/// from 8 buckets up), an item and a control byte each, and one group of
/// trailing control bytes.
fn table_bytes(capacity: usize, item: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        (capacity + 1).next_power_of_two()
    } else {
        (capacity.saturating_mul(8) / 7).next_power_of_two()
    };
    buckets * (item + 1) + 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Get(u8),
        Put(u8, u8, u8),
        Remove(u8),
        Invalidate(u8),
        Advance(u8),
        Purge(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(|k| Op::Get(k % 40)),
            4 => (any::<u8>(), any::<u8>(), 1u8..20).prop_map(|(k, v, ttl)| Op::Put(k % 40, v, ttl)),
            1 => any::<u8>().prop_map(|k| Op::Remove(k % 40)),
            1 => (0u8..3).prop_map(Op::Invalidate),
            2 => (0u8..10).prop_map(Op::Advance),
            1 => (1u8..10).prop_map(Op::Purge),
        ]
    }

    proptest! {
        /// Model: a map of key -> (value, expiry, group) with no capacity
        /// limit. The cache may have evicted what the model holds (a miss),
        /// but never returns a value the model does not hold, never an
        /// expired value, and respects its limits and accounting. And it
        /// may miss only when it had to evict: while every key ever put
        /// fits its limits (entries and the largest weight each key had),
        /// it returns exactly what the model holds, so a cache that always
        /// misses fails here.
        #[test]
        fn against_a_model(ops in proptest::collection::vec(op(), 1..300), cap in 1usize..30) {
            let mut c: MemoryCache<u8, u8> = MemoryCache::new(MemoryLimits { max_entries: cap, max_weight: 200 });
            let mut model: BTreeMap<u8, (u8, u64, u16)> = BTreeMap::new();
            // Every key ever put, with the largest weight it was put with.
            let mut ever: BTreeMap<u8, u64> = BTreeMap::new();
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Get(k) => {
                        let got = c.get(&k, now).copied();
                        let want = model.get(&k).filter(|(_, exp, _)| *exp > now).map(|(v, _, _)| *v);
                        if let Some(v) = got { prop_assert_eq!(Some(v), want); }
                        let fits = ever.len() <= cap && ever.values().sum::<u64>() <= 200;
                        if fits {
                            prop_assert_eq!(got, want, "a miss with nothing to evict");
                        }
                    }
                    Op::Put(k, v, ttl) => {
                        let group = u16::from(k % 3);
                        let weight = u32::from(k % 7) + 1;
                        c.insert(k, v, weight, now + u64::from(ttl), group);
                        model.insert(k, (v, now + u64::from(ttl), group));
                        let w = ever.entry(k).or_default();
                        *w = (*w).max(u64::from(weight));
                    }
                    Op::Remove(k) => { c.remove(&k); model.remove(&k); }
                    Op::Invalidate(g) => {
                        c.invalidate_group(u16::from(g));
                        model.retain(|_, (_, _, grp)| *grp != u16::from(g));
                    }
                    Op::Advance(d) => now += u64::from(d),
                    Op::Purge(n) => { c.purge_expired(now, n as usize); }
                }
                prop_assert!(c.len() <= cap);
                prop_assert!(c.weight() <= 200);
                let live: u64 = c.map.iter().map(|&i| u64::from(c.slots[i as usize].weight)).sum();
                prop_assert_eq!(live, c.weight());
                let on_probation: u64 = c.map.iter()
                    .filter(|&&i| c.slots[i as usize].state == SMALL)
                    .map(|&i| u64::from(c.slots[i as usize].weight)).sum();
                prop_assert_eq!(on_probation, c.small_weight);
                prop_assert_eq!(c.map.len(), c.len());
            }
        }
    }

    /// On a skewed trace where an LRU of the same size hits, the cache
    /// hits at least as often (a reference the eviction policy must beat,
    /// not merely a model it must not contradict).
    #[test]
    fn hits_at_least_as_often_as_a_reference_lru_on_a_skewed_trace() {
        // A reference LRU: a recency list over a map, the simplest correct one.
        fn lru_hits(trace: &[u64], cap: usize) -> usize {
            let mut order: VecDeque<u64> = VecDeque::new();
            let mut hits = 0;
            for &k in trace {
                if let Some(pos) = order.iter().position(|&x| x == k) {
                    hits += 1;
                    order.remove(pos);
                } else if order.len() == cap {
                    order.pop_back();
                }
                order.push_front(k);
            }
            hits
        }
        // Skewed keys from a fixed LCG: key = floor(1000 * u^3).
        let mut x: u64 = 7;
        let trace: Vec<u64> = (0..30_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                (1000.0 * u * u * u) as u64
            })
            .collect();
        let cap = 50;
        let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(cap));
        let mut hits = 0;
        for &k in &trace {
            if c.get(&k, 0).is_some() {
                hits += 1;
            } else {
                c.insert(k, k, 1, u64::MAX, 0);
            }
        }
        let reference = lru_hits(&trace, cap);
        assert!(reference > 5_000, "the reference hits: {reference}");
        assert!(
            hits >= reference,
            "{hits} hits, the reference LRU {reference}"
        );
    }

    #[test]
    fn ttl_boundary_is_exact() {
        let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(10));
        c.insert(1, 10, 1, 1000, 0);
        assert_eq!(c.get(&1, 999), Some(&10));
        assert_eq!(c.get(&1, 1000), None, "expired at its expiry instant");
        assert!(c.is_empty());
    }

    #[test]
    fn scan_does_not_flush_the_working_set() {
        let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(100));
        for round in 0..5 {
            // The working set is read several times between scans.
            for _ in 0..3 {
                for k in 0..50 {
                    if c.get(&k, 0).is_none() {
                        c.insert(k, k, 1, u64::MAX, 0);
                    }
                }
            }
            // A one-off scan of 1,000 keys.
            for k in 10_000 + round * 1000..11_000 + round * 1000 {
                c.insert(k, k, 1, u64::MAX, 0);
            }
        }
        let hot = (0..50).filter(|k| c.get(k, 0).is_some()).count();
        assert!(hot >= 45, "{hot} of 50 hot keys survived");
    }

    #[test]
    fn byte_budget_evicts_and_oversized_is_refused() {
        let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits {
            max_entries: 100,
            max_weight: 1000,
        });
        for k in 0..20 {
            c.insert(k, k, 100, u64::MAX, 0);
        }
        assert!(c.weight() <= 1000);
        c.insert(99, 0, 5000, u64::MAX, 0);
        assert_eq!(c.get(&99, 0), None);
    }

    #[test]
    fn incremental_purge_removes_expired_in_bounded_steps() {
        let mut c: MemoryCache<u64, u64> = MemoryCache::new(MemoryLimits::entries(1000));
        for k in 0..1000 {
            c.insert(k, k, 1, if k % 2 == 0 { 10 } else { u64::MAX }, 0);
        }
        let mut removed = 0;
        for _ in 0..10 {
            let n = c.purge_expired(20, 100);
            assert!(n <= 100);
            removed += n;
        }
        assert_eq!(removed, 500);
        assert_eq!(c.len(), 500);
    }
}
