//! pdc-server: the sync service the terminals push their sales to.
//!
//! Each (terminal id, store id, local id) is applied exactly once, keyed in a
//! [`Ledger`]: the embedded [`RedbLedger`] (one file, no setup) or
//! [`PgLedger`] (PostgreSQL, many server processes side by side). Business
//! rules run in an [`Apply`] hook inside the ledger's transaction, so their
//! effects also happen exactly once; [`PosApply`] validates the POS records
//! and writes a readable orders table. Reference data (products, users,
//! config) is served by delta pull from a [`DatasetHub`]. The HTTP API
//! ([`http::router`]) follows `docs/PROTOCOL.md`, with terminal tokens,
//! limits and per-terminal rate limits.
//!
//! ```
//! use std::sync::Arc;
//! use pdc_server::{Ledger, RedbLedger, RedbOptions, PosApply};
//! use pdc_sync::ItemResult;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let ledger = RedbLedger::open(&dir.path().join("ledger.redb"), Arc::new(PosApply::new()),
//!                               RedbOptions::default())?;
//! let item = pdc_server::conformance::item(1, 70); // an opaque kind
//! let store = pdc_sync::StoreId([1; 16]); // the till store's random id
//! let first = ledger.push("till-1", store, vec![item.clone()], 0).await?;
//! let again = ledger.push("till-1", store, vec![item], 0).await?;
//! let ItemResult::Applied { server_seq } = first[0] else { panic!() };
//! assert_eq!(again[0], ItemResult::Duplicate { server_seq });
//! # Ok::<(), pdc_server::ServerError>(())
//! # }).unwrap();
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod apply;
mod config;
mod datasets;
mod error;
pub mod http;
mod ledger;

pub use apply::{
    AcceptAll, Accepted, Apply, OrderRow, PosApply, RefundRow, Refusals, Rejection, REDB_ORDERS,
    REDB_RECEIPTS, REDB_RECEIPT_INDEX, REDB_REFUNDS, REDB_STOCK, REDB_STOCK_AT, REDB_STOCK_FEED,
};
pub use config::ServerConfig;
pub use datasets::{
    config_id, entries_from_json, records_from_json, DatasetHub, ScopedIds, DEFAULT_DATASETS,
};
pub use error::ServerError;
pub use http::{
    add_terminal, rotate_terminal, spawn, spawn_with_routes, token_digest, AppState, Limits,
    ServerHandle, TOKEN_CACHE_TTL,
};
pub use ledger::{
    check_item, conformance, payload_digest, placement_sql, transient, valid_terminal_id,
    InsertForm, Ledger, LedgerItem, LedgerTotals, PayloadDigest, PgLedger, PgOptions, Placement,
    PosOrder, RedbLedger, RedbOptions, StoreSeen, StoredDataset, StoredRecord, TerminalInfo,
    TokenDigest, LEDGER_PLACEMENT, STORAGE_REJECTION,
};
