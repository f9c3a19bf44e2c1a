//! The test suite every [`SyncTransport`] must pass with a server behind
//! it: run against [`crate::LoopbackTransport`] here and against pdc-core's
//! HTTP transport with pdc-server in pdc-server's tests. The server must
//! accept items of kind 70 from `terminal_id` and serve no dataset named
//! `conformance-none`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pdc_codec::{Codec, TerminalId};

use crate::protocol::{
    DatasetState, ItemResult, OutboxItem, Priority, PullRequest, PullResponse, PushRequest,
    PushResponse, StreamKey, PROTOCOL_VERSION,
};
use crate::{SyncTransport, TransportError};

fn item(local_id: u64) -> OutboxItem {
    OutboxItem {
        local_id,
        stream: StreamKey(1),
        priority: Priority::High,
        kind: 70,
        created_at_ms: 1_764_000_000_000,
        payload: local_id.to_le_bytes().to_vec(),
    }
}

/// Runs every check through `transport` as `terminal_id`, using local ids
/// from `first_id` (a few hundred of them).
pub async fn run<T: SyncTransport>(transport: &T, terminal_id: &str, first_id: u64) {
    let terminal_id = TerminalId::new(terminal_id).expect("the suite needs a valid terminal id");
    let codec = Codec::new();
    transport.ping().await.expect("ping");

    // A push is answered item by item, in order; a resend with the same
    // sequences as duplicates.
    let push = |ids: std::ops::Range<u64>| PushRequest {
        schema: PROTOCOL_VERSION,
        terminal_id: terminal_id.clone(),
        store_id: crate::StoreId([7; 16]),
        batch_id: ids.start,
        items: ids.map(item).collect(),
    };
    let send = |req: PushRequest| {
        let body = codec.encode(&req).unwrap();
        async move {
            let bytes = transport.push(body).await.expect("push");
            Codec::new()
                .decode::<PushResponse>(&bytes)
                .expect("push response")
        }
    };
    let first = send(push(first_id..first_id + 20)).await;
    assert_eq!(first.results.len(), 20);
    let seqs: Vec<u64> = first
        .results
        .iter()
        .map(|r| match r {
            ItemResult::Applied { server_seq } => *server_seq,
            other => panic!("expected applied, got {other:?}"),
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let again = send(push(first_id..first_id + 20)).await;
    for (r, s) in again.results.iter().zip(&seqs) {
        assert_eq!(*r, ItemResult::Duplicate { server_seq: *s });
    }

    // A resend whose payload differs is a conflict, never a duplicate.
    let mut changed = push(first_id..first_id + 2);
    changed.items[1].payload.push(0xff);
    let r = send(changed).await;
    assert_eq!(
        r.results[0],
        ItemResult::Duplicate {
            server_seq: seqs[0]
        }
    );
    assert!(
        matches!(r.results[1], ItemResult::Conflict { .. }),
        "changed payload: {:?}",
        r.results[1]
    );

    // The same local ids from another store of the terminal (a replaced
    // store) are new items.
    let mut other = push(first_id..first_id + 2);
    other.store_id = crate::StoreId([8; 16]);
    let r = send(other).await;
    assert!(
        r.results
            .iter()
            .all(|r| matches!(r, ItemResult::Applied { .. })),
        "another store: {:?}",
        r.results
    );

    // Bytes that are not a request are refused as the client's fault,
    // never retried as a server failure.
    match transport.push(b"not a frame".to_vec()).await {
        Err(TransportError::Client { status, .. }) => assert_eq!(status, 400),
        other => panic!("garbage push: {other:?}"),
    }

    // A pull of an unknown dataset is an empty answer, not an error.
    let pull = PullRequest {
        schema: crate::BASE_SCHEMA,
        terminal_id: terminal_id.clone(),
        datasets: vec![DatasetState {
            dataset: "conformance-none".into(),
            version: None,
            buckets: vec![],
        }],
    };
    let bytes = transport
        .pull(codec.encode(&pull).unwrap())
        .await
        .expect("pull");
    let answer: PullResponse = codec.decode(&bytes).expect("pull response");
    assert!(answer.datasets.is_empty(), "{answer:?}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_loopback_transport_passes() {
        let t = crate::LoopbackTransport::new();
        pollster::block_on(super::run(&t, "till-c", 1));
    }
}
