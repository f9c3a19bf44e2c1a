//! Typed records: a kind, a schema version, and decoders for older schemas.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::frame::{from_exact, items_exact};
use crate::{Codec, CodecError};

/// The kind of record a frame holds: one byte in the frame header.
///
/// Kinds 0–63 are reserved for pdc's own records (see the constants on this
/// type); applications embedding pdc may use 64–255 for theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordKind(pub u8);

impl RecordKind {
    /// A single POS transaction ([`crate::Transaction`]).
    pub const TRANSACTION: RecordKind = RecordKind(1);
    /// A single POS order ([`crate::Order`]).
    pub const ORDER: RecordKind = RecordKind(2);
    /// A catalogue product ([`crate::Product`]).
    pub const PRODUCT: RecordKind = RecordKind(3);
    /// A columnar batch of transactions ([`crate::TransactionColumns`]).
    pub const TRANSACTION_COLUMNS: RecordKind = RecordKind(4);
    /// A columnar batch of orders ([`crate::OrderColumns`]).
    pub const ORDER_COLUMNS: RecordKind = RecordKind(5);
    /// A refund of (part of) an earlier order ([`crate::Refund`]).
    pub const REFUND: RecordKind = RecordKind(6);
    /// An analytics event ([`crate::AnalyticsEvent`]).
    pub const ANALYTICS: RecordKind = RecordKind(7);
    /// First kind of the sync protocol's messages (pdc-sync uses 16–31).
    pub const SYNC_BASE: RecordKind = RecordKind(16);
    /// First kind free for applications.
    pub const APPLICATION_BASE: RecordKind = RecordKind(64);
}

/// A type with a fixed record kind and a current schema version, which can
/// still read the payloads its older schema versions wrote.
///
/// The frame's schema byte selects the decoder: the current one for
/// [`Record::SCHEMA`], [`Record::take_older`] for anything earlier. A newer
/// schema than this build knows is [`CodecError::UnsupportedSchema`].
pub trait Record: Serialize + DeserializeOwned {
    /// The kind written in the frame header.
    const KIND: RecordKind;
    /// The schema version this build writes.
    const SCHEMA: u8;

    /// Decodes one value written by the older schema version `schema` from
    /// the front of `bytes`, and returns it with the bytes after it.
    ///
    /// The default knows no older versions. An implementation typically
    /// decodes the old struct with `postcard::take_from_bytes` and converts.
    fn take_older(schema: u8, bytes: &[u8]) -> Result<(Self, &[u8]), CodecError> {
        let _ = bytes;
        Err(CodecError::UnsupportedSchema {
            kind: Self::KIND,
            schema,
        })
    }
}

impl Codec {
    /// Encodes one record as a frame.
    ///
    /// ```
    /// use pdc_codec::{Codec, Transaction};
    /// let codec = Codec::new();
    /// let tx = Transaction::seed_baseline();
    /// let frame = codec.encode(&tx).unwrap();
    /// assert_eq!(codec.decode::<Transaction>(&frame).unwrap(), tx);
    /// ```
    pub fn encode<T: Record>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        self.encode_value(T::KIND, T::SCHEMA, value)
    }

    /// Decodes one record, from its current or an older schema version.
    pub fn decode<T: Record>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let frame = self.open(bytes)?;
        frame.expect(T::KIND, false)?;
        decode_schema::<T>(frame.schema, &frame.payload, |p| from_exact(p))
    }

    /// Encodes many records as one batch frame, compressed as a whole.
    pub fn encode_batch<T: Record>(&self, items: &[T]) -> Result<Vec<u8>, CodecError> {
        self.encode_batch_values(T::KIND, T::SCHEMA, items)
    }

    /// Decodes a batch frame, checking the item count against the limit
    /// before allocating.
    pub fn decode_batch<T: Record>(&self, bytes: &[u8]) -> Result<Vec<T>, CodecError> {
        let frame = self.open(bytes)?;
        frame.expect(T::KIND, true)?;
        let (count, items) = frame.batch_items(self.limits().max_batch_items)?;
        match frame.schema.cmp(&T::SCHEMA) {
            std::cmp::Ordering::Equal => items_exact(count, items),
            std::cmp::Ordering::Greater => Err(CodecError::UnsupportedSchema {
                kind: T::KIND,
                schema: frame.schema,
            }),
            std::cmp::Ordering::Less => {
                let mut out = Vec::with_capacity(count.min(items.len()));
                let mut rest = items;
                for _ in 0..count {
                    let (v, r) = T::take_older(frame.schema, rest)?;
                    out.push(v);
                    rest = r;
                }
                if !rest.is_empty() {
                    return Err(CodecError::Malformed(
                        "bytes left after the batch items".into(),
                    ));
                }
                Ok(out)
            }
        }
    }
}

fn decode_schema<T: Record>(
    schema: u8,
    payload: &[u8],
    current: impl FnOnce(&[u8]) -> Result<T, CodecError>,
) -> Result<T, CodecError> {
    match schema.cmp(&T::SCHEMA) {
        std::cmp::Ordering::Equal => current(payload),
        std::cmp::Ordering::Less => {
            let (v, rest) = T::take_older(schema, payload)?;
            if !rest.is_empty() {
                return Err(CodecError::Malformed(format!(
                    "{} bytes left after the value",
                    rest.len()
                )));
            }
            Ok(v)
        }
        std::cmp::Ordering::Greater => Err(CodecError::UnsupportedSchema {
            kind: T::KIND,
            schema,
        }),
    }
}
