//! pdc-codec: the compact, checksummed, compressed binary format that every
//! sale, sync batch and stored record of pdc goes through.
//!
//! **Pure logic**: no I/O, no clock, no async; builds for
//! `wasm32-unknown-unknown`.
//!
//! A value is encoded with [postcard] (varints, no field names), wrapped in a
//! [frame] that carries magic bytes, a format version, flags, the
//! record kind and schema version, lengths and an 8-byte XXH3-64 checksum,
//! and compressed with lz4 when that actually saves bytes (or with deflate,
//! smaller and slower, under [`Compression::Dense`]). Decoding checks
//! magic, version, lengths, limits and checksum before it allocates or
//! decompresses anything, so hostile or damaged input gets a typed
//! [`CodecError`] and never a panic or an oversized allocation.
//!
//! ```text
//!  value ──postcard──▶ payload ──lz4 if it pays──▶ body
//!  ┌──────┬───┬─────┬────┬──────┬─────┬──────────┬──────┬──────────┐
//!  │ PdcF │ v │flags│kind│schema│ len │ [rawlen] │ body │ xxh3-64  │
//!  └──────┴───┴─────┴────┴──────┴─────┴──────────┴──────┴──────────┘
//! ```
//!
//! Batches of POS records ([`Transaction`], [`Order`]) have columnar
//! encodings ([`TransactionColumns`], [`OrderColumns`]) that remove the
//! redundancy of a till's data (sequential ids, increasing timestamps,
//! repeated prices) before compression.
//!
//! ```
//! use pdc_codec::{Codec, CodecError, Transaction};
//!
//! let codec = Codec::new();
//! let tx = Transaction::seed_baseline();
//! let frame = codec.encode(&tx)?;
//! assert_eq!(codec.decode::<Transaction>(&frame)?, tx);
//!
//! // Damage is detected, never decoded into a wrong value.
//! let mut bad = frame.clone();
//! bad[10] ^= 0x40;
//! assert!(codec.decode::<Transaction>(&bad).is_err());
//!
//! // A whole batch in one columnar frame.
//! let txs = vec![tx.clone(), Transaction { id: 12346, ..tx }];
//! let batch = codec.encode_transactions(&txs)?;
//! assert_eq!(codec.decode_transactions(&batch)?, txs);
//! # Ok::<(), CodecError>(())
//! ```
//!
//! # Schema evolution
//! A [`Record`] has a kind and a schema version; the version in the frame
//! selects the decoder, and [`Record::take_older`] reads what older versions
//! wrote. The format itself is documented byte by byte in `docs/FORMAT.md`.
//!
//! # Invariants
//! * No decode path panics or allocates more than [`Limits`] allow.
//! * A frame that decodes passed its checksum: corrupt data is an error,
//!   never a wrong value (up to the 2⁻⁶⁴ chance of a checksum collision).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod column;
mod error;
pub mod frame;
mod pos;
mod record;
mod terminal;
mod text;

pub use error::CodecError;
pub use frame::{Codec, Compression, Frame, Limits};
pub use pos::{
    AnalyticsEvent, Order, OrderColumns, OrderLine, OrderRule, Payment, PaymentMethod, Product,
    Refund, Transaction, TransactionColumns, TxKind, TxStatus, Unit, MAX_RECEIPT_LEN,
    MAX_TENDER_NAME_LEN, MAX_TEXT_LEN,
};
pub use record::{Record, RecordKind};
pub use terminal::TerminalId;
