//! The machine driven over the async `SyncTransport` seam with the
//! loopback transport, as a host's driver does: push until drained, then
//! pull reference data and apply it.
#![allow(clippy::unwrap_used)]

use pdc_clock::Instant;
use pdc_codec::Codec;
use pdc_sync::{
    LocalDataset, LoopbackTransport, OutboxItem, Priority, PullRequest, PullResponse,
    ServerDataset, StreamKey, SyncConfig, SyncEvent, SyncMachine, SyncTransport,
};
use rand::SeedableRng;

#[test]
fn push_and_pull_through_the_loopback_transport() {
    let transport = LoopbackTransport::new();
    let mut catalogue = ServerDataset::new("products", 100);
    for id in 0..500 {
        catalogue.upsert(id, format!("product {id}").into_bytes());
    }
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .insert("products".into(), catalogue);

    let mut m = SyncMachine::new(
        SyncConfig::new("till-9".parse().unwrap()),
        Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(5)),
    );
    let mut now = Instant::ZERO;
    for id in 1..=120 {
        let item = OutboxItem {
            local_id: id,
            stream: StreamKey(id % 7),
            priority: Priority::High,
            kind: 1,
            created_at_ms: 1_704_067_200_000 + id,
            payload: vec![id as u8; 30],
        };
        m.enqueue(item, now).unwrap();
    }
    let mut acked = 0;
    let mut drained = false;
    while !drained {
        now = m.poll_timeout().unwrap_or(now).max(now);
        while let Some(batch) = m.poll_transmit(now) {
            match pollster::block_on(transport.push(batch.request)) {
                Ok(body) => m.handle_response_bytes(batch.id, &body, now).unwrap(),
                Err(e) => m.handle_error(batch.id, e, now).unwrap(),
            }
        }
        while let Some(ev) = m.poll_event() {
            match ev {
                SyncEvent::Acked { .. } => acked += 1,
                SyncEvent::Drained => drained = true,
                _ => {}
            }
        }
    }
    assert_eq!(acked, 120);
    assert_eq!(transport.server.lock().unwrap().applied_count(), 120);
    assert!(m.health(now).bytes_up > 0 && m.health(now).bytes_down > 0);

    // Pull: first a snapshot, then only the change.
    let codec = Codec::new();
    let mut local = LocalDataset::new("products");
    let pull = |local: &LocalDataset| {
        let req = PullRequest {
            schema: pdc_sync::BASE_SCHEMA,
            terminal_id: "till-9".parse().unwrap(),
            datasets: vec![local.state()],
        };
        let body = pollster::block_on(transport.pull(codec.encode(&req).unwrap())).unwrap();
        (codec.decode::<PullResponse>(&body).unwrap(), body.len())
    };
    let (resp, full_bytes) = pull(&local);
    local.apply(&resp.datasets[0]).unwrap();
    assert_eq!(local.records.len(), 500);
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .get_mut("products")
        .unwrap()
        .upsert(7, b"new price".to_vec());
    let (resp, delta_bytes) = pull(&local);
    local.apply(&resp.datasets[0]).unwrap();
    assert_eq!(local.records[&7], b"new price".to_vec());
    assert!(
        delta_bytes * 20 < full_bytes,
        "{delta_bytes} vs {full_bytes}"
    );
    assert!(pollster::block_on(transport.ping()).is_ok());
}

/// A machine whose store was replaced (same terminal, new store id, local
/// ids from 1 again) gets its items applied, not answered as duplicates;
/// a machine resending a changed payload under a known key gets it
/// dead-lettered as a conflict, never acknowledged.
#[test]
fn store_identity_and_conflicts_through_the_loopback_transport() {
    let transport = LoopbackTransport::new();
    let run = |store: pdc_sync::StoreId, payload: u8| {
        let mut config = SyncConfig::new("till-r".parse().unwrap());
        config.store_id = store;
        config.linger = std::time::Duration::ZERO;
        let mut m = SyncMachine::new(config, Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)));
        let now = Instant::ZERO;
        for id in 1..=3 {
            m.enqueue(
                OutboxItem {
                    local_id: id,
                    stream: StreamKey(1),
                    priority: Priority::High,
                    kind: 1,
                    created_at_ms: 1,
                    payload: vec![payload; 4],
                },
                now,
            )
            .unwrap();
        }
        let mut events = Vec::new();
        for _ in 0..10 {
            while let Some(batch) = m.poll_transmit(now) {
                let body = pollster::block_on(transport.push(batch.request)).unwrap();
                m.handle_response_bytes(batch.id, &body, now).unwrap();
            }
            events.extend(std::iter::from_fn(|| m.poll_event()));
        }
        events
    };
    let acked = |ev: &[SyncEvent], dup: bool| {
        ev.iter()
            .filter(|e| matches!(e, SyncEvent::Acked { duplicate, .. } if *duplicate == dup))
            .count()
    };
    let first = run(pdc_sync::StoreId([1; 16]), 1);
    assert_eq!(acked(&first, false), 3);
    let replaced = run(pdc_sync::StoreId([2; 16]), 2);
    assert_eq!(acked(&replaced, false), 3, "a new store's items are new");
    let conflicting = run(pdc_sync::StoreId([1; 16]), 9);
    assert_eq!(acked(&conflicting, false) + acked(&conflicting, true), 0);
    let dead: Vec<&str> = conflicting
        .iter()
        .filter_map(|e| match e {
            SyncEvent::DeadLettered { code, .. } => Some(code.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(dead, vec!["conflict"; 3]);
    assert_eq!(transport.server.lock().unwrap().applied_count(), 6);
}

/// Integers the server would refuse as a whole request are refused at
/// enqueue, naming the field.
#[test]
fn integers_above_2_63_are_refused_at_enqueue() {
    let mut m = SyncMachine::new(
        SyncConfig::new("till-w".parse().unwrap()),
        Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)),
    );
    let item = OutboxItem {
        local_id: 1,
        stream: StreamKey(u64::MAX),
        priority: Priority::High,
        kind: 1,
        created_at_ms: 1,
        payload: vec![],
    };
    let e = m.enqueue(item.clone(), Instant::ZERO).unwrap_err();
    assert!(e.to_string().contains("stream"), "{e}");
    assert_eq!(m.len(), 0);
    let ok = OutboxItem {
        stream: StreamKey(pdc_sync::MAX_WIRE_INT),
        ..item
    };
    m.enqueue(ok, Instant::ZERO).unwrap();
}

/// `restore` never fails on a stored item: what the machine cannot send
/// comes back with the reason, the rest is restored, and ids stay
/// increasing past the refused one.
#[test]
fn restore_returns_what_it_cannot_send() {
    let mut config = SyncConfig::new("till-s".parse().unwrap());
    config.max_item_bytes = 100;
    let mut m = SyncMachine::new(config, Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(1)));
    let item = |id: u64, len: usize| OutboxItem {
        local_id: id,
        stream: StreamKey(1),
        priority: Priority::High,
        kind: 1,
        created_at_ms: 1,
        payload: vec![0; len],
    };
    let r = m.restore(vec![item(3, 10), item(1, 10), item(2, 500)], Instant::ZERO);
    assert_eq!(r.added, 2);
    assert_eq!(r.refused.len(), 1);
    assert_eq!(r.refused[0].0.local_id, 2);
    assert!(matches!(
        r.refused[0].1,
        pdc_sync::SyncError::ItemTooLarge { .. }
    ));
    assert_eq!(m.len(), 2);
    assert!(
        m.enqueue(item(3, 1), Instant::ZERO).is_err(),
        "ids never repeat"
    );
    m.enqueue(item(4, 1), Instant::ZERO).unwrap();
    // The host's check before saving: the same refusal.
    assert!(m.admissible(&item(9, 500)).is_err());
    assert!(m.admissible(&item(9, 50)).is_ok());
}
