//! The wire protocol's messages (see `docs/PROTOCOL.md`).
//!
//! Plain serde types: encoded in pdc-codec frames (`application/x-pdc`) or
//! as JSON (`application/json`) with the same field names.

use pdc_codec::{Record, RecordKind};
use serde::{Deserialize, Serialize};

/// Version of the protocol's message schemas this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Urgency class of an outbox item.
///
/// Ordered: `Critical > High > Normal > Low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Analytics, logs.
    Low = 0,
    /// Carts, metadata.
    Normal = 1,
    /// Transactions and orders.
    High = 2,
    /// Payment reversals, security events.
    Critical = 3,
}

impl Priority {
    /// All classes from most to least urgent.
    pub const ALL_DESC: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// Index 0 (Low) to 3 (Critical).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Items of one stream reach the server in local-id order. Hosts derive it
/// from their own key (e.g. an order id); two keys that collide only add an
/// ordering constraint, never remove one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamKey(pub u64);

/// One unit of work for the server: a sale, a refund, a log line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Unique per terminal and increasing; with the terminal id, the
    /// idempotency key the server dedups on.
    pub local_id: u64,
    /// Ordering stream.
    pub stream: StreamKey,
    /// Urgency class.
    pub priority: Priority,
    /// Application record kind of the payload.
    pub kind: u16,
    /// Wall time the item was created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// The record, usually a pdc-codec frame.
    pub payload: Vec<u8>,
}

/// `POST /v1/push` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Protocol schema version.
    pub schema: u8,
    /// The sending terminal.
    pub terminal_id: String,
    /// Batch id, unique per terminal session (for logs and tracing).
    pub batch_id: u64,
    /// The items, in the order the server must apply them.
    pub items: Vec<OutboxItem>,
}

impl Record for PushRequest {
    const KIND: RecordKind = RecordKind(16);
    const SCHEMA: u8 = PROTOCOL_VERSION;
}

/// What the server did with one item.
///
/// Externally tagged (`{"applied":{"server_seq":1}}`, `"retry_later"`):
/// postcard, which is not self-describing, cannot read internally tagged
/// enums.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemResult {
    /// Applied now, at this server sequence.
    Applied {
        /// Server-assigned sequence.
        server_seq: u64,
    },
    /// Applied before; the original sequence.
    Duplicate {
        /// Sequence of the first application.
        server_seq: u64,
    },
    /// Refused for good by a business rule.
    Rejected {
        /// Machine-readable reason.
        code: String,
        /// Human-readable reason.
        message: String,
    },
    /// Not applied; send again later.
    RetryLater,
}

/// `POST /v1/push` answer: one result per item, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    /// One per request item, same order.
    pub results: Vec<ItemResult>,
    /// Minimum wait before the next push, when the server asks for one.
    pub retry_after_ms: Option<u64>,
}

impl Record for PushResponse {
    const KIND: RecordKind = RecordKind(17);
    const SCHEMA: u8 = PROTOCOL_VERSION;
}

/// 16-byte record digest: SHA-256 truncated (the study's ADR-002).
pub type Digest16 = [u8; 16];

/// What a terminal holds of one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetState {
    /// Dataset name (`products`, `users`, `config`).
    pub dataset: String,
    /// Last server version fully applied, if any.
    pub version: Option<u64>,
    /// Per-bucket digests, sent when there is no common version
    /// (see [`crate::delta::bucket_digests`]); empty otherwise.
    pub buckets: Vec<Digest16>,
}

/// `POST /v1/pull` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Protocol schema version.
    pub schema: u8,
    /// The asking terminal.
    pub terminal_id: String,
    /// What it holds.
    pub datasets: Vec<DatasetState>,
}

impl Record for PullRequest {
    const KIND: RecordKind = RecordKind(18);
    const SCHEMA: u8 = PROTOCOL_VERSION;
}

/// One record of reference data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// Record id within the dataset.
    pub id: u64,
    /// Encoded record.
    pub body: Vec<u8>,
}

/// How a dataset changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetChange {
    /// Apply these on top of what the terminal holds.
    Delta {
        /// Records added or changed.
        upserts: Vec<DatasetRecord>,
        /// Ids removed.
        deletes: Vec<u64>,
    },
    /// Replace the listed buckets' contents entirely.
    Buckets {
        /// Bucket numbers replaced.
        buckets: Vec<u16>,
        /// Their full contents.
        records: Vec<DatasetRecord>,
    },
    /// Replace the whole dataset.
    Snapshot {
        /// All records.
        records: Vec<DatasetRecord>,
    },
}

/// One dataset's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetDelta {
    /// Dataset name.
    pub dataset: String,
    /// Server version after applying this.
    pub version: u64,
    /// Digest of the whole dataset at that version, to check the result.
    pub digest: Digest16,
    /// The change.
    pub change: DatasetChange,
}

/// `POST /v1/pull` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse {
    /// One per requested dataset that changed.
    pub datasets: Vec<DatasetDelta>,
}

impl Record for PullResponse {
    const KIND: RecordKind = RecordKind(19);
    const SCHEMA: u8 = PROTOCOL_VERSION;
}

/// `POST /v1/metrics` body: a terminal's monitor report (a pdc-monitor
/// frame, opaque here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// The reporting terminal.
    pub terminal_id: String,
    /// Wall time of the report.
    pub at_ms: u64,
    /// The encoded report.
    pub report: Vec<u8>,
}

impl Record for MetricsReport {
    const KIND: RecordKind = RecordKind(20);
    const SCHEMA: u8 = PROTOCOL_VERSION;
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdc_codec::Codec;

    fn push() -> PushRequest {
        PushRequest {
            schema: PROTOCOL_VERSION,
            terminal_id: "till-7".into(),
            batch_id: 42,
            items: vec![OutboxItem {
                local_id: 1001,
                stream: StreamKey(5001),
                priority: Priority::High,
                kind: 2,
                created_at_ms: 1_704_096_061_000,
                payload: vec![1, 2, 3],
            }],
        }
    }

    #[test]
    fn messages_round_trip_through_json_and_frames() {
        let codec = Codec::new();
        let req = push();
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains("\"priority\":\"High\""), "{json}");
        assert_eq!(serde_json::from_str::<PushRequest>(&json).unwrap(), req);
        assert_eq!(
            codec
                .decode::<PushRequest>(&codec.encode(&req).unwrap())
                .unwrap(),
            req
        );

        let resp = PushResponse {
            results: vec![
                ItemResult::Applied { server_seq: 1 },
                ItemResult::Duplicate { server_seq: 0 },
                ItemResult::Rejected {
                    code: "x".into(),
                    message: "y".into(),
                },
                ItemResult::RetryLater,
            ],
            retry_after_ms: Some(500),
        };
        let json = serde_json::to_string(&resp).unwrap();
        assert!(
            json.contains("{\"applied\":{\"server_seq\":1}}") && json.contains("\"retry_later\""),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<PushResponse>(&json).unwrap(), resp);
        assert_eq!(
            codec
                .decode::<PushResponse>(&codec.encode(&resp).unwrap())
                .unwrap(),
            resp
        );

        let pull = PullResponse {
            datasets: vec![DatasetDelta {
                dataset: "products".into(),
                version: 3,
                digest: [7; 16],
                change: DatasetChange::Delta {
                    upserts: vec![DatasetRecord {
                        id: 1,
                        body: vec![9],
                    }],
                    deletes: vec![2],
                },
            }],
        };
        let json = serde_json::to_string(&pull).unwrap();
        assert!(json.contains("\"change\":{\"delta\":"), "{json}");
        assert_eq!(serde_json::from_str::<PullResponse>(&json).unwrap(), pull);
        assert_eq!(
            codec
                .decode::<PullResponse>(&codec.encode(&pull).unwrap())
                .unwrap(),
            pull
        );
    }

    #[test]
    fn priorities_order_as_documented() {
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
    }
}
