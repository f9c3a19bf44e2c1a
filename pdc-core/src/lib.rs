//! pdc-core: the `OfflineEngine` a POS application embeds.
//!
//! One object that records sales durably ([`OfflineEngine::record`]: on
//! disk before it returns), logs cashiers in offline by PIN, serves
//! reference data from memory over the store, tracks the connection, and
//! syncs through any [`pdc_sync::SyncTransport`]: the sans-IO
//! [`pdc_sync::SyncMachine`] decides, [`OfflineEngine::sync_once`] only
//! moves bytes and persists outcomes (acks remove items, refusals go to the
//! dead-letter table). With the `tokio` feature, [`spawn_driver`] runs that
//! loop in the background (with probes, reference data pulls and metrics
//! reports); nothing else here needs a runtime. With the `http` feature
//! (default), `HttpTransport` talks to pdc-server over HTTP (reqwest,
//! rustls); a browser build disables both (`--no-default-features
//! --features browser`, which takes randomness from the browser), brings its
//! own transport, and opens the store on its own backend
//! ([`OfflineEngine::with_store`]).
//!
//! ```
//! use pdc_core::{EngineConfig, OfflineEngine, Sale};
//! use pdc_clock::SystemClock;
//! use pdc_codec::{PaymentMethod, Product};
//! use pdc_sync::LoopbackTransport;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut config = EngineConfig::new("till-1".parse()?, dir.path().join("till.pdc"));
//! config.kdf = pdc_auth::KdfParams::INSECURE_TEST; // tests only
//! config.sync.linger = std::time::Duration::ZERO;
//! let transport = LoopbackTransport::new();
//! let engine = OfflineEngine::open(config, transport.clone(), SystemClock::new())?;
//! // A product as `engine.product(id)` / `engine.product_by_barcode(..)` return it.
//! let espresso = Product { id: 7001, name: "Espresso".into(), barcode: "4006381333900".into(),
//!                          category: "Drinks".into(), price_cents: 240, tax_rate_bp: 700,
//!                          active: true };
//! let sale = Sale::new(1).add(&espresso, 2).pay_rest(PaymentMethod::Cash);
//! let receipt = engine.sell(&sale)?; // durable, numbered: print it
//! assert_eq!(receipt.seq, 1);
//! assert_eq!(receipt.total_cents, 480);
//! pollster::block_on(engine.sync_once())?;
//! assert!(transport.server.lock().unwrap().has("till-1", receipt.local_id));
//! assert_eq!(engine.pending(), 0);
//! # Ok::<(), pdc_core::EngineError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod catalogue;
#[cfg(feature = "tokio")]
pub mod driver;
mod engine;
mod error;
#[cfg(feature = "http")]
mod http;
pub mod logins;
pub mod outbox;
pub mod sale;
pub mod telemetry;

#[cfg(feature = "tokio")]
pub use driver::{spawn_driver, spawn_driver_with, DriverConfig, DriverHandle};
pub use engine::{
    EngineConfig, EngineEvent, LowStock, OfflineEngine, SyncStatus, ANALYTICS_STREAM, MAX_EVENTS,
};
pub use error::EngineError;
#[cfg(feature = "http")]
pub use http::{HttpOptions, HttpTransport};
pub use pdc_codec::TerminalId;
pub use sale::{
    OfflineCardLimits, OfflineLimit, Original, Receipt, ReceiptFormat, RefundReceipt, Sale,
};
