//! pdc-web: the pdc engine in a browser.
//!
//! A browser POS runs the engine in a **dedicated worker** (the only place
//! where the Origin Private File System offers synchronous file access):
//!
//! * `OpfsBackend` is a `redb::StorageBackend` over a
//!   `FileSystemSyncAccessHandle`: the store is the same redb file as on a
//!   native till (copied out of the browser profile, it opens with
//!   `pdc inspect`); `sync_data` is the handle's `flush()`, one
//!   `fdatasync`. The JS handle is neither `Send` nor `Sync`, so it lives in
//!   a thread-local table and the backend holds its index: no `unsafe`.
//! * `BrowserClock` is pdc-clock's `pdc_clock::Clock` over
//!   `performance.now()` and `Date.now()`.
//! * `WebEngine` is pdc-core's `OfflineEngine` over that store and the
//!   HTTP transport on `fetch`, exported to JavaScript with wasm-bindgen.
//!   The worker script in `js/worker.js` takes the store's Web Lock,
//!   drives it with timers (no tokio in a browser) and answers the page's
//!   `js/client.js` messages.
//!
//! Everything here is compiled only for `wasm32`; on other targets the
//! crate is empty. From a page, through the client module:
//!
//! ```js
//! import { PdcClient } from "./pdc-web/js/client.js";
//! const till = await PdcClient.open({ terminalId: "till-7", serverUrl: location.origin,
//!                                     token, datasets: ["products", "users"] });
//! const r = await till.recordOrder({ cashierId: 1,
//!   lines: [{ productId: 7001, quantity: 2, unitPriceCents: 240, taxRateBp: 700 }],
//!   payments: [{ method: "cash", amountCents: 480 }] }); // r.receiptNumber
//! await till.syncNow();
//! ```
#![deny(missing_docs)]

#[cfg(target_arch = "wasm32")]
mod clock;
#[cfg(target_arch = "wasm32")]
mod engine;
#[cfg(target_arch = "wasm32")]
mod opfs;

#[cfg(target_arch = "wasm32")]
pub use clock::BrowserClock;
#[cfg(target_arch = "wasm32")]
pub use engine::WebEngine;
#[cfg(target_arch = "wasm32")]
pub use opfs::{
    open_opfs_file, open_opfs_store, opfs_file_exists, remove_opfs_file, rename_opfs_file,
    OpenError, OpfsBackend,
};
