//! `pdc demo`: the whole promise in one command. A server on the embedded
//! ledger, N terminals (each a real `OfflineEngine` with its own redb
//! store and the HTTP transport behind a fault-injecting proxy), a trading
//! session through a server outage, per-terminal outages, slow links, lost
//! responses, a catalogue change and killed terminals; then a drain and a
//! check that every sale reached the server exactly once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pdc_clock::{Clock, SystemClock};
use pdc_codec::{Codec, Order, PaymentMethod};
use pdc_core::{
    DriverConfig, EngineConfig, EngineEvent, HttpOptions, HttpTransport, OfflineEngine, Original,
    Receipt, Sale,
};
use pdc_monitor::{MetricKey, Sketch};
use pdc_server::{AppState, DatasetHub, Ledger, PosApply, RedbLedger, RedbOptions, ServerHandle};
use pdc_sync::{DatasetRecord, ItemResult};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::Notify;

use crate::proxy::{self, Link, Mode};
use crate::{lock, CliError};

type Engine = OfflineEngine<HttpTransport, SystemClock>;

/// `pdc demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Terminals.
    #[arg(long, default_value_t = 20)]
    pub terminals: usize,
    /// Length of the trading session, seconds of wall time.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Sales per second per terminal.
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// Seed of the workload and the fault schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with charts.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Longest wait for the final drain, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub drain_timeout: f64,
}

/// What a run proved.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReport {
    /// Terminals.
    pub terminals: usize,
    /// Session length, s.
    pub session_s: f64,
    /// Items recorded durably by the terminals (orders, refunds, analytics).
    pub sales_recorded: u64,
    /// Of which orders / refunds / analytics events.
    pub recorded_by_kind: BTreeMap<String, u64>,
    /// Items the server's ledger holds as applied.
    pub sales_applied: u64,
    /// Resends answered with the original sequence.
    pub duplicates_suppressed: u64,
    /// Recorded items the server never got (must be 0).
    pub lost: u64,
    /// Items applied more than once (must be 0).
    pub doubled: u64,
    /// Items refused by a business rule, in the terminals' dead letters.
    pub dead_lettered: u64,
    /// Dead letters by reason.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Bytes that crossed the terminals' links after their first catalogue
    /// download, both ways, everything included: HTTP headers, pushes,
    /// resends, pings, delta pulls, metrics reports.
    pub wire_bytes: u64,
    /// The first catalogue download of every terminal (a snapshot each).
    pub initial_catalogue_bytes: u64,
    /// Push request and answer bodies that reached the server (resends
    /// included, no HTTP headers).
    pub sync_body_bytes: u64,
    /// The items recorded, as JSON, each sent once, without HTTP headers
    /// or answers: a lower bound of what a JSON sync would carry.
    pub json_equivalent_bytes: u64,
    /// sync_body_bytes / json_equivalent_bytes.
    pub body_vs_json: f64,
    /// wire_bytes / json_equivalent_bytes.
    pub wire_vs_json: f64,
    /// Bytes of pull answers.
    pub pull_bytes: u64,
    /// What full snapshots would have weighed for those pulls.
    pub pull_snapshot_bytes: u64,
    /// Push round trip, p50, ms.
    pub push_p50_ms: f64,
    /// Push round trip, p95, ms.
    pub push_p95_ms: f64,
    /// Push round trip, p99, ms.
    pub push_p99_ms: f64,
    /// Share of pushes by round trip: (upper bound in ms, share); the last
    /// bin is unbounded (`null` in JSON).
    pub push_latency_histogram: Vec<(f64, f64)>,
    /// Time to clear each outage's backlog after it ended, ms.
    pub drains: Vec<Drain>,
    /// The longest drain, ms.
    pub max_drain_ms: u64,
    /// From the end of the session to nothing pending anywhere, ms.
    pub final_drain_ms: u64,
    /// Cashier logins.
    pub logins: u64,
    /// Logins while the terminal could not reach the server.
    pub offline_logins: u64,
    /// p95 of offline logins, ms.
    pub offline_login_p95_ms: f64,
    /// Reference lookups served from the terminals' memory cache.
    pub cache_hit_ratio: f64,
    /// Alerts fired by the terminals' default rules.
    pub alerts_fired: u64,
    /// Server answers dropped by lossy links.
    pub lost_responses: u64,
    /// Terminals killed and reopened mid-run.
    pub kills: u64,
    /// Full server outages.
    pub server_outages: u64,
    /// Catalogue version the terminals ended on.
    pub catalogue_version: u64,
    /// The chain's stores: each sells from its own view of the catalogue.
    pub stores: Vec<StoreSummary>,
}

/// One store of the demo's chain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreSummary {
    /// Store name.
    pub store: String,
    /// Its terminals.
    pub terminals: usize,
    /// Products at the store's own price.
    pub price_overrides: usize,
    /// Products the store does not sell.
    pub hidden: usize,
    /// Orders its terminals recorded.
    pub orders: u64,
    /// Order lines rung up at the store's own price.
    pub lines_at_store_price: u64,
    /// Lines left out because the store does not sell the product.
    pub lines_not_sold_here: u64,
    /// What the first overridden product costs here, in cents.
    pub sample_price_cents: Option<(u32, i64)>,
    /// Units the store's applied sales and refunds moved, net, by the
    /// server's stock levels (sold minus refunded).
    pub stock_units_sold: i64,
    /// Products whose level at the store went below zero (sold more than
    /// the server knew of: flagged for the back office, never refused).
    pub stock_below_zero: usize,
}

/// One outage's drain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Drain {
    /// Which outage.
    pub outage: String,
    /// ms from its end to its backlog cleared.
    pub ms: u64,
}

struct Till {
    n: usize,
    id: String,
    store_path: PathBuf,
    proxy: SocketAddr,
    token: String,
    link: Arc<Link>,
    engine: Mutex<Option<Arc<Engine>>>,
    poke: Arc<Notify>,
    /// (local id, json bytes) of each recorded item.
    recorded: Mutex<Vec<(u64, u64)>>,
    by_kind: Mutex<BTreeMap<String, u64>>,
    logins: Mutex<Vec<(f64, bool)>>,
    /// Sketches of push latency of engines that were closed (killed).
    closed_push: Mutex<Vec<Sketch>>,
    killed: AtomicBool,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Link bytes of the first catalogue download (before trading).
    initial_wire: AtomicU64,
    /// The till store's id (the server's exactly-once key), once opened.
    store_id: Mutex<pdc_sync::StoreId>,
    /// The chain's store it sells in (its view of the catalogue).
    store: String,
    /// Lines at the store's own price, and lines the store does not sell.
    store_lines: AtomicU64,
    skipped_lines: AtomicU64,
}

impl Till {
    fn stop_driver(&self) {
        if let Some(h) = lock(&self.driver).take() {
            h.abort();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    till: usize,
    start: f64,
    end: f64,
    mode: Mode,
}

struct Schedule {
    server_outage: (f64, f64),
    windows: Vec<Window>,
    catalogue_change: f64,
    kills: Vec<(usize, f64)>,
}

fn schedule(n: usize, rng: &mut ChaCha8Rng) -> Schedule {
    let mut windows = Vec::new();
    for till in 0..n {
        if rng.gen_bool(0.5) {
            let start = rng.gen_range(0.05..0.70);
            windows.push(Window {
                till,
                start,
                end: start + rng.gen_range(0.08..0.15),
                mode: Mode::Down,
            });
        }
        if rng.gen_bool(0.25) {
            let start = rng.gen_range(0.05..0.70);
            windows.push(Window {
                till,
                start,
                end: start + 0.2,
                mode: Mode::Slow,
            });
        }
        if rng.gen_bool(0.25) {
            let start = rng.gen_range(0.05..0.80);
            windows.push(Window {
                till,
                start,
                end: start + 0.1,
                mode: Mode::Lossy,
            });
        }
    }
    let nkills = (n / 10).max(1);
    let mut kills = Vec::new();
    for _ in 0..nkills {
        let t = rng.gen_range(0..n);
        if !kills.iter().any(|&(k, _)| k == t) {
            kills.push((t, rng.gen_range(0.50..0.70)));
        }
    }
    Schedule {
        server_outage: (0.30, 0.42),
        windows,
        catalogue_change: 0.5,
        kills,
    }
}

struct Demo {
    args: DemoArgs,
    /// Holds the ledger and the terminals' stores until the demo ends.
    _dir: tempfile::TempDir,
    state: Arc<AppState>,
    server: tokio::sync::Mutex<Option<ServerHandle>>,
    server_addr: SocketAddr,
    server_down: AtomicBool,
    tills: Vec<Arc<Till>>,
    codec: Codec,
    users: Vec<(String, String)>,
    started: Instant,
    alerts: AtomicU64,
    /// Per store, the products at its own price.
    overrides: BTreeMap<String, std::collections::HashSet<u32>>,
}

/// The demo chain's stores: the first sells at the chain's prices, the
/// second has its own price for every 20th product and does not sell
/// every 100th.
const STORES: [&str; 2] = ["store-a", "store-b"];

/// Store b's layer: (price overrides, hidden ids).
fn store_b_layer(catalog: &[pdc_codec::Product]) -> (Vec<pdc_codec::Product>, Vec<u64>) {
    let prices = catalog
        .iter()
        .filter(|p| p.id % 20 == 7)
        .map(|p| {
            let mut p = p.clone();
            p.price_cents = p.price_cents * 107 / 100 + 1;
            p
        })
        .collect();
    let hidden = catalog
        .iter()
        .filter(|p| p.id % 100 == 3)
        .map(|p| u64::from(p.id))
        .collect();
    (prices, hidden)
}

fn item_json(local_id: u64, priority: &str, kind: u16, record: serde_json::Value) -> u64 {
    let v = serde_json::json!({"terminal_id": "till-00", "local_id": local_id, "stream": 0,
        "priority": priority, "kind": kind, "created_at_ms": 1_764_000_000_000u64, "record": record});
    serde_json::to_vec(&v).map_or(0, |b| b.len() as u64)
}

impl Demo {
    fn session(&self) -> Duration {
        Duration::from_secs_f64(self.args.seconds.max(1.0))
    }

    fn at(&self, frac: f64) -> Instant {
        self.started + self.session().mul_f64(frac)
    }

    fn open_engine(&self, till: &Till) -> Result<Arc<Engine>, CliError> {
        let transport = HttpTransport::new(
            &format!("http://{}", till.proxy),
            &till.token,
            HttpOptions {
                timeout: Duration::from_secs(3),
                connect_timeout: Duration::from_secs(1),
            },
        )
        .map_err(|e| CliError::Msg(e.to_string()))?;
        let terminal =
            pdc_core::TerminalId::new(till.id.clone()).map_err(|e| CliError::Msg(e.to_string()))?;
        let mut config = EngineConfig::new(terminal, till.store_path.clone());
        config.seed = Some(
            self.args.seed ^ (till.n as u64) << 20 ^ u64::from(till.killed.load(Ordering::SeqCst)),
        );
        // A demo session lasts seconds: cap the backoff at 3 s (a till's
        // default is 30 s) so that drains show the engine, not the cap.
        config.sync.backoff.cap = Duration::from_secs(3);
        config.sync.reconnect_jitter = Duration::from_millis(300);
        let engine = Arc::new(OfflineEngine::open(config, transport, SystemClock::new())?);
        let stop = Arc::new(Notify::new());
        let driver = pdc_core::spawn_driver_with(
            Arc::clone(&engine),
            Arc::clone(&till.poke),
            stop,
            SystemClock::new(),
            DriverConfig {
                ping_online: Duration::from_secs(2),
                ping_recovering: Duration::from_millis(500),
                pull_every: Duration::from_secs(3),
                change_wait: Some(Duration::from_secs(25)),
                stock_every: Duration::from_secs(10),
                report_every: Duration::from_secs(5),
                alert_every: Duration::from_secs(1),
                store_id: "demo-store".into(),
            },
        );
        *lock(&till.store_id) = engine.store().store_id();
        *lock(&till.engine) = Some(Arc::clone(&engine));
        if let Some(old) = lock(&till.driver).replace(driver) {
            old.abort();
        }
        Ok(engine)
    }

    fn engine(&self, till: &Till) -> Option<Arc<Engine>> {
        lock(&till.engine).clone()
    }

    async fn login(&self, till: &Till, engine: &Engine, k: usize) {
        let (user, pin) = &self.users[(till.n + k) % self.users.len()];
        // Online first: refresh the credentials from the server when it
        // answers; otherwise (or when that fails) the offline PIN login.
        let t = Instant::now();
        let r = engine.login_online(user, pin).await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if let Ok((_, fresh)) = r {
            lock(&till.logins).push((ms, !fresh));
        } else {
            tracing::warn!(till = till.id, user, "login refused");
        }
    }

    /// One terminal's trading session.
    async fn trade(
        self: Arc<Self>,
        till: Arc<Till>,
        kill_at: Option<Instant>,
    ) -> Result<(), CliError> {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.args.seed.wrapping_mul(1_000_003) ^ till.n as u64);
        let orders = pdc_datasets::orders(400, self.args.seed);
        let mut engine = self.open_engine(&till)?;
        // Phase 1: online. The driver pulls the reference data at start;
        // wait for the users to arrive, then log a cashier in.
        let waited = Instant::now();
        while engine
            .store()
            .dataset_state("users")
            .map_or(true, |d| d.version.is_none())
        {
            if waited.elapsed() > Duration::from_secs(30) {
                return Err(CliError::Msg(format!(
                    "{}: no reference data from the server after 30 s",
                    till.id
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.login(&till, &engine, 0).await;
        // Phase 2: the catalogue into memory for scanning.
        engine.warm("products").await?;
        till.initial_wire.store(
            till.link.up_bytes.load(Ordering::Relaxed)
                + till.link.down_bytes.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let end = self.started + self.session();
        let shift_change = self.at(rng.gen_range(0.3..0.7));
        let mut shifted = false;
        let mut killed = kill_at.is_none();
        let mut next = Instant::now();
        let mut n: u64 = 0;
        let mut last_sale: Option<Receipt> = None;
        let clock = SystemClock::new();
        while Instant::now() < end {
            let gap = -(1.0 - rng.gen_range(0.0..1.0f64)).ln() / self.args.rate.max(0.01);
            next += Duration::from_secs_f64(gap.min(5.0));
            tokio::time::sleep_until(next.into()).await;
            if Instant::now() >= end {
                break;
            }
            if !killed && kill_at.is_some_and(|k| Instant::now() >= k) {
                killed = true;
                // SIGKILL in-process: the driver is aborted mid-flight and
                // the engine dropped without any shutdown.
                till.stop_driver();
                if let Some(e) = lock(&till.engine).take() {
                    if let Some(k) = push_sketch(&e) {
                        lock(&till.closed_push).push(k);
                    }
                }
                drop(engine);
                till.killed.store(true, Ordering::SeqCst);
                tokio::time::sleep(self.session().mul_f64(0.03)).await;
                engine = loop {
                    match self.open_engine(&till) {
                        Ok(e) => break e,
                        // The aborted driver may still hold the file briefly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                self.login(&till, &engine, 2).await;
                engine.warm("products").await?;
            }
            if !shifted && Instant::now() >= shift_change {
                shifted = true;
                self.login(&till, &engine, 1).await;
            }
            n += 1;
            let now_ms = clock.wall_ms();
            let r: f64 = rng.gen_range(0.0..1.0);
            let mut o: Order = orders[(till.n * 37 + n as usize) % orders.len()].clone();
            // A refund of this till's last sale (its first line), through
            // the engine's refund: numbered like a sale, sent first.
            let refund_of = if r < 0.03 { last_sale.as_ref() } else { None };
            let (saved, json, kind_name) = if let Some(original) = refund_of {
                let line = original.order.lines[0].clone();
                let back = Sale::new(original.order.cashier_id)
                    .line(line)
                    .pay_rest(PaymentMethod::Cash);
                let saved = engine.refund(&Original::of(original), &back);
                let json = saved
                    .as_ref()
                    .map(|r| serde_json::to_value(&r.refund).unwrap_or_default());
                let json = (json.unwrap_or_default(), "Critical", 6);
                (saved.map(|r| r.local_id), json, "refund")
            } else if r < 0.13 {
                let (till_n, seq) = (till.n.to_string(), n.to_string());
                let props = [("till", till_n.as_str()), ("n", seq.as_str())];
                let json = serde_json::json!({"name": "basket_view", "at_ms": now_ms,
                    "properties": [["till", till_n], ["n", seq]]});
                (
                    engine.track("basket_view", &props),
                    (json, "Low", 7),
                    "analytics",
                )
            } else {
                // A till with a rounding bug now and then: refused by the
                // server's rules, which the till checks before saving.
                let buggy = r > 0.995;
                if buggy {
                    if let Some(p) = o.payments.first_mut() {
                        p.amount_cents += 1;
                    }
                }
                // Scanning: each line's product through the engine's cache,
                // at the price of this till's store; a product the store
                // does not sell stays on the shelf.
                let mut lines = Vec::with_capacity(o.lines.len());
                for l in &o.lines {
                    let found = engine.reference("products", u64::from(l.product_id)).await;
                    let product = found
                        .ok()
                        .flatten()
                        .and_then(|b| self.codec.decode::<pdc_codec::Product>(&b).ok());
                    match product {
                        Some(p) => {
                            let mut l = l.clone();
                            if self
                                .overrides
                                .get(&till.store)
                                .is_some_and(|o| o.contains(&p.id))
                            {
                                till.store_lines.fetch_add(1, Ordering::Relaxed);
                            }
                            l.unit_price_cents = p.price_cents;
                            lines.push(l);
                        }
                        None => {
                            till.skipped_lines.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if lines.is_empty() {
                    lines.push(o.lines[0].clone());
                    lines[0].product_id = 1;
                }
                let repriced = lines != o.lines;
                let sale = lines
                    .iter()
                    .fold(Sale::new(o.cashier_id), |s, l| s.line(l.clone()));
                let paid = if repriced {
                    // Paid in full by the order's first tender (the bug
                    // above only touches the generated payments).
                    let method = o
                        .payments
                        .first()
                        .map_or(PaymentMethod::Cash, |p| p.method.clone());
                    sale.clone().pay_rest(method)
                } else {
                    o.payments
                        .iter()
                        .fold(sale.clone(), |s, p| s.tender(p.clone()))
                };
                let saved = match engine.sell(&paid) {
                    // Cards beyond the offline limits: the customer pays
                    // cash instead, as at a real till.
                    Err(pdc_core::EngineError::OfflineCardLimit { .. }) => {
                        *lock(&till.by_kind)
                            .entry(
                                "of the orders: card over the offline limit, paid cash".to_owned(),
                            )
                            .or_default() += 1;
                        engine.sell(&sale.pay_rest(PaymentMethod::Cash))
                    }
                    other => other,
                };
                let json = saved
                    .as_ref()
                    .map(|r| serde_json::to_value(&r.order).unwrap_or_default());
                let json = (json.unwrap_or_default(), "High", 2);
                if let Ok(receipt) = &saved {
                    last_sale = Some(receipt.clone());
                }
                let name = if buggy { "order (invalid)" } else { "order" };
                (saved.map(|r| r.local_id), json, name)
            };
            let id = match saved {
                Ok(id) => id,
                // The buggy till's order breaks the server's rules: the
                // engine refuses it before saving (nothing to dead-letter).
                Err(pdc_core::EngineError::InvalidSale { .. })
                    if kind_name == "order (invalid)" =>
                {
                    *lock(&till.by_kind)
                        .entry("order refused at the till (invalid)".to_owned())
                        .or_default() += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            till.poke.notify_one();
            lock(&till.recorded).push((id, item_json(id, json.1, json.2, json.0)));
            *lock(&till.by_kind).entry(kind_name.to_owned()).or_default() += 1;
        }
        Ok(())
    }

    fn pending(&self, till: &Till) -> Option<(Option<u64>, u64)> {
        self.engine(till)
            .and_then(|e| e.store().pending_summary().ok())
    }

    async fn set_server(&self, up: bool) {
        let mut server = self.server.lock().await;
        if up && server.is_none() {
            for _ in 0..200 {
                match pdc_server::spawn(
                    self.server_addr,
                    Arc::clone(&self.state),
                    Duration::from_secs(30 * 86_400),
                )
                .await
                {
                    Ok(h) => {
                        *server = Some(h);
                        self.server_down.store(false, Ordering::SeqCst);
                        return;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
                }
            }
            tracing::error!("could not restart the server");
        } else if !up {
            if let Some(h) = server.take() {
                self.server_down.store(true, Ordering::SeqCst);
                let _ = h.shutdown().await;
            }
        }
    }
}

/// An outage that ended and whose backlog is not cleared yet: done when
/// every listed terminal has nothing pending up to its mark (the last local
/// id recorded when the outage ended).
struct OpenDrain {
    label: String,
    ended: Instant,
    marks: Vec<(usize, u64)>,
}

fn settle_drains(demo: &Demo, open: &mut Vec<OpenDrain>, drains: &mut Vec<Drain>) {
    open.retain(|d| {
        let done = d.marks.iter().all(|&(i, mark)| {
            matches!(demo.pending(&demo.tills[i]), Some((first, _)) if first.is_none_or(|f| f > mark))
        });
        if done {
            drains.push(Drain { outage: d.label.clone(), ms: d.ended.elapsed().as_millis() as u64 });
        }
        !done
    });
}

fn push_sketch(e: &Engine) -> Option<Sketch> {
    let k = MetricKey::new("pdc_sync_push_ms", &[]).ok()?;
    e.metrics().histograms.get(&k).cloned()
}

fn counter(state: &AppState, name: &str, labels: &[(&str, &str)]) -> u64 {
    MetricKey::new(name, labels).map_or(0, |k| state.metrics().counter(&k))
}

/// Runs the demo and prints its report.
pub async fn main(args: DemoArgs) -> Result<ExitCode, CliError> {
    let json = args.json;
    let html = args.report.clone();
    let (report, samples) = run(args).await?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| CliError::Msg(e.to_string()))?
        );
    } else {
        print_report(&report)?;
    }
    if let Some(path) = html {
        std::fs::write(&path, crate::demo::html(&report, &samples))?;
        eprintln!("report written to {}", path.display());
    }
    if report.lost > 0 || report.doubled > 0 {
        eprintln!(
            "error: {} sale(s) lost, {} applied twice",
            report.lost, report.doubled
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Samples of the run, every 250 ms.
pub type Samples = Vec<Sample>;

/// The fleet at one moment of the run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// ms since the session started.
    pub at_ms: u64,
    /// Pending outbox items per terminal.
    pub pending: Vec<u64>,
    /// Whether the server was up.
    pub server_up: bool,
    /// Each terminal's link.
    pub links: Vec<Mode>,
}

/// Runs the demo; returns the report and the queue samples.
pub async fn run(args: DemoArgs) -> Result<(DemoReport, Samples), CliError> {
    let codec = Codec::new();
    let dir = tempfile::tempdir()?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    // The server: embedded ledger, POS rules, catalogue and cashiers.
    let pos = Arc::new(PosApply::new().with_stock());
    let ledger: Arc<dyn Ledger> = Arc::new(RedbLedger::open(
        &dir.path().join("ledger.redb"),
        pos.clone(),
        RedbOptions::default(),
    )?);
    let hub = Arc::new(
        DatasetHub::load(Arc::clone(&ledger), &pdc_server::DEFAULT_DATASETS, 10_000).await?,
    );
    let state = AppState::new(
        Arc::clone(&ledger),
        hub,
        Some(pos),
        pdc_server::Limits::default(),
    )
    .await?;
    let catalog = pdc_datasets::catalog(pdc_datasets::CATALOG_SIZE, args.seed);
    let products: Vec<DatasetRecord> = catalog
        .iter()
        .map(|p| {
            Ok(DatasetRecord {
                id: u64::from(p.id),
                body: codec.encode(p)?,
            })
        })
        .collect::<Result<_, pdc_codec::CodecError>>()
        .map_err(|e| CliError::Msg(e.to_string()))?;
    state.update_dataset("products", products, vec![]).await?;
    let (b_prices, b_hidden) = store_b_layer(&catalog);
    let mut overrides = BTreeMap::new();
    overrides.insert(STORES[0].to_owned(), std::collections::HashSet::new());
    overrides.insert(
        STORES[1].to_owned(),
        b_prices.iter().map(|p| p.id).collect(),
    );
    let mut layer = Vec::with_capacity(b_prices.len() + b_hidden.len());
    for p in &b_prices {
        layer.push((
            u64::from(p.id),
            pdc_sync::Entry::Record(codec.encode(p).map_err(|e| CliError::Msg(e.to_string()))?),
        ));
    }
    layer.extend(b_hidden.iter().map(|&id| (id, pdc_sync::Entry::Hidden)));
    let store_b = pdc_sync::Scope::store(STORES[1]).map_err(|e| CliError::Msg(e.to_string()))?;
    state
        .update_scoped("products", &store_b, layer, vec![])
        .await?;
    let users: Vec<(String, String)> = (1..=8)
        .map(|i| {
            (
                format!("cashier-{i}"),
                format!("{:06}", rng.gen_range(100_000..999_999u32) ^ 0x5a5),
            )
        })
        .collect();
    let users_json = serde_json::to_vec(&users.iter().enumerate().map(|(i, (u, p))| {
        serde_json::json!({"id": i as u64 + 1, "user_id": u, "role": "cashier", "pin": p})
    }).collect::<Vec<_>>()).map_err(|e| CliError::Msg(e.to_string()))?;
    let user_records =
        pdc_server::records_from_json("users", &users_json, pdc_auth::KdfParams::default())?;
    state.update_dataset("users", user_records, vec![]).await?;
    let server = pdc_server::spawn(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Arc::clone(&state),
        Duration::from_secs(30 * 86_400),
    )
    .await?;
    let server_addr = server.addr;

    let mut tills = Vec::new();
    for n in 0..args.terminals.max(1) {
        let id = format!("till-{n:02}");
        let token = pdc_server::add_terminal(&*ledger, &id).await?;
        let store = STORES[n % STORES.len()].to_owned();
        let view = pdc_sync::View::store(&store).map_err(|e| CliError::Msg(e.to_string()))?;
        ledger.set_terminal_view(&id, &view).await?;
        let link = Arc::new(Link::default());
        let proxy = proxy::start(server_addr, Arc::clone(&link)).await?;
        tills.push(Arc::new(Till {
            n,
            store_path: dir.path().join(format!("{id}.pdc")),
            id,
            proxy,
            token,
            link,
            engine: Mutex::new(None),
            poke: Arc::new(Notify::new()),
            recorded: Mutex::new(Vec::new()),
            by_kind: Mutex::new(BTreeMap::new()),
            logins: Mutex::new(Vec::new()),
            closed_push: Mutex::new(Vec::new()),
            killed: AtomicBool::new(false),
            driver: Mutex::new(None),
            initial_wire: AtomicU64::new(0),
            store_id: Mutex::new(pdc_sync::StoreId::LEGACY),
            store,
            store_lines: AtomicU64::new(0),
            skipped_lines: AtomicU64::new(0),
        }));
    }
    let plan = schedule(tills.len(), &mut rng);
    let demo = Arc::new(Demo {
        args: args.clone(),
        _dir: dir,
        state: Arc::clone(&state),
        server: tokio::sync::Mutex::new(Some(server)),
        server_addr,
        server_down: AtomicBool::new(false),
        tills,
        codec,
        users,
        overrides,
        started: Instant::now(),
        alerts: AtomicU64::new(0),
    });
    let tasks: Vec<_> = demo
        .tills
        .iter()
        .map(|t| {
            let kill_at = plan.kills.iter().find(|k| k.0 == t.n).map(|k| demo.at(k.1));
            tokio::spawn(Arc::clone(&demo).trade(Arc::clone(t), kill_at))
        })
        .collect();

    let bar = indicatif::ProgressBar::new(demo.session().as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }

    // The controller: faults on schedule, drains measured, samples taken.
    let mut samples: Samples = Vec::new();
    let mut drains: Vec<Drain> = Vec::new();
    // (label, ended at, marks per till)
    let mut open_drains: Vec<OpenDrain> = Vec::new();
    let mut server_outage_done = (false, false);
    let mut catalogue_changed = false;
    let mut last_modes: Vec<Mode> = vec![Mode::Up; demo.tills.len()];
    let mut last_sample = Instant::now() - Duration::from_secs(1);
    let mut last_alert = Instant::now();
    let session_end = demo.started + demo.session();
    loop {
        let now = Instant::now();
        let frac = (now - demo.started).as_secs_f64() / demo.session().as_secs_f64();
        if now >= session_end {
            break;
        }
        // Per-terminal link modes.
        for (i, till) in demo.tills.iter().enumerate() {
            let mode = plan
                .windows
                .iter()
                .filter(|w| w.till == i && w.start <= frac && frac < w.end)
                .map(|w| w.mode)
                .max_by_key(|m| match m {
                    Mode::Down => 3,
                    Mode::Lossy => 2,
                    Mode::Slow => 1,
                    Mode::Up => 0,
                })
                .unwrap_or(Mode::Up);
            if mode != last_modes[i] {
                if last_modes[i] == Mode::Down {
                    if let Some(e) = demo.engine(till) {
                        let mark = e.store().next_local_id().unwrap_or(1).saturating_sub(1);
                        open_drains.push(OpenDrain {
                            label: format!("{} link outage", till.id),
                            ended: now,
                            marks: vec![(i, mark)],
                        });
                    }
                }
                till.link.set(mode);
                last_modes[i] = mode;
            }
        }
        // The full server outage.
        if !server_outage_done.0 && frac >= plan.server_outage.0 {
            server_outage_done.0 = true;
            demo.set_server(false).await;
        }
        if server_outage_done.0 && !server_outage_done.1 && frac >= plan.server_outage.1 {
            server_outage_done.1 = true;
            demo.set_server(true).await;
            let marks = demo
                .tills
                .iter()
                .enumerate()
                .filter_map(|(i, t)| {
                    demo.engine(t)
                        .map(|e| (i, e.store().next_local_id().unwrap_or(1).saturating_sub(1)))
                })
                .collect();
            open_drains.push(OpenDrain {
                label: "server outage".into(),
                ended: Instant::now(),
                marks,
            });
        }
        // The catalogue changes on the server: pulls carry deltas.
        if !catalogue_changed && frac >= plan.catalogue_change {
            catalogue_changed = true;
            let changed: Vec<DatasetRecord> = catalog
                .iter()
                .step_by(50)
                .filter_map(|p| {
                    let mut p = p.clone();
                    p.price_cents += 10;
                    demo.codec.encode(&p).ok().map(|body| DatasetRecord {
                        id: u64::from(p.id),
                        body,
                    })
                })
                .collect();
            if let Err(e) = demo.state.update_dataset("products", changed, vec![]).await {
                tracing::warn!(error = %e, "catalogue change failed");
            }
        }
        // Drains.
        settle_drains(&demo, &mut open_drains, &mut drains);
        if now - last_sample >= Duration::from_millis(250) {
            last_sample = now;
            let depth = demo
                .tills
                .iter()
                .map(|t| demo.pending(t).map_or(0, |p| p.1))
                .collect();
            samples.push(Sample {
                at_ms: (now - demo.started).as_millis() as u64,
                pending: depth,
                server_up: !demo.server_down.load(Ordering::SeqCst),
                links: demo.tills.iter().map(|t| t.link.mode()).collect(),
            });
            let recorded: usize = demo.tills.iter().map(|t| lock(&t.recorded).len()).sum();
            let applied = counter(
                &demo.state,
                "pdc_server_items_total",
                &[("result", "applied")],
            );
            let pending: u64 = samples.last().map_or(0, |s| s.pending.iter().sum());
            bar.set_position((now - demo.started).as_millis() as u64);
            bar.set_message(format!(
                "recorded {recorded} · applied {applied} · pending {pending}{}",
                if demo.server_down.load(Ordering::SeqCst) {
                    " · SERVER DOWN"
                } else {
                    ""
                }
            ));
        }
        if now - last_alert >= Duration::from_secs(1) {
            last_alert = now;
            // The UI's side of the engines: their events (the drivers
            // evaluate the default alert rules every second here).
            for t in &demo.tills {
                if let Some(e) = demo.engine(t) {
                    while let Some(ev) = e.poll_event() {
                        if matches!(ev, EngineEvent::AlertFired { .. }) {
                            demo.alerts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bar.finish_and_clear();
    for t in tasks {
        t.await.map_err(|e| CliError::Msg(e.to_string()))??;
    }
    // Heal everything and drain.
    for t in &demo.tills {
        t.link.set(Mode::Up);
    }
    demo.set_server(true).await;
    let drain_started = Instant::now();
    let deadline = drain_started + Duration::from_secs_f64(args.drain_timeout);
    loop {
        let pending: u64 = demo
            .tills
            .iter()
            .map(|t| demo.pending(t).map_or(u64::MAX / 1024, |p| p.1))
            .sum();
        if pending == 0 || Instant::now() >= deadline {
            break;
        }
        for t in &demo.tills {
            if let Some(e) = demo.engine(t) {
                e.set_online(true);
            }
            t.poke.notify_one();
        }
        settle_drains(&demo, &mut open_drains, &mut drains);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let final_drain_ms = drain_started.elapsed().as_millis() as u64;
    for d in open_drains {
        drains.push(Drain {
            outage: format!("{} (not drained)", d.label),
            ms: d.ended.elapsed().as_millis() as u64,
        });
    }
    for t in &demo.tills {
        t.stop_driver();
    }

    // The verdict: every recorded item, asked of the ledger.
    let mut report = DemoReport {
        terminals: demo.tills.len(),
        session_s: demo.session().as_secs_f64(),
        duplicates_suppressed: counter(
            &state,
            "pdc_server_items_total",
            &[("result", "duplicate")],
        ),
        pull_bytes: counter(&state, "pdc_server_pull_bytes_total", &[]),
        pull_snapshot_bytes: counter(&state, "pdc_server_pull_snapshot_bytes_total", &[]),
        max_drain_ms: drains.iter().map(|d| d.ms).max().unwrap_or(0),
        drains,
        final_drain_ms,
        alerts_fired: demo.alerts.load(Ordering::Relaxed),
        kills: demo
            .tills
            .iter()
            .filter(|t| t.killed.load(Ordering::SeqCst))
            .count() as u64,
        server_outages: u64::from(server_outage_done.0),
        catalogue_version: state.datasets.ids("products").await.map_or(0, |(v, _)| v),
        ..DemoReport::default()
    };
    for store in STORES {
        let tills: Vec<&Arc<Till>> = demo.tills.iter().filter(|t| t.store == store).collect();
        if tills.is_empty() {
            continue;
        }
        let view = pdc_sync::View::store(store).map_err(|e| CliError::Msg(e.to_string()))?;
        let overridden = demo.overrides.get(store);
        let sample = overridden.and_then(|o| o.iter().min().copied()).or(Some(7));
        let records = state.datasets.view_records("products", &view).await;
        let sample_price_cents = sample.and_then(|id| {
            records
                .iter()
                .find(|r| r.id == u64::from(id))
                .and_then(|r| demo.codec.decode::<pdc_codec::Product>(&r.body).ok())
                .map(|p| (id, p.price_cents))
        });
        let scoped = state
            .datasets
            .scoped_ids("products")
            .await
            .unwrap_or_default();
        let layer = scoped.layers.get(&pdc_sync::Scope::Store(store.to_owned()));
        let levels = state.ledger.stock_since(store, 0, usize::MAX).await?;
        report.stores.push(StoreSummary {
            stock_units_sold: -levels.iter().map(|l| l.quantity).sum::<i64>(),
            stock_below_zero: levels.iter().filter(|l| l.quantity < 0).count(),
            store: store.to_owned(),
            terminals: tills.len(),
            price_overrides: layer.map_or(0, |l| l.values().filter(|&&p| p).count()),
            hidden: layer.map_or(0, |l| l.values().filter(|&&p| !p).count()),
            orders: tills
                .iter()
                .map(|t| lock(&t.by_kind).get("order").copied().unwrap_or(0))
                .sum(),
            lines_at_store_price: tills
                .iter()
                .map(|t| t.store_lines.load(Ordering::Relaxed))
                .sum(),
            lines_not_sold_here: tills
                .iter()
                .map(|t| t.skipped_lines.load(Ordering::Relaxed))
                .sum(),
            sample_price_cents,
        });
    }
    let mut push = Sketch::new();
    let mut offline_ms = Vec::new();
    let mut hit_ratios = Vec::new();
    let mut rejected_on_server = 0u64;
    for t in &demo.tills {
        let recorded = lock(&t.recorded).clone();
        report.sales_recorded += recorded.len() as u64;
        for (k, v) in lock(&t.by_kind).iter() {
            *report.recorded_by_kind.entry(k.clone()).or_default() += v;
        }
        let ids: Vec<u64> = recorded.iter().map(|r| r.0).collect();
        let store = *lock(&t.store_id);
        let statuses = ledger.status(&t.id, store, &ids).await?;
        for (s, (_, json)) in statuses.iter().zip(&recorded) {
            match s {
                Some(ItemResult::Duplicate { .. }) => {
                    report.sales_applied += 1;
                    report.json_equivalent_bytes += json;
                }
                Some(ItemResult::Rejected { .. }) => {
                    rejected_on_server += 1;
                    report.json_equivalent_bytes += json;
                }
                _ => report.lost += 1,
            }
        }
        let initial = t.initial_wire.load(Ordering::Relaxed);
        report.initial_catalogue_bytes += initial;
        report.wire_bytes += (t.link.up_bytes.load(Ordering::Relaxed)
            + t.link.down_bytes.load(Ordering::Relaxed))
        .saturating_sub(initial);
        report.lost_responses += t.link.lost_responses.load(Ordering::Relaxed);
        for (ms, offline) in lock(&t.logins).iter() {
            report.logins += 1;
            if *offline {
                report.offline_logins += 1;
                offline_ms.push(*ms);
            }
        }
        for k in lock(&t.closed_push).iter() {
            let _ = push.merge(k);
        }
        if let Some(e) = demo.engine(t) {
            if let Some(k) = push_sketch(&e) {
                let _ = push.merge(&k);
            }
            for d in e.store().dead_letters()? {
                report.dead_lettered += 1;
                *report.dead_letter_reasons.entry(d.code).or_default() += 1;
            }
            if let Ok(k) = MetricKey::new("pdc_cache_hit_ratio", &[]) {
                if let Some(v) = e.metrics().gauges.get(&k) {
                    hit_ratios.push(*v);
                }
            }
        }
    }
    // Applied more than once: the server counted more applications than
    // the ledger holds distinct applied items.
    let applied_counter = counter(&state, "pdc_server_items_total", &[("result", "applied")]);
    let totals = ledger.totals().await?;
    report.doubled = applied_counter.saturating_sub(report.sales_applied)
        + totals.applied.saturating_sub(report.sales_applied);
    if rejected_on_server != report.dead_lettered {
        tracing::warn!(
            rejected_on_server,
            dead = report.dead_lettered,
            "rejections not all dead-lettered yet"
        );
    }
    report.wire_vs_json = report.wire_bytes as f64 / report.json_equivalent_bytes.max(1) as f64;
    report.sync_body_bytes = counter(
        &state,
        "pdc_server_push_bytes_total",
        &[("direction", "in")],
    ) + counter(
        &state,
        "pdc_server_push_bytes_total",
        &[("direction", "out")],
    );
    report.body_vs_json =
        report.sync_body_bytes as f64 / report.json_equivalent_bytes.max(1) as f64;
    report.push_p50_ms = push.quantile(0.5).unwrap_or(0.0);
    report.push_p95_ms = push.quantile(0.95).unwrap_or(0.0);
    report.push_p99_ms = push.quantile(0.99).unwrap_or(0.0);
    report.push_latency_histogram = histogram(&push);
    offline_ms.sort_by(f64::total_cmp);
    report.offline_login_p95_ms = offline_ms
        .get(((offline_ms.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    report.cache_hit_ratio = if hit_ratios.is_empty() {
        0.0
    } else {
        hit_ratios.iter().sum::<f64>() / hit_ratios.len() as f64
    };
    if let Some(h) = demo.server.lock().await.take() {
        let _ = h.shutdown().await;
    }
    Ok((report, samples))
}

fn print_report(r: &DemoReport) -> std::io::Result<()> {
    let kinds = r
        .recorded_by_kind
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    outln!("pdc demo: {} terminals, {:.0} s session, 1 server outage, {} terminal(s) killed and reopened", r.terminals, r.session_s, r.kills);
    outln!();
    outln!(
        "  sales recorded         {:>10}   ({kinds})",
        r.sales_recorded
    );
    outln!("  applied on the server  {:>10}", r.sales_applied);
    outln!(
        "  duplicates suppressed  {:>10}   (resends after lost answers, timeouts, kills)",
        r.duplicates_suppressed
    );
    outln!("  LOST                   {:>10}", r.lost);
    outln!("  applied twice          {:>10}", r.doubled);
    outln!(
        "  dead-lettered          {:>10}   {:?}",
        r.dead_lettered,
        r.dead_letter_reasons
    );
    outln!();
    outln!(
        "  items as bare JSON     {:>10}   (each once, no HTTP: a lower bound for a JSON sync)",
        r.json_equivalent_bytes
    );
    outln!("  sync bodies            {:>10}   ({:.1}% of that: push requests and answers, resends included)", r.sync_body_bytes, r.body_vs_json * 100.0);
    outln!("  wire bytes             {:>10}   ({:.1}% of that: all HTTP incl. headers, pings, reports)", r.wire_bytes, r.wire_vs_json * 100.0);
    outln!(
        "  first catalogue load   {:>10}   (one snapshot per terminal, before trading)",
        r.initial_catalogue_bytes
    );
    outln!(
        "  pull bytes             {:>10}   ({:.1}% of full snapshots: {})",
        r.pull_bytes,
        r.pull_bytes as f64 * 100.0 / r.pull_snapshot_bytes.max(1) as f64,
        r.pull_snapshot_bytes
    );
    outln!(
        "  push latency           p50 {:.1} ms · p95 {:.1} ms · p99 {:.1} ms",
        r.push_p50_ms,
        r.push_p95_ms,
        r.push_p99_ms
    );
    let bins: Vec<String> = r
        .push_latency_histogram
        .iter()
        .filter(|b| b.1 > 0.0)
        .map(|(le, share)| {
            let bound = if le.is_finite() {
                format!("≤{le} ms")
            } else {
                "more".into()
            };
            format!("{bound} {:.1}%", share * 100.0)
        })
        .collect();
    outln!("  push latency bins      {}", bins.join(" · "));
    outln!(
        "  drains after outages   max {} ms over {} outages · final drain {} ms",
        r.max_drain_ms,
        r.drains.len(),
        r.final_drain_ms
    );
    outln!(
        "  logins                 {} ({} offline, p95 {:.1} ms)",
        r.logins,
        r.offline_logins,
        r.offline_login_p95_ms
    );
    outln!("  cache hit ratio        {:.3}", r.cache_hit_ratio);
    outln!("  responses lost         {}", r.lost_responses);
    outln!("  alerts fired           {}", r.alerts_fired);
    outln!("  catalogue version      {}", r.catalogue_version);
    for st in &r.stores {
        let sample = st.sample_price_cents.map_or(String::new(), |(id, c)| {
            format!(", product {id} at {}.{:02}", c / 100, c % 100)
        });
        outln!(
            "  {:<22} {} till(s), {} own prices, {} not sold; {} orders, {} lines at its own price, {} lines not sold here{sample}; stock: {} units sold net, {} products below zero",
            st.store,
            st.terminals,
            st.price_overrides,
            st.hidden,
            st.orders,
            st.lines_at_store_price,
            st.lines_not_sold_here,
            st.stock_units_sold,
            st.stock_below_zero
        );
    }
    outln!();
    if r.lost == 0 && r.doubled == 0 {
        outln!("  every sale reached the server exactly once.");
    }
    Ok(())
}

/// Shares of pushes per latency bin (0.5 ms to 2 s, doubling), read from
/// the sketch's percentiles (each of the 200 half-percentiles is 0.5 %).
fn histogram(push: &Sketch) -> Vec<(f64, f64)> {
    let bounds: Vec<f64> = (0..13).map(|i| 0.5 * f64::from(1u32 << i)).collect();
    let mut shares = vec![0.0; bounds.len() + 1];
    if push.count() == 0 {
        return Vec::new();
    }
    for i in 0..200 {
        let q = (f64::from(i) + 0.5) / 200.0;
        let v = push.quantile(q).unwrap_or(0.0);
        let bin = bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len());
        shares[bin] += 0.005;
    }
    bounds
        .into_iter()
        .chain(std::iter::once(f64::INFINITY))
        .zip(shares)
        .collect()
}

/// A tick step of about a fifth of `span`, rounded to 1, 2 or 5 × 10^k.
fn tick_step(span: f64) -> f64 {
    let raw = (span / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Escapes text for HTML.
fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The server's outages in the samples: (from, to) in ms.
fn outages(samples: &Samples) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for win in samples.windows(2) {
        if !win[0].server_up {
            match out.last_mut() {
                Some(last) if last.1 == win[0].at_ms => last.1 = win[1].at_ms,
                _ => out.push((win[0].at_ms, win[1].at_ms)),
            }
        }
    }
    out
}

/// Plot area of the time charts: left margin, width, and the x of a time.
const PLOT_LEFT: f64 = 56.0;
const PLOT_W: f64 = 820.0;

/// The time axis under a chart whose plot ends at `y`: ticks and labels in
/// seconds, and the axis title.
fn time_axis(svg: &mut String, tmax_ms: f64, y: f64) {
    let secs = tmax_ms / 1000.0;
    let step = tick_step(secs);
    svg.push_str(&format!(
        "<line x1='{PLOT_LEFT}' y1='{y}' x2='{:.1}' y2='{y}' stroke='#555'/>",
        PLOT_LEFT + PLOT_W
    ));
    let mut t = 0.0;
    while t <= secs + 1e-9 {
        let x = PLOT_LEFT + t / secs.max(f64::MIN_POSITIVE) * PLOT_W;
        svg.push_str(&format!(
            "<line x1='{x:.1}' y1='{y}' x2='{x:.1}' y2='{:.1}' stroke='#555'/>\
             <text x='{x:.1}' y='{:.1}' font-size='11' text-anchor='middle'>{}</text>",
            y + 4.0,
            y + 16.0,
            if step >= 1.0 {
                format!("{t:.0}")
            } else {
                format!("{t:.1}")
            }
        ));
        t += step;
    }
    svg.push_str(&format!(
        "<text x='{:.1}' y='{:.1}' font-size='12' text-anchor='middle'>time since the session started (s)</text>",
        PLOT_LEFT + PLOT_W / 2.0,
        y + 32.0
    ));
}

/// A table of (label, value) rows.
fn table(title: &str, rows: &[(String, String)]) -> String {
    let mut t = format!("<h2>{}</h2><table>", esc(title));
    for (k, v) in rows {
        t.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v)));
    }
    t.push_str("</table>");
    t
}

/// A self-contained HTML page (no script, no external resource): pending
/// items per terminal over time with a time axis in seconds, a legend
/// naming the terminals and the server's outages shaded and labelled;
/// each terminal's link; the push round-trip histogram; and the report as
/// tables (the JSON is `pdc demo --json`).
pub fn html(r: &DemoReport, samples: &Samples) -> String {
    let tmax = samples.last().map_or(1, |s| s.at_ms).max(1) as f64;
    let x_of = |ms: u64| PLOT_LEFT + ms as f64 / tmax * PLOT_W;
    let terminals = samples.first().map_or(0, |s| s.pending.len());
    // The demo's terminal ids (`run`), in sample order.
    let name = |t: usize| format!("till-{t:02}");
    let hue = |t: usize| (t * 360 / terminals.max(1)) as u32;
    let dmax = samples
        .iter()
        .flat_map(|s| s.pending.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    // Pending items per terminal.
    let (top, plot_h) = (24.0, 260.0);
    let bottom = top + plot_h;
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{:.0}' height='{:.0}' style='background:#fafafa'>",
        PLOT_LEFT + PLOT_W + 150.0,
        bottom + 44.0
    );
    for (n, (from, to)) in outages(samples).into_iter().enumerate() {
        let (x, x2) = (x_of(from), x_of(to));
        svg.push_str(&format!(
            "<rect x='{x:.1}' y='{top}' width='{:.1}' height='{plot_h}' fill='#fdd'/>\
             <text x='{x:.1}' y='{:.1}' font-size='11' fill='#a22'>outage {}: {:.1}–{:.1} s</text>",
            (x2 - x).max(1.0),
            if n % 2 == 0 { top - 6.0 } else { top + 12.0 },
            n + 1,
            from as f64 / 1000.0,
            to as f64 / 1000.0
        ));
    }
    // The y axis: pending items.
    let ystep = tick_step(dmax);
    let mut v = 0.0;
    while v <= dmax + 1e-9 {
        let y = bottom - v / dmax * (plot_h - 10.0);
        svg.push_str(&format!(
            "<line x1='{:.1}' y1='{y:.1}' x2='{PLOT_LEFT}' y2='{y:.1}' stroke='#555'/>\
             <text x='{:.1}' y='{:.1}' font-size='11' text-anchor='end'>{v:.0}</text>",
            PLOT_LEFT - 4.0,
            PLOT_LEFT - 6.0,
            y + 4.0
        ));
        v += ystep;
    }
    svg.push_str(&format!(
        "<line x1='{PLOT_LEFT}' y1='{top}' x2='{PLOT_LEFT}' y2='{bottom}' stroke='#555'/>\
         <text x='14' y='{:.1}' font-size='12' transform='rotate(-90 14 {:.1})' text-anchor='middle'>pending items</text>",
        top + plot_h / 2.0,
        top + plot_h / 2.0
    ));
    for t in 0..terminals {
        let pts: Vec<String> = samples
            .iter()
            .map(|s| {
                let d = s.pending.get(t).copied().unwrap_or(0) as f64;
                format!(
                    "{:.1},{:.1}",
                    x_of(s.at_ms),
                    bottom - d / dmax * (plot_h - 10.0)
                )
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill='none' stroke='hsl({},60%,45%)' stroke-width='1.2' points='{}'/>",
            hue(t),
            pts.join(" ")
        ));
        // The legend, right of the plot.
        let ly = top + 6.0 + t as f64 * 14.0;
        svg.push_str(&format!(
            "<line x1='{:.1}' y1='{ly:.1}' x2='{:.1}' y2='{ly:.1}' stroke='hsl({},60%,45%)' stroke-width='3'/>\
             <text x='{:.1}' y='{:.1}' font-size='11'>{}</text>",
            PLOT_LEFT + PLOT_W + 12.0,
            PLOT_LEFT + PLOT_W + 30.0,
            hue(t),
            PLOT_LEFT + PLOT_W + 36.0,
            ly + 4.0,
            name(t)
        ));
    }
    time_axis(&mut svg, tmax, bottom);
    svg.push_str("</svg>");
    // One row per terminal: its link over time (down, slow, lossy).
    let row = 12.0;
    let lbottom = 4.0 + row * terminals as f64;
    let mut links = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{:.0}' height='{:.0}' style='background:#fafafa'>",
        PLOT_LEFT + PLOT_W + 150.0,
        lbottom + 44.0
    );
    for t in 0..terminals {
        links.push_str(&format!(
            "<text x='{:.1}' y='{:.1}' font-size='10' text-anchor='end'>{}</text>",
            PLOT_LEFT - 4.0,
            4.0 + t as f64 * row + row - 3.0,
            name(t)
        ));
    }
    for win in samples.windows(2) {
        let (x, x2) = (x_of(win[0].at_ms), x_of(win[1].at_ms));
        for (t, m) in win[0].links.iter().enumerate() {
            let color = match m {
                Mode::Up => continue,
                Mode::Down => "#d33",
                Mode::Slow => "#e90",
                Mode::Lossy => "#93c",
            };
            links.push_str(&format!(
                "<rect x='{x:.1}' y='{:.1}' width='{:.1}' height='{:.1}' fill='{color}'/>",
                4.0 + t as f64 * row + 1.0,
                x2 - x,
                row - 2.0
            ));
        }
    }
    time_axis(&mut links, tmax, lbottom);
    links.push_str("</svg>");
    let mut hist = String::from("<svg xmlns='http://www.w3.org/2000/svg' width='900' height='236' style='background:#fafafa'>");
    let bw = 900.0 / r.push_latency_histogram.len().max(1) as f64;
    for (i, (le, share)) in r.push_latency_histogram.iter().enumerate() {
        let bh = share * 180.0;
        let x = i as f64 * bw;
        let label = if le.is_finite() {
            format!("≤{le}")
        } else {
            "more".into()
        };
        hist.push_str(&format!(
            "<rect x='{:.1}' y='{:.1}' width='{:.1}' height='{bh:.1}' fill='#48c'/>\
             <text x='{:.1}' y='212' font-size='11'>{label}</text>\
             <text x='{:.1}' y='{:.1}' font-size='10'>{:.1}%</text>",
            x + 2.0,
            195.0 - bh,
            bw - 4.0,
            x + 4.0,
            x + 4.0,
            190.0 - bh,
            share * 100.0
        ));
    }
    hist.push_str("<text x='450' y='230' font-size='12' text-anchor='middle'>push round trip, upper bound of the bin (ms)</text></svg>");
    let count = |n: u64| n.to_string();
    let summary = table(
        "Summary",
        &[
            ("terminals".into(), count(r.terminals as u64)),
            ("session".into(), format!("{:.1} s", r.session_s)),
            ("sales recorded".into(), count(r.sales_recorded)),
            ("applied by the server".into(), count(r.sales_applied)),
            ("lost (must be 0)".into(), count(r.lost)),
            ("applied twice (must be 0)".into(), count(r.doubled)),
            (
                "duplicates suppressed".into(),
                count(r.duplicates_suppressed),
            ),
            (
                "dead-lettered (refused by a rule)".into(),
                count(r.dead_lettered),
            ),
            ("server outages".into(), count(r.server_outages)),
            ("terminals killed and reopened".into(), count(r.kills)),
            (
                "longest drain after an outage".into(),
                format!("{} ms", r.max_drain_ms),
            ),
            ("final drain".into(), format!("{} ms", r.final_drain_ms)),
        ],
    );
    let network = table(
        "Network",
        &[
            ("bytes on the terminals' links".into(), count(r.wire_bytes)),
            ("push bodies".into(), count(r.sync_body_bytes)),
            (
                "the same sales as JSON, sent once".into(),
                count(r.json_equivalent_bytes),
            ),
            (
                "push bodies / JSON".into(),
                format!("{:.3}", r.body_vs_json),
            ),
            ("wire / JSON".into(), format!("{:.3}", r.wire_vs_json)),
            ("pull answers".into(), count(r.pull_bytes)),
            (
                "full snapshots would have been".into(),
                count(r.pull_snapshot_bytes),
            ),
            (
                "push p50 / p95 / p99".into(),
                format!(
                    "{:.1} / {:.1} / {:.1} ms",
                    r.push_p50_ms, r.push_p95_ms, r.push_p99_ms
                ),
            ),
            (
                "server answers lost by lossy links".into(),
                count(r.lost_responses),
            ),
        ],
    );
    let tills = table(
        "Tills",
        &[
            ("cashier logins".into(), count(r.logins)),
            ("of which offline".into(), count(r.offline_logins)),
            (
                "offline login p95".into(),
                format!("{:.1} ms", r.offline_login_p95_ms),
            ),
            (
                "reference cache hit ratio".into(),
                format!("{:.3}", r.cache_hit_ratio),
            ),
            ("alerts fired".into(), count(r.alerts_fired)),
        ],
    );
    let kinds: Vec<(String, String)> = r
        .recorded_by_kind
        .iter()
        .map(|(k, v)| (k.clone(), count(*v)))
        .collect();
    let reasons: Vec<(String, String)> = r
        .dead_letter_reasons
        .iter()
        .map(|(k, v)| (k.clone(), count(*v)))
        .collect();
    let stores: Vec<(String, String)> = r
        .stores
        .iter()
        .map(|st| {
            let sample = st.sample_price_cents.map_or(String::new(), |(id, c)| {
                format!("; product {id} at {}.{:02}", c / 100, c % 100)
            });
            (
                esc(&st.store),
                format!(
                    "{} till(s), {} own prices, {} not sold; {} orders, {} lines at its own price{sample}; stock: {} units sold net, {} products below zero",
                    st.terminals, st.price_overrides, st.hidden, st.orders, st.lines_at_store_price,
                    st.stock_units_sold, st.stock_below_zero
                ),
            )
        })
        .collect();
    let drains: Vec<(String, String)> = outages(samples)
        .iter()
        .enumerate()
        .map(|(n, (from, to))| {
            (
                format!("outage {}", n + 1),
                format!("{:.1}–{:.1} s", *from as f64 / 1000.0, *to as f64 / 1000.0),
            )
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset='utf-8'><title>pdc demo</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}\
         th,td{{border:1px solid #ccc;padding:2px 8px;text-align:left}}td{{text-align:right}}\
         .tables{{display:flex;gap:2em;flex-wrap:wrap}}</style></head><body>\
         <h1>pdc demo</h1><p>{} terminals, {} sales recorded, {} applied, <b>{} lost</b>, {} applied twice.</p>\
         <h2>Pending items per terminal (server outages shaded)</h2>{svg}\
         <h2>Links per terminal (red down, orange slow, purple losing answers)</h2>{links}\
         <h2>Push round trip, share of pushes per bin</h2>{hist}\
         <div class='tables'><div>{summary}{}</div><div>{network}{tills}</div><div>{}{}{}</div></div>\
         </body></html>",
        r.terminals,
        r.sales_recorded,
        r.sales_applied,
        r.lost,
        r.doubled,
        table("Server outages", &drains),
        table("Recorded by kind", &kinds),
        table("Dead letters by reason", &reasons),
        table("Stores (each sells from its own catalogue view)", &stores),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_histogram_shares_add_up_and_land_in_their_bins() {
        assert!(histogram(&Sketch::new()).is_empty());
        let mut s = Sketch::new();
        for _ in 0..900 {
            s.record(1.5);
        }
        for _ in 0..100 {
            s.record(300.0);
        }
        let h = histogram(&s);
        let total: f64 = h.iter().map(|b| b.1).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let share = |le: f64| h.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1);
        assert!((share(2.0) - 0.9).abs() < 0.011, "{h:?}");
        assert!((share(512.0) - 0.1).abs() < 0.011, "{h:?}");
    }

    #[test]
    fn the_html_report_is_self_contained() {
        let r = DemoReport {
            terminals: 2,
            session_s: 1.0,
            sales_recorded: 3,
            sales_applied: 3,
            push_latency_histogram: vec![(0.5, 0.5), (f64::INFINITY, 0.5)],
            server_outages: 1,
            catalogue_version: 1,
            ..DemoReport::default()
        };
        let sample = |at_ms, pending: Vec<u64>, server_up, links: Vec<Mode>| Sample {
            at_ms,
            pending,
            server_up,
            links,
        };
        let samples = vec![
            sample(0, vec![1, 2], true, vec![Mode::Up, Mode::Down]),
            sample(500, vec![3, 0], false, vec![Mode::Slow, Mode::Up]),
            sample(1000, vec![0, 0], true, vec![Mode::Up, Mode::Up]),
        ];
        let page = html(&r, &samples);
        assert!(page.starts_with("<!doctype html>"));
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("fill='#fdd'"), "the outage is shaded");
        assert!(page.contains("outage 1: 0.5–1.0 s"), "and labelled");
        assert!(
            page.contains("till-00") && page.contains("till-01"),
            "a legend"
        );
        assert!(
            page.contains("time since the session started (s)"),
            "a time axis"
        );
        assert!(page.contains("<th>sales recorded</th><td>3</td>"), "tables");
        assert!(!page.contains("<pre>"), "no JSON dump");
        assert!(
            page.contains("fill='#d33'") && page.contains("fill='#e90'"),
            "links drawn"
        );
        assert!(
            !page.contains("<script"),
            "no scripts, no external resources"
        );
    }
}
