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
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::OfflineEngine;

/// The driver's intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Probe interval while the server answers (default: the study's 30 s).
    pub ping_online: Duration,
    /// Probe interval while it does not (default 5 s).
    pub ping_recovering: Duration,
    /// Reference data pull interval, also right after start (default 5 min).
    pub pull_every: Duration,
    /// Metrics report interval (default 1 min).
    pub report_every: Duration,
    /// Alert rule evaluation interval (default 10 s).
    pub alert_every: Duration,
    /// Store id sent with metrics reports.
    pub store_id: &'static str,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            ping_online: Duration::from_secs(30),
            ping_recovering: Duration::from_secs(5),
            pull_every: Duration::from_secs(300),
            report_every: Duration::from_secs(60),
            alert_every: Duration::from_secs(10),
            store_id: "",
        }
    }
}

/// Runs the sync loop until `stop` is notified. `poke` wakes it early (call
/// `poke.notify_one()` after `record` for a prompt sync). Errors of a pass
/// are retried on the next wake-up: the machine's backoff paces them.
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
    let DriverConfig {
        ping_online,
        ping_recovering,
        pull_every,
        report_every,
        alert_every,
        store_id,
    } = config;
    tokio::spawn(async move {
        let mut next_ping = clock.now();
        let mut next_pull = clock.now();
        let mut next_report = clock.now() + report_every;
        let mut next_alert = clock.now() + alert_every;
        loop {
            if clock.now() >= next_ping {
                let ok = engine.ping().await.is_ok();
                next_ping = clock.now() + if ok { ping_online } else { ping_recovering };
            }
            if clock.now() >= next_pull {
                // A failed pull is retried at the next probe interval.
                let ok = engine.pull().await.is_ok();
                next_pull = clock.now() + if ok { pull_every } else { ping_recovering };
            }
            if clock.now() >= next_report {
                let _ = engine.report_metrics(store_id).await;
                next_report = clock.now() + report_every;
            }
            if clock.now() >= next_alert {
                engine.check_alerts();
                next_alert = clock.now() + alert_every;
            }
            let _ = engine.sync_once().await;
            let wait = engine
                .next_wakeup()
                .map(|at| at.saturating_duration_since(clock.now()))
                .unwrap_or(ping_online)
                .min(next_ping.saturating_duration_since(clock.now()))
                .min(next_pull.saturating_duration_since(clock.now()))
                .min(next_report.saturating_duration_since(clock.now()))
                .min(next_alert.saturating_duration_since(clock.now()))
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = poke.notified() => {}
                _ = stop.notified() => return,
            }
        }
    })
}
