//! The outbox queue: which pending item goes next.
//!
//! * strict priority between classes, FIFO (local-id order) within a class;
//! * **per-stream order**: only the earliest pending item of a stream (its
//!   head) is eligible, and a stream with an item in flight in another batch
//!   waits; inside one batch, a stream's next item may ride right behind its
//!   head, because the server applies a batch in order;
//! * **priority inheritance**: a stream is scheduled at the highest class of
//!   any item it holds, so an urgent item never waits behind a lower class
//!   for longer than its own stream's earlier items take;
//! * **aging**: a head that has waited longer than `aging` per class level
//!   below Critical is served before strict priority, so Low never starves.

use std::collections::BTreeSet;
use std::time::Duration;

// foldhash: the keys are the till's own local ids and stream keys, and the
// queue hashes several times per item; SipHash's flooding resistance buys
// nothing here and costs a third of a restore.
use foldhash::HashMap;

use pdc_clock::Instant;

use crate::protocol::{ItemRef, Priority, StreamKey};

#[derive(Debug)]
struct Entry {
    item: ItemRef,
    enqueued_at: Instant,
}

/// What a stream has beyond its pending items, kept only while it has any.
#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    /// Items of the stream in flight (in sent batches).
    in_flight: u32,
    /// Blocked behind a quarantined item.
    quarantined: bool,
}

/// The pending items of one terminal, with the scheduling rules above.
///
/// Memory is what scheduling needs and no more, so that a queue of a
/// week's sales stays small: per item, its [`ItemRef`] and enqueue time,
/// its place in its stream, and (for a stream's head) its place among the
/// ready heads; per-stream state only for streams with more than one
/// pending item, items in flight, or a quarantine.
#[derive(Debug)]
pub struct OutboxQueue {
    entries: HashMap<u64, Entry>,
    /// Pending (not in flight) items by stream, in local-id order: a
    /// stream's head is its first.
    members: BTreeSet<(StreamKey, u64)>,
    /// Pending items per class of the streams that hold two or more (a
    /// one-item stream's class is its item's).
    counts: HashMap<StreamKey, [u32; 4]>,
    flags: HashMap<StreamKey, Flags>,
    /// Ready stream heads per effective class: (head local id, stream).
    /// Always what [`OutboxQueue::listing`] says, except for the streams
    /// riding in a batch being built.
    ready: [BTreeSet<(u64, StreamKey)>; 4],
    /// Pending (not in flight) local ids per own class, for health.
    by_class: [BTreeSet<u64>; 4],
    aging: Duration,
}

impl OutboxQueue {
    /// An empty queue; `aging` is the wait per class level after which a
    /// head is served ahead of strict priority.
    pub fn new(aging: Duration) -> Self {
        OutboxQueue {
            entries: HashMap::default(),
            members: BTreeSet::new(),
            counts: HashMap::default(),
            flags: HashMap::default(),
            ready: Default::default(),
            by_class: Default::default(),
            aging,
        }
    }

    /// Number of items held (pending or in flight).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no item is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `local_id` is held.
    pub fn contains(&self, local_id: u64) -> bool {
        self.entries.contains_key(&local_id)
    }

    /// The first pending item of a stream.
    fn head(&self, key: StreamKey) -> Option<u64> {
        self.members
            .range((key, 0)..=(key, u64::MAX))
            .next()
            .map(|&(_, id)| id)
    }

    /// The stream's effective class: the highest of its pending items.
    fn class(&self, key: StreamKey, head: u64) -> usize {
        match self.counts.get(&key) {
            Some(c) => (0..4).rev().find(|&i| c[i] > 0).unwrap_or(0),
            None => self
                .entries
                .get(&head)
                .map_or(0, |e| e.item.priority.index()),
        }
    }

    /// Where the stream's head belongs in `ready`, if it is ready.
    fn listing(&self, key: StreamKey) -> Option<(usize, u64)> {
        let f = self.flags.get(&key).copied().unwrap_or_default();
        if f.in_flight > 0 || f.quarantined {
            return None;
        }
        let head = self.head(key)?;
        Some((self.class(key, head), head))
    }

    fn unlist(&mut self, key: StreamKey) {
        if let Some((class, head)) = self.listing(key) {
            self.ready[class].remove(&(head, key));
        }
    }

    fn relist(&mut self, key: StreamKey) {
        if let Some((class, head)) = self.listing(key) {
            self.ready[class].insert((head, key));
        }
    }

    /// Adds a pending member (listing already removed by the caller).
    fn add_member(&mut self, key: StreamKey, id: u64, class: usize) {
        match self.counts.get_mut(&key) {
            Some(c) => c[class] += 1,
            None => {
                if let Some(other) = self.head(key) {
                    // The stream's second pending item: count its classes.
                    let mut c = [0u32; 4];
                    c[class] += 1;
                    if let Some(e) = self.entries.get(&other) {
                        c[e.item.priority.index()] += 1;
                    }
                    self.counts.insert(key, c);
                }
            }
        }
        self.members.insert((key, id));
        self.by_class[class].insert(id);
    }

    /// Removes a pending member (listing already removed by the caller).
    fn remove_member(&mut self, key: StreamKey, id: u64, class: usize) {
        self.members.remove(&(key, id));
        self.by_class[class].remove(&id);
        if let Some(c) = self.counts.get_mut(&key) {
            c[class] = c[class].saturating_sub(1);
            if c.iter().sum::<u32>() <= 1 {
                self.counts.remove(&key);
            }
        }
    }

    fn set_flags(&mut self, key: StreamKey, f: impl FnOnce(&mut Flags)) {
        let mut flags = self.flags.get(&key).copied().unwrap_or_default();
        f(&mut flags);
        if flags.in_flight == 0 && !flags.quarantined {
            self.flags.remove(&key);
        } else {
            self.flags.insert(key, flags);
        }
    }

    /// Adds an item in its local-id place in its stream; an id already held
    /// is refused (`false`). The queue keeps only what scheduling needs
    /// ([`ItemRef`]): never a payload.
    pub fn push(&mut self, item: ItemRef, now: Instant) -> bool {
        if self.entries.contains_key(&item.local_id) {
            return false;
        }
        let key = item.stream;
        self.unlist(key);
        self.entries.insert(
            item.local_id,
            Entry {
                item,
                enqueued_at: now,
            },
        );
        self.add_member(key, item.local_id, item.priority.index());
        self.relist(key);
        true
    }

    /// Adds many items at once (a restore), each as [`OutboxQueue::push`]
    /// would; ids already held are skipped. Into an empty queue this is a
    /// bulk build from sorted runs, several times faster than one push per
    /// item. Returns how many were added.
    pub fn push_many(&mut self, mut items: Vec<ItemRef>, now: Instant) -> usize {
        if !self.entries.is_empty() {
            return items.into_iter().filter(|&i| self.push(i, now)).count();
        }
        items.sort_unstable_by_key(|i| i.local_id);
        items.dedup_by_key(|i| i.local_id);
        self.entries.reserve(items.len());
        for &item in &items {
            self.entries.insert(
                item.local_id,
                Entry {
                    item,
                    enqueued_at: now,
                },
            );
        }
        let mut by_class: [Vec<u64>; 4] = Default::default();
        for i in &items {
            by_class[i.priority.index()].push(i.local_id);
        }
        for (c, ids) in by_class.into_iter().enumerate() {
            // Already in order: a bulk build.
            self.by_class[c] = ids.into_iter().collect();
        }
        let mut members: Vec<(StreamKey, u64, usize)> = items
            .iter()
            .map(|i| (i.stream, i.local_id, i.priority.index()))
            .collect();
        members.sort_unstable();
        let mut ready: [Vec<(u64, StreamKey)>; 4] = Default::default();
        for run in members.chunk_by(|a, b| a.0 == b.0) {
            let (key, head, _) = run[0];
            let mut c = [0u32; 4];
            for &(_, _, class) in run {
                c[class] += 1;
            }
            let class = (0..4).rev().find(|&i| c[i] > 0).unwrap_or(0);
            if run.len() > 1 {
                self.counts.insert(key, c);
            }
            let f = self.flags.get(&key).copied().unwrap_or_default();
            if f.in_flight == 0 && !f.quarantined {
                ready[class].push((head, key));
            }
        }
        self.members = members.into_iter().map(|(k, id, _)| (k, id)).collect();
        for (c, mut heads) in ready.into_iter().enumerate() {
            heads.sort_unstable();
            self.ready[c] = heads.into_iter().collect();
        }
        items.len()
    }

    /// The next head to serve at `now`, without taking it.
    fn best(&self, now: Instant) -> Option<(usize, u64, StreamKey)> {
        // Aged heads first: the one that overshot its threshold the most.
        let mut aged: Option<(Duration, usize, u64, StreamKey)> = None;
        for class in 0..3 {
            if let Some(&(id, key)) = self.ready[class].first() {
                let waited = self
                    .entries
                    .get(&id)
                    .map_or(Duration::ZERO, |e| now - e.enqueued_at);
                let threshold = self.aging * (3 - class) as u32;
                if waited >= threshold {
                    let over = waited - threshold;
                    if aged.is_none_or(|(o, ..)| over > o) {
                        aged = Some((over, class, id, key));
                    }
                }
            }
        }
        if let Some((_, class, id, key)) = aged {
            return Some((class, id, key));
        }
        (0..4)
            .rev()
            .find_map(|c| self.ready[c].first().map(|&(id, key)| (c, id, key)))
    }

    /// Whether any item could be sent now.
    pub fn has_ready(&self) -> bool {
        self.ready.iter().any(|r| !r.is_empty())
    }

    /// Highest effective class among ready heads.
    pub fn ready_class(&self) -> Option<Priority> {
        (0..4)
            .rev()
            .find(|&c| !self.ready[c].is_empty())
            .and_then(Priority::from_index)
    }

    /// When the oldest ready head was enqueued.
    pub fn oldest_ready(&self) -> Option<Instant> {
        self.ready
            .iter()
            .filter_map(|r| r.first())
            .filter_map(|(id, _)| self.entries.get(id).map(|e| e.enqueued_at))
            .min()
    }

    /// Number of ready heads (an upper bound on nothing; a lower bound on
    /// what one batch can take).
    pub fn ready_len(&self) -> usize {
        self.ready.iter().map(BTreeSet::len).sum()
    }

    /// Takes up to `max_items` items whose encoded sizes add up to at most
    /// `max_bytes` (one item is always taken if any is ready, whatever its
    /// size, so that an item larger than the budget still goes alone), in
    /// scheduling order, and marks them in flight.
    pub fn take_batch(&mut self, now: Instant, max_items: usize, max_bytes: usize) -> Vec<ItemRef> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        // Streams taken in this batch: their next item may follow, listed
        // here by hand (the stream is in flight, so not listed otherwise).
        let mut riding: HashMap<StreamKey, (usize, u64)> = HashMap::default();
        while out.len() < max_items {
            let Some((class, id, key)) = self.best(now) else {
                break;
            };
            let Some(entry) = self.entries.get(&id) else {
                break;
            };
            let item = entry.item;
            let size = item.size as usize;
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            self.ready[class].remove(&(id, key));
            riding.remove(&key);
            self.remove_member(key, id, item.priority.index());
            self.set_flags(key, |f| f.in_flight += 1);
            // Let the stream's next item be considered for this batch.
            if let Some(next) = self.head(key) {
                let c = self.class(key, next);
                self.ready[c].insert((next, key));
                riding.insert(key, (c, next));
            }
            out.push(item);
        }
        // Streams with items in this batch wait for its outcome.
        for (key, (c, next)) in riding {
            self.ready[c].remove(&(next, key));
        }
        out
    }

    /// The outcome of an in-flight item: `done` removes it; otherwise it
    /// returns to its place in its stream.
    pub fn settle(&mut self, local_id: u64, done: bool) -> Option<ItemRef> {
        let item = self.entries.get(&local_id)?.item;
        let key = item.stream;
        self.unlist(key);
        if done {
            self.entries.remove(&local_id);
            // An item settled while pending (not expected) leaves its stream too.
            if self.members.contains(&(key, local_id)) {
                self.remove_member(key, local_id, item.priority.index());
            } else {
                self.set_flags(key, |f| f.in_flight = f.in_flight.saturating_sub(1));
            }
            self.relist(key);
            Some(item)
        } else {
            if !self.members.contains(&(key, local_id)) {
                self.set_flags(key, |f| f.in_flight = f.in_flight.saturating_sub(1));
                self.add_member(key, local_id, item.priority.index());
            }
            self.relist(key);
            None
        }
    }

    /// Blocks or unblocks a stream behind a quarantined item.
    pub fn set_quarantined(&mut self, stream: StreamKey, quarantined: bool) {
        self.unlist(stream);
        self.set_flags(stream, |f| f.quarantined = quarantined);
        self.relist(stream);
    }

    /// The held item with this id.
    pub fn get(&self, local_id: u64) -> Option<ItemRef> {
        self.entries.get(&local_id).map(|e| e.item)
    }

    /// Pending (not in flight) items per class (index = `Priority::index`)
    /// and the age of the earliest (lowest local id) of them.
    pub fn depth_and_age(&self, now: Instant) -> [(usize, Option<Duration>); 4] {
        let mut out = [(0, None); 4];
        for (c, set) in self.by_class.iter().enumerate() {
            let oldest = set
                .first()
                .and_then(|id| self.entries.get(id))
                .map(|e| now - e.enqueued_at);
            out[c] = (set.len(), oldest);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn item(id: u64, stream: u64, p: Priority) -> ItemRef {
        sized(id, stream, p, 20)
    }

    fn sized(id: u64, stream: u64, p: Priority, size: u32) -> ItemRef {
        ItemRef {
            local_id: id,
            stream: StreamKey(stream),
            priority: p,
            size,
        }
    }

    #[test]
    fn a_batch_fills_with_urgent_items_when_only_they_wait() {
        let mut q = OutboxQueue::new(Duration::from_secs(30));
        for i in 1..=60 {
            q.push(item(i, i, Priority::Critical), Instant::ZERO);
        }
        let b = q.take_batch(Instant::ZERO, 50, 1 << 20);
        assert_eq!(b.len(), 50, "no 30% cap");
    }

    #[test]
    fn later_item_of_a_stream_rides_behind_its_head_never_before() {
        let mut q = OutboxQueue::new(Duration::from_secs(30));
        q.push(item(1, 7, Priority::Low), Instant::ZERO);
        q.push(item(2, 8, Priority::High), Instant::ZERO);
        q.push(item(3, 7, Priority::Critical), Instant::ZERO);
        let ids: Vec<u64> = q
            .take_batch(Instant::ZERO, 10, 1 << 20)
            .iter()
            .map(|i| i.local_id)
            .collect();
        // Stream 7 inherits Critical: its Low head goes first, then its payment.
        assert_eq!(ids, vec![1, 3, 2]);
    }

    #[test]
    fn a_stream_in_flight_waits_for_the_outcome() {
        let mut q = OutboxQueue::new(Duration::from_secs(30));
        q.push(item(1, 7, Priority::High), Instant::ZERO);
        q.push(item(2, 7, Priority::High), Instant::ZERO);
        let first = q.take_batch(Instant::ZERO, 1, 1 << 20);
        assert_eq!(first[0].local_id, 1);
        assert!(q.take_batch(Instant::ZERO, 10, 1 << 20).is_empty());
        q.settle(1, false);
        let again = q.take_batch(Instant::ZERO, 10, 1 << 20);
        assert_eq!(
            again.iter().map(|i| i.local_id).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn aging_serves_a_starved_low_item() {
        let mut q = OutboxQueue::new(Duration::from_secs(10));
        q.push(item(1, 1, Priority::Low), Instant::ZERO);
        let mut served_low_at = None;
        for sec in 0..100u64 {
            let now = Instant::from_millis(sec * 1000);
            let id = sec + 2;
            q.push(item(id, id, Priority::Critical), now);
            let b = q.take_batch(now, 1, 1 << 20);
            for i in &b {
                q.settle(i.local_id, true);
                if i.local_id == 1 {
                    served_low_at = Some(sec);
                }
            }
            if served_low_at.is_some() {
                break;
            }
        }
        assert_eq!(served_low_at, Some(30), "Low is 3 levels below Critical");
    }

    #[test]
    fn byte_budget_is_respected_but_a_large_item_still_goes_alone() {
        let mut q = OutboxQueue::new(Duration::from_secs(30));
        q.push(sized(1, 1, Priority::High, 700), Instant::ZERO);
        q.push(sized(2, 2, Priority::High, 400), Instant::ZERO);
        assert_eq!(q.take_batch(Instant::ZERO, 10, 500).len(), 1);
        assert_eq!(q.take_batch(Instant::ZERO, 10, 500).len(), 1);
    }

    proptest! {
        /// A bulk restore builds the same queue as one push per item.
        #[test]
        fn push_many_is_push_in_bulk(
            items in proptest::collection::vec((0u64..8, 0u8..4), 0..60),
            quarantined in proptest::option::of(0u64..8),
            takes in proptest::collection::vec(1usize..6, 0..20),
        ) {
            let prios = [Priority::Low, Priority::Normal, Priority::High, Priority::Critical];
            let refs: Vec<ItemRef> = items.iter().enumerate()
                .map(|(i, &(s, p))| item(i as u64 + 1, s, prios[p as usize])).collect();
            let mut one = OutboxQueue::new(Duration::from_secs(1_000_000));
            let mut bulk = OutboxQueue::new(Duration::from_secs(1_000_000));
            if let Some(q) = quarantined {
                one.set_quarantined(StreamKey(q), true);
                bulk.set_quarantined(StreamKey(q), true);
            }
            for r in refs.iter().rev() {
                one.push(*r, Instant::ZERO);
            }
            prop_assert_eq!(bulk.push_many(refs.clone(), Instant::ZERO), refs.len());
            prop_assert_eq!(bulk.push_many(refs.clone(), Instant::ZERO), 0, "held ids skipped");
            prop_assert_eq!(one.depth_and_age(Instant::ZERO), bulk.depth_and_age(Instant::ZERO));
            for max in takes {
                let a = one.take_batch(Instant::ZERO, max, 1 << 20);
                let b = bulk.take_batch(Instant::ZERO, max, 1 << 20);
                prop_assert_eq!(&a, &b);
                for (i, r) in a.iter().enumerate() {
                    one.settle(r.local_id, i % 2 == 0);
                    bulk.settle(r.local_id, i % 2 == 0);
                }
                prop_assert_eq!(one.len(), bulk.len());
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push { stream: u64, p: u8 },
        Take { max: usize },
        Settle { pick: usize, done: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..6, 0u8..4).prop_map(|(stream, p)| Op::Push { stream, p }),
            2 => (1usize..8).prop_map(|max| Op::Take { max }),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, done)| Op::Settle { pick, done }),
        ]
    }

    proptest! {
        /// Against a model: a batch never holds an item of a stream before an
        /// earlier pending item of that stream, never an item of a stream in
        /// flight elsewhere, takes the highest-priority head first (no aging
        /// here), and settled items are exactly the ones removed.
        #[test]
        fn model_order_and_accounting(ops in proptest::collection::vec(op(), 1..200)) {
            let mut q = OutboxQueue::new(Duration::from_secs(1_000_000));
            let mut model: BTreeMap<u64, (u64, Priority)> = BTreeMap::new();
            let mut in_flight: Vec<u64> = Vec::new();
            let mut next = 1u64;
            let prios = [Priority::Low, Priority::Normal, Priority::High, Priority::Critical];
            for op in ops {
                match op {
                    Op::Push { stream, p } => {
                        prop_assert!(q.push(item(next, stream, prios[p as usize]), Instant::ZERO));
                        model.insert(next, (stream, prios[p as usize]));
                        next += 1;
                    }
                    Op::Take { max } => {
                        let batch = q.take_batch(Instant::ZERO, max, 1 << 20);
                        prop_assert!(batch.len() <= max);
                        let busy: BTreeSet<u64> = in_flight.iter().map(|id| model[id].0).collect();
                        let mut seen_in_batch: BTreeSet<u64> = BTreeSet::new();
                        for it in &batch {
                            let stream = it.stream.0;
                            prop_assert!(!busy.contains(&stream), "stream in flight elsewhere");
                            // Every earlier item of the stream is in flight in this batch.
                            for (&id, &(s, _)) in model.range(..it.local_id) {
                                if s == stream {
                                    prop_assert!(seen_in_batch.contains(&id), "overtook {} with {}", id, it.local_id);
                                }
                            }
                            seen_in_batch.insert(it.local_id);
                        }
                        // If something was ready and nothing taken, that is a bug.
                        let ready_streams: BTreeSet<u64> = model.iter()
                            .filter(|(id, _)| !in_flight.contains(id))
                            .map(|(_, (s, _))| *s)
                            .filter(|s| !busy.contains(s)).collect();
                        prop_assert_eq!(batch.is_empty(), ready_streams.is_empty() || max == 0);
                        if let Some(first) = batch.first() {
                            // First item: its stream's class is the highest among ready streams.
                            let class_of = |s: u64| model.iter().filter(|(id, (x, _))| *x == s && !in_flight.contains(id)).map(|(_, (_, p))| *p).max();
                            let best = ready_streams.iter().filter_map(|&s| class_of(s)).max();
                            prop_assert_eq!(class_of(first.stream.0), best);
                        }
                        in_flight.extend(batch.iter().map(|i| i.local_id));
                    }
                    Op::Settle { pick, done } => {
                        if in_flight.is_empty() { continue; }
                        // Settle a whole batch's worth in reverse of a random
                        // start so that retries return out of order too.
                        let id = in_flight.remove(pick % in_flight.len());
                        let stream = model[&id].0;
                        // Only settle when no later item of its stream is in
                        // flight (the machine settles whole batches).
                        if in_flight.iter().any(|x| model[x].0 == stream) {
                            in_flight.push(id);
                            continue;
                        }
                        let removed = q.settle(id, done);
                        prop_assert_eq!(removed.is_some(), done);
                        if done { model.remove(&id); }
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
