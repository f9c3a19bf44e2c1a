//! The native background driver on tokio: a thin loop that calls
//! `sync_once` when the machine's timer says so, or when poked, and probes
//! the server with `ping` every 30 s (every 5 s while it is unreachable),
//! which feeds connection quality and the online/offline state.

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
        loop {
            if clock.now() >= next_ping {
                let ok = engine.ping().await.is_ok();
                next_ping = clock.now() + if ok { PING_ONLINE } else { PING_RECOVERING };
            }
            let _ = engine.sync_once().await;
            let wait = engine
                .next_wakeup()
                .map(|at| at.saturating_duration_since(clock.now()))
                .unwrap_or(PING_ONLINE)
                .min(next_ping.saturating_duration_since(clock.now()))
                .max(Duration::from_millis(1));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = poke.notified() => {}
                _ = stop.notified() => return,
            }
        }
    })
}
