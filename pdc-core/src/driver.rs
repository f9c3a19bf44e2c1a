//! The native background driver on tokio: a thin loop that calls
//! `sync_once` when the machine's timer says so, or when poked, and probes
//! the server with `ping` every 30 s (every 5 s while it is unreachable),
//! which feeds connection quality and the online/offline state; it also
//! pulls reference data at start and every 5 minutes, reports metrics
//! every minute, and evaluates alert rules every 10 s.

use std::sync::Arc;
use std::time::Duration;

use pdc_clock::Clock;
use pdc_sync::SyncTransport;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::{EngineError, OfflineEngine, SyncStatus};

/// The driver's intervals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// Probe interval while the server answers (default: the study's 30 s).
    pub ping_online: Duration,
    /// Probe interval while it does not (default 5 s).
    pub ping_recovering: Duration,
    /// Reference data pull interval, also right after start (default 5 min).
    pub pull_every: Duration,
    /// How long one wait on the server's change stream lasts
    /// (`GET /v1/changes`; the server may cap it): a change to the
    /// terminal's store view is pulled within about a second instead of
    /// at the next `pull_every`. `None` turns the change stream off.
    /// Default 25 s.
    pub change_wait: Option<Duration>,
    /// Stock level pull interval (`GET /v1/stock`, also right after start;
    /// each pull fetches only the levels changed since the last; a server
    /// that keeps no stock answers 404 and the driver stops asking).
    /// Default 1 min.
    pub stock_every: Duration,
    /// Metrics report interval (default 1 min).
    pub report_every: Duration,
    /// Alert rule evaluation interval (default 10 s).
    pub alert_every: Duration,
    /// Store id sent with metrics reports.
    pub store_id: String,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            ping_online: Duration::from_secs(30),
            ping_recovering: Duration::from_secs(5),
            pull_every: Duration::from_secs(300),
            change_wait: Some(Duration::from_secs(25)),
            stock_every: Duration::from_secs(60),
            report_every: Duration::from_secs(60),
            alert_every: Duration::from_secs(10),
            store_id: String::new(),
        }
    }
}

/// A running driver ([`OfflineEngine::start`]): wake it, read its status,
/// wait until everything is sent, stop it. Dropping the handle stops the
/// driver too (without waiting for it).
pub struct DriverHandle {
    poke: Arc<Notify>,
    stop: Arc<Notify>,
    pull: Arc<AtomicBool>,
    status: watch::Receiver<SyncStatus>,
    /// The engine's status now (`None` once the engine is gone).
    current: Arc<dyn Fn() -> Option<SyncStatus> + Send + Sync>,
    join: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl DriverHandle {
    /// Syncs now (the driver also wakes after every saved sale).
    pub fn sync_now(&self) {
        self.poke.notify_one();
    }

    /// Pulls the reference datasets now.
    pub fn pull_now(&self) {
        self.pull.store(true, Ordering::SeqCst);
        self.poke.notify_one();
    }

    /// The status, published after every saved sale and every driver
    /// turn: `borrow()` for the latest, `changed().await` to follow it.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// Waits until nothing is pending or in flight; `EngineError::Timeout`
    /// (with what still waits) after `timeout`.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<SyncStatus, EngineError> {
        let mut rx = self.status.clone();
        self.poke.notify_one();
        let wait = async {
            loop {
                rx.borrow_and_update();
                let Some(now) = (self.current)() else {
                    return Err(EngineError::Timeout("the engine is gone".into()));
                };
                if now.is_synced() {
                    return Ok(now);
                }
                if rx.changed().await.is_err() {
                    return Err(EngineError::Timeout("the driver stopped".into()));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                let s = self.status.borrow().clone();
                Err(EngineError::Timeout(format!(
                    "{} sales still pending after {timeout:?} (last error: {})",
                    s.pending,
                    s.last_error.as_deref().unwrap_or("none")
                )))
            }
        }
    }

    /// Stops the driver and waits for it: a push in flight finishes and its
    /// outcome is committed first (the loop only stops between turns).
    pub async fn shutdown(mut self) -> Result<(), EngineError> {
        self.stop.notify_one();
        match self.join.take() {
            Some(join) => join
                .await
                .map_err(|e| EngineError::Timeout(format!("the driver task failed: {e}"))),
            None => Ok(()),
        }
    }
}

impl Drop for DriverHandle {
    fn drop(&mut self) {
        if self.join.is_some() {
            self.stop.notify_one();
        }
    }
}

impl<T, C> OfflineEngine<T, C>
where
    T: SyncTransport + Send + Sync + 'static,
    C: Clock + Clone + 'static,
{
    /// Starts the background driver on the current tokio runtime, on the
    /// engine's own clock: it wakes after every saved sale, probes, pulls,
    /// reports and syncs on `config`'s intervals, and publishes a
    /// [`SyncStatus`] after every turn. Driver failures are events
    /// ([`crate::EngineEvent::Failed`]) and the status's `last_error`.
    pub fn start(self: &Arc<Self>, config: DriverConfig) -> DriverHandle {
        let poke = Arc::new(Notify::new());
        let stop = Arc::new(Notify::new());
        let pull = Arc::new(AtomicBool::new(false));
        let (tx, status) = watch::channel(self.status());
        let tx = Arc::new(tx);
        let wake = Arc::clone(&poke);
        // Weak: the engine keeps the hook, the hook must not keep the engine.
        let weak = Arc::downgrade(self);
        let (hook_tx, hook_engine) = (Arc::clone(&tx), weak.clone());
        self.on_record(move || {
            wake.notify_one();
            if let Some(e) = hook_engine.upgrade() {
                hook_tx.send_replace(e.status());
            }
        });
        let current = Arc::new(move || weak.upgrade().map(|e| e.status()));
        let join = tokio::spawn(run(
            Arc::clone(self),
            Arc::clone(&poke),
            Arc::clone(&stop),
            Arc::clone(&pull),
            Some(tx),
            self.clock().clone(),
            config,
        ));
        DriverHandle {
            poke,
            stop,
            pull,
            status,
            current,
            join: Some(join),
        }
    }
}

/// Runs the sync loop until `stop` is notified. `poke` wakes it early (call
/// `poke.notify_one()` after `record` for a prompt sync). Errors of a pass
/// are retried on the next wake-up: the machine's backoff paces them.
/// [`OfflineEngine::start`] does all of this with one handle.
pub fn spawn_driver<T, C>(
    engine: Arc<OfflineEngine<T, C>>,
    poke: Arc<Notify>,
    stop: Arc<Notify>,
    clock: C,
) -> JoinHandle<()>
where
    T: SyncTransport + Send + Sync + 'static,
    C: Clock + Clone + 'static,
{
    spawn_driver_with(engine, poke, stop, clock, DriverConfig::default())
}

/// [`spawn_driver`] with other intervals.
pub fn spawn_driver_with<T, C>(
    engine: Arc<OfflineEngine<T, C>>,
    poke: Arc<Notify>,
    stop: Arc<Notify>,
    clock: C,
    config: DriverConfig,
) -> JoinHandle<()>
where
    T: SyncTransport + Send + Sync + 'static,
    C: Clock + Clone + 'static,
{
    let pull = Arc::new(AtomicBool::new(false));
    tokio::spawn(run(engine, poke, stop, pull, None, clock, config))
}

async fn run<T, C>(
    engine: Arc<OfflineEngine<T, C>>,
    poke: Arc<Notify>,
    stop: Arc<Notify>,
    pull_now: Arc<AtomicBool>,
    status: Option<Arc<watch::Sender<SyncStatus>>>,
    clock: C,
    config: DriverConfig,
) where
    T: SyncTransport + Send + Sync + 'static,
    C: Clock + Clone + 'static,
{
    let DriverConfig {
        ping_online,
        ping_recovering,
        pull_every,
        change_wait,
        stock_every,
        report_every,
        alert_every,
        store_id,
    } = config;
    // The change stream in its own task, ended with this loop.
    let _changes = change_wait.map(|wait| {
        AbortOnDrop(tokio::spawn(follow_changes(
            Arc::clone(&engine),
            Arc::clone(&poke),
            Arc::clone(&pull_now),
            wait,
        )))
    });
    let mut next_ping = clock.now();
    let mut next_pull = clock.now();
    let mut next_stock = Some(clock.now());
    let mut next_report = clock.now() + report_every;
    let mut next_alert = clock.now() + alert_every;
    loop {
        if clock.now() >= next_ping {
            let ok = engine.ping().await.is_ok();
            next_ping = clock.now() + if ok { ping_online } else { ping_recovering };
        }
        if clock.now() >= next_pull || pull_now.swap(false, Ordering::SeqCst) {
            // A failed pull is retried at the next probe interval.
            let ok = engine.pull().await.is_ok();
            next_pull = clock.now() + if ok { pull_every } else { ping_recovering };
        }
        if next_stock.is_some_and(|t| clock.now() >= t) {
            next_stock = match engine.pull_stock().await {
                Ok(Some(_)) => Some(clock.now() + stock_every),
                // The server keeps no stock: stop asking.
                Ok(None) => None,
                Err(_) => Some(clock.now() + ping_recovering),
            };
        }
        if clock.now() >= next_report {
            if let Err(e) = engine.report_metrics(&store_id).await {
                engine.telemetry().failed("report", e.to_string());
            } else {
                engine.telemetry().succeeded("report");
            }
            next_report = clock.now() + report_every;
        }
        if clock.now() >= next_alert {
            engine.check_alerts();
            next_alert = clock.now() + alert_every;
        }
        // A failed push is noted by the engine (status, event); the
        // machine's backoff paces the retry.
        let _ = engine.sync_once().await;
        if let Some(tx) = &status {
            tx.send_replace(engine.status());
        }
        let wait = engine
            .next_wakeup()
            .map(|at| at.saturating_duration_since(clock.now()))
            .unwrap_or(ping_online)
            .min(next_ping.saturating_duration_since(clock.now()))
            .min(next_pull.saturating_duration_since(clock.now()))
            .min(next_report.saturating_duration_since(clock.now()))
            .min(next_alert.saturating_duration_since(clock.now()))
            .min(next_stock.map_or(Duration::MAX, |t| t.saturating_duration_since(clock.now())))
            .max(Duration::from_millis(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = poke.notified() => {}
            _ = stop.notified() => return,
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits on the change stream in a loop; a change sets `pull_now` and
/// wakes the driver. After a failure (server down, restarting) it waits a
/// jittered 1–5 s, doubling up to 60 s while failures last, so that a
/// server restart does not bring every terminal back in the same second.
/// Ends when the server has no change stream.
async fn follow_changes<T, C>(
    engine: Arc<OfflineEngine<T, C>>,
    poke: Arc<Notify>,
    pull_now: Arc<AtomicBool>,
    wait: Duration,
) where
    T: SyncTransport + Send + Sync + 'static,
    C: Clock + Clone + 'static,
{
    use rand::Rng as _;
    let mut failures: u32 = 0;
    loop {
        match engine.wait_changes(wait).await {
            Ok(Some(true)) => {
                failures = 0;
                pull_now.store(true, Ordering::SeqCst);
                poke.notify_one();
                // Let the pull land before asking again with its version.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Some(false)) => failures = 0,
            Ok(None) => return,
            Err(_) => {
                failures = failures.saturating_add(1);
                let cap = Duration::from_secs(60)
                    .min(Duration::from_secs(5) * (1 << (failures - 1).min(4)));
                let base = Duration::from_secs(1);
                let span = cap.saturating_sub(base).as_millis() as u64;
                let jitter = rand::thread_rng().gen_range(0..=span);
                tokio::time::sleep(base + Duration::from_millis(jitter)).await;
            }
        }
    }
}
