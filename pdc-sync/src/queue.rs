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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use pdc_clock::Instant;

use crate::protocol::{ItemRef, Priority, StreamKey};

#[derive(Debug)]
struct Entry {
    item: ItemRef,
    enqueued_at: Instant,
}

#[derive(Debug, Default)]
struct Stream {
    /// Pending local ids, in order.
    ids: VecDeque<u64>,
    /// Items per class in `ids`.
    class_counts: [u32; 4],
    /// Items of the stream in flight (in sent batches).
    in_flight: u32,
    /// Blocked behind a quarantined item.
    quarantined: bool,
    /// Where the head is listed in `ready`, if it is.
    listed: Option<(usize, u64)>,
}

impl Stream {
    fn class(&self) -> usize {
        (0..4)
            .rev()
            .find(|&c| self.class_counts[c] > 0)
            .unwrap_or(0)
    }
}

/// The pending items of one terminal, with the scheduling rules above.
#[derive(Debug)]
pub struct OutboxQueue {
    entries: HashMap<u64, Entry>,
    streams: HashMap<StreamKey, Stream>,
    /// Ready stream heads per effective class: (head local id, stream).
    ready: [BTreeSet<(u64, StreamKey)>; 4],
    /// All pending (not in flight) local ids per own class, for health.
    by_class: [BTreeMap<u64, Instant>; 4],
    aging: Duration,
}

impl OutboxQueue {
    /// An empty queue; `aging` is the wait per class level after which a
    /// head is served ahead of strict priority.
    pub fn new(aging: Duration) -> Self {
        OutboxQueue {
            entries: HashMap::new(),
            streams: HashMap::new(),
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

    /// Adds an item in its local-id place in its stream; an id already held
    /// is refused (`false`). The queue keeps only what scheduling needs
    /// ([`ItemRef`]): never a payload.
    pub fn push(&mut self, item: ItemRef, now: Instant) -> bool {
        if self.entries.contains_key(&item.local_id) {
            return false;
        }
        let stream = self.streams.entry(item.stream).or_default();
        // Usually the newest id: append. A re-queued item (from quarantine
        // or the dead-letter store) goes back into its place.
        if stream.ids.back().is_none_or(|&last| last < item.local_id) {
            stream.ids.push_back(item.local_id);
        } else {
            let pos = stream.ids.partition_point(|&x| x < item.local_id);
            stream.ids.insert(pos, item.local_id);
        }
        stream.class_counts[item.priority.index()] += 1;
        self.by_class[item.priority.index()].insert(item.local_id, now);
        let key = item.stream;
        self.entries.insert(
            item.local_id,
            Entry {
                item,
                enqueued_at: now,
            },
        );
        self.relist(key);
        true
    }

    /// Re-lists a stream's head in `ready` after anything about it changed.
    fn relist(&mut self, key: StreamKey) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if let Some((class, id)) = stream.listed.take() {
            self.ready[class].remove(&(id, key));
        }
        if stream.in_flight > 0 || stream.quarantined {
            return;
        }
        match stream.ids.front() {
            Some(&head) => {
                let class = stream.class();
                self.ready[class].insert((head, key));
                stream.listed = Some((class, head));
            }
            None => {
                self.streams.remove(&key);
            }
        }
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
            .map(class_priority)
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
        // Streams taken in this batch: their next item may follow.
        let mut riding: Vec<StreamKey> = Vec::new();
        while out.len() < max_items {
            let Some((_, id, key)) = self.best(now) else {
                break;
            };
            let Some(entry) = self.entries.get(&id) else {
                break;
            };
            let size = entry.item.size as usize;
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            let item = entry.item;
            let priority = item.priority.index();
            self.by_class[priority].remove(&id);
            let Some(stream) = self.streams.get_mut(&key) else {
                break;
            };
            if let Some((class, lid)) = stream.listed.take() {
                self.ready[class].remove(&(lid, key));
            }
            stream.ids.pop_front();
            stream.class_counts[priority] -= 1;
            stream.in_flight += 1;
            // Let the stream's next item be considered for this batch.
            if let Some(&next) = stream.ids.front() {
                let class = stream.class();
                self.ready[class].insert((next, key));
                stream.listed = Some((class, next));
                riding.push(key);
            }
            out.push(item);
        }
        // Streams with items in this batch wait for its outcome.
        for key in riding {
            self.relist(key);
        }
        out
    }

    /// The outcome of an in-flight item: `done` removes it; otherwise it
    /// returns to the front of its stream.
    pub fn settle(&mut self, local_id: u64, done: bool) -> Option<ItemRef> {
        let key = self.entries.get(&local_id)?.item.stream;
        if done {
            let entry = self.entries.remove(&local_id)?;
            if let Some(stream) = self.streams.get_mut(&key) {
                stream.in_flight = stream.in_flight.saturating_sub(1);
            }
            self.relist(key);
            Some(entry.item)
        } else {
            let entry = self.entries.get(&local_id)?;
            let class = entry.item.priority.index();
            self.by_class[class].insert(local_id, entry.enqueued_at);
            let stream = self.streams.entry(key).or_default();
            stream.in_flight = stream.in_flight.saturating_sub(1);
            // Items return in their places: keep the stream sorted.
            let pos = stream.ids.partition_point(|&x| x < local_id);
            stream.ids.insert(pos, local_id);
            stream.class_counts[class] += 1;
            self.relist(key);
            None
        }
    }

    /// Blocks or unblocks a stream behind a quarantined item.
    pub fn set_quarantined(&mut self, stream: StreamKey, quarantined: bool) {
        self.streams.entry(stream).or_default().quarantined = quarantined;
        self.relist(stream);
    }

    /// The held item with this id.
    pub fn get(&self, local_id: u64) -> Option<&ItemRef> {
        self.entries.get(&local_id).map(|e| &e.item)
    }

    /// Pending (not in flight) items per class (index = `Priority::index`)
    /// and the age of the oldest.
    pub fn depth_and_age(&self, now: Instant) -> [(usize, Option<Duration>); 4] {
        let mut out = [(0, None); 4];
        for (c, set) in self.by_class.iter().enumerate() {
            out[c] = (set.len(), set.values().min().map(|&t| now - t));
        }
        out
    }
}

fn class_priority(c: usize) -> Priority {
    match c {
        3 => Priority::Critical,
        2 => Priority::High,
        1 => Priority::Normal,
        _ => Priority::Low,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
