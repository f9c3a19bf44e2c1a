//! [`HttpTransport`]: the [`SyncTransport`] over pdc-server's HTTP API
//! (`docs/PROTOCOL.md`), on reqwest with rustls (no OpenSSL) natively and
//! on the browser's `fetch` on wasm32 (reqwest's wasm backend): one
//! transport for both targets. Every request has the whole-request timeout;
//! the connect timeout and the connection pool are native only (the
//! browser manages its connections).

use std::time::Duration;

use pdc_sync::{ServerLimits, StockPage, SyncTransport, TransportError};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, StatusCode};

/// The HTTP transport of one terminal.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: Client,
    base: String,
    bearer: String,
    timeout: Duration,
}

/// Timeouts of the HTTP transport.
#[derive(Debug, Clone, Copy)]
pub struct HttpOptions {
    /// Whole-request timeout (connect, send, answer).
    pub timeout: Duration,
    /// TCP connect timeout (native; the browser has its own).
    pub connect_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl HttpTransport {
    /// An authenticated `GET path?query`: the answer's body and whether it
    /// is a pdc frame (else JSON); `None` when the server answers 404 (it
    /// has no such endpoint, or keeps nothing to serve there).
    async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
        timeout: Duration,
    ) -> Result<Option<(Vec<u8>, bool)>, TransportError> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .query(query)
            .header(AUTHORIZATION, &self.bearer)
            .header(ACCEPT, "application/x-pdc, application/json")
            .timeout(timeout)
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(error_of(resp).await);
        }
        let binary = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-pdc"));
        let body = resp.bytes().await.map_err(classify)?;
        Ok(Some((body.to_vec(), binary)))
    }
    /// A transport to `base_url` (e.g. `http://127.0.0.1:8440`) with the
    /// terminal's token.
    pub fn new(base_url: &str, token: &str, options: HttpOptions) -> Result<Self, TransportError> {
        let builder = Client::builder();
        #[cfg(not(target_arch = "wasm32"))]
        let builder = builder
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60));
        let client = builder
            .build()
            .map_err(|e| TransportError::Offline(format!("http client: {e}")))?;
        Ok(HttpTransport {
            client,
            base: base_url.trim_end_matches('/').to_owned(),
            bearer: format!("Bearer {token}"),
            timeout: options.timeout,
        })
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/x-pdc")
            .header(AUTHORIZATION, &self.bearer)
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(classify)?;
        if resp.status().is_success() {
            return Ok(resp.bytes().await.map_err(classify)?.to_vec());
        }
        Err(error_of(resp).await)
    }
}

/// The error an unsuccessful answer stands for (with its `Retry-After`).
async fn error_of(resp: reqwest::Response) -> TransportError {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let message = resp.text().await.unwrap_or_default();
    status_error(status, retry_after, message)
}

/// `Retry-After` in seconds (the HTTP-date form is not used by pdc-server
/// and is treated as absent).
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> TransportError {
    let code = status.as_u16();
    match code {
        401 | 403 => TransportError::Auth(message),
        408 => TransportError::Timeout,
        429 | 503 => TransportError::ServerBusy { retry_after },
        500..=599 => TransportError::Server {
            status: code,
            message,
        },
        _ => TransportError::Client {
            status: code,
            message,
        },
    }
}

fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else {
        // Connection refused or reset, DNS, a body cut off: the server may
        // or may not have applied the batch; it will be resent and deduped.
        TransportError::Offline(e.to_string())
    }
}

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl SyncTransport for HttpTransport {
    async fn push(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        self.post("/v1/push", request).await
    }

    async fn pull(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        self.post("/v1/pull", request).await
    }

    async fn ping(&self) -> Result<Option<ServerLimits>, TransportError> {
        let resp = self
            .client
            .get(format!("{}/v1/ping", self.base))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(classify)?;
        if resp.status() == StatusCode::NO_CONTENT {
            // A server that publishes no limits.
            Ok(None)
        } else if resp.status().is_success() {
            let body = resp.bytes().await.map_err(classify)?;
            // Limits that do not parse are ignored, not fatal: the 413
            // path still catches an item over them.
            Ok(serde_json::from_slice::<ServerLimits>(&body).ok())
        } else {
            let s = resp.status();
            Err(status_error(s, None, String::new()))
        }
    }

    async fn wait_changes(
        &self,
        known: Vec<(String, u64)>,
        wait: Duration,
    ) -> Result<Option<Vec<String>>, TransportError> {
        let mut query: Vec<(String, String)> =
            known.into_iter().map(|(d, v)| (d, v.to_string())).collect();
        query.push(("wait".into(), wait.as_secs().to_string()));
        // The server answers within `wait`; the usual timeout on top.
        let Some((body, _)) = self.get("/v1/changes", &query, wait + self.timeout).await? else {
            return Ok(None);
        };
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| TransportError::Server {
                status: 200,
                message: format!("change stream answer: {e}"),
            })?;
        let changed = v
            .get("changed")
            .and_then(|c| c.as_array())
            .ok_or_else(|| TransportError::Server {
                status: 200,
                message: "change stream answer: no \"changed\" list".into(),
            })?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect();
        Ok(Some(changed))
    }

    async fn stock_since(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Option<StockPage>, TransportError> {
        let query = [
            ("since".to_owned(), since.to_string()),
            ("limit".to_owned(), limit.to_string()),
        ];
        let Some((body, binary)) = self.get("/v1/stock", &query, self.timeout).await? else {
            return Ok(None);
        };
        let bad = |m: String| TransportError::Server {
            status: 200,
            message: format!("stock answer: {m}"),
        };
        let page = if binary {
            pdc_codec::Codec::new()
                .decode::<StockPage>(&body)
                .map_err(|e| bad(e.to_string()))?
        } else {
            serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?
        };
        Ok(Some(page))
    }

    async fn report(&self, request: Vec<u8>) -> Result<(), TransportError> {
        self.post("/v1/metrics", request).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_protocol_error_classes() {
        let s = |c| StatusCode::from_u16(c).unwrap();
        assert!(matches!(
            status_error(s(401), None, "x".into()),
            TransportError::Auth(_)
        ));
        assert!(matches!(
            status_error(s(403), None, "x".into()),
            TransportError::Auth(_)
        ));
        assert_eq!(
            status_error(s(408), None, String::new()),
            TransportError::Timeout
        );
        assert_eq!(
            status_error(s(429), parse_retry_after(" 3"), String::new()),
            TransportError::ServerBusy {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            status_error(s(503), None, String::new()),
            TransportError::ServerBusy { retry_after: None }
        ));
        assert!(matches!(
            status_error(s(500), None, String::new()),
            TransportError::Server { status: 500, .. }
        ));
        assert!(matches!(
            status_error(s(413), None, String::new()),
            TransportError::Client { status: 413, .. }
        ));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn an_unreachable_server_is_offline() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Port 9 (discard) on loopback is closed on these machines.
        let t = HttpTransport::new("http://127.0.0.1:9", "t", HttpOptions::default()).unwrap();
        let r = rt.block_on(t.ping());
        assert!(matches!(r, Err(TransportError::Offline(_))), "{r:?}");
    }
}
