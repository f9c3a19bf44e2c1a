//! The native background driver on tokio: a thin loop that calls
//! `sync_once` when the machine's timer says so, or when poked, and probes
//! the server with `ping` every 30 s (every 5 s while it is unreachable),
//! which feeds connection quality and the online/offline state; it also
//! pulls reference data at start and every 5 minutes, and reports metrics
//! every minute.

use std::sync::Arc;
use std::time::Duration;

use pdc_clock::Clock;
use pdc_sync::SyncTransport;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::OfflineEngine;

/// Probe interval while the server answers (the study's 30 s).
const PING_ONLINE: Duration = Duration::from_secs(30);
/// Probe interval while it does not.
const PING_RECOVERING: Duration = Duration::from_secs(5);
/// Reference data pull interval (also right after start).
const PULL_EVERY: Duration = Duration::from_secs(300);
/// Metrics report interval.
const REPORT_EVERY: Duration = Duration::from_secs(60);

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
    tokio::spawn(async move {
        let mut next_ping = clock.now();
        let mut next_pull = clock.now();
        let mut next_report = clock.now() + REPORT_EVERY;
        loop {
            if clock.now() >= next_ping {
                let ok = engine.ping().await.is_ok();
                next_ping = clock.now() + if ok { PING_ONLINE } else { PING_RECOVERING };
            }
            if clock.now() >= next_pull {
                // A failed pull is retried at the next probe interval.
                let ok = engine.pull().await.is_ok();
                next_pull = clock.now() + if ok { PULL_EVERY } else { PING_RECOVERING };
            }
            if clock.now() >= next_report {
                let _ = engine.report_metrics("").await;
                next_report = clock.now() + REPORT_EVERY;
            }
            let _ = engine.sync_once().await;
            let wait = engine
                .next_wakeup()
                .map(|at| at.saturating_duration_since(clock.now()))
                .unwrap_or(PING_ONLINE)
                .min(next_ping.saturating_duration_since(clock.now()))
                .min(next_pull.saturating_duration_since(clock.now()))
                .min(next_report.saturating_duration_since(clock.now()))
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = poke.notified() => {}
                _ = stop.notified() => return,
            }
        }
    })
}
