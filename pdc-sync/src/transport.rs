//! The transport seam, its error classes, and an in-memory server with a
//! loopback transport for tests and simulations.

use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pdc_codec::{Codec, TerminalId};

use crate::delta::ServerDataset;
use crate::protocol::{
    ItemResult, MetricsReport, PullRequest, PullResponse, PushRequest, PushResponse, ServerLimits,
    StockLevel, StockPage, StoreId, StreamKey,
};

/// Why a request failed, classified for the sync machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No network, or the server is unreachable.
    #[error("offline: {0}")]
    Offline(String),
    /// No answer in time; the server may or may not have applied the batch.
    #[error("request timed out")]
    Timeout,
    /// The server is overloaded (HTTP 429/503); wait at least `retry_after`.
    #[error("server busy")]
    ServerBusy {
        /// The server's Retry-After.
        retry_after: Option<Duration>,
    },
    /// The server failed (HTTP 5xx): maybe transient, maybe a poison item.
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Body or reason.
        message: String,
    },
    /// The server refused the request as malformed (HTTP 4xx other than
    /// auth): permanent for this request.
    #[error("request refused {status}: {message}")]
    Client {
        /// HTTP status.
        status: u16,
        /// Body or reason.
        message: String,
    },
    /// The terminal's credentials were refused (HTTP 401/403).
    #[error("not authorised: {0}")]
    Auth(String),
}

/// Moves encoded protocol messages to the server and back.
///
/// Bodies are pdc-codec frames of the [`crate::protocol`] messages. The HTTP
/// implementation lives in pdc-core; [`LoopbackTransport`] is in-memory. On
/// `wasm32` the futures need not be `Send` (browser fetch is single-threaded).
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
pub trait SyncTransport {
    /// Sends a push request frame; returns the response frame.
    async fn push(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError>;
    /// Sends a pull request frame; returns the response frame.
    async fn pull(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError>;
    /// A round trip with no effect, for latency probes; returns the limits
    /// the server publishes, if it publishes any.
    async fn ping(&self) -> Result<Option<ServerLimits>, TransportError>;
    /// Sends a metrics report frame (a [`crate::MetricsReport`]).
    async fn report(&self, request: Vec<u8>) -> Result<(), TransportError>;

    /// Waits up to `wait` (the server may answer sooner) for a change the
    /// terminal does not hold yet to one of `known`'s datasets (name,
    /// version held); returns the names that changed (empty: nothing
    /// changed in time), or `None` when this transport or server has no
    /// change stream (the default: the caller relies on periodic pulls).
    async fn wait_changes(
        &self,
        known: Vec<(String, u64)>,
        wait: std::time::Duration,
    ) -> Result<Option<Vec<String>>, TransportError> {
        let _ = (known, wait);
        Ok(None)
    }

    /// The terminal's store's stock levels changed after `since` (at most
    /// `limit`, in feed order), or `None` when this transport or server
    /// keeps no stock (the default).
    async fn stock_since(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Option<StockPage>, TransportError> {
        let _ = (since, limit);
        Ok(None)
    }
}

/// A simple in-memory sync server: applies each (terminal, store, local id)
/// once, answers resends with the original sequence (or `Conflict` when the
/// payload differs), rejects configured kinds, and records the order in
/// which each stream's items were applied.
#[derive(Debug, Default)]
pub struct MemoryServer {
    applied: HashMap<(TerminalId, StoreId, u64), (u64, [u8; 32])>,
    next_seq: u64,
    /// Applied local ids per (terminal, stream), in application order.
    pub streams: BTreeMap<(TerminalId, StreamKey), Vec<u64>>,
    /// Item kinds refused by a "business rule", with the code to answer.
    pub reject_kinds: HashMap<u16, String>,
    /// Item kinds whose presence makes the whole request fail with a 5xx
    /// (a poison item).
    pub poison_kinds: Vec<u16>,
    /// When set, every push is answered retry-later with this retry-after.
    pub overloaded: Option<Duration>,
    /// Pushes received.
    pub pushes: u64,
    /// Reference datasets served by pull, by name.
    pub datasets: BTreeMap<String, ServerDataset>,
    /// Metrics reports received, oldest first.
    pub reports: Vec<MetricsReport>,
    /// Limits published by ping and enforced on push (a payload over
    /// `max_item_bytes` fails the request with 413, as pdc-server does).
    pub limits: Option<ServerLimits>,
    /// The stock feed served by `stock_since` (`None`: no stock), in feed
    /// order; [`MemoryServer::set_stock`] appends to it.
    pub stock: Option<Vec<StockLevel>>,
}

impl MemoryServer {
    /// Sets a product's stock level: a new entry at the end of the feed,
    /// replacing the product's earlier one.
    pub fn set_stock(&mut self, product_id: u32, quantity: i64) {
        let feed = self.stock.get_or_insert_with(Vec::new);
        let seq = feed.last().map_or(1, |l| l.seq + 1);
        feed.retain(|l| l.product_id != product_id);
        feed.push(StockLevel {
            product_id,
            quantity,
            seq,
        });
    }

    /// The stock feed after `since`, at most `limit` levels (at least one).
    pub fn stock_since(&self, since: u64, limit: usize) -> Option<StockPage> {
        let feed = self.stock.as_ref()?;
        let limit = limit.max(1);
        let after = feed.iter().filter(|l| l.seq > since).take(limit + 1);
        Some(StockPage::from_levels(
            after.copied().collect(),
            since,
            limit,
        ))
    }

    /// Applies a push request.
    pub fn push(&mut self, req: &PushRequest) -> Result<PushResponse, TransportError> {
        self.pushes += 1;
        if let Some(retry_after) = self.overloaded {
            return Ok(PushResponse {
                results: vec![ItemResult::RetryLater; req.items.len()],
                retry_after_ms: Some(retry_after.as_millis() as u64),
            });
        }
        if let Some(l) = self.limits {
            if let Some(big) = req
                .items
                .iter()
                .find(|i| i.payload.len() as u64 > l.max_item_bytes)
            {
                return Err(TransportError::Client {
                    status: 413,
                    message: format!(
                        "item_too_large: item {}: payload of {} bytes, at most {}",
                        big.local_id,
                        big.payload.len(),
                        l.max_item_bytes
                    ),
                });
            }
        }
        if req
            .items
            .iter()
            .any(|i| self.poison_kinds.contains(&i.kind))
        {
            return Err(TransportError::Server {
                status: 500,
                message: "internal error".into(),
            });
        }
        let results = req
            .items
            .iter()
            .map(|item| {
                let key = (req.terminal_id.clone(), req.store_id, item.local_id);
                let digest: [u8; 32] = sha2::Sha256::digest(&item.payload).into();
                if let Some(&(seq, first)) = self.applied.get(&key) {
                    if first != digest {
                        return ItemResult::Conflict {
                            message: format!(
                                "item {} was applied with another payload",
                                item.local_id
                            ),
                        };
                    }
                    return ItemResult::Duplicate { server_seq: seq };
                }
                if let Some(code) = self.reject_kinds.get(&item.kind) {
                    return ItemResult::Rejected {
                        code: code.clone(),
                        message: format!("kind {} refused", item.kind),
                    };
                }
                self.next_seq += 1;
                self.applied.insert(key, (self.next_seq, digest));
                self.streams
                    .entry((req.terminal_id.clone(), item.stream))
                    .or_default()
                    .push(item.local_id);
                ItemResult::Applied {
                    server_seq: self.next_seq,
                }
            })
            .collect();
        Ok(PushResponse {
            results,
            retry_after_ms: None,
        })
    }

    /// Answers a pull: per requested dataset the server holds, what the
    /// terminal needs (see [`ServerDataset::answer`]).
    pub fn pull(&self, req: &PullRequest) -> PullResponse {
        PullResponse {
            datasets: req
                .datasets
                .iter()
                .filter_map(|state| self.datasets.get(&state.dataset).map(|d| d.answer(state)))
                .collect(),
        }
    }

    /// Whether (terminal, local id) was applied, from any of the
    /// terminal's stores.
    pub fn has(&self, terminal: &str, local_id: u64) -> bool {
        self.applied
            .keys()
            .any(|(t, _, l)| t.as_str() == terminal && *l == local_id)
    }

    /// Whether (terminal, store, local id) was applied.
    pub fn has_in(&self, terminal: &str, store: StoreId, local_id: u64) -> bool {
        TerminalId::new(terminal).is_ok_and(|t| self.applied.contains_key(&(t, store, local_id)))
    }

    /// Number of distinct items applied.
    pub fn applied_count(&self) -> usize {
        self.applied.len()
    }
}

/// A transport that hands frames to a [`MemoryServer`] in the same process.
#[derive(Debug, Clone, Default)]
pub struct LoopbackTransport {
    /// The server behind the loopback.
    pub server: Arc<Mutex<MemoryServer>>,
    codec: Codec,
}

impl LoopbackTransport {
    /// A loopback to a fresh server.
    pub fn new() -> Self {
        LoopbackTransport::default()
    }

    /// A request body as a server reads it: undecodable is a 400.
    fn decode<T: pdc_codec::Record>(&self, body: &[u8]) -> Result<T, TransportError> {
        self.codec.decode(body).map_err(|e| TransportError::Client {
            status: 400,
            message: e.to_string(),
        })
    }

    /// A response body; failing to encode one is the server's fault (500).
    fn encode<T: pdc_codec::Record>(&self, value: &T) -> Result<Vec<u8>, TransportError> {
        self.codec
            .encode(value)
            .map_err(|e| TransportError::Server {
                status: 500,
                message: e.to_string(),
            })
    }

    fn server(&self) -> Result<std::sync::MutexGuard<'_, MemoryServer>, TransportError> {
        self.server.lock().map_err(|_| TransportError::Server {
            status: 500,
            message: "server state poisoned".into(),
        })
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl SyncTransport for LoopbackTransport {
    async fn push(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let req: PushRequest = self.decode(&request)?;
        let resp = self.server()?.push(&req)?;
        self.encode(&resp)
    }

    async fn pull(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let req: PullRequest = self.decode(&request)?;
        let resp = self.server()?.pull(&req);
        self.encode(&resp)
    }

    async fn ping(&self) -> Result<Option<ServerLimits>, TransportError> {
        Ok(self.server()?.limits)
    }

    async fn report(&self, request: Vec<u8>) -> Result<(), TransportError> {
        let report: MetricsReport = self.decode(&request)?;
        self.server()?.reports.push(report);
        Ok(())
    }

    async fn stock_since(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Option<StockPage>, TransportError> {
        Ok(self.server()?.stock_since(since, limit))
    }
}

#[cfg(test)]
mod stock_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Paging through the feed from 0 yields each product's latest
        /// level once, like a map of the levels set.
        #[test]
        fn the_stock_feed_pages_to_the_latest_levels(
            sets in proptest::collection::vec((0u32..30, -5i64..5), 0..60),
            limit in 1usize..8,
        ) {
            let mut server = MemoryServer { stock: Some(Vec::new()), ..MemoryServer::default() };
            let mut model = BTreeMap::new();
            for &(p, q) in &sets {
                server.set_stock(p, q);
                model.insert(p, q);
            }
            let mut seen = BTreeMap::new();
            let mut since = 0;
            loop {
                let page = server.stock_since(since, limit).unwrap();
                prop_assert!(page.levels.len() <= limit);
                for l in &page.levels {
                    prop_assert!(l.seq > since);
                    prop_assert!(seen.insert(l.product_id, l.quantity).is_none());
                }
                since = page.next;
                if !page.more {
                    break;
                }
            }
            prop_assert_eq!(seen, model);
        }
    }

    #[test]
    fn a_server_without_stock_has_no_feed() {
        assert!(MemoryServer::default().stock_since(0, 10).is_none());
    }
}
