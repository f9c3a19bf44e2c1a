//! One test per fixed bug of pdc-sync, named after the bug.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pdc_clock::Instant;
use pdc_codec::Codec;
use pdc_sync::{
    ItemResult, OutboxItem, Priority, PushRequest, PushResponse, StreamKey, SyncConfig, SyncEvent,
    SyncMachine, TransportError,
};
use rand::SeedableRng;

fn item(id: u64, len: usize) -> OutboxItem {
    OutboxItem {
        local_id: id,
        stream: StreamKey(id % 3),
        priority: Priority::High,
        kind: 1,
        created_at_ms: 1,
        payload: vec![1; len],
    }
}

fn machine() -> SyncMachine {
    let mut c = SyncConfig::new("till-h".parse().unwrap());
    c.linger = Duration::ZERO;
    c.reconnect_jitter = Duration::ZERO;
    SyncMachine::new(c, Box::new(rand_chacha::ChaCha8Rng::seed_from_u64(9)))
}

/// Runs the machine for `secs` virtual seconds against `server`; returns
/// the events and the ids the server applied.
fn run(
    m: &mut SyncMachine,
    now: &mut Instant,
    secs: u64,
    mut server: impl FnMut(&PushRequest) -> Result<PushResponse, TransportError>,
) -> (Vec<SyncEvent>, Vec<u64>) {
    let codec = Codec::new();
    let end = *now + Duration::from_secs(secs);
    let (mut events, mut applied) = (Vec::new(), Vec::new());
    while *now < end {
        while let Some(b) = m.poll_transmit(*now) {
            let req: PushRequest = codec.decode(&b.request).unwrap();
            match server(&req) {
                Ok(resp) => {
                    for (i, r) in req.items.iter().zip(&resp.results) {
                        if matches!(r, ItemResult::Applied { .. }) {
                            applied.push(i.local_id);
                        }
                    }
                    m.handle_response(b.id, resp, *now).unwrap()
                }
                Err(e) => m.handle_error(b.id, e, *now).unwrap(),
            }
        }
        events.extend(std::iter::from_fn(|| m.poll_event()));
        let next = m.poll_timeout().unwrap_or(end).min(end);
        *now = next.max(*now + Duration::from_millis(1));
        m.handle_timeout(*now);
    }
    (events, applied)
}

fn ok(req: &PushRequest) -> Result<PushResponse, TransportError> {
    Ok(PushResponse {
        results: req
            .items
            .iter()
            .map(|i| ItemResult::Applied {
                server_seq: i.local_id,
            })
            .collect(),
        retry_after_ms: None,
    })
}

/// Issue 14, defect 3: any whole-request 4xx (a proxy's 404, a schema
/// mismatch after an upgrade) split the batch down to single items and
/// dead-lettered each: the whole queue became dead letters. Now the
/// machine halts, dead-letters nothing, probes with one item now and then,
/// and resumes when a probe is accepted.
#[test]
fn a_whole_request_4xx_dead_letters_every_sale() {
    let mut m = machine();
    let mut now = Instant::ZERO;
    for id in 1..=30 {
        m.enqueue(item(id, 20), now).unwrap();
    }
    let (events, _) = run(&mut m, &mut now, 600, |_| {
        Err(TransportError::Client {
            status: 404,
            message: "no such route (a proxy)".into(),
        })
    });
    let dead = events
        .iter()
        .filter(|e| matches!(e, SyncEvent::DeadLettered { .. }))
        .count();
    assert_eq!(dead, 0, "nothing dead-lettered");
    assert_eq!(m.len(), 30);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SyncEvent::Halted { reason } if reason.contains("404"))),
        "the UI hears of the halt"
    );
    assert!(m.health(now).halted.is_some());
    // The cause goes away: the next probe is accepted and everything flows.
    let (events, applied) = run(&mut m, &mut now, 600, ok);
    assert!(events.iter().any(|e| matches!(e, SyncEvent::Resumed)));
    assert_eq!(applied.len(), 30);
    assert!(m.health(now).halted.is_none());
    // An operator can resume at once too.
    m.enqueue(item(31, 20), now).unwrap();
    run(&mut m, &mut now, 5, |_| {
        Err(TransportError::Client {
            status: 400,
            message: "schema".into(),
        })
    });
    assert!(m.health(now).halted.is_some());
    m.resume(now);
    let (_, applied) = run(&mut m, &mut now, 5, ok);
    assert_eq!(applied, vec![31]);
}

/// Issue 14, defect 3 (413): a batch refused as too large is halved; a
/// single item over the server's limit is dead-lettered with the limit in
/// the reason, and the rest is delivered.
#[test]
fn an_item_over_the_servers_limit_dead_letters_the_queue() {
    let mut m = machine();
    let mut now = Instant::ZERO;
    for id in 1..=20 {
        m.enqueue(item(id, if id == 7 { 3_000 } else { 20 }), now)
            .unwrap();
    }
    let (events, applied) = run(&mut m, &mut now, 600, |req| {
        if req.items.iter().any(|i| i.payload.len() > 1_000) {
            Err(TransportError::Client {
                status: 413,
                message: "item payload of 3000 bytes, at most 1000".into(),
            })
        } else {
            ok(req)
        }
    });
    let dead: Vec<(u64, &str, &str)> = events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::DeadLettered {
                item,
                code,
                message,
            } => Some((item.local_id, code.as_str(), message.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1), (7, "item_too_large"));
    assert!(dead[0].2.contains("1000"), "{dead:?}");
    assert_eq!(applied.len(), 19);
    assert!(m.health(now).halted.is_none());
}

/// Issue 18: a terminal already holding a dataset's version got an (empty)
/// snapshot instead of an empty delta whenever the snapshot encoded a byte
/// smaller — e.g. an empty dataset — so "nothing changed" never read as
/// such. An up-to-date terminal always gets the empty delta.
#[test]
fn an_up_to_date_terminal_is_sent_a_snapshot() {
    use pdc_sync::{DatasetChange, DatasetState, ServerDataset};
    let mut empty = ServerDataset::new("config", 100);
    let mut one = ServerDataset::new("products", 100);
    one.upsert(1, b"espresso".to_vec());
    for (name, ds) in [("config", &mut empty), ("products", &mut one)] {
        let first = ds.answer(&DatasetState {
            dataset: name.into(),
            version: None,
            buckets: vec![],
        });
        let again = ds.answer(&DatasetState {
            dataset: name.into(),
            version: Some(first.version),
            buckets: vec![],
        });
        assert!(
            matches!(&again.change, DatasetChange::Delta { upserts, deletes }
                if upserts.is_empty() && deletes.is_empty()),
            "{name}: {:?}",
            again.change
        );
    }
}
