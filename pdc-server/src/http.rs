//! The HTTP API (docs/PROTOCOL.md): `/v1/push`, `/v1/pull`, `/v1/metrics`,
//! `/v1/ping`, `/metrics`; binary (`application/x-pdc`) and JSON bodies,
//! gzip request bodies, limits, terminal tokens, per-terminal rate limits.

// The handlers' helpers fail with the HTTP answer itself: it is built once
// per refused request and returned straight away, so boxing it buys nothing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use pdc_clock::{Clock, SystemClock};
use pdc_codec::{Codec, Record};
use pdc_monitor::{FleetReport, MetricKey, Registry, TerminalReport};
use pdc_sync::{
    Entry, ItemResult, MetricsReport, PullRequest, PushRequest, PushResponse, Scope, StoreId, View,
    BASE_SCHEMA, PROTOCOL_VERSION,
};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_http::timeout::TimeoutLayer;

use crate::datasets::DatasetHub;
use crate::ledger::{Ledger, TokenDigest};
use crate::{PosApply, ServerError};

/// Request limits and rates.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most items in one push.
    pub max_items: usize,
    /// Largest request body, after gzip decompression.
    pub max_body_bytes: usize,
    /// Largest payload of one item.
    pub max_item_bytes: usize,
    /// Sustained requests per second per terminal.
    pub rate_per_sec: u32,
    /// Burst of requests per terminal above the rate.
    pub burst: u32,
    /// Requests taking longer are answered 408.
    pub request_timeout_ms: u64,
    /// A connection that has not sent a whole request head within this
    /// time is closed: it bounds a client that trickles its headers, one
    /// that sends nothing, and an idle keep-alive connection (the timer
    /// restarts while a connection waits for its next request).
    pub header_timeout_ms: u64,
    /// Connections served at once; one more is closed as soon as it is
    /// accepted (counted in `pdc_server_connections_refused_total`).
    pub max_connections: usize,
    /// Origins whose pages may call the API from a browser (CORS, e.g.
    /// `https://till.example.com`); empty (the default): only pages of the
    /// server's own origin.
    pub cors_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_items: 1_000,
            max_body_bytes: 8 << 20,
            max_item_bytes: 256 << 10,
            rate_per_sec: 50,
            burst: 100,
            request_timeout_ms: 15_000,
            header_timeout_ms: 10_000,
            max_connections: 1_024,
            cors_origins: Vec::new(),
        }
    }
}

/// SHA-256 of a terminal token.
pub fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh terminal token: `pdc_` and 256 random bits in hex.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let mut s = String::with_capacity(68);
    s.push_str("pdc_");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Registers a terminal and returns its token (shown once, stored only as
/// a digest).
pub async fn add_terminal(ledger: &dyn Ledger, terminal_id: &str) -> Result<String, ServerError> {
    if !crate::ledger::valid_terminal_id(terminal_id) {
        return Err(ServerError::InvalidTerminal(format!(
            "{terminal_id:?}: 1 to 64 characters of A-Z a-z 0-9 . _ -"
        )));
    }
    let token = new_token();
    ledger
        .add_terminal(
            terminal_id,
            &token_digest(&token),
            SystemClock::new().wall_ms(),
        )
        .await?;
    Ok(token)
}

/// Gives a new token to `terminal_id` and returns it (shown once); the old
/// token stops working: at once in a process that shares this ledger
/// object, within [`TOKEN_CACHE_TTL`] in every other server process on the
/// same database. `None` when there is no such terminal.
pub async fn rotate_terminal(
    ledger: &dyn Ledger,
    terminal_id: &str,
) -> Result<Option<String>, ServerError> {
    let token = new_token();
    Ok(ledger
        .rotate_terminal(terminal_id, &token_digest(&token))
        .await?
        .then_some(token))
}

/// How long a server process trusts a token it looked up: a revocation or
/// rotation from another process (the CLI, another node) takes effect
/// within this bound. One indexed lookup per active terminal per second.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);

/// How often a server reads back dataset versions from the ledger, to
/// learn of changes other processes made (the fallback when the ledger
/// sends no notifications, and their safety net when it does).
pub const DATASET_POLL: Duration = Duration::from_millis(250);

/// Longest a `GET /v1/changes` waits for a change before it answers
/// "nothing changed" (also kept below the request timeout).
pub const CHANGES_MAX_WAIT: Duration = Duration::from_secs(25);

/// Shared state of the HTTP service.
pub struct AppState {
    /// The ledger.
    pub ledger: Arc<dyn Ledger>,
    /// The reference datasets.
    pub datasets: Arc<DatasetHub>,
    /// The POS hook whose catalogue follows the products dataset, if used.
    pub pos: Option<Arc<PosApply>>,
    limits: Limits,
    codec: Codec,
    /// Decodes request bodies: its limits are the server's body limit, so a
    /// small frame that claims a large decoded size is refused from its
    /// header, before anything is allocated.
    request_codec: Codec,
    clock: SystemClock,
    metrics: Mutex<Registry>,
    fleet: Mutex<FleetReport>,
    seen: Mutex<HashMap<String, u64>>,
    stores: Mutex<std::collections::HashSet<(String, StoreId)>>,
    tokens: Mutex<HashMap<TokenDigest, (String, View, Instant)>>,
    limiter: DefaultKeyedRateLimiter<String>,
    /// The ledger's totals for `/metrics`, with when they were read: a
    /// scrape reads the ledger at most every 30 s (on PostgreSQL it is a
    /// count over the items table).
    ledger_totals: Mutex<Option<(pdc_clock::Instant, crate::LedgerTotals)>>,
    /// Set when the server stops: waits on the change stream answer at
    /// once, so that they do not hold the graceful shutdown.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single update; a poisoned lock still
    // holds consistent state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error answer, the one type every handler answers errors with
/// (axum's `IntoResponse` pattern): a JSON body `{"error": code, "message":
/// …}`. A client error says what was wrong with the request; an internal
/// one (the ledger, an encoder) is logged with a fresh request id and
/// answered with a generic message and that id — never its own text, which
/// can name tables, hosts or paths.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For an internal error: what is logged (not sent).
    internal: Option<String>,
    /// `Retry-After`, seconds.
    retry_after: Option<u64>,
}

impl ApiError {
    /// A refusal of the request, with a message for its sender.
    pub(crate) fn client(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            internal: None,
            retry_after: None,
        }
    }

    /// A failure on the server's side: `detail` goes to the log only.
    pub(crate) fn internal(
        status: StatusCode,
        code: &'static str,
        detail: impl std::fmt::Display,
    ) -> Self {
        ApiError {
            status,
            code,
            message: String::new(),
            internal: Some(detail.to_string()),
            retry_after: None,
        }
    }

    /// With a `Retry-After` (seconds).
    pub(crate) fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut request_id = None;
        let message = match &self.internal {
            None => self.message,
            Some(detail) => {
                let id = format!("{:016x}", rand::random::<u64>());
                tracing::warn!(request_id = %id, code = self.code, error = %detail, "internal error");
                let m =
                    format!("internal error (request id {id}); the server's log has the details");
                request_id = Some(id);
                m
            }
        };
        let mut body = serde_json::json!({"error": self.code, "message": message});
        if let Some(id) = &request_id {
            body["request_id"] = serde_json::Value::String(id.clone());
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
            r.headers_mut().insert("x-request-id", id);
        }
        r
    }
}

/// A client error (see [`ApiError`]).
fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::client(status, code, message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Binary,
    Json,
}

impl AppState {
    /// State over a ledger and datasets with these limits. `pos`, when
    /// given, gets the products dataset's ids as its catalogue now and on
    /// every change through [`AppState::update_dataset`].
    pub async fn new(
        ledger: Arc<dyn Ledger>,
        datasets: Arc<DatasetHub>,
        pos: Option<Arc<PosApply>>,
        limits: Limits,
    ) -> Result<Arc<Self>, ServerError> {
        let rate = NonZeroU32::new(limits.rate_per_sec.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let request_codec = Codec::new().with_limits(pdc_codec::Limits {
            max_frame_bytes: limits.max_body_bytes,
            max_decoded_bytes: limits.max_body_bytes,
            ..pdc_codec::Limits::default()
        });
        let state = Arc::new(AppState {
            ledger,
            datasets,
            pos,
            limits,
            codec: Codec::new(),
            request_codec,
            clock: SystemClock::new(),
            metrics: Mutex::new(Registry::new()),
            fleet: Mutex::new(FleetReport::new()),
            seen: Mutex::new(HashMap::new()),
            stores: Mutex::new(std::collections::HashSet::new()),
            tokens: Mutex::new(HashMap::new()),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            ledger_totals: Mutex::new(None),
            stopping: tokio::sync::watch::channel(false).0,
        });
        state.refresh_catalog().await;
        Ok(state)
    }

    async fn refresh_catalog(&self) {
        if let Some(pos) = &self.pos {
            if let Some(ids) = self.datasets.scoped_ids("products").await {
                if ids.version > 0 {
                    pos.set_scoped_catalog(ids);
                }
            }
        }
    }

    /// Reads back dataset changes other processes made (an import from the
    /// CLI, another node) and keeps the POS hook's catalogue in step; the
    /// server calls this every [`DATASET_POLL`] and on a ledger
    /// notification. Returns the names of the datasets that changed.
    pub async fn refresh_datasets(&self) -> Result<Vec<String>, ServerError> {
        let changed = self.datasets.refresh().await?;
        if changed.iter().any(|n| n == "products") {
            self.refresh_catalog().await;
        }
        Ok(changed)
    }

    /// Changes a dataset (see [`DatasetHub::update`]) and keeps the POS
    /// hook's catalogue in step.
    pub async fn update_dataset(
        &self,
        name: &str,
        upserts: Vec<pdc_sync::DatasetRecord>,
        deletes: Vec<u64>,
    ) -> Result<u64, ServerError> {
        self.update_scoped(
            name,
            &Scope::Chain,
            crate::datasets::record_entries(upserts),
            deletes,
        )
        .await
    }

    /// Changes a dataset's layer (see [`DatasetHub::update_scoped`]) and
    /// keeps the POS hook's catalogue in step.
    pub async fn update_scoped(
        &self,
        name: &str,
        scope: &Scope,
        upserts: Vec<(u64, Entry)>,
        removes: Vec<u64>,
    ) -> Result<u64, ServerError> {
        let v = self
            .datasets
            .update_scoped(name, scope, upserts, removes)
            .await?;
        if name == "products" {
            self.refresh_catalog().await;
        }
        Ok(v)
    }

    /// The server's own metrics (not the fleet's).
    pub fn metrics(&self) -> Registry {
        lock(&self.metrics).clone()
    }

    /// The fleet report merged from terminals' `/v1/metrics`.
    pub fn fleet(&self) -> FleetReport {
        lock(&self.fleet).clone()
    }

    fn count(&self, name: &str, labels: &[(&str, &str)], n: u64) {
        if let Ok(k) = MetricKey::new(name, labels) {
            lock(&self.metrics).count(&k, n);
        }
    }

    fn observe(&self, name: &str, v: f64) {
        if let Ok(k) = MetricKey::new(name, &[]) {
            lock(&self.metrics).observe(&k, v);
        }
    }

    fn answer(&self, endpoint: &str, r: Response) -> Response {
        self.count(
            "pdc_server_requests_total",
            &[("endpoint", endpoint), ("status", r.status().as_str())],
            1,
        );
        r
    }

    /// The terminal behind the request's bearer token.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        self.authenticate_view(headers).await.map(|(t, _)| t)
    }

    /// The terminal a request's token belongs to, with its store and
    /// region (both cached for [`TOKEN_CACHE_TTL`]).
    async fn authenticate_view(&self, headers: &HeaderMap) -> Result<(String, View), ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing Authorization: Bearer <terminal token>",
                )
            })?;
        let digest = token_digest(token.trim());
        if let Some((t, v, at)) = lock(&self.tokens).get(&digest) {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok((t.clone(), v.clone()));
            }
        }
        let found = match self.ledger.terminal_for_token(&digest).await {
            Ok(Some(t)) => match self.ledger.terminal_view(&t).await {
                Ok(v) => Some((t, v.unwrap_or_default())),
                Err(e) => return Err(unavailable(&e)),
            },
            Ok(None) => None,
            Err(e) => return Err(unavailable(&e)),
        };
        match found {
            Some((t, view)) => {
                if let Some(pos) = &self.pos {
                    pos.set_terminal_view(&t, &view);
                }
                let mut cache = lock(&self.tokens);
                if cache.len() > 100_000 {
                    cache.clear();
                }
                cache.insert(digest, (t.clone(), view.clone(), Instant::now()));
                Ok((t, view))
            }
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown or revoked terminal token",
            )),
        }
    }

    /// Forgets cached tokens (call after revoking one in this process).
    pub fn forget_tokens(&self) {
        lock(&self.tokens).clear();
    }

    fn rate_limit(&self, terminal: &str) -> Result<(), ApiError> {
        match self.limiter.check_key(&terminal.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let ms = wait.as_millis().max(1) as u64;
                Err(error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("terminal {terminal} over its request rate; retry in {ms} ms"),
                )
                .retry_after(ms.div_ceil(1000).max(1)))
            }
        }
    }

    /// Reads, decompresses and bounds the body; picks the format.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Format, Vec<u8>), ApiError> {
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        // Media types and content codings are case-insensitive (RFC 9110).
        let media = ctype
            .split(';')
            .next()
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let format = match media.as_str() {
            "application/x-pdc" => Format::Binary,
            "application/json" => Format::Json,
            _ => {
                return Err(error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("content type {ctype:?}: use application/x-pdc or application/json"),
                ))
            }
        };
        let limit = self.limits.max_body_bytes;
        let too_big = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body over {limit} bytes"),
            )
        };
        let raw: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            // Over the limit is 413; a body that breaks HTTP framing (a
            // malformed chunk size, a connection cut mid-body) is 400.
            let inner = e.into_inner();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*inner);
            while let Some(c) = cause {
                if c.is::<http_body_util::LengthLimitError>() {
                    return too_big();
                }
                cause = c.source();
            }
            error(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                "the request body could not be read",
            )
        })?;
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .trim()
            .to_ascii_lowercase();
        let bytes = match encoding.as_str() {
            "identity" => raw.to_vec(),
            "gzip" => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&raw[..])
                    .take(limit as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_gzip", e.to_string()))?;
                if out.len() > limit {
                    return Err(too_big());
                }
                out
            }
            other => {
                return Err(error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_encoding",
                    format!("content encoding {other:?}: use gzip or none"),
                ))
            }
        };
        Ok((format, bytes))
    }

    fn decode<T: Record + DeserializeOwned>(&self, f: Format, bytes: &[u8]) -> Result<T, ApiError> {
        match f {
            Format::Binary => self.request_codec.decode(bytes).map_err(|e| match e {
                // The frame says it decodes past the body limit.
                pdc_codec::CodecError::TooLarge { .. } => error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "request body decodes to more than {} bytes: {e}",
                        self.limits.max_body_bytes
                    ),
                ),
                e => error(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
            }),
            Format::Json => serde_json::from_slice(bytes)
                .map_err(|e| error(StatusCode::BAD_REQUEST, "malformed", e.to_string())),
        }
    }

    /// The response and its body's size.
    fn encode_sized<T: Record + Serialize>(
        &self,
        f: Format,
        value: &T,
    ) -> Result<(Response, usize), ApiError> {
        self.encode_sized_as(f, value, T::SCHEMA)
    }

    /// The response written with an older frame schema (for an older
    /// client; the caller made the value readable by it).
    fn encode_sized_as<T: Record + Serialize>(
        &self,
        f: Format,
        value: &T,
        schema: u8,
    ) -> Result<(Response, usize), ApiError> {
        let (ctype, body) = match f {
            Format::Binary => (
                "application/x-pdc",
                self.codec
                    .encode_value(T::KIND, schema, value)
                    .map_err(|e| e.to_string()),
            ),
            Format::Json => (
                "application/json",
                serde_json::to_vec(value).map_err(|e| e.to_string()),
            ),
        };
        let b =
            body.map_err(|e| ApiError::internal(StatusCode::INTERNAL_SERVER_ERROR, "encode", e))?;
        let n = b.len();
        Ok((([(header::CONTENT_TYPE, ctype)], b).into_response(), n))
    }

    fn seen(&self, terminal: &str) {
        let now = self.clock.wall_ms();
        lock(&self.seen).insert(terminal.to_owned(), now);
    }

    fn check_push(&self, req: &PushRequest, terminal: &str) -> Result<(), ApiError> {
        if !(1..=PROTOCOL_VERSION).contains(&req.schema) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "schema",
                format!(
                    "protocol schema {}, this server speaks 1 to {PROTOCOL_VERSION}",
                    req.schema
                ),
            ));
        }
        if req.terminal_id != terminal {
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this token pushes as {terminal}, not {}", req.terminal_id),
            ));
        }
        if req.items.len() > self.limits.max_items {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_items",
                format!(
                    "{} items, at most {}",
                    req.items.len(),
                    self.limits.max_items
                ),
            ));
        }
        let mut ids = std::collections::HashSet::with_capacity(req.items.len());
        for (n, i) in req.items.iter().enumerate() {
            let bad = |m: String| {
                Err(error(
                    StatusCode::BAD_REQUEST,
                    "malformed_item",
                    format!("item {n}: {m}"),
                ))
            };
            if let Err(e) = crate::ledger::check_item(n, i) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "malformed_item",
                    e.to_string(),
                ));
            }
            if i.payload.len() > self.limits.max_item_bytes {
                // 413, not 400: the terminal halves the batch and
                // dead-letters a lone item with this reason (the limit).
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "item_too_large",
                    format!(
                        "item {n}: payload of {} bytes, at most {}",
                        i.payload.len(),
                        self.limits.max_item_bytes
                    ),
                ));
            }
            if !ids.insert(i.local_id) {
                return bad(format!("local_id {} twice in the batch", i.local_id));
            }
        }
        Ok(())
    }

    /// Records the (terminal, store) pair; a store the ledger never saw
    /// for this terminal is logged and counted (a replaced till store).
    async fn note_store(&self, terminal: &str, store: StoreId) {
        let key = (terminal.to_owned(), store);
        if lock(&self.stores).contains(&key) {
            return;
        }
        match self
            .ledger
            .note_store(terminal, store, self.clock.wall_ms())
            .await
        {
            Ok(new) => {
                if new {
                    let known = self
                        .ledger
                        .terminal_stores(terminal)
                        .await
                        .map(|s| s.len())
                        .unwrap_or(0);
                    if known > 1 {
                        tracing::warn!(
                            terminal, store = %store, stores = known,
                            "terminal pushes from a new store (store replaced or reinstalled)"
                        );
                    } else {
                        tracing::info!(terminal, store = %store, "first store of terminal");
                    }
                    self.count("pdc_server_new_stores_total", &[], 1);
                }
                let mut known = lock(&self.stores);
                if known.len() > 100_000 {
                    known.clear();
                }
                known.insert(key);
            }
            // Noting is bookkeeping: a failure must not refuse the push.
            Err(e) => tracing::warn!(error = %e, terminal, "could not record the store id"),
        }
    }
}

fn unavailable(e: &ServerError) -> ApiError {
    ApiError::internal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e).retry_after(1)
}

async fn push(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = push_inner(&s, &headers, body).await.into_response();
    s.answer("push", r)
}

async fn push_inner(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let started = Instant::now();
    let terminal = s.authenticate(headers).await?;
    s.rate_limit(&terminal)?;
    let (format, bytes) = s.read_body(headers, body).await?;
    s.count(
        "pdc_server_push_bytes_total",
        &[("direction", "in")],
        bytes.len() as u64,
    );
    let req: PushRequest = s.decode(format, &bytes)?;
    s.check_push(&req, &terminal)?;
    s.seen(&terminal);
    s.note_store(&terminal, req.store_id).await;
    // An order naming a product this node has not heard of yet may come
    // from a till that pulled from another node a moment ago: read back
    // the datasets before the product check refuses it for good.
    if let Some(pos) = &s.pos {
        if !pos.knows_products(&terminal, &req.items) {
            if let Err(e) = s.refresh_datasets().await {
                return Err(unavailable(&e));
            }
        }
    }
    let n = req.items.len();
    let schema = req.schema;
    let ledger_started = Instant::now();
    let result = s
        .ledger
        .push(&terminal, req.store_id, req.items, s.clock.wall_ms())
        .await;
    s.observe(
        "pdc_server_ledger_ms",
        ledger_started.elapsed().as_secs_f64() * 1000.0,
    );
    let resp = match result {
        Ok(results) => {
            let (mut a, mut d, mut rj, mut c) = (0, 0, 0, 0);
            for r in &results {
                match r {
                    ItemResult::Applied { .. } => a += 1,
                    ItemResult::Duplicate { .. } => d += 1,
                    ItemResult::Rejected { .. } => rj += 1,
                    ItemResult::Conflict { .. } => c += 1,
                    ItemResult::RetryLater => {}
                }
            }
            if c > 0 {
                tracing::warn!(terminal, conflicts = c, "resends with another payload");
            }
            s.count("pdc_server_items_total", &[("result", "applied")], a);
            s.count("pdc_server_items_total", &[("result", "duplicate")], d);
            s.count("pdc_server_items_total", &[("result", "rejected")], rj);
            s.count("pdc_server_items_total", &[("result", "conflict")], c);
            PushResponse {
                results,
                retry_after_ms: None,
            }
        }
        Err(ServerError::InvalidItem(m)) => {
            return Err(error(StatusCode::BAD_REQUEST, "malformed_item", m));
        }
        Err(e) => {
            tracing::warn!(error = %e, terminal, "push not applied; answering retry-later");
            s.count(
                "pdc_server_items_total",
                &[("result", "retry_later")],
                n as u64,
            );
            PushResponse {
                results: vec![ItemResult::RetryLater; n],
                retry_after_ms: Some(1_000),
            }
        }
    };
    s.observe(
        "pdc_server_push_ms",
        started.elapsed().as_secs_f64() * 1000.0,
    );
    let (r, sent) = if schema < PROTOCOL_VERSION {
        s.encode_sized_as(format, &resp.for_schema_1(), schema)?
    } else {
        s.encode_sized(format, &resp)?
    };
    s.count(
        "pdc_server_push_bytes_total",
        &[("direction", "out")],
        sent as u64,
    );
    Ok(r)
}

async fn pull(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let r = async {
        let (terminal, view) = s.authenticate_view(&headers).await?;
        s.rate_limit(&terminal)?;
        let (format, bytes) = s.read_body(&headers, body).await?;
        s.count(
            "pdc_server_pull_request_bytes_total",
            &[],
            bytes.len() as u64,
        );
        let req: PullRequest = s.decode(format, &bytes)?;
        if req.schema != BASE_SCHEMA {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "schema",
                "unsupported protocol schema",
            ));
        }
        if req.terminal_id != terminal {
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "pull as another terminal",
            ));
        }
        if req.datasets.len() > 64 {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "malformed",
                "at most 64 datasets",
            ));
        }
        s.seen(&terminal);
        let resp = s.datasets.answer(&req, &view).await;
        let (r, sent) = s.encode_sized(format, &resp)?;
        // What this answer weighs against full snapshots of the same
        // datasets: the delta pull's saving, on /metrics.
        let mut snapshot = 0;
        for d in &req.datasets {
            snapshot += s.datasets.snapshot_bytes_for(&d.dataset, &view).await;
        }
        s.count("pdc_server_pull_bytes_total", &[], sent as u64);
        s.count("pdc_server_pull_snapshot_bytes_total", &[], snapshot as u64);
        Ok(r)
    }
    .await
    .into_response();
    s.answer("pull", r)
}

/// `GET /v1/changes?products=V&users=V&wait=S`: answers as soon as a
/// layer the terminal's view sees changed after the version it holds of a
/// named dataset, or after `wait` seconds (at most [`CHANGES_MAX_WAIT`],
/// kept below the request timeout) with nothing changed. The answer is
/// JSON: `{"changed": [names], "versions": {name: view version}}`. The
/// terminal then pulls; periodic pulls remain its fallback.
async fn changes(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    let r = async {
        let (terminal, view) = s.authenticate_view(&headers).await?;
        s.rate_limit(&terminal)?;
        let bad = |m: String| error(StatusCode::BAD_REQUEST, "malformed", m);
        let cap = CHANGES_MAX_WAIT.min(
            Duration::from_millis(s.limits.request_timeout_ms.max(2_000)) - Duration::from_secs(1),
        );
        let mut wait = cap;
        let mut known: Vec<(String, u64)> = Vec::new();
        for (k, v) in &query {
            if k == "wait" {
                let secs: u64 = v
                    .parse()
                    .map_err(|_| bad(format!("wait={v:?} is not a number of seconds")))?;
                wait = Duration::from_secs(secs).min(cap);
            } else {
                let version: u64 = v
                    .parse()
                    .map_err(|_| bad(format!("{k}={v:?} is not a version")))?;
                known.push((k.clone(), version));
            }
        }
        if known.is_empty() || known.len() > 64 {
            return Err(bad("name 1 to 64 datasets with the version held".into()));
        }
        s.seen(&terminal);
        let deadline = tokio::time::Instant::now() + wait;
        let mut rx = s.datasets.subscribe();
        let mut stopping = s.stopping.subscribe();
        loop {
            let versions = s.datasets.view_versions(&view).await;
            let changed: Vec<&str> = known
                .iter()
                .filter(|(n, v)| versions.get(n).is_some_and(|x| x > v))
                .map(|(n, _)| n.as_str())
                .collect();
            if !changed.is_empty()
                || tokio::time::Instant::now() >= deadline
                || *stopping.borrow()
            {
                let versions: BTreeMap<&str, u64> = known
                    .iter()
                    .filter_map(|(n, _)| versions.get(n).map(|&v| (n.as_str(), v)))
                    .collect();
                s.count(
                    "pdc_server_changes_answers_total",
                    &[("changed", if changed.is_empty() { "no" } else { "yes" })],
                    1,
                );
                let body = serde_json::json!({"changed": changed, "versions": versions});
                return Ok(axum::Json(body).into_response());
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() {
                    return Err(error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "shutting down"));
                },
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        }
    }
    .await
    .into_response();
    s.answer("changes", r)
}

pub use pdc_sync::STOCK_PAGE_MAX;

/// `GET /v1/stock?since=N&limit=M`: the stock levels of the terminal's
/// store changed after feed position `N` (default 0: all), at most `M`
/// (default and cap [`STOCK_PAGE_MAX`]), as a [`pdc_sync::StockPage`]: a
/// pdc frame with `Accept: application/x-pdc`, else JSON
/// `{"levels":[{"product_id","quantity","seq"}],"next":N,"more":bool}`;
/// 404 `no_stock` when the server keeps no stock.
async fn stock(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    let r = async {
        let (terminal, view) = s.authenticate_view(&headers).await?;
        s.rate_limit(&terminal)?;
        if !s.pos.as_ref().is_some_and(|p| p.tracks_stock()) {
            return Err(error(
                StatusCode::NOT_FOUND,
                "no_stock",
                "this server keeps no stock (track_stock)",
            ));
        }
        let bad = |m: String| error(StatusCode::BAD_REQUEST, "malformed", m);
        let (mut since, mut limit) = (0u64, STOCK_PAGE_MAX);
        for (k, v) in &query {
            let n: u64 = v
                .parse()
                .map_err(|_| bad(format!("{k}={v:?} is not a number")))?;
            match k.as_str() {
                "since" => since = n,
                "limit" => limit = usize::try_from(n).unwrap_or(usize::MAX),
                _ => return Err(bad(format!("unknown parameter {k:?}"))),
            }
        }
        let limit = limit.clamp(1, STOCK_PAGE_MAX);
        let store = view.store.clone().unwrap_or_default();
        // One more than asked tells whether more follow.
        let levels = s
            .ledger
            .stock_since(&store, since, limit + 1)
            .await
            .map_err(|e| unavailable(&e))?;
        let page = pdc_sync::StockPage::from_levels(levels, since, limit);
        // A pdc frame when asked for (`Accept: application/x-pdc`, 6-7
        // bytes a level), else JSON.
        let binary = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.to_ascii_lowercase().contains("application/x-pdc"));
        let format = if binary { Format::Binary } else { Format::Json };
        let (r, sent) = s.encode_sized(format, &page)?;
        s.count("pdc_server_stock_bytes_total", &[], sent as u64);
        Ok(r)
    }
    .await
    .into_response();
    s.answer("stock", r)
}

async fn metrics_report(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let terminal = s.authenticate(&headers).await?;
        s.rate_limit(&terminal)?;
        let (format, bytes) = s.read_body(&headers, body).await?;
        let req: MetricsReport = s.decode(format, &bytes)?;
        if req.terminal_id != terminal {
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "report as another terminal",
            ));
        }
        let report = TerminalReport::decode(&s.codec, &req.report)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "malformed_report", e.to_string()))?;
        if report.terminal_id != terminal {
            return Err(error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "report of another terminal",
            ));
        }
        lock(&s.fleet)
            .merge(&report)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "malformed_report", e.to_string()))?;
        s.seen(&terminal);
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .into_response();
    s.answer("metrics", r)
}

/// `200` with the limits a terminal checks before it saves an item
/// ([`pdc_sync::ServerLimits`], JSON).
async fn ping(State(s): State<Arc<AppState>>) -> Response {
    let l = &s.limits;
    let limits = pdc_sync::ServerLimits {
        max_items: l.max_items as u64,
        max_body_bytes: l.max_body_bytes as u64,
        max_item_bytes: l.max_item_bytes as u64,
    };
    s.answer("ping", (StatusCode::OK, axum::Json(limits)).into_response())
}

async fn prometheus(State(s): State<Arc<AppState>>) -> Response {
    let now = s.clock.wall_ms();
    let recent = lock(&s.seen)
        .values()
        .filter(|&&t| now.saturating_sub(t) <= 5 * 60_000)
        .count();
    let mut reg = s.metrics();
    if let Ok(k) = MetricKey::new("pdc_server_terminals_seen_5m", &[]) {
        reg.gauge(&k, recent as f64);
    }
    let fleet = s.fleet();
    if let Ok(k) = MetricKey::new("pdc_fleet_reports_total", &[]) {
        reg.count(&k, fleet.terminals);
    }
    // What the ledger holds survives restarts and is the same on every
    // server process over one database (the counters above are this
    // process's since it started).
    if let Some(t) = s.ledger_totals().await {
        for (result, n) in [("applied", t.applied), ("rejected", t.rejected)] {
            if let Ok(k) = MetricKey::new("pdc_ledger_items", &[("result", result)]) {
                reg.gauge(&k, n as f64);
            }
        }
    }
    let mut text = pdc_monitor::prometheus(&reg);
    text.push_str(&pdc_monitor::prometheus(&fleet.registry));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

impl AppState {
    /// The ledger's totals, read at most every 30 s; `None` (logged) when
    /// the ledger cannot answer.
    async fn ledger_totals(&self) -> Option<crate::LedgerTotals> {
        let fresh = |at: pdc_clock::Instant| self.clock.now() - at < Duration::from_secs(30);
        if let Some((at, t)) = *lock(&self.ledger_totals) {
            if fresh(at) {
                return Some(t);
            }
        }
        match self.ledger.totals().await {
            Ok(t) => {
                *lock(&self.ledger_totals) = Some((self.clock.now(), t));
                Some(t)
            }
            Err(e) => {
                tracing::warn!(error = %e, "ledger totals for /metrics");
                None
            }
        }
    }
}

/// The service's routes over a state.
pub fn router(state: Arc<AppState>) -> Router {
    let timeout = Duration::from_millis(state.limits.request_timeout_ms.max(1));
    let cors = cors_layer(&state.limits.cors_origins);
    let app = Router::new()
        .route("/v1/push", post(push))
        .route("/v1/pull", post(pull))
        .route("/v1/metrics", post(metrics_report))
        .route("/v1/ping", get(ping).head(ping))
        .route("/v1/changes", get(changes))
        .route("/v1/stock", get(stock))
        .route("/metrics", get(prometheus))
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .with_state(state);
    match cors {
        Some(layer) => app.layer(layer),
        None => app,
    }
}

/// CORS for the configured origins: the preflight allows `Authorization`,
/// `Content-Type` (`application/x-pdc` is not a simple type) and
/// `Content-Encoding`; `Retry-After` is readable by the page. Origins that
/// are not valid header values are skipped (the config check names them).
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{HeaderName, HeaderValue, Method};
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
        .collect();
    if list.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(list)
            .allow_methods([Method::GET, Method::HEAD, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
            ])
            .expose_headers([HeaderName::from_static("retry-after")])
            .max_age(Duration::from_secs(3600)),
    )
}

/// A running server: its address and a way to stop it gracefully.
#[derive(Debug)]
pub struct ServerHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (ledger, datasets, metrics).
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ServerHandle {
    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.state.stopping.send_replace(true);
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task
            .await
            .map_err(|e| ServerError::Io(std::io::Error::other(e.to_string())))??;
        Ok(())
    }
}

/// Serves `state` on `listen` (port 0: an ephemeral port) in the
/// background, with a retention job purging items older than `retention`.
pub async fn spawn(
    listen: SocketAddr,
    state: Arc<AppState>,
    retention: Duration,
) -> Result<ServerHandle, ServerError> {
    spawn_with_routes(listen, state, retention, Router::new()).await
}

/// [`spawn`] with more routes beside the API (e.g. a web till's static
/// files, so that its pages share the API's origin).
pub async fn spawn_with_routes(
    listen: SocketAddr,
    state: Arc<AppState>,
    retention: Duration,
    extra: Router,
) -> Result<ServerHandle, ServerError> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // A state served again after a shutdown (a restart in-process).
    state.stopping.send_replace(false);
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(Arc::clone(&state)).merge(extra);
    let janitor = spawn_retention(Arc::clone(&state), retention);
    let refresher = spawn_dataset_refresh(Arc::clone(&state));
    let upkeep = spawn_maintenance(Arc::clone(&state));
    let limits = ConnLimits {
        header_timeout: Duration::from_millis(state.limits.header_timeout_ms.max(1)),
        max_connections: state.limits.max_connections.max(1),
    };
    let counts = Arc::clone(&state);
    let task = tokio::spawn(async move {
        let r = serve(listener, app, limits, counts, stopped).await;
        janitor.abort();
        refresher.abort();
        upkeep.abort();
        r
    });
    Ok(ServerHandle {
        addr,
        state,
        stop: Some(stop),
        task,
    })
}

/// What the accept loop enforces per connection.
#[derive(Debug, Clone, Copy)]
struct ConnLimits {
    header_timeout: Duration,
    max_connections: usize,
}

/// The accept loop: HTTP/1.1 with a header read timeout (which also closes
/// idle keep-alive connections) and a cap on connections served at once;
/// on `stopped`, stops accepting and lets open connections finish their
/// requests (up to 30 s).
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    state: Arc<AppState>,
    mut stopped: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    // Out of file descriptors and the like: wait, go on.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    state.count("pdc_server_connections_refused_total", &[], 1);
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = hyper_util::service::TowerToHyperService::new(
                    app.clone().into_service::<hyper::body::Incoming>(),
                );
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(limits.header_timeout)
                    .keep_alive(true);
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    // A closed or timed-out connection ends here; nothing to report.
                    let _ = conn.await;
                    drop(slot);
                });
            }
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown; closing them");
    }
    Ok(())
}

/// Deletes items older than `retention`, in chunks of 10,000, once at
/// start and then hourly; also forgets idle rate-limit keys.
/// Reads back dataset changes of other processes every [`DATASET_POLL`],
/// and at once when the ledger notifies one.
fn spawn_dataset_refresh(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut notified = state.ledger.dataset_notifications();
        loop {
            match notified.as_mut() {
                Some(rx) => {
                    tokio::select! {
                        r = rx.changed() => if r.is_err() { notified = None; },
                        _ = tokio::time::sleep(DATASET_POLL) => {}
                    }
                }
                None => tokio::time::sleep(DATASET_POLL).await,
            }
            match state.refresh_datasets().await {
                Ok(changed) if !changed.is_empty() => {
                    tracing::info!(?changed, "datasets changed by another process");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "dataset refresh failed"),
            }
        }
    })
}

/// The ledger's upkeep (e.g. folding stock movements), once a second.
fn spawn_maintenance(state: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = state.ledger.maintain().await {
                tracing::warn!(error = %e, "ledger upkeep failed");
            }
        }
    })
}

fn spawn_retention(state: Arc<AppState>, retention: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let cutoff = state
                .clock
                .wall_ms()
                .saturating_sub(retention.as_millis() as u64);
            loop {
                match state.ledger.purge_before(cutoff, 10_000).await {
                    Ok(10_000) => tokio::task::yield_now().await,
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(purged = n, "retention");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "retention failed");
                        break;
                    }
                }
            }
            state.limiter.retain_recent();
        }
    })
}
