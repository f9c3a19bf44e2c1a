//! The wire protocol's messages (see `docs/PROTOCOL.md`).
//!
//! Plain serde types: encoded in pdc-codec frames (`application/x-pdc`) or
//! as JSON (`application/json`) with the same field names.

use pdc_codec::{Record, RecordKind, TerminalId};
use serde::{Deserialize, Serialize};

/// Version of the push messages' schema this build speaks: 2 adds the
/// store id to [`PushRequest`] and [`ItemResult::Conflict`]. A server
/// still reads version 1 pushes (their store id is [`StoreId::LEGACY`]).
pub const PROTOCOL_VERSION: u8 = 2;

/// Schema of the messages that did not change since version 1 (pull,
/// metrics).
pub const BASE_SCHEMA: u8 = 1;

/// Largest integer the wire accepts in an item's `local_id`, `stream` and
/// `created_at_ms`: 2^63 − 1, what a PostgreSQL `bigint` (and so every
/// ledger) stores losslessly. Larger values are refused, never wrapped.
pub const MAX_WIRE_INT: u64 = i64::MAX as u64;

/// The random 128-bit identity of one terminal store, made in the same
/// atomic step as the store file. With the terminal id and the local id it
/// forms the server's exactly-once key, so a replaced store (whose local
/// ids start at 1 again) is never mistaken for the old one.
///
/// JSON spells it as 32 lowercase hex digits; binary frames as 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    /// The id of a store created before store ids existed (and of version 1
    /// pushes): the server keys its items as it always did, so their
    /// resends stay duplicates. [`StoreId::random`] never returns it.
    pub const LEGACY: StoreId = StoreId([0; 16]);

    /// A fresh random id from the host's randomness (never `LEGACY`).
    pub fn random(rng: &mut dyn rand::RngCore) -> StoreId {
        loop {
            let mut b = [0u8; 16];
            rng.fill_bytes(&mut b);
            if let Some(id) = StoreId::from_random_bytes(b) {
                return id;
            }
        }
    }

    /// The id of 16 random bytes, unless they spell `LEGACY` (then draw
    /// again): for hosts whose randomness is not an `RngCore`.
    pub fn from_random_bytes(bytes: [u8; 16]) -> Option<StoreId> {
        (bytes != StoreId::LEGACY.0).then_some(StoreId(bytes))
    }

    /// The id as a number (big-endian), e.g. for ordered storage keys.
    pub fn as_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// The id of a number written by [`StoreId::as_u128`].
    pub fn from_u128(v: u128) -> StoreId {
        StoreId(v.to_be_bytes())
    }
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for StoreId {
    type Err = String;

    /// Parses 32 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 32 {
            return Err(format!("store id {s:?}: expected 32 hex digits"));
        }
        let mut out = [0u8; 16];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            out[i] = u8::from_str_radix(hex, 16)
                .map_err(|_| format!("store id {s:?}: expected 32 hex digits"))?;
        }
        Ok(StoreId(out))
    }
}

impl Serialize for StoreId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for StoreId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(d).map(StoreId)
        }
    }
}

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

    /// The class of an index written by [`Priority::index`].
    pub fn from_index(index: usize) -> Option<Priority> {
        match index {
            0 => Some(Priority::Low),
            1 => Some(Priority::Normal),
            2 => Some(Priority::High),
            3 => Some(Priority::Critical),
            _ => None,
        }
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

impl OutboxItem {
    /// Encoded size of the item inside a push request (postcard).
    pub fn encoded_size(&self) -> usize {
        fn varint(v: u64) -> usize {
            (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
        }
        varint(self.local_id)
            + varint(self.stream.0)
            + 1
            + varint(u64::from(self.kind))
            + varint(self.created_at_ms)
            + varint(self.payload.len() as u64)
            + self.payload.len()
    }

    /// What the sync machine keeps of this item to schedule it.
    pub fn to_ref(&self) -> ItemRef {
        ItemRef {
            local_id: self.local_id,
            stream: self.stream,
            priority: self.priority,
            // Larger than any configurable item limit when it saturates.
            size: u32::try_from(self.encoded_size()).unwrap_or(u32::MAX),
        }
    }
}

/// What the sync machine keeps of a pending item: what scheduling needs
/// (its id, stream, class and encoded size), never its payload. A host
/// with a durable outbox enqueues these and hands the machine the items
/// when a batch is built ([`crate::SyncMachine::poll_transmit_with`]), so
/// that memory does not grow with the queue. Not sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItemRef {
    /// The item's local id.
    pub local_id: u64,
    /// Its ordering stream.
    pub stream: StreamKey,
    /// Its urgency class.
    pub priority: Priority,
    /// Its encoded size inside a push request ([`OutboxItem::encoded_size`]).
    pub size: u32,
}

/// `POST /v1/push` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Protocol schema version ([`PROTOCOL_VERSION`]; 1 for a request
    /// decoded from a version 1 frame).
    pub schema: u8,
    /// The sending terminal.
    pub terminal_id: TerminalId,
    /// The sending store: with the terminal and the local ids, the
    /// exactly-once key. JSON bodies may leave it out (then
    /// [`StoreId::LEGACY`]).
    #[serde(default)]
    pub store_id: StoreId,
    /// Batch id, unique per terminal session (for logs and tracing).
    pub batch_id: u64,
    /// The items, in the order the server must apply them.
    pub items: Vec<OutboxItem>,
}

impl Record for PushRequest {
    const KIND: RecordKind = RecordKind(16);
    const SCHEMA: u8 = PROTOCOL_VERSION;

    fn take_older(schema: u8, bytes: &[u8]) -> Result<(Self, &[u8]), pdc_codec::CodecError> {
        /// The version 1 layout: no store id.
        #[derive(Deserialize)]
        struct V1 {
            schema: u8,
            terminal_id: TerminalId,
            batch_id: u64,
            items: Vec<OutboxItem>,
        }
        if schema != 1 {
            return Err(pdc_codec::CodecError::UnsupportedSchema {
                kind: Self::KIND,
                schema,
            });
        }
        let (v1, rest): (V1, &[u8]) = postcard::take_from_bytes(bytes)
            .map_err(|e| pdc_codec::CodecError::Malformed(e.to_string()))?;
        Ok((
            PushRequest {
                schema: v1.schema,
                terminal_id: v1.terminal_id,
                store_id: StoreId::LEGACY,
                batch_id: v1.batch_id,
                items: v1.items,
            },
            rest,
        ))
    }
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
    /// Refused for good: by a business rule, or (`code: "storage"`) because
    /// the database could not store this item; the terminal dead-letters it.
    Rejected {
        /// Machine-readable reason.
        code: String,
        /// Human-readable reason.
        message: String,
    },
    /// Not applied; send again later.
    RetryLater,
    /// This key (terminal, store, local id) was recorded with a different
    /// payload: nothing is acknowledged that is not the bytes the ledger
    /// holds. Permanent; the terminal dead-letters the item with the reason.
    Conflict {
        /// What differs.
        message: String,
    },
}

/// `GET /v1/ping` answer (JSON, `200`): the server's request limits, so
/// that a terminal refuses an item the server would refuse before it
/// saves it. A server that answers `204` publishes none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerLimits {
    /// Most items in one push.
    pub max_items: u64,
    /// Largest request body, decoded.
    pub max_body_bytes: u64,
    /// Largest payload of one item.
    pub max_item_bytes: u64,
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

    fn take_older(schema: u8, bytes: &[u8]) -> Result<(Self, &[u8]), pdc_codec::CodecError> {
        // Version 1 has the same layout without the Conflict variant.
        if schema != 1 {
            return Err(pdc_codec::CodecError::UnsupportedSchema {
                kind: Self::KIND,
                schema,
            });
        }
        postcard::take_from_bytes(bytes)
            .map_err(|e| pdc_codec::CodecError::Malformed(e.to_string()))
    }
}

impl PushResponse {
    /// The answer as a version 1 client can read it: a conflict becomes a
    /// rejection with code `conflict` (the same dead letter at the till).
    pub fn for_schema_1(mut self) -> PushResponse {
        for r in &mut self.results {
            if let ItemResult::Conflict { message } = r {
                *r = ItemResult::Rejected {
                    code: "conflict".into(),
                    message: std::mem::take(message),
                };
            }
        }
        self
    }
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
    pub terminal_id: TerminalId,
    /// What it holds.
    pub datasets: Vec<DatasetState>,
}

impl Record for PullRequest {
    const KIND: RecordKind = RecordKind(18);
    const SCHEMA: u8 = BASE_SCHEMA;
}

/// A product's stock level at the terminal's store, as the server last
/// folded it from the applied sales and refunds (`GET /v1/stock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    /// The product.
    pub product_id: u32,
    /// Units on hand (below zero: more sold than the server knew of).
    pub quantity: i64,
    /// The change's position in the store's stock feed (increasing).
    pub seq: u64,
}

/// One page of the store's stock feed: the levels changed after `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockPage {
    /// Changed levels in feed order (the latest level of each product).
    pub levels: Vec<StockLevel>,
    /// Where the next page starts (`since` for the next request).
    pub next: u64,
    /// Whether more changes follow (ask again from `next` at once).
    pub more: bool,
}

/// Most stock levels one page carries (`GET /v1/stock` caps `limit` here).
pub const STOCK_PAGE_MAX: usize = 5_000;

impl StockPage {
    /// The page for a request from `since` of at most `limit` levels, out
    /// of `levels` (the feed after `since`, in order; one more than `limit`
    /// tells that more follow).
    pub fn from_levels(mut levels: Vec<StockLevel>, since: u64, limit: usize) -> Self {
        let more = levels.len() > limit;
        levels.truncate(limit);
        let next = levels.last().map_or(since, |l| l.seq);
        StockPage { levels, next, more }
    }
}

impl Record for StockPage {
    const KIND: RecordKind = RecordKind(21);
    const SCHEMA: u8 = BASE_SCHEMA;
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
    const SCHEMA: u8 = BASE_SCHEMA;
}

/// `POST /v1/metrics` body: a terminal's monitor report (a pdc-monitor
/// frame, opaque here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsReport {
    /// The reporting terminal.
    pub terminal_id: TerminalId,
    /// Wall time of the report.
    pub at_ms: u64,
    /// The encoded report.
    pub report: Vec<u8>,
}

impl Record for MetricsReport {
    const KIND: RecordKind = RecordKind(20);
    const SCHEMA: u8 = BASE_SCHEMA;
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdc_codec::Codec;

    fn push() -> PushRequest {
        PushRequest {
            schema: PROTOCOL_VERSION,
            terminal_id: "till-7".parse().unwrap(),
            store_id: StoreId([0xab; 16]),
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
    fn a_version_1_push_frame_reads_as_the_legacy_store() {
        #[derive(Serialize)]
        struct V1 {
            schema: u8,
            terminal_id: TerminalId,
            batch_id: u64,
            items: Vec<OutboxItem>,
        }
        let codec = Codec::new();
        let req = push();
        let v1 = V1 {
            schema: 1,
            terminal_id: req.terminal_id.clone(),
            batch_id: req.batch_id,
            items: req.items.clone(),
        };
        let frame = codec.encode_value(PushRequest::KIND, 1, &v1).unwrap();
        let got: PushRequest = codec.decode(&frame).unwrap();
        assert_eq!(got.schema, 1);
        assert_eq!(got.store_id, StoreId::LEGACY);
        assert_eq!(got.items, req.items);
        // JSON without a store id: the legacy store too.
        let json = r#"{"schema":1,"terminal_id":"t","batch_id":1,"items":[]}"#;
        let got: PushRequest = serde_json::from_str(json).unwrap();
        assert_eq!(got.store_id, StoreId::LEGACY);
        // A version 1 client reads an answer written for it.
        let resp = PushResponse {
            results: vec![ItemResult::Conflict {
                message: "m".into(),
            }],
            retry_after_ms: None,
        }
        .for_schema_1();
        let frame = codec.encode_value(PushResponse::KIND, 1, &resp).unwrap();
        let back: PushResponse = codec.decode(&frame).unwrap();
        assert_eq!(
            back.results[0],
            ItemResult::Rejected {
                code: "conflict".into(),
                message: "m".into()
            }
        );
    }

    #[test]
    fn store_ids_are_hex_in_json_and_16_bytes_in_frames() {
        let req = push();
        let json = serde_json::to_string(&req).unwrap();
        assert!(
            json.contains(&format!("\"store_id\":\"{}\"", "ab".repeat(16))),
            "{json}"
        );
        let codec = Codec::new();
        let with = codec.encode(&req).unwrap();
        let mut without = req.clone();
        without.store_id = StoreId::LEGACY;
        assert_eq!(with.len(), codec.encode(&without).unwrap().len());
        assert!("abc".parse::<StoreId>().is_err());
        assert!("zz".repeat(16).parse::<StoreId>().is_err());
        let bad = r#"{"schema":2,"terminal_id":"t","store_id":"xyz","batch_id":1,"items":[]}"#;
        assert!(serde_json::from_str::<PushRequest>(bad).is_err());
    }

    proptest::proptest! {
        /// Display and FromStr are inverse; `random` never gives LEGACY.
        #[test]
        fn store_id_text_round_trips(bytes in proptest::array::uniform16(0u8..)) {
            let id = StoreId(bytes);
            let text = id.to_string();
            proptest::prop_assert_eq!(text.len(), 32);
            proptest::prop_assert_eq!(text.parse::<StoreId>().unwrap(), id);
            proptest::prop_assert_eq!(StoreId::from_u128(id.as_u128()), id);
        }
    }

    #[test]
    fn random_store_ids_are_never_legacy() {
        /// Zeros first, then ones: `random` must skip the zero id.
        struct ZerosThenOnes(u32);
        impl rand::RngCore for ZerosThenOnes {
            fn next_u32(&mut self) -> u32 {
                0
            }
            fn next_u64(&mut self) -> u64 {
                0
            }
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                self.0 += 1;
                dest.fill(if self.0 > 2 { 1 } else { 0 });
            }
            fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
                self.fill_bytes(dest);
                Ok(())
            }
        }
        assert_eq!(StoreId::random(&mut ZerosThenOnes(0)), StoreId([1; 16]));
    }

    #[test]
    fn priorities_order_as_documented() {
        assert!(Priority::Critical > Priority::High);
        assert!(Priority::High > Priority::Normal);
        assert!(Priority::Normal > Priority::Low);
    }
}
