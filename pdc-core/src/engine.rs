//! The engine: composition of store, sync machine, auth, cache and monitor.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pdc_auth::{AuthConfig, Authenticator, KdfParams, Login, Pepper, PinHasher};
use pdc_cache::{DatasetId, DatasetPolicy, Loader, MemoryLimits, Refresh, TieredCache};
use pdc_clock::Clock;
use pdc_codec::Codec;
use pdc_monitor::{
    AlertEngine, AlertEvent, AlertRule, ConnectionHistory, ConnectionState, MetricKey, Registry,
    Severity, TerminalReport,
};
use pdc_store::{NewItem, Store};
use pdc_sync::{
    Connectivity, PullRequest, PullResponse, SyncConfig, SyncEvent, SyncMachine, SyncTransport,
};
use rand::rngs::{OsRng, StdRng};
use rand::SeedableRng;

use crate::EngineError;

/// How to build an engine.
pub struct EngineConfig {
    /// This terminal's id.
    pub terminal_id: String,
    /// The store file.
    pub store_path: PathBuf,
    /// Sync tuning (batch size, linger, backoff...).
    pub sync: SyncConfig,
    /// Login policy.
    pub auth: AuthConfig,
    /// KDF of new credentials.
    pub kdf: KdfParams,
    /// Pepper from the platform's keystore, if any.
    pub pepper: Option<Pepper>,
    /// Reference datasets pulled from the server and served from cache.
    pub datasets: Vec<String>,
    /// Memory cache limits for reference data.
    pub l1: MemoryLimits,
    /// Seed for the engine's non-cryptographic randomness (backoff jitter);
    /// `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Alert rules evaluated over the engine's metrics (default: the
    /// study's, [`AlertRule::defaults`]).
    pub alert_rules: Vec<AlertRule>,
}

impl EngineConfig {
    /// Defaults for a terminal storing its file at `store_path`.
    pub fn new(terminal_id: impl Into<String>, store_path: impl Into<PathBuf>) -> Self {
        let terminal_id = terminal_id.into();
        EngineConfig {
            sync: SyncConfig::new(terminal_id.clone()),
            terminal_id,
            store_path: store_path.into(),
            auth: AuthConfig::default(),
            kdf: KdfParams::DEFAULT,
            pepper: None,
            datasets: vec!["products".into(), "users".into(), "config".into()],
            l1: MemoryLimits {
                max_entries: 10_000,
                max_weight: 16 << 20,
            },
            seed: None,
            alert_rules: AlertRule::defaults(),
        }
    }
}

/// What the UI hears about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A sync pass ended: items acknowledged, dead-lettered, bytes moved.
    SyncCompleted {
        /// Items the server acknowledged.
        acked: usize,
        /// Items refused for good.
        dead_lettered: usize,
        /// Request bytes sent.
        bytes_up: u64,
        /// Response bytes received.
        bytes_down: u64,
    },
    /// An item was refused for good (it is in the dead-letter table).
    DeadLettered {
        /// The item.
        local_id: u64,
        /// The server's reason.
        reason: String,
    },
    /// The server refused whole requests (a wrong URL, a protocol or
    /// schema mismatch): sending stopped, nothing was dead-lettered. It
    /// resumes by itself when a probe (one item, every
    /// `SyncConfig::halt_probe`) is accepted, or at
    /// [`OfflineEngine::resume_sync`].
    SyncHalted {
        /// The server's refusal.
        reason: String,
    },
    /// Sending resumed after [`EngineEvent::SyncHalted`].
    SyncResumed,
    /// An item failed alone with server errors too often: it waits (and
    /// its stream with it) until [`OfflineEngine::requeue_quarantined`].
    Quarantined {
        /// The item.
        local_id: u64,
        /// The last failure.
        reason: String,
    },
    /// The server's answer broke the protocol (wrong number of results,
    /// undecodable); the batch was put back and is resent.
    ProtocolViolation {
        /// What was wrong.
        message: String,
    },
    /// The connection state changed.
    ModeSwitch {
        /// Old state.
        from: ConnectionState,
        /// New state.
        to: ConnectionState,
    },
    /// A sync pass is sending: this many items were pending.
    SyncStarted {
        /// Items in the outbox when the first batch left.
        pending: usize,
    },
    /// An alert rule's condition held for its duration.
    AlertFired {
        /// Rule name.
        rule: String,
        /// Its severity.
        severity: Severity,
        /// The value that fired it.
        value: f64,
    },
    /// A fired alert's value came back.
    AlertResolved {
        /// Rule name.
        rule: String,
        /// The value that resolved it.
        value: f64,
    },
    /// A reference dataset was updated from the server.
    DatasetUpdated {
        /// Which.
        dataset: String,
        /// Its new version.
        version: u64,
    },
}

/// Reads reference records from the store for the memory cache.
struct StoreLoader(Store);

#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
impl Loader for StoreLoader {
    async fn load(&self, dataset: &str, key: &str) -> Result<Vec<u8>, String> {
        let id: u64 = key.parse().map_err(|_| format!("bad record id {key:?}"))?;
        self.0
            .dataset_get(dataset, id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{dataset}/{id} not found"))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves state that is still
    // consistent (every mutation is a single call); keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most UI events kept unpolled.
pub const MAX_EVENTS: usize = 1024;

/// The offline-first engine of one terminal.
///
/// All methods take `&self`; share it in an `Arc` between the UI and the
/// driver.
pub struct OfflineEngine<T: SyncTransport, C: Clock + Clone + 'static> {
    terminal_id: String,
    store: Store,
    clock: C,
    transport: T,
    codec: Codec,
    sync: Mutex<SyncMachine>,
    auth: Mutex<Authenticator<Store, C>>,
    cache: async_lock::Mutex<TieredCache>,
    loader: StoreLoader,
    datasets: Vec<String>,
    registry: Mutex<Registry>,
    history: Mutex<ConnectionHistory>,
    alerts: Mutex<AlertEngine>,
    events: Mutex<VecDeque<EngineEvent>>,
    rng: Mutex<StdRng>,
}

impl<T: SyncTransport, C: Clock + Clone + 'static> std::fmt::Debug for OfflineEngine<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineEngine")
            .field("terminal_id", &self.terminal_id)
            .finish_non_exhaustive()
    }
}

/// Refuses, before anything is saved, an item the sync machine would
/// refuse (integers above 2^63−1, size over the item limit), sized with
/// the largest local id it could get. The item passes through by value:
/// its payload is moved into the probe and back, never copied.
fn check_new_item(sync: &SyncMachine, item: NewItem) -> Result<NewItem, EngineError> {
    let probe = pdc_sync::OutboxItem {
        local_id: pdc_sync::MAX_WIRE_INT,
        stream: item.stream,
        priority: item.priority,
        kind: item.kind,
        created_at_ms: item.created_at_ms,
        payload: item.payload,
    };
    sync.admissible(&probe)?;
    Ok(NewItem {
        stream: probe.stream,
        priority: probe.priority,
        kind: probe.kind,
        created_at_ms: probe.created_at_ms,
        payload: probe.payload,
    })
}

impl<T: SyncTransport, C: Clock + Clone + 'static> OfflineEngine<T, C> {
    /// Opens the engine: the store, the pending outbox into the sync
    /// machine, and what login needs. Nothing is fetched.
    pub fn open(config: EngineConfig, transport: T, clock: C) -> Result<Self, EngineError> {
        let store = Store::open(&config.store_path)?;
        Self::with_store(config, store, transport, clock)
    }

    /// Opens the engine over a store the host opened itself, e.g. with
    /// [`Store::open_with_backend`] on a browser's storage or in memory;
    /// `config.store_path` is not used.
    pub fn with_store(
        config: EngineConfig,
        store: Store,
        transport: T,
        clock: C,
    ) -> Result<Self, EngineError> {
        let mut rng = match config.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_rng(OsRng)
                .map_err(|e| EngineError::Store(pdc_store::StoreError::Storage(e.to_string())))?,
        };
        let machine_rng = StdRng::seed_from_u64(rand::RngCore::next_u64(&mut rng));
        let mut sync_config = config.sync;
        // Pushes carry the store's identity: the server's exactly-once key.
        sync_config.store_id = store.store_id();
        let mut sync = SyncMachine::new(sync_config, Box::new(machine_rng));
        let (pending, _quarantined) = store.pending()?;
        let restored = sync.restore(pending, clock.now());
        // What can no longer be sent goes to the dead letters with its
        // reason: the till always opens.
        let mut events = VecDeque::new();
        for (item, e) in restored.refused {
            store.dead_letter(&item, "unsendable", &e.to_string(), clock.wall_ms())?;
            events.push_back(EngineEvent::DeadLettered {
                local_id: item.local_id,
                reason: format!("unsendable: {e}"),
            });
        }
        let hasher = PinHasher::new(config.kdf, config.pepper);
        // The dummy credential costs one KDF run at open, at the configured cost.
        let mut auth_rng = StdRng::from_rng(&mut rng)
            .map_err(|e| EngineError::Store(pdc_store::StoreError::Storage(e.to_string())))?;
        let auth = Authenticator::new(
            store.clone(),
            clock.clone(),
            hasher,
            config.auth,
            &mut auth_rng,
        )?;
        let policies = config
            .datasets
            .iter()
            .map(|d| DatasetPolicy {
                dataset: d.clone(),
                ttl_ms: 24 * 3_600_000,
                tiers: vec!["memory".into()],
                invalidate_on: vec![format!("{d}_updated")],
                refresh: Refresh::OnExpiry,
                offline_ttl_ms: 0,
            })
            .collect();
        let cache = TieredCache::new(config.l1, vec![], policies)?;
        let history = ConnectionHistory::new(ConnectionState::Online, clock.now(), 100);
        Ok(OfflineEngine {
            terminal_id: config.terminal_id,
            loader: StoreLoader(store.clone()),
            store,
            clock,
            transport,
            codec: Codec::new(),
            sync: Mutex::new(sync),
            auth: Mutex::new(auth),
            cache: async_lock::Mutex::new(cache),
            datasets: config.datasets,
            registry: Mutex::new(Registry::new()),
            history: Mutex::new(history),
            alerts: Mutex::new(AlertEngine::new(config.alert_rules)),
            events: Mutex::new(events),
            rng: Mutex::new(rng),
        })
    }

    /// The store (operators: dead letters, quarantine).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records a sale: durable in the outbox before this returns, then
    /// queued for sync. The only way sales enter the engine. On `Err` the
    /// sale was not saved.
    pub fn record(&self, item: NewItem) -> Result<u64, EngineError> {
        let started = self.clock.now();
        let item = check_new_item(&lock(&self.sync), item)?;
        let stored = self.store.append(item)?;
        let id = stored.local_id;
        lock(&self.sync).enqueue(stored, self.clock.now())?;
        let us = (self.clock.now() - started).as_secs_f64() * 1e6;
        if let Ok(k) = MetricKey::new("pdc_record_us", &[]) {
            lock(&self.registry).observe(&k, us);
        }
        Ok(id)
    }

    /// Records many sales in one durable commit (bulk import).
    pub fn record_many(&self, items: Vec<NewItem>) -> Result<Vec<u64>, EngineError> {
        let items = {
            let sync = lock(&self.sync);
            items
                .into_iter()
                .map(|item| check_new_item(&sync, item))
                .collect::<Result<Vec<_>, _>>()?
        };
        let stored = self.store.append_many(items)?;
        let mut sync = lock(&self.sync);
        let now = self.clock.now();
        let ids = stored.iter().map(|i| i.local_id).collect();
        for it in stored {
            sync.enqueue(it, now)?;
        }
        Ok(ids)
    }

    /// Items waiting to reach the server.
    pub fn pending(&self) -> usize {
        lock(&self.sync).len()
    }

    /// Gives the machine back every pending item of the store it no longer
    /// holds (after a failed commit of outcomes); best effort: if the store
    /// cannot even be read, the items come back at the next open.
    fn reload_pending(&self) {
        if let Ok((pending, _)) = self.store.pending() {
            let restored = lock(&self.sync).restore(pending, self.clock.now());
            // What it refuses was admissible when saved; it stays in the
            // store and is dead-lettered at the next open.
            let _ = restored.refused;
        }
    }

    /// Takes a quarantined item (see [`EngineEvent::Quarantined`]) back
    /// into the queue: an operator's action after fixing the cause.
    pub fn requeue_quarantined(&self, local_id: u64) -> Result<(), EngineError> {
        lock(&self.sync).requeue_quarantined(local_id, self.clock.now())?;
        Ok(())
    }

    /// Resumes sending after [`EngineEvent::SyncHalted`] (call it after
    /// fixing the server URL or upgrading, or from an operator's button);
    /// a no-op when sending is not halted.
    pub fn resume_sync(&self) {
        lock(&self.sync).resume(self.clock.now());
    }

    /// Tells the engine whether the network is up (OS network events).
    pub fn set_online(&self, online: bool) {
        let now = self.clock.now();
        lock(&self.sync).set_connectivity(
            if online {
                Connectivity::Online
            } else {
                Connectivity::Offline
            },
            now,
        );
        let to = if online {
            ConnectionState::Online
        } else {
            ConnectionState::Offline
        };
        let mut h = lock(&self.history);
        let from = h.current();
        if from != to {
            h.set(to, now, self.clock.wall_ms());
            self.event(EngineEvent::ModeSwitch { from, to });
        }
    }

    /// When the driver should run [`sync_once`](Self::sync_once) next.
    pub fn next_wakeup(&self) -> Option<pdc_clock::Instant> {
        lock(&self.sync).poll_timeout()
    }

    /// One sync pass: sends every batch the machine allows now, applies the
    /// answers, persists acknowledgements and dead letters. Safe to call at
    /// any time; a batch interrupted by a crash is resent after restart.
    pub async fn sync_once(&self) -> Result<(), EngineError> {
        let (mut acked_total, mut dead) = (0usize, 0usize);
        let mut started = false;
        let before = lock(&self.sync).health(self.clock.now());
        loop {
            let now = self.clock.now();
            let batch = {
                let mut m = lock(&self.sync);
                m.handle_timeout(now);
                m.poll_transmit(now)
            };
            // None: nothing ready, lingering, backing off, or offline.
            let Some(batch) = batch else { break };
            if !started {
                started = true;
                let pending = self.pending();
                self.event(EngineEvent::SyncStarted { pending });
            }
            let sent = self.clock.now();
            let result = self.transport.push(batch.request).await;
            let now = self.clock.now();
            if let Ok(k) = MetricKey::new("pdc_sync_push_ms", &[]) {
                lock(&self.registry).observe(&k, (now - sent).as_secs_f64() * 1000.0);
            }
            let (events, outcome) = {
                let mut m = lock(&self.sync);
                let outcome = match result {
                    Ok(body) => m.handle_response_bytes(batch.id, &body, now),
                    Err(e) => m.handle_error(batch.id, e, now),
                };
                (
                    std::iter::from_fn(|| m.poll_event()).collect::<Vec<_>>(),
                    outcome,
                )
            };
            match outcome {
                // A late answer after a timeout changes nothing.
                Ok(()) | Err(pdc_sync::SyncError::UnknownBatch(_)) => {}
                // The batch was put back and is resent; the UI hears of it.
                Err(e) => {
                    if let Ok(k) = MetricKey::new("pdc_sync_protocol_violations_total", &[]) {
                        lock(&self.registry).count(&k, 1);
                    }
                    self.event(EngineEvent::ProtocolViolation {
                        message: e.to_string(),
                    });
                }
            }
            let mut acked = Vec::new();
            let mut dead_letters = Vec::new();
            let mut later = Vec::new();
            for ev in events {
                match ev {
                    SyncEvent::Acked { local_id, .. } => acked.push(local_id),
                    SyncEvent::DeadLettered {
                        item,
                        code,
                        message,
                    } => {
                        later.push(EngineEvent::DeadLettered {
                            local_id: item.local_id,
                            reason: format!("{code}: {message}"),
                        });
                        dead_letters.push(pdc_store::DeadLetter {
                            item,
                            code,
                            message,
                            at_ms: self.clock.wall_ms(),
                        });
                    }
                    SyncEvent::Quarantined { item, reason } => {
                        later.push(EngineEvent::Quarantined {
                            local_id: item.local_id,
                            reason,
                        });
                    }
                    SyncEvent::Halted { reason } => later.push(EngineEvent::SyncHalted { reason }),
                    SyncEvent::Resumed => later.push(EngineEvent::SyncResumed),
                    _ => {}
                }
            }
            if !acked.is_empty() || !dead_letters.is_empty() {
                // The response's outcomes in one transaction; if it fails,
                // the machine takes the items back from the store (they
                // are resent, and answered as duplicates).
                if let Err(e) = self.store.settle(&acked, &dead_letters) {
                    self.reload_pending();
                    return Err(e.into());
                }
                acked_total += acked.len();
                dead += dead_letters.len();
            }
            for ev in later {
                self.event(ev);
            }
        }
        let after = lock(&self.sync).health(self.clock.now());
        self.event(EngineEvent::SyncCompleted {
            acked: acked_total,
            dead_lettered: dead,
            bytes_up: after.bytes_up - before.bytes_up,
            bytes_down: after.bytes_down - before.bytes_down,
        });
        Ok(())
    }

    /// Pulls the reference datasets: only what changed since the held
    /// version, applied atomically; a digest mismatch refetches a snapshot.
    pub async fn pull(&self) -> Result<(), EngineError> {
        let states = self
            .datasets
            .iter()
            .map(|d| self.store.dataset_state(d))
            .collect::<Result<Vec<_>, _>>()?;
        let req = PullRequest {
            schema: pdc_sync::BASE_SCHEMA,
            terminal_id: self.terminal_id.clone(),
            datasets: states.clone(),
        };
        let body = self.codec.encode(&req)?;
        let up = body.len();
        let resp_bytes = self.transport.pull(body).await?;
        let down = resp_bytes.len();
        let resp: PullResponse = self.codec.decode(&resp_bytes)?;
        for delta in &resp.datasets {
            let unchanged = matches!(&delta.change,
                pdc_sync::DatasetChange::Delta { upserts, deletes }
                    if upserts.is_empty() && deletes.is_empty())
                && states
                    .iter()
                    .any(|s| s.dataset == delta.dataset && s.version == Some(delta.version));
            if unchanged {
                // Nothing new: no write, no invalidation, no event.
                continue;
            }
            // Who the server provisioned before this change: a user it no
            // longer sends is removed from the till's logins below.
            let users_before = if delta.dataset == "users" {
                Some(self.dataset_users()?)
            } else {
                None
            };
            let mut applied = delta.clone();
            if self.store.apply_dataset(delta).is_err() {
                // Digest mismatch: ask for a snapshot of that dataset.
                let req = PullRequest {
                    schema: pdc_sync::BASE_SCHEMA,
                    terminal_id: self.terminal_id.clone(),
                    datasets: vec![pdc_sync::DatasetState {
                        dataset: delta.dataset.clone(),
                        version: None,
                        buckets: vec![],
                    }],
                };
                let snap: PullResponse = self
                    .codec
                    .decode(&self.transport.pull(self.codec.encode(&req)?).await?)?;
                for d in &snap.datasets {
                    self.store.apply_dataset(d)?;
                    applied = d.clone();
                }
            }
            if let Some(before) = users_before {
                self.install_users(&applied)?;
                let after = self.dataset_users()?;
                self.disable_users(before.difference(&after))?;
            }
            let mut cache = self.cache.lock().await;
            match (&applied.change, cache.dataset(&applied.dataset)) {
                // A delta names what changed: drop only those records.
                (pdc_sync::DatasetChange::Delta { upserts, deletes }, Ok(ds)) => {
                    for id in upserts.iter().map(|r| r.id).chain(deletes.iter().copied()) {
                        cache.remove(ds, &id.to_string()).await?;
                    }
                }
                _ => {
                    cache
                        .invalidate_event(&format!("{}_updated", delta.dataset))
                        .await?;
                }
            }
            self.event(EngineEvent::DatasetUpdated {
                dataset: delta.dataset.clone(),
                version: delta.version,
            });
        }
        lock(&self.sync).record_pull(self.clock.now(), up, down);
        Ok(())
    }

    /// Puts the users of a pulled users dataset (postcard
    /// [`pdc_auth::UserRecord`]s with PIN credentials hashed by the server)
    /// into the auth state, so that they can log in offline. A record that
    /// does not decode is skipped, not fatal: the rest of the users still
    /// log in.
    fn install_users(&self, delta: &pdc_sync::DatasetDelta) -> Result<(), EngineError> {
        use pdc_auth::AuthStore as _;
        let records = match &delta.change {
            pdc_sync::DatasetChange::Delta { upserts, .. } => upserts,
            pdc_sync::DatasetChange::Buckets { records, .. }
            | pdc_sync::DatasetChange::Snapshot { records } => records,
        };
        let mut auth = lock(&self.auth);
        for r in records {
            if let Ok(user) = postcard::from_bytes::<pdc_auth::UserRecord>(&r.body) {
                auth.store_mut().put_user(&user)?;
            }
        }
        Ok(())
    }

    /// The user ids of the stored users dataset (records that do not decode
    /// are skipped, as in [`Self::install_users`]).
    fn dataset_users(&self) -> Result<std::collections::BTreeSet<String>, EngineError> {
        Ok(self
            .store
            .dataset("users")?
            .records
            .values()
            .filter_map(|b| postcard::from_bytes::<pdc_auth::UserRecord>(b).ok())
            .map(|u| u.user_id)
            .collect())
    }

    /// Disables the logins of users the server removed (deleted, or absent
    /// from a snapshot): their PIN stops working offline at once. Users
    /// enrolled on the till itself are never in the dataset, so never
    /// touched here.
    fn disable_users<'a>(
        &self,
        removed: impl Iterator<Item = &'a String>,
    ) -> Result<(), EngineError> {
        use pdc_auth::AuthStore as _;
        let mut auth = lock(&self.auth);
        for id in removed {
            if let Some(mut user) = auth.store_mut().user(id)? {
                if !user.disabled {
                    user.disabled = true;
                    auth.store_mut().put_user(&user)?;
                }
            }
        }
        Ok(())
    }

    /// Sends this terminal's metrics (a pdc-monitor [`TerminalReport`])
    /// to the server, which merges it into the fleet's.
    pub async fn report_metrics(&self, store_id: &str) -> Result<(), EngineError> {
        let now = self.clock.now();
        let (connection_ms, mode_switches) = {
            let h = lock(&self.history);
            let states = [
                ConnectionState::Online,
                ConnectionState::Offline,
                ConnectionState::Slow,
                ConnectionState::Metered,
                ConnectionState::OfflineSync,
            ];
            (
                states
                    .iter()
                    .map(|&s| (s.name().to_owned(), h.time_in(s, now).as_millis() as u64))
                    .collect(),
                h.switches(),
            )
        };
        let report = TerminalReport {
            terminal_id: self.terminal_id.clone(),
            store_id: store_id.to_owned(),
            at_ms: self.clock.wall_ms(),
            registry: self.metrics(),
            connection_ms,
            mode_switches,
        };
        let body = self.codec.encode(&pdc_sync::MetricsReport {
            terminal_id: self.terminal_id.clone(),
            at_ms: report.at_ms,
            report: report.encode(&self.codec)?,
        })?;
        self.transport.report(body).await?;
        Ok(())
    }

    /// A reference record (e.g. a product by id), from memory when cached,
    /// else from the store.
    pub async fn reference(
        &self,
        dataset: &str,
        id: u64,
    ) -> Result<Option<Arc<[u8]>>, EngineError> {
        let mut cache = self.cache.lock().await;
        let ds: DatasetId = cache.dataset(dataset)?;
        let key = id.to_string();
        let now = self.clock.wall_ms();
        // `get` checks memory first and hands out the cached `Arc` (no copy);
        // one lookup, counted once.
        match cache.get(ds, &key, now, &self.loader).await {
            Ok(l) => Ok(Some(l.value)),
            Err(pdc_cache::CacheError::Load(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads a whole dataset from the store into the memory cache (the
    /// study's phase 2: after login, the catalogue is made ready for
    /// scanning). Returns how many records were loaded.
    pub async fn warm(&self, dataset: &str) -> Result<usize, EngineError> {
        let records = self.store.dataset(dataset)?.records;
        let mut cache = self.cache.lock().await;
        let ds: DatasetId = cache.dataset(dataset)?;
        let now = self.clock.wall_ms();
        for (id, body) in &records {
            cache.put(ds, &id.to_string(), body, &[], now).await?;
        }
        Ok(records.len())
    }

    /// Offline PIN login (users come from the store's auth state).
    pub fn login(&self, user_id: &str, pin: &str) -> Result<Login, EngineError> {
        let started = self.clock.now();
        let mut rng = lock(&self.rng);
        let result = lock(&self.auth).login(user_id, &self.terminal_id, pin, &mut *rng);
        if let Ok(k) = MetricKey::new("pdc_offline_login_ms", &[]) {
            lock(&self.registry).observe(&k, (self.clock.now() - started).as_secs_f64() * 1000.0);
        }
        Ok(result?)
    }

    /// Login that prefers the server: when the engine believes it is
    /// online, it first pulls the reference data (refreshing the users'
    /// credentials, so a PIN changed or a user disabled at the server takes
    /// effect now), then verifies the PIN locally. When offline, or when
    /// the pull fails, it is the offline login. Returns the login and
    /// whether fresh credentials were used.
    pub async fn login_online(
        &self,
        user_id: &str,
        pin: &str,
    ) -> Result<(Login, bool), EngineError> {
        let online = lock(&self.sync).connectivity() == pdc_sync::Connectivity::Online;
        let fresh = online && self.pull().await.is_ok();
        Ok((self.login(user_id, pin)?, fresh))
    }

    /// Enrols a user's PIN locally (at the server or an enrolment screen).
    pub fn enrol(&self, user_id: &str, role: &str, pin: &str) -> Result<(), EngineError> {
        let mut rng = lock(&self.rng);
        lock(&self.auth).enrol(user_id, role, pin, &mut *rng)?;
        Ok(())
    }

    /// Probes the server and feeds the latency into the sync machine's
    /// connection quality and the connection history.
    pub async fn ping(&self) -> Result<Duration, EngineError> {
        let t = self.clock.now();
        let r = self.transport.ping().await;
        let rtt = self.clock.now() - t;
        match r {
            Ok(()) => {
                lock(&self.sync).record_latency(rtt);
                self.set_online(true);
                Ok(rtt)
            }
            Err(e) => {
                self.set_online(false);
                Err(e.into())
            }
        }
    }

    /// The sync queue's health now (depth, age, bytes moved).
    pub fn health(&self) -> pdc_sync::QueueHealth {
        lock(&self.sync).health(self.clock.now())
    }

    /// Queues a UI event; the oldest are dropped past [`MAX_EVENTS`] so
    /// that a host that never polls does not grow without bound.
    fn event(&self, e: EngineEvent) {
        let mut q = lock(&self.events);
        if q.len() >= MAX_EVENTS {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// Evaluates the alert rules over the engine's metrics now; fired and
    /// resolved alerts also become [`EngineEvent`]s. The driver calls this
    /// periodically.
    pub fn check_alerts(&self) -> Vec<AlertEvent> {
        let metrics = self.metrics();
        let events = lock(&self.alerts).evaluate(&metrics, self.clock.now());
        for e in &events {
            self.event(match e {
                AlertEvent::Fired {
                    rule,
                    severity,
                    value,
                } => EngineEvent::AlertFired {
                    rule: rule.clone(),
                    severity: *severity,
                    value: *value,
                },
                AlertEvent::Resolved { rule, value } => EngineEvent::AlertResolved {
                    rule: rule.clone(),
                    value: *value,
                },
            });
        }
        events
    }

    /// The next UI event, if any.
    pub fn poll_event(&self) -> Option<EngineEvent> {
        lock(&self.events).pop_front()
    }

    /// A snapshot of the engine's metrics.
    pub fn metrics(&self) -> Registry {
        let mut reg = lock(&self.registry).clone();
        // The cache is busy only during a lookup; skip the gauge then.
        if let Some(cache) = self.cache.try_lock() {
            let stats = cache.stats();
            if stats.memory.hits + stats.memory.misses > 0 {
                if let Ok(k) = MetricKey::new("pdc_cache_hit_ratio", &[]) {
                    reg.gauge(&k, stats.hit_ratio());
                }
            }
        }
        reg
    }
}
