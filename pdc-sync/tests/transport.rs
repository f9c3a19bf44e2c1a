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
        SyncConfig::new("till-9"),
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
            terminal_id: "till-9".into(),
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
