//! `pdc loadtest`: simulated terminals pushing realistic order batches to
//! a running `pdc serve` over HTTP, at a fixed rate or flat out, with a
//! share of resends, or as a reconnect storm; the server's own counters are
//! checked against what was sent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pdc_clock::{Clock, SystemClock};
use pdc_codec::Codec;
use pdc_monitor::Sketch;
use pdc_sync::{ItemResult, OutboxItem, Priority, PushRequest, PushResponse, StreamKey};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::{lock, CliError};

/// `pdc loadtest` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8440")]
    pub url: String,
    /// File of `id token` lines, from
    /// `pdc terminal add lt --count N --tokens-file FILE`.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Simulated terminals (at most the tokens in the file).
    #[arg(long, default_value_t = 100)]
    pub terminals: usize,
    /// Items per push.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Pushes per second over all terminals; 0 = flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Duration bound, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Count bound: most pushes.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_requests: u64,
    /// Share of pushes that resend an earlier batch (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    pub resend: f64,
    /// Reconnect storm: every terminal comes back at the same instant with
    /// this many queued sales and drains them in batches.
    #[arg(long)]
    pub storm: Option<usize>,
    /// Allow a target that is not on this machine.
    #[arg(long)]
    pub allow_remote: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a load test measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Simulated terminals.
    pub terminals: usize,
    /// Items per push.
    pub batch: usize,
    /// Wall time, s.
    pub seconds: f64,
    /// Pushes answered 200.
    pub requests: u64,
    /// Pushes per second.
    pub requests_per_s: f64,
    /// Fresh items applied per second.
    pub items_per_s: f64,
    /// Items answered applied.
    pub applied: u64,
    /// Items answered duplicate.
    pub duplicates: u64,
    /// Items answered rejected.
    pub rejected: u64,
    /// Items answered retry-later (then resent).
    pub retry_later: u64,
    /// Non-200 answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport errors.
    pub errors: u64,
    /// Pushes given up on (refused with a 4xx, or never answered 200);
    /// the terminal that sent it stops.
    pub failed: u64,
    /// Push latency p50, ms.
    pub p50_ms: f64,
    /// p90, ms.
    pub p90_ms: f64,
    /// p99, ms.
    pub p99_ms: f64,
    /// max, ms.
    pub max_ms: f64,
    /// Peak pushes per second (100 ms buckets).
    pub peak_requests_per_s: f64,
    /// Storm: time until every terminal drained, ms.
    pub drain_ms: Option<u64>,
    /// The server's applied counter moved by exactly `applied`.
    pub server_applied_delta: u64,
    /// The server's duplicate counter moved by exactly `duplicates`.
    pub server_duplicate_delta: u64,
    /// Whether the server's counts match what was sent and no push was
    /// given up on.
    pub check_ok: bool,
}

#[derive(Default)]
struct Totals {
    latency: Sketch,
    statuses: BTreeMap<u16, u64>,
    buckets: BTreeMap<u64, u64>,
}

struct Shared {
    client: reqwest::Client,
    url: String,
    codec: Codec,
    /// Order templates; each item gets its own order id (its local id), as
    /// a real till never sends one order id twice.
    payloads: Vec<pdc_codec::Order>,
    started: Instant,
    requests: AtomicU64,
    applied: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    retry_later: AtomicU64,
    errors: AtomicU64,
    /// Pushes given up on (refused, or never answered 200).
    failed: AtomicU64,
    totals: Mutex<Totals>,
    /// The load generator's store id (its local ids are unique per run).
    store_id: pdc_sync::StoreId,
}

impl Shared {
    /// Pushes one batch until it is answered 200 (honouring Retry-After on
    /// 429/503 and retry-later items); returns false on a hard failure.
    async fn push(
        &self,
        terminal: &str,
        token: &str,
        batch_id: u64,
        mut items: Vec<OutboxItem>,
    ) -> bool {
        let Ok(terminal_id) = pdc_sync::TerminalId::new(terminal) else {
            return false;
        };
        for _ in 0..50 {
            let req = PushRequest {
                schema: pdc_sync::PROTOCOL_VERSION,
                terminal_id: terminal_id.clone(),
                store_id: self.store_id,
                batch_id,
                items: items.clone(),
            };
            let Ok(body) = self.codec.encode(&req) else {
                return false;
            };
            let t = Instant::now();
            let resp = self
                .client
                .post(format!("{}/v1/push", self.url))
                .header("content-type", "application/x-pdc")
                .header("authorization", format!("Bearer {token}"))
                .body(body)
                .send()
                .await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let resp = match resp {
                Ok(r) => r,
                Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp.bytes().await.unwrap_or_default();
            {
                let mut tot = lock(&self.totals);
                tot.latency.record(ms.max(0.001));
                *tot.buckets
                    .entry(self.started.elapsed().as_millis() as u64 / 100)
                    .or_default() += 1;
                if status != 200 {
                    *tot.statuses.entry(status).or_default() += 1;
                }
            }
            if status == 429 || status == 503 {
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_millis(500))).await;
                continue;
            }
            if status != 200 {
                return false;
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let Ok(answer) = self.codec.decode::<PushResponse>(&bytes) else {
                return false;
            };
            let mut again = Vec::new();
            for (item, r) in items.into_iter().zip(answer.results) {
                match r {
                    ItemResult::Applied { .. } => self.applied.fetch_add(1, Ordering::Relaxed),
                    ItemResult::Duplicate { .. } => self.duplicates.fetch_add(1, Ordering::Relaxed),
                    // A conflict is refused for good too (the load never
                    // resends a changed payload, so it should not happen).
                    ItemResult::Rejected { .. } | ItemResult::Conflict { .. } => {
                        self.rejected.fetch_add(1, Ordering::Relaxed)
                    }
                    ItemResult::RetryLater => {
                        again.push(item);
                        self.retry_later.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            if again.is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(answer.retry_after_ms.unwrap_or(200))).await;
            items = again;
        }
        false
    }

    /// The items from `first_id`; the same ids always give the same bytes
    /// (a resend is a duplicate, never a conflict). `None` if an order
    /// cannot be encoded.
    fn items(&self, first_id: u64, n: usize) -> Option<Vec<OutboxItem>> {
        (0..n as u64)
            .map(|i| {
                let id = first_id + i;
                let mut order = self
                    .payloads
                    .get((id % self.payloads.len().max(1) as u64) as usize)?
                    .clone();
                order.id = id;
                Some(OutboxItem {
                    local_id: id,
                    stream: StreamKey(id % 8),
                    priority: Priority::High,
                    kind: 2,
                    created_at_ms: 1_764_000_000_000 + id % 1_000_000,
                    payload: self.codec.encode(&order).ok()?,
                })
            })
            .collect()
    }
}

async fn server_counter(
    client: &reqwest::Client,
    url: &str,
    result: &str,
) -> Result<u64, CliError> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .map_err(|e| CliError::Msg(format!("{url}/metrics: {e}")))?
        .text()
        .await
        .map_err(|e| CliError::Msg(e.to_string()))?;
    let prefix = format!("pdc_server_items_total{{result=\"{result}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]") || host.starts_with("127.")
}

/// Runs the load test and prints the result.
pub async fn main(args: LoadArgs) -> Result<ExitCode, CliError> {
    let r = run(&args).await?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&r).map_err(|e| CliError::Msg(e.to_string()))?
        );
    } else {
        outln!(
            "pdc loadtest: {} terminals, batches of {}, {:.1} s",
            r.terminals,
            r.batch,
            r.seconds
        );
        outln!(
            "  pushes        {} ({:.0}/s, peak {:.0}/s)",
            r.requests,
            r.requests_per_s,
            r.peak_requests_per_s
        );
        outln!(
            "  items applied {} ({:.0}/s) · duplicates {} · rejected {} · retry-later {}",
            r.applied,
            r.items_per_s,
            r.duplicates,
            r.rejected,
            r.retry_later
        );
        outln!(
            "  latency       p50 {:.2} ms · p90 {:.2} ms · p99 {:.2} ms · max {:.2} ms",
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms
        );
        if let Some(d) = r.drain_ms {
            outln!("  storm drained in {d} ms");
        }
        outln!(
            "  non-200       {:?} · transport errors {} · pushes given up {}",
            r.statuses,
            r.errors,
            r.failed
        );
        outln!(
            "  server check  applied +{} · duplicates +{} → {}",
            r.server_applied_delta,
            r.server_duplicate_delta,
            if r.check_ok { "OK" } else { "MISMATCH" }
        );
    }
    Ok(if r.check_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the load test.
pub async fn run(args: &LoadArgs) -> Result<LoadReport, CliError> {
    if !args.allow_remote && !is_loopback(&args.url) {
        return Err(CliError::Msg(format!(
            "{} is not on this machine; pass --allow-remote to load it anyway",
            args.url
        )));
    }
    let text = std::fs::read_to_string(&args.tokens)
        .map_err(|e| CliError::Msg(format!("{}: {e}", args.tokens.display())))?;
    let tokens: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.trim().to_owned()))
        })
        .take(args.terminals)
        .collect();
    if tokens.is_empty() {
        return Err(CliError::Msg(format!(
            "{}: no `id token` lines",
            args.tokens.display()
        )));
    }
    let batch = args.batch.clamp(1, 1000);
    let codec = Codec::new();
    let payloads = pdc_datasets::orders(1000, 1);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(tokens.len() + 8)
        .build()
        .map_err(|e| CliError::Msg(e.to_string()))?;
    let applied0 = server_counter(&client, &args.url, "applied").await?;
    let dup0 = server_counter(&client, &args.url, "duplicate").await?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        url: args.url.trim_end_matches('/').to_owned(),
        codec,
        payloads,
        started: Instant::now(),
        requests: AtomicU64::new(0),
        applied: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        retry_later: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        totals: Mutex::new(Totals::default()),
        store_id: pdc_sync::StoreId([0x1d; 16]),
    });
    // Local ids unique to this run: the wall clock in µs-ish steps.
    let base = SystemClock::new().wall_ms() * 1_000;
    let deadline = shared.started + Duration::from_secs_f64(args.seconds.max(0.1));
    let budget = Arc::new(AtomicU64::new(args.max_requests));
    let per_terminal_gap =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(tokens.len() as f64 / args.rate));
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, (terminal, token))| {
            let shared = Arc::clone(&shared);
            let budget = Arc::clone(&budget);
            let storm = args.storm;
            let resend = args.resend.clamp(0.0, 1.0);
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(n as u64);
                let mut next_id = base + 1;
                let mut sent: Vec<u64> = Vec::new();
                let mut next = Instant::now()
                    + per_terminal_gap
                        .map_or(Duration::ZERO, |g| g.mul_f64(rng.gen_range(0.0..1.0)));
                let mut batch_id = 0;
                let mut remaining = storm.unwrap_or(usize::MAX);
                loop {
                    if storm.is_none() && Instant::now() >= deadline {
                        break;
                    }
                    if remaining == 0
                        || budget
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                b.checked_sub(1)
                            })
                            .is_err()
                    {
                        break;
                    }
                    if let Some(g) = per_terminal_gap {
                        tokio::time::sleep_until(next.into()).await;
                        next += g;
                    }
                    batch_id += 1;
                    let first = if storm.is_none() && !sent.is_empty() && rng.gen_bool(resend) {
                        sent[rng.gen_range(0..sent.len())]
                    } else {
                        let f = next_id;
                        let k = batch.min(remaining);
                        next_id += k as u64;
                        remaining = remaining.saturating_sub(k);
                        sent.push(f);
                        f
                    };
                    let k = if storm.is_some() {
                        (next_id - first) as usize
                    } else {
                        batch
                    };
                    let Some(items) = shared.items(first, k) else {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    if !shared.push(&terminal, &token, batch_id, items).await {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| CliError::Msg(e.to_string()))?;
    }
    let elapsed = shared.started.elapsed();
    let applied1 = server_counter(&client, &args.url, "applied").await?;
    let dup1 = server_counter(&client, &args.url, "duplicate").await?;
    let tot = lock(&shared.totals);
    let secs = elapsed.as_secs_f64();
    let applied = shared.applied.load(Ordering::Relaxed);
    let duplicates = shared.duplicates.load(Ordering::Relaxed);
    let requests = shared.requests.load(Ordering::Relaxed);
    Ok(LoadReport {
        terminals: args.terminals,
        batch,
        seconds: secs,
        requests,
        requests_per_s: requests as f64 / secs,
        items_per_s: applied as f64 / secs,
        applied,
        duplicates,
        rejected: shared.rejected.load(Ordering::Relaxed),
        retry_later: shared.retry_later.load(Ordering::Relaxed),
        statuses: tot.statuses.clone(),
        errors: shared.errors.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        p50_ms: tot.latency.quantile(0.5).unwrap_or(0.0),
        p90_ms: tot.latency.quantile(0.9).unwrap_or(0.0),
        p99_ms: tot.latency.quantile(0.99).unwrap_or(0.0),
        max_ms: tot.latency.quantile(1.0).unwrap_or(0.0),
        peak_requests_per_s: tot.buckets.values().copied().max().unwrap_or(0) as f64 * 10.0,
        drain_ms: args.storm.map(|_| elapsed.as_millis() as u64),
        server_applied_delta: applied1 - applied0.min(applied1),
        server_duplicate_delta: dup1 - dup0.min(dup1),
        check_ok: applied1.saturating_sub(applied0) == applied
            && dup1.saturating_sub(dup0) == duplicates
            && shared.failed.load(Ordering::Relaxed) == 0,
    })
}
