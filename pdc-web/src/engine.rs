//! The engine exported to JavaScript (run it in a dedicated worker).

use std::rc::Rc;

use pdc_clock::Clock;
use pdc_core::{EngineConfig, EngineError, HttpOptions, HttpTransport, OfflineEngine};
use pdc_store::NewItem;
use pdc_sync::{Priority, StreamKey};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::clock::BrowserClock;
use crate::opfs::{js_text, open_opfs_store, OpenError};

type Engine = OfflineEngine<HttpTransport, BrowserClock>;

/// What `WebEngine.open` takes (JSON, camelCase).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OpenConfig {
    /// Checked when the config is read (`config` error for a bad one).
    terminal_id: pdc_core::TerminalId,
    server_url: String,
    token: String,
    #[serde(default = "default_datasets")]
    datasets: Vec<String>,
    /// The OPFS file (default `<terminalId>.pdc`).
    #[serde(default)]
    store_name: Option<String>,
    /// Per-request timeout (default 15 s).
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// The cheap KDF of tests; never in production.
    #[serde(default)]
    insecure_test_kdf: bool,
    /// Largest item the till saves, encoded (default 1 MiB).
    #[serde(default)]
    max_item_bytes: Option<usize>,
    /// redb's page cache (default 16 MiB; wasm memory never shrinks).
    #[serde(default)]
    cache_bytes: Option<usize>,
    /// The store's 256-bit key as 64 hex digits: the store is encrypted
    /// at rest (a new store is created so; an encrypted one opens only
    /// with it). The host keeps it as it chooses; pdc never writes it.
    #[serde(default)]
    store_key: Option<String>,
    /// The previous key while a rotation is unfinished (see
    /// `pdc_store::Store::rekey`).
    #[serde(default)]
    previous_store_key: Option<String>,
}

/// A store key from 64 hex digits.
fn hex_key(what: &str, hex: &str) -> Result<pdc_store::StoreKey, JsValue> {
    pdc_store::StoreKey::from_hex(hex).map_err(|e| error("config", format!("{what}: {e}")))
}

/// A refund from JS: the original, and the sale's shape for what goes back.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RefundInput {
    original_order_id: String,
    #[serde(default)]
    original_receipt: Option<String>,
    #[serde(flatten)]
    sale: SaleInput,
}

/// A POS order from JS.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SaleInput {
    cashier_id: u32,
    #[serde(default)]
    customer_id: Option<u32>,
    lines: Vec<LineInput>,
    payments: Vec<PaymentInput>,
    #[serde(default)]
    discount_cents: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LineInput {
    product_id: u32,
    quantity: u32,
    unit_price_cents: i64,
    #[serde(default)]
    tax_rate_bp: u16,
    #[serde(default)]
    discount_cents: i64,
    /// `each` (the default), `kg`, `l` or `m`.
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PaymentInput {
    method: String,
    amount_cents: i64,
    #[serde(default)]
    tendered_cents: Option<i64>,
    #[serde(default)]
    reference: Option<String>,
}

fn default_datasets() -> Vec<String> {
    vec!["products".into(), "users".into(), "config".into()]
}

/// A typed error for JavaScript: an `Error` whose `name` is the code
/// (`store`, `locked_store`, `item_too_large`, `out_of_range`, `sync`,
/// `auth`, `offline`, `transport`, `config`, `cache`, `codec`,
/// `monitor`) and whose `message` says what happened.
fn error(code: &str, message: impl std::fmt::Display) -> JsValue {
    let e = js_sys::Error::new(&message.to_string());
    e.set_name(code);
    e.into()
}

fn engine_error(e: EngineError) -> JsValue {
    use pdc_sync::{SyncError, TransportError};
    let code = match &e {
        EngineError::Store(pdc_store::StoreError::Locked) => "locked_store",
        EngineError::Store(pdc_store::StoreError::KeyRequired) => "key_required",
        EngineError::Store(
            pdc_store::StoreError::WrongKey | pdc_store::StoreError::KeyRotationUnfinished(_),
        ) => "wrong_key",
        EngineError::Store(_) => "store",
        EngineError::Sync(SyncError::ItemTooLarge { .. }) => "item_too_large",
        EngineError::Sync(SyncError::OutOfRange { .. }) => "out_of_range",
        EngineError::Sync(_) => "sync",
        EngineError::Auth(_) => "auth",
        EngineError::Transport(TransportError::Offline(_) | TransportError::Timeout) => "offline",
        EngineError::Transport(_) => "transport",
        EngineError::Cache(_) => "cache",
        EngineError::Codec(_) => "codec",
        EngineError::Monitor(_) => "monitor",
        EngineError::InvalidSale { rule, .. } => rule.code(),
        EngineError::Config(_) => "config",
        EngineError::OfflineCardLimit { .. } => "offline_card_limit",
        _ => "engine",
    };
    error(code, e)
}

/// The largest integer a JS number holds exactly (2^53 − 1).
const SAFE: f64 = 9_007_199_254_740_991.0;

fn get(obj: &JsValue, key: &str) -> Result<JsValue, JsValue> {
    js_sys::Reflect::get(obj, &JsValue::from_str(key))
}

/// A sale from JS: `{stream, priority, kind, createdAtMs?, payload}`
/// (`priority` is `"low" | "normal" | "high" | "critical"`, `payload` a
/// `Uint8Array`). Everything is checked here, before it reaches the store.
fn new_item(obj: &JsValue, clock: &BrowserClock) -> Result<NewItem, JsValue> {
    let int = |key: &str, max: f64| -> Result<Option<u64>, JsValue> {
        let v = get(obj, key)?;
        if v.is_undefined() || v.is_null() {
            return Ok(None);
        }
        match v.as_f64() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= max => Ok(Some(n as u64)),
            _ => Err(error(
                "config",
                format!("{key} must be an integer from 0 to {max}"),
            )),
        }
    };
    let stream = int("stream", SAFE)?.ok_or_else(|| error("config", "stream is required"))?;
    let kind =
        int("kind", f64::from(u16::MAX))?.ok_or_else(|| error("config", "kind is required"))?;
    let created_at_ms = int("createdAtMs", SAFE)?.unwrap_or_else(|| clock.wall_ms());
    let priority = match get(obj, "priority")?.as_string().as_deref() {
        Some("low") => Priority::Low,
        Some("normal") => Priority::Normal,
        Some("high") | None => Priority::High,
        Some("critical") => Priority::Critical,
        Some(other) => {
            return Err(error(
                "config",
                format!("priority {other:?} is not low, normal, high or critical"),
            ))
        }
    };
    let payload = get(obj, "payload")?
        .dyn_into::<js_sys::Uint8Array>()
        .map_err(|_| error("config", "payload must be a Uint8Array"))?
        .to_vec();
    Ok(NewItem {
        stream: StreamKey(stream),
        priority,
        kind: kind as u16,
        created_at_ms,
        payload,
    })
}

/// Reports a panic to the worker script (`self.__pdcPanic(message)`), which
/// tells the page; the wasm instance is dead after a panic, so the page
/// restarts the worker and reopens.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        let global = js_sys::global();
        if let Ok(f) = get(&global, "__pdcPanic").and_then(|f| f.dyn_into::<js_sys::Function>()) {
            let _ = f.call1(&JsValue::NULL, &JsValue::from_str(&message));
        }
    }));
}

/// The pdc engine of one browser till, over an OPFS store (dedicated
/// worker only) and the HTTP transport on `fetch`.
#[wasm_bindgen]
pub struct WebEngine {
    inner: Rc<Engine>,
    persisted: bool,
}

#[wasm_bindgen]
impl WebEngine {
    /// Opens the engine: the OPFS file, the store in it (created atomically
    /// on first use), the pending outbox's index. Asks the browser to keep
    /// the storage (`navigator.storage.persist()`); its answer is
    /// [`WebEngine::persisted`]. `config` is JSON: `{terminalId, serverUrl,
    /// token, datasets?, storeName?, timeoutMs?, maxItemBytes?,
    /// cacheBytes?, storeKey?, previousStoreKey?}` (`storeKey`: 64 hex
    /// digits; with it the store is encrypted at rest).
    pub async fn open(config: String) -> Result<WebEngine, JsValue> {
        install_panic_hook();
        let c: OpenConfig = serde_json::from_str(&config).map_err(|e| error("config", e))?;
        let name = c
            .store_name
            .clone()
            .unwrap_or_else(|| format!("{}.pdc", c.terminal_id));
        if name.is_empty() || name.contains('/') || name.len() > 200 {
            return Err(error(
                "config",
                format!("store name {name:?}: 1 to 200 characters, no '/'"),
            ));
        }
        let persisted = persist().await;
        let mut keys = Vec::new();
        if let Some(k) = &c.store_key {
            keys.push(hex_key("storeKey", k)?);
        }
        if let Some(k) = &c.previous_store_key {
            keys.push(hex_key("previousStoreKey", k)?);
        }
        let options = pdc_store::StoreOptions {
            cache_bytes: Some(c.cache_bytes.unwrap_or(16 << 20)),
            keys,
        };
        let store = open_opfs_store(&name, options).await.map_err(|e| match e {
            OpenError::Js(e) => error("store", js_text(&e)),
            OpenError::Locked(e) => error("locked_store", js_text(&e)),
            OpenError::Store(e) => engine_error(e.into()),
        })?;
        let transport = HttpTransport::new(
            &c.server_url,
            &c.token,
            HttpOptions {
                timeout: std::time::Duration::from_millis(c.timeout_ms.unwrap_or(15_000)),
                ..HttpOptions::default()
            },
        )
        .map_err(|e| engine_error(e.into()))?;
        let mut config = EngineConfig::new(c.terminal_id, name);
        config.datasets = c.datasets;
        if c.insecure_test_kdf {
            config.kdf = pdc_auth::KdfParams::INSECURE_TEST;
        }
        if let Some(n) = c.max_item_bytes {
            config.sync.max_item_bytes = n;
        }
        let engine = OfflineEngine::with_store(config, store, transport, BrowserClock)
            .map_err(engine_error)?;
        Ok(WebEngine {
            inner: Rc::new(engine),
            persisted,
        })
    }

    /// Whether the browser promised to keep this origin's storage (an
    /// unpersisted store can be evicted under storage pressure: show it).
    #[wasm_bindgen(getter)]
    pub fn persisted(&self) -> bool {
        self.persisted
    }

    /// Records a sale (`{stream, priority, kind, createdAtMs?, payload}`):
    /// returns its local id once it is durable (flushed to the OPFS file).
    /// On error nothing was saved.
    pub fn record(&self, sale: JsValue) -> Result<f64, JsValue> {
        let item = new_item(&sale, &BrowserClock)?;
        self.inner
            .record(item)
            .map(|id| id as f64)
            .map_err(engine_error)
    }

    /// Records many sales in one durable commit; all or none.
    #[wasm_bindgen(js_name = recordMany)]
    pub fn record_many(&self, sales: js_sys::Array) -> Result<Vec<f64>, JsValue> {
        let items = sales
            .iter()
            .map(|s| new_item(&s, &BrowserClock))
            .collect::<Result<Vec<_>, _>>()?;
        self.inner
            .record_many(items)
            .map(|ids| ids.into_iter().map(|id| id as f64).collect())
            .map_err(engine_error)
    }

    /// Sales waiting to reach the server.
    pub fn pending(&self) -> u32 {
        u32::try_from(self.inner.pending()).unwrap_or(u32::MAX)
    }

    /// The sync status as JSON: `{pending, online, byPriority: [low,
    /// normal, high, critical], inFlight, quarantined, halted, failures, lastSyncAtMs,
    /// bytesUp, bytesDown, persisted, datasets: {name: version | null},
    /// connection: "unknown" | "online" | "offline" | ..., lastError,
    /// offlineCardCents}`.
    pub fn status(&self) -> String {
        let status = self.inner.status();
        // Only what `SyncStatus` does not carry.
        let h = self.inner.health();
        serde_json::json!({
            "pending": status.pending,
            "online": self.inner.outbox().connectivity() == pdc_sync::Connectivity::Online,
            "byPriority": status.pending_by_priority,
            "inFlight": status.in_flight,
            "quarantined": status.quarantined,
            "halted": status.halted,
            "failures": h.failures,
            "lastSyncAtMs": status.last_success_ms,
            "bytesUp": h.bytes_up,
            "bytesDown": h.bytes_down,
            "persisted": self.persisted,
            "datasets": self.dataset_versions(),
            "connection": status.connection.name(),
            "lastError": status.last_error,
            "offlineCardCents": status.offline_card_cents,
        })
        .to_string()
    }

    /// The held version of each followed dataset (`null`: never pulled,
    /// or unreadable).
    fn dataset_versions(&self) -> serde_json::Map<String, serde_json::Value> {
        let store = self.inner.store();
        self.inner
            .catalogue()
            .datasets()
            .iter()
            .map(|d| {
                let v = store.dataset_version(d).ok().flatten();
                (d.clone(), v.map_or(serde_json::Value::Null, Into::into))
            })
            .collect()
    }

    /// One sync pass (send what is due, commit the answers).
    #[wasm_bindgen(js_name = syncOnce)]
    pub fn sync_once(&self) -> js_sys::Promise {
        let e = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            e.sync_once().await.map_err(engine_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Milliseconds until the next sync pass is due (0: now), or
    /// `undefined` when only a new sale or a network change can start one.
    #[wasm_bindgen(js_name = nextWakeupMs)]
    pub fn next_wakeup_ms(&self) -> Option<f64> {
        self.inner.next_wakeup().map(|at| {
            at.saturating_duration_since(BrowserClock.now())
                .as_secs_f64()
                * 1000.0
        })
    }

    /// Tells the engine whether the network is up (`online`/`offline`
    /// events).
    #[wasm_bindgen(js_name = setOnline)]
    pub fn set_online(&self, online: bool) {
        self.inner.set_online(online);
    }

    /// Probes the server (and takes its published limits); resolves to the
    /// round trip in ms.
    pub fn ping(&self) -> js_sys::Promise {
        let e = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let rtt = e.ping().await.map_err(engine_error)?;
            Ok(JsValue::from_f64(rtt.as_secs_f64() * 1000.0))
        })
    }

    /// Waits on the server's change stream (`GET /v1/changes`, at most
    /// `wait_secs`, which the server caps at 25 s) for a change to the
    /// followed datasets after the held versions; resolves to `true` (pull
    /// now), `false` (nothing changed within the wait) or `null` (the
    /// server has no change stream: pull periodically). Rejects like
    /// [`WebEngine::pull`] when offline.
    #[wasm_bindgen(js_name = waitChanges)]
    pub fn wait_changes(&self, wait_secs: u32) -> js_sys::Promise {
        let e = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let changed = e
                .wait_changes(std::time::Duration::from_secs(u64::from(wait_secs)))
                .await
                .map_err(engine_error)?;
            Ok(changed.map_or(JsValue::NULL, JsValue::from_bool))
        })
    }

    /// Brings the store's stock levels up to date (`GET /v1/stock`);
    /// resolves to how many changed, or `null` when the server keeps no
    /// stock.
    #[wasm_bindgen(js_name = pullStock)]
    pub fn pull_stock(&self) -> js_sys::Promise {
        let e = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let n = e.pull_stock().await.map_err(engine_error)?;
            Ok(n.map_or(JsValue::NULL, |n| JsValue::from_f64(n as f64)))
        })
    }

    /// A product's stock level at this till's store as last pulled
    /// (`undefined`: none sent). Advisory: a sale is never refused for it.
    #[wasm_bindgen(js_name = stockLevel)]
    pub fn stock_level(&self, product_id: u32) -> Result<Option<f64>, JsValue> {
        Ok(self
            .inner
            .stock_level(product_id)
            .map_err(engine_error)?
            .map(|q| q as f64))
    }

    /// Pulls the reference datasets.
    pub fn pull(&self) -> js_sys::Promise {
        let e = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            e.pull().await.map_err(engine_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Offline PIN login; resolves to JSON `{userId, role, token,
    /// expiresAtMs}`.
    pub fn login(&self, user_id: String, pin: String) -> Result<String, JsValue> {
        let login = self.inner.login(&user_id, &pin).map_err(engine_error)?;
        Ok(serde_json::json!({
            "userId": login.session.user_id,
            "role": login.session.role,
            "token": login.token.as_str(),
            "expiresAtMs": login.session.expires_at_ms,
        })
        .to_string())
    }

    /// Enrols a user's PIN on this till.
    pub fn enrol(&self, user_id: String, role: String, pin: String) -> Result<(), JsValue> {
        self.inner
            .enrol(&user_id, &role, &pin)
            .map_err(engine_error)
    }

    /// A reference record by dataset and id (e.g. a product), or
    /// `undefined`.
    pub fn reference(&self, dataset: String, id: f64) -> js_sys::Promise {
        let e = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            if !(id >= 0.0 && id.fract() == 0.0 && id <= SAFE) {
                return Err(error("config", "id must be a non-negative integer"));
            }
            match e
                .reference(&dataset, id as u64)
                .await
                .map_err(engine_error)?
            {
                Some(bytes) => Ok(js_sys::Uint8Array::from(&bytes[..]).into()),
                None => Ok(JsValue::UNDEFINED),
            }
        })
    }

    /// The products of the pulled catalogue as JSON (`[{id, name, barcode,
    /// category, priceCents, taxRateBp, active}]`, by id); records that do
    /// not decode are skipped.
    pub fn products(&self) -> Result<String, JsValue> {
        let codec = pdc_codec::Codec::new();
        let records = self
            .inner
            .store()
            .dataset("products")
            .map_err(|e| engine_error(e.into()))?
            .records;
        let list: Vec<serde_json::Value> = records
            .values()
            .filter_map(|b| codec.decode::<pdc_codec::Product>(b).ok())
            .map(|p| product_json(&p))
            .collect();
        Ok(serde_json::Value::Array(list).to_string())
    }

    /// A product by id, as JSON in the shape of [`WebEngine::products`]'s
    /// entries, or `undefined`.
    pub fn product(&self, id: f64) -> js_sys::Promise {
        let e = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            if !(id >= 0.0 && id.fract() == 0.0 && id <= SAFE) {
                return Err(error("config", "id must be a non-negative integer"));
            }
            let p = e.product(id as u64).await.map_err(engine_error)?;
            Ok(p.map_or(JsValue::UNDEFINED, |p| product_json(&p).to_string().into()))
        })
    }

    /// A product by barcode (exact match), as [`WebEngine::product`].
    #[wasm_bindgen(js_name = productByBarcode)]
    pub fn product_by_barcode(&self, barcode: String) -> js_sys::Promise {
        let e = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let p = e.product_by_barcode(&barcode).await.map_err(engine_error)?;
            Ok(p.map_or(JsValue::UNDEFINED, |p| product_json(&p).to_string().into()))
        })
    }

    /// Sells (pdc-core's `OfflineEngine::sell`): JSON `{cashierId,
    /// customerId?, discountCents?, lines: [{productId, quantity,
    /// unitPriceCents, taxRateBp, discountCents?, unit?: "each" | "kg" |
    /// "l" | "m", name?, note?}], payments: [{method: "cash" | "card" |
    /// "voucher" | "gift_card" | "mobile_wallet" | "store_credit" | any
    /// other tender's name, amountCents, tenderedCents?, reference?}]}`
    /// (a measured unit's quantity is in thousandths: grams for `kg`). The server's rules are checked first
    /// (an error whose code is the rule's, e.g. `total_mismatch`, nothing
    /// saved); the order id and the receipt number come from the store's
    /// sale counter in the same durable commit. Resolves to `{localId,
    /// orderId, seq, receiptNumber, totalCents}`.
    #[wasm_bindgen(js_name = recordOrder)]
    pub fn record_order(&self, order: String) -> Result<String, JsValue> {
        let o: SaleInput = serde_json::from_str(&order).map_err(|e| error("config", e))?;
        let r = self.inner.sell(&sale_of(&o)?).map_err(engine_error)?;
        Ok(serde_json::json!({
            "localId": r.local_id, "orderId": r.order.id.to_string(), "seq": r.seq,
            "receiptNumber": r.number, "totalCents": r.total_cents,
        })
        .to_string())
    }

    /// Pays back (pdc-core's `OfflineEngine::refund`): JSON `{originalOrderId
    /// (a string, as `recordOrder` gave it), originalReceipt?, cashierId,
    /// lines, payments}` — the lines taken back and the money paid back,
    /// in `recordOrder`'s shapes and rules. Numbered in the sales' own
    /// sequence. Resolves to `{localId, refundId, seq, receiptNumber,
    /// totalCents}`.
    #[wasm_bindgen(js_name = refundOrder)]
    pub fn refund_order(&self, refund: String) -> Result<String, JsValue> {
        let r: RefundInput = serde_json::from_str(&refund).map_err(|e| error("config", e))?;
        let order_id = r
            .original_order_id
            .parse::<u64>()
            .map_err(|_| error("config", "originalOrderId: a decimal string"))?;
        let original = pdc_core::Original {
            order_id,
            receipt: r.original_receipt,
        };
        let done = self
            .inner
            .refund(&original, &sale_of(&r.sale)?)
            .map_err(engine_error)?;
        Ok(serde_json::json!({
            "localId": done.local_id, "refundId": done.refund.id.to_string(), "seq": done.seq,
            "receiptNumber": done.number, "totalCents": done.total_cents,
        })
        .to_string())
    }

    /// Records an analytics event (pdc-core's `OfflineEngine::track`):
    /// `name` of `a-z 0-9 _ .`, `properties` a JSON object of strings; low
    /// priority. Resolves to its local id.
    pub fn track(&self, name: String, properties: String) -> Result<f64, JsValue> {
        let props: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&properties).map_err(|e| error("config", e))?;
        let pairs: Vec<(&str, &str)> = props
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.inner
            .track(&name, &pairs)
            .map(|id| id as f64)
            .map_err(engine_error)
    }
}

/// The sale a JS order describes.
fn sale_of(o: &SaleInput) -> Result<pdc_core::Sale, JsValue> {
    {
        let mut sale = pdc_core::Sale::new(o.cashier_id);
        if let Some(c) = o.customer_id {
            sale = sale.customer(c);
        }
        for l in &o.lines {
            let unit = match l.unit.as_deref() {
                None | Some("each") => pdc_codec::Unit::Each,
                Some("kg") => pdc_codec::Unit::Kilogram,
                Some("l") => pdc_codec::Unit::Litre,
                Some("m") => pdc_codec::Unit::Metre,
                Some(u) => return Err(error("config", format!("unit {u:?} (each, kg, l, m)"))),
            };
            sale = sale.line(pdc_codec::OrderLine {
                product_id: l.product_id,
                quantity: l.quantity,
                unit,
                unit_price_cents: l.unit_price_cents,
                discount_cents: l.discount_cents,
                tax_rate_bp: l.tax_rate_bp,
                name: l.name.clone(),
                note: l.note.clone(),
            });
        }
        for p in &o.payments {
            // Any name: the six known tenders, else an other tender of
            // that name (checked with the order's rules).
            sale = sale.tender(pdc_codec::Payment {
                method: pdc_codec::PaymentMethod::from_name(&p.method),
                amount_cents: p.amount_cents,
                tendered_cents: p.tendered_cents,
                reference: p.reference.clone(),
            });
        }
        Ok(sale.discount(o.discount_cents))
    }
}

#[wasm_bindgen]
impl WebEngine {
    /// The size of this wasm instance's memory, in bytes (it never
    /// shrinks: the high-water mark of the engine's use).
    #[wasm_bindgen(js_name = memoryBytes)]
    pub fn memory_bytes() -> f64 {
        wasm_bindgen::memory()
            .dyn_into::<js_sys::WebAssembly::Memory>()
            .map(|m| {
                m.buffer()
                    .dyn_into::<js_sys::ArrayBuffer>()
                    .map_or(0.0, |b| f64::from(b.byte_length()))
            })
            .unwrap_or(0.0)
    }

    /// The next engine event as JSON `{type, detail}`, or `undefined`.
    #[wasm_bindgen(js_name = pollEvent)]
    pub fn poll_event(&self) -> Option<String> {
        self.inner.poll_event().map(|e| {
            let text = format!("{e:?}");
            let kind = text.split([' ', '{', '(']).next().unwrap_or("").to_owned();
            serde_json::json!({ "type": kind, "detail": text }).to_string()
        })
    }
}

/// Asks the browser to keep this origin's storage; false if it will not
/// (or cannot say).
async fn persist() -> bool {
    let Ok(scope) = js_sys::global().dyn_into::<web_sys::WorkerGlobalScope>() else {
        return false;
    };
    let Ok(p) = scope.navigator().storage().persist() else {
        return false;
    };
    JsFuture::from(p)
        .await
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// A product as the JS API shows it.
fn product_json(p: &pdc_codec::Product) -> serde_json::Value {
    serde_json::json!({
        "id": p.id, "name": p.name, "barcode": p.barcode, "category": p.category,
        "priceCents": p.price_cents, "taxRateBp": p.tax_rate_bp, "active": p.active,
    })
}
