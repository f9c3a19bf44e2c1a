//! The engine: a thin composition of its parts — the [`Outbox`] (durable
//! sales and sync), the [`Catalogue`] (reference data), the [`Logins`]
//! (offline PIN login) and the [`Telemetry`] (events, metrics, alerts).
//! Each part has its own state, lock and tests; the engine wires them
//! together and owns the clock and the transport.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pdc_auth::{AuthConfig, KdfParams, Login, Pepper};
use pdc_cache::MemoryLimits;
use pdc_clock::Clock;
use pdc_codec::{Codec, TerminalId};
use pdc_monitor::{AlertEvent, AlertRule, ConnectionState, MetricKey, Registry, TerminalReport};
use pdc_store::{NewItem, Store};
use pdc_sync::{Connectivity, SyncConfig, SyncTransport};
use rand::rngs::{OsRng, StdRng};
use rand::SeedableRng;

use crate::catalogue::Catalogue;
use crate::logins::Logins;
use crate::outbox::Outbox;
use crate::telemetry::Telemetry;
pub use crate::telemetry::{EngineEvent, MAX_EVENTS};
use crate::{EngineError, Sale};

/// The stream of [`OfflineEngine::track`]'s events (a sale's stream is its
/// order id, 62 random bits plus its number: a shared stream would only
/// order the two, and is as likely as 2^-61).
pub const ANALYTICS_STREAM: u64 = 2;

/// How to build an engine.
pub struct EngineConfig {
    /// This terminal's id: the one the server registered (`pdc terminal
    /// add`), sent with every push (the engine overrides
    /// `sync.terminal_id` with it).
    pub terminal_id: TerminalId,
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
    /// How [`OfflineEngine::sell`] writes receipt numbers.
    pub receipt_format: crate::ReceiptFormat,
    /// Limits on card payments taken offline.
    pub offline_cards: crate::OfflineCardLimits,
    /// The store's keys (encryption at rest, see `pdc_store::seal`): empty
    /// for a plain store; the key from the platform's keystore for an
    /// encrypted one (a new store is created encrypted under the first);
    /// during an interrupted rotation the previous key too.
    pub store_keys: Vec<pdc_store::StoreKey>,
}

impl EngineConfig {
    /// Defaults for a terminal storing its file at `store_path`.
    pub fn new(terminal_id: TerminalId, store_path: impl Into<PathBuf>) -> Self {
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
            receipt_format: crate::ReceiptFormat::default(),
            offline_cards: crate::OfflineCardLimits::default(),
            store_keys: Vec::new(),
        }
    }
}

/// A line of a sale that leaves its product low on stock
/// ([`OfflineEngine::low_stock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowStock {
    /// The product.
    pub product_id: u32,
    /// Its level as last pulled.
    pub level: i64,
    /// Its level after this sale.
    pub after: i64,
}

/// The offline-first engine of one terminal.
///
/// All methods take `&self`; share it in an `Arc` between the UI and the
/// driver. A host calls, in this order: [`OfflineEngine::open`] once;
/// [`OfflineEngine::record`] per sale; [`OfflineEngine::sync_once`] when
/// [`OfflineEngine::next_wakeup`] says so (the driver does, with
/// [`OfflineEngine::ping`], [`OfflineEngine::pull`],
/// [`OfflineEngine::report_metrics`] and [`OfflineEngine::check_alerts`] on
/// timers); [`OfflineEngine::poll_event`] after any of them.
pub struct OfflineEngine<T: SyncTransport, C: Clock + Clone + 'static> {
    terminal_id: TerminalId,
    clock: C,
    transport: T,
    codec: Codec,
    outbox: Outbox,
    catalogue: Catalogue,
    logins: Logins<C>,
    telemetry: Telemetry,
    receipt_format: crate::ReceiptFormat,
    offline_cards: crate::OfflineCardLimits,
    on_record: std::sync::Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

/// A cashier signed in ([`OfflineEngine::login_cashier`]).
#[derive(Debug)]
pub struct Cashier {
    /// The session (token, user id, role, expiry).
    pub login: Login,
    /// The number on the orders ([`crate::Sale::new`]): the user's record
    /// id in the users dataset; `None` for a user enrolled at this till
    /// only.
    pub cashier_id: Option<u32>,
    /// The user's role.
    pub role: String,
}

/// A snapshot of sync ([`OfflineEngine::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// The link as last observed; `Unknown` until a probe answers or fails.
    pub connection: ConnectionState,
    /// Sales not yet acknowledged by the server (waiting or in flight).
    pub pending: usize,
    /// Waiting sales per priority (low, normal, high, critical).
    pub pending_by_priority: [usize; 4],
    /// Sales in a request now.
    pub in_flight: usize,
    /// Sales held back after failing alone too often.
    pub quarantined: usize,
    /// How long the oldest waiting sale has waited.
    pub oldest_pending: Option<Duration>,
    /// Wall time (ms since the epoch) of the last push the server answered
    /// in full.
    pub last_success_ms: Option<u64>,
    /// The latest failure (`"push: ..."`, `"ping: ..."`), until that
    /// operation succeeds again.
    pub last_error: Option<String>,
    /// When the next attempt is due, while sales wait.
    pub next_retry_in: Option<Duration>,
    /// Why sending is halted (a whole-request refusal), if it is.
    pub halted: Option<String>,
    /// Card payments taken offline and not yet at the server (cents).
    pub offline_card_cents: i64,
    /// How long ago the oldest of them was taken.
    pub oldest_offline_card: Option<Duration>,
}

impl SyncStatus {
    /// Nothing waits or is in flight.
    pub fn is_synced(&self) -> bool {
        self.pending == 0 && self.in_flight == 0
    }
}

impl<T: SyncTransport, C: Clock + Clone + 'static> std::fmt::Debug for OfflineEngine<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineEngine")
            .field("terminal_id", &self.terminal_id)
            .finish_non_exhaustive()
    }
}

fn no_randomness(e: rand::Error) -> EngineError {
    EngineError::Store(pdc_store::StoreError::Storage(format!(
        "no randomness: {e}"
    )))
}

impl<T: SyncTransport, C: Clock + Clone + 'static> OfflineEngine<T, C> {
    /// Opens the engine: the store, the pending outbox's index into the
    /// sync machine (payloads stay on disk), and what login needs. Nothing
    /// is fetched.
    pub fn open(config: EngineConfig, transport: T, clock: C) -> Result<Self, EngineError> {
        let store = Store::open_with_options(
            &config.store_path,
            pdc_store::StoreOptions {
                cache_bytes: None,
                keys: config.store_keys.clone(),
            },
        )?;
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
            None => StdRng::from_rng(OsRng).map_err(no_randomness)?,
        };
        let machine_rng = StdRng::seed_from_u64(rand::RngCore::next_u64(&mut rng));
        // One terminal identity: the pushes carry the engine's, whatever
        // `config.sync` was built with.
        let mut sync = config.sync;
        sync.terminal_id = config.terminal_id.clone();
        let (outbox, opened) = Outbox::open(store.clone(), sync, Box::new(machine_rng), &clock)?;
        // Nothing is known of the link until a probe answers or fails.
        let telemetry = Telemetry::new(ConnectionState::Unknown, clock.now(), config.alert_rules);
        for e in opened {
            telemetry.event(e);
        }
        // The dummy credential costs one KDF run at open, at the configured cost.
        let auth_rng = StdRng::from_rng(&mut rng).map_err(no_randomness)?;
        let logins = Logins::new(
            store.clone(),
            clock.clone(),
            config.kdf,
            config.pepper,
            config.auth,
            auth_rng,
        )?;
        let catalogue = Catalogue::new(store, config.datasets, config.l1)?;
        Ok(OfflineEngine {
            terminal_id: config.terminal_id,
            clock,
            transport,
            codec: Codec::new(),
            outbox,
            catalogue,
            logins,
            telemetry,
            receipt_format: config.receipt_format,
            offline_cards: config.offline_cards,
            on_record: std::sync::Mutex::new(None),
        })
    }

    /// Closes the engine: when this returns `Ok` the store file is
    /// released (it can be opened again at once, by this process or
    /// another). There is nothing to flush: every saved sale was durable
    /// when its call returned. Like `Arc::try_unwrap`, it gives the engine
    /// back while something else holds it — a running driver
    /// ([`crate::DriverHandle::shutdown`] it first) or another clone of
    /// the `Arc`.
    pub fn close(self: Arc<Self>) -> Result<(), Arc<Self>> {
        let engine = Arc::try_unwrap(self)?;
        // The hook may hold the driver's wake-up; it goes with the engine.
        drop(engine);
        Ok(())
    }

    /// The store (operators: dead letters, quarantine).
    pub fn store(&self) -> &Store {
        self.outbox.store()
    }

    /// The outbox part (durable sales and sync).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The catalogue part (reference data).
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The telemetry part (events, metrics, alerts).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Records a sale: durable in the outbox before this returns, then
    /// queued for sync. The only way sales enter the engine. On `Err` the
    /// sale was not saved: nothing is saved that the sync machine or the
    /// server's published limits would refuse.
    ///
    /// An item of kind 2 ([`pdc_codec::RecordKind::ORDER`]) must be a
    /// [`pdc_codec::Order`] frame that passes [`pdc_codec::Order::check`]
    /// (the server's rules): a sale the server would refuse is refused
    /// here, before it is saved. Prefer [`OfflineEngine::sell`], which
    /// also numbers it.
    pub fn record(&self, item: NewItem) -> Result<u64, EngineError> {
        let started = self.clock.now();
        self.check_order_item(&item)?;
        let id = self.outbox.record(item, &self.clock, &self.telemetry)?;
        let us = (self.clock.now() - started).as_secs_f64() * 1e6;
        self.telemetry.observe("pdc_record_us", us);
        self.recorded();
        Ok(id)
    }

    /// Sells: checks `sale` with the server's rules
    /// ([`pdc_codec::Order::check`]: `EngineError::InvalidSale`, nothing
    /// saved), then saves it as an order whose id and receipt number come
    /// from the store's sale counter in the same durable commit (see
    /// [`crate::sale`]). When this returns, the sale survives a crash and
    /// the receipt can be printed.
    pub fn sell(&self, sale: &crate::Sale) -> Result<crate::Receipt, EngineError> {
        let total_cents = sale.check()?;
        let offline_card = self.check_offline_card(sale, self.clock.wall_ms())?;
        let (local_id, seq, number, order) = self.save_numbered(
            pdc_sync::Priority::High,
            offline_card,
            |id, now, receipt| sale.order(id, now, Some(receipt)),
            pdc_codec::Order::check,
        )?;
        Ok(crate::Receipt {
            local_id,
            seq,
            number,
            order,
            total_cents,
        })
    }

    /// Pays back: saves a refund of (part of) the sale `original` — the
    /// goods taken back are `refund`'s lines, the money paid back its
    /// payments — checked with the same rules as a sale
    /// ([`pdc_codec::Refund::check`]: `EngineError::InvalidSale`, nothing
    /// saved). It takes the next number of the store's sale counter, so
    /// sales and refunds share one gapless receipt sequence, and goes at
    /// critical priority. The server stores it with its reference; a
    /// refund whose original it has not seen (sold at a till still
    /// offline) is kept and flagged, never refused.
    pub fn refund(
        &self,
        original: &crate::Original,
        refund: &crate::Sale,
    ) -> Result<crate::RefundReceipt, EngineError> {
        if refund.discount_cents() != 0 {
            // A refund pays back lines; an order discount given on the
            // sale is taken back as line discounts.
            return Err(pdc_codec::CodecError::InvalidOrder {
                rule: pdc_codec::OrderRule::BadDiscount,
                detail: "a refund has no order discount: put it on the lines".into(),
            }
            .into());
        }
        let total_cents = refund.check()?;
        let (local_id, seq, number, refund) = self.save_numbered(
            pdc_sync::Priority::Critical,
            None,
            |id, now, receipt| {
                let o = refund.order(id, now, Some(receipt));
                pdc_codec::Refund {
                    id: o.id,
                    cashier_id: o.cashier_id,
                    original_order_id: original.order_id,
                    original_receipt: original.receipt.clone(),
                    created_at_ms: o.created_at_ms,
                    lines: o.lines,
                    payments: o.payments,
                    receipt: o.receipt,
                }
            },
            pdc_codec::Refund::check,
        )?;
        Ok(crate::RefundReceipt {
            local_id,
            seq,
            number,
            refund,
            total_cents,
        })
    }

    /// Records an analytics event `name` with `properties`, durably, at
    /// low priority (every sale goes first) on its own stream. Checked
    /// with the server's bounds ([`pdc_codec::AnalyticsEvent::check`]:
    /// `EngineError::Codec`, nothing saved). Returns its local id.
    pub fn track(&self, name: &str, properties: &[(&str, &str)]) -> Result<u64, EngineError> {
        let event = pdc_codec::AnalyticsEvent {
            name: name.to_owned(),
            at_ms: self.clock.wall_ms(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        event.check()?;
        self.record(NewItem {
            stream: pdc_sync::StreamKey(ANALYTICS_STREAM),
            priority: pdc_sync::Priority::Low,
            kind: u16::from(pdc_codec::RecordKind::ANALYTICS.0),
            created_at_ms: event.at_ms,
            payload: self.codec.encode(&event)?,
        })
    }

    /// Saves the record `build(id, now, receipt number)`
    /// under the store's next sale number, in the commit that uses it:
    /// the id is the store's order-id base plus the number. `check` runs
    /// on the longest record this can build (largest id and number) before
    /// anything is saved, so the size check and the receipt's length rule
    /// hold for whatever number the commit takes.
    fn save_numbered<R: pdc_codec::Record>(
        &self,
        priority: pdc_sync::Priority,
        offline_card: Option<(i64, u64)>,
        build: impl Fn(u64, u64, String) -> R,
        check: impl Fn(&R) -> Result<i64, pdc_codec::CodecError>,
    ) -> Result<(u64, u64, String, R), EngineError> {
        use crate::sale::{order_id_base, store_tag};
        let started = self.clock.now();
        let now = self.clock.wall_ms();
        let store_id = self.store().store_id();
        let base = order_id_base(&store_id);
        let tag = store_tag(&store_id);
        let number = |seq: u64| {
            self.receipt_format
                .format(self.terminal_id.as_str(), tag, seq)
        };
        let record_for = |seq: u64| build(base.wrapping_add(seq), now, number(seq));
        let item_for = |id: u64, record: &R| -> Result<NewItem, pdc_codec::CodecError> {
            Ok(NewItem {
                stream: pdc_sync::StreamKey(id),
                priority,
                kind: u16::from(R::KIND.0),
                created_at_ms: now,
                payload: self.codec.encode(record)?,
            })
        };
        let longest = build(i64::MAX as u64, now, number(i64::MAX as u64));
        check(&longest)?;
        let probe = item_for(i64::MAX as u64, &longest)?;
        // The record saved, kept to return (built once, in the commit).
        let mut saved = None;
        let (local_id, seq) = self.outbox.record_numbered(
            probe,
            |seq| {
                let record = record_for(seq);
                let item = item_for(base.wrapping_add(seq), &record)?;
                saved = Some(record);
                Ok(item)
            },
            offline_card,
            &self.clock,
            &self.telemetry,
        )?;
        let us = (self.clock.now() - started).as_secs_f64() * 1e6;
        self.telemetry.observe("pdc_record_us", us);
        self.recorded();
        // `make` ran: the commit that returned `seq` used it.
        let record = saved.unwrap_or_else(|| record_for(seq));
        Ok((local_id, seq, number(seq), record))
    }

    /// A card payment of `sale` taken offline, checked against the
    /// limits: `Some((cents, now))` to store with the sale.
    fn check_offline_card(
        &self,
        sale: &crate::Sale,
        now_ms: u64,
    ) -> Result<Option<(i64, u64)>, EngineError> {
        use crate::OfflineLimit;
        let card: i64 = sale
            .payments()
            .iter()
            .filter(|p| p.method == pdc_codec::PaymentMethod::Card)
            .fold(0i64, |a, p| a.saturating_add(p.amount_cents));
        let online = !matches!(
            self.telemetry.connection(),
            ConnectionState::Offline | ConnectionState::Unknown
        );
        if card <= 0 || online {
            return Ok(None);
        }
        let limits = self.offline_cards;
        let refuse = |limit, detail: String| Err(EngineError::OfflineCardLimit { limit, detail });
        if card > limits.per_sale_cents {
            return refuse(
                OfflineLimit::PerSale,
                format!(
                    "{card} cents by card, {} allowed per sale offline",
                    limits.per_sale_cents
                ),
            );
        }
        let stored = self.store().offline_cards()?;
        let max_age = u64::try_from(limits.max_age.as_millis()).unwrap_or(u64::MAX);
        if let Some(oldest) = stored.iter().map(|(_, _, at)| *at).min() {
            if now_ms.saturating_sub(oldest) > max_age {
                return refuse(
                    OfflineLimit::Age,
                    format!(
                        "the oldest offline card payment is {} min old ({} allowed)",
                        now_ms.saturating_sub(oldest) / 60_000,
                        max_age / 60_000
                    ),
                );
            }
        }
        let total = stored
            .iter()
            .fold(0i64, |a, (_, c, _)| a.saturating_add(*c));
        if total.saturating_add(card) > limits.total_cents {
            return refuse(
                OfflineLimit::Total,
                format!(
                    "{total} cents stored offline + {card} is over {}",
                    limits.total_cents
                ),
            );
        }
        Ok(Some((card, now_ms)))
    }

    /// Records many sales in one durable commit (bulk import).
    pub fn record_many(&self, items: Vec<NewItem>) -> Result<Vec<u64>, EngineError> {
        for item in &items {
            self.check_order_item(item)?;
        }
        let ids = self
            .outbox
            .record_many(items, &self.clock, &self.telemetry)?;
        self.recorded();
        Ok(ids)
    }

    /// An order item must decode and keep the server's rules.
    fn check_order_item(&self, item: &NewItem) -> Result<(), EngineError> {
        if item.kind == u16::from(pdc_codec::RecordKind::ORDER.0) {
            self.codec
                .decode::<pdc_codec::Order>(&item.payload)?
                .check()?;
        }
        Ok(())
    }

    /// Items waiting to reach the server.
    pub fn pending(&self) -> usize {
        self.outbox.pending()
    }

    /// Takes a quarantined item (see [`EngineEvent::Quarantined`]) back
    /// into the queue: an operator's action after fixing the cause.
    pub fn requeue_quarantined(&self, local_id: u64) -> Result<(), EngineError> {
        self.outbox.requeue_quarantined(local_id, &self.clock)
    }

    /// Resumes sending after [`EngineEvent::SyncHalted`] (call it after
    /// fixing the server URL or upgrading, or from an operator's button);
    /// a no-op when sending is not halted.
    pub fn resume_sync(&self) {
        self.outbox.resume(&self.clock);
    }

    /// Tells the engine whether the network is up (OS network events).
    pub fn set_online(&self, online: bool) {
        let (c, s) = if online {
            (Connectivity::Online, ConnectionState::Online)
        } else {
            (Connectivity::Offline, ConnectionState::Offline)
        };
        self.outbox.set_connectivity(c, &self.clock);
        self.telemetry
            .set_connection(s, self.clock.now(), self.clock.wall_ms());
    }

    /// When the driver should run [`sync_once`](Self::sync_once) next.
    pub fn next_wakeup(&self) -> Option<pdc_clock::Instant> {
        self.outbox.next_wakeup()
    }

    /// One sync pass: sends every batch the machine allows now, commits
    /// each answer's outcomes (acknowledgements, dead letters, quarantines)
    /// in one store transaction and only then confirms them to the
    /// machine. Safe to call at any time; a batch interrupted by a crash is
    /// resent after restart.
    pub async fn sync_once(&self) -> Result<(), EngineError> {
        self.outbox
            .sync_once(&self.transport, &self.clock, &self.telemetry)
            .await
    }

    /// Brings the till's copy of its store's stock levels up to date
    /// (`GET /v1/stock`, page by page from the last position held; each
    /// page is applied in one commit). Returns how many levels changed, or
    /// `None` when the server keeps no stock. Levels are advisory: see
    /// [`OfflineEngine::low_stock`].
    pub async fn pull_stock(&self) -> Result<Option<usize>, EngineError>
    where
        T: Sync,
    {
        let mut changed = 0;
        loop {
            let since = self.store().stock_position()?;
            let Some(page) = self
                .transport
                .stock_since(since, pdc_sync::STOCK_PAGE_MAX)
                .await?
            else {
                return Ok(None);
            };
            // A page that does not move forward ends the loop, whatever
            // `more` says (a server bug must not spin the till).
            let moved = page.next > since;
            changed += page.levels.len();
            if moved {
                self.store().apply_stock(&page.levels, page.next)?;
            }
            if !page.more || !moved {
                return Ok(Some(changed));
            }
        }
    }

    /// A product's stock level at this till's store as last pulled
    /// (`None`: never sent, e.g. the server keeps no stock).
    pub fn stock_level(&self, product_id: u32) -> Result<Option<i64>, EngineError> {
        Ok(self.store().stock_level(product_id)?)
    }

    /// The lines of `sale` whose product would be left at or below
    /// `threshold` units by it, by the levels last pulled: for a warning
    /// on the screen. Never a reason to refuse the sale: offline, another
    /// till may have sold or restocked since, and [`OfflineEngine::sell`]
    /// does not look at stock.
    pub fn low_stock(&self, sale: &Sale, threshold: i64) -> Result<Vec<LowStock>, EngineError> {
        let mut wanted: BTreeMap<u32, i64> = BTreeMap::new();
        for l in sale.lines() {
            *wanted.entry(l.product_id).or_default() += i64::from(l.quantity);
        }
        let mut out = Vec::new();
        for (product_id, quantity) in wanted {
            if let Some(level) = self.store().stock_level(product_id)? {
                let after = level.saturating_sub(quantity);
                if after <= threshold {
                    out.push(LowStock {
                        product_id,
                        level,
                        after,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Waits up to `wait` on the server's change stream for a change to a
    /// followed dataset this engine does not hold yet (its store's view:
    /// another store's change does not wake it). `Some(true)`: pull now;
    /// `Some(false)`: nothing changed in time; `None`: the transport or
    /// server has no change stream (periodic pulls only). The driver
    /// calls this in a loop while online.
    pub async fn wait_changes(&self, wait: Duration) -> Result<Option<bool>, EngineError>
    where
        T: Sync,
    {
        let known = self.catalogue.held_versions()?;
        Ok(self
            .transport
            .wait_changes(known, wait)
            .await?
            .map(|changed| !changed.is_empty()))
    }

    /// Pulls the reference datasets: only what changed since the held
    /// version, applied atomically; a digest mismatch refetches a snapshot.
    /// A change to the users dataset installs its users and disables the
    /// ones the server removed.
    pub async fn pull(&self) -> Result<(), EngineError> {
        let follows_users = self.catalogue.datasets().iter().any(|d| d == "users");
        let users_before = if follows_users {
            Some(self.logins.dataset_users()?)
        } else {
            None
        };
        let (pulled, up, down) = match self
            .catalogue
            .pull(&self.transport, &self.terminal_id)
            .await
        {
            Ok(r) => {
                self.telemetry.succeeded("pull");
                r
            }
            Err(e) => {
                self.telemetry.failed("pull", e.to_string());
                return Err(e);
            }
        };
        for p in &pulled {
            if let (true, Some(before)) = (p.applied.dataset == "users", &users_before) {
                self.logins.follow_users(&p.applied, before)?;
            }
            self.telemetry.event(EngineEvent::DatasetUpdated {
                dataset: p.applied.dataset.clone(),
                version: p.applied.version,
            });
        }
        self.outbox.record_pull(&self.clock, up, down);
        Ok(())
    }

    /// Sends this terminal's metrics (a pdc-monitor [`TerminalReport`])
    /// to the server, which merges it into the fleet's.
    pub async fn report_metrics(&self, store_id: &str) -> Result<(), EngineError> {
        let (connection_ms, mode_switches) = self.telemetry.connection_summary(self.clock.now());
        let report = TerminalReport {
            terminal_id: self.terminal_id.clone(),
            store_id: store_id.to_owned(),
            at_ms: self.clock.wall_ms(),
            registry: self.metrics(),
            connection_ms: connection_ms.into_iter().collect(),
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
        self.catalogue
            .reference(dataset, id, self.clock.wall_ms())
            .await
    }

    /// The numeric id of a pulled user (its record id in the server's
    /// users dataset, e.g. `id` in `pdc dataset import users`): the
    /// `cashier_id` of the sales it rings up. `None` for a user enrolled
    /// only on this till, or one the till has not pulled. Ids above
    /// `u32::MAX` are refused (`EngineError::Config`).
    pub fn cashier_id(&self, user_id: &str) -> Result<Option<u32>, EngineError> {
        match self.logins.user_number(user_id)? {
            None => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| EngineError::Config(format!("user {user_id} has id {n} above 2^32"))),
        }
    }

    /// A product by id from the catalogue's `products` dataset
    /// ([`Catalogue::product`]).
    pub async fn product(&self, id: u64) -> Result<Option<pdc_codec::Product>, EngineError> {
        self.catalogue.product(id, self.clock.wall_ms()).await
    }

    /// A product by barcode ([`Catalogue::product_by_barcode`]).
    pub async fn product_by_barcode(
        &self,
        barcode: &str,
    ) -> Result<Option<pdc_codec::Product>, EngineError> {
        self.catalogue
            .product_by_barcode(barcode, self.clock.wall_ms())
            .await
    }

    /// Loads a whole dataset from the store into the memory cache (the
    /// study's phase 2: after login, the catalogue is made ready for
    /// scanning). Returns how many records were loaded.
    pub async fn warm(&self, dataset: &str) -> Result<usize, EngineError> {
        self.catalogue.warm(dataset, self.clock.wall_ms()).await
    }

    /// [`OfflineEngine::login`], returning who signed in as the orders
    /// need it: the session, the numeric cashier id
    /// ([`OfflineEngine::cashier_id`]; `None` for a user enrolled at this
    /// till only) and the role.
    pub fn login_cashier(&self, user_id: &str, pin: &str) -> Result<Cashier, EngineError> {
        let login = self.login(user_id, pin)?;
        Ok(Cashier {
            cashier_id: self.cashier_id(user_id)?,
            role: login.session.role.clone(),
            login,
        })
    }

    /// Offline PIN login (users come from the store's auth state).
    pub fn login(&self, user_id: &str, pin: &str) -> Result<Login, EngineError> {
        let started = self.clock.now();
        let result = self.logins.login(user_id, self.terminal_id.as_str(), pin);
        self.telemetry.observe(
            "pdc_offline_login_ms",
            (self.clock.now() - started).as_secs_f64() * 1000.0,
        );
        result
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
        let online = self.outbox.connectivity() == Connectivity::Online;
        let fresh = online && self.pull().await.is_ok();
        Ok((self.login(user_id, pin)?, fresh))
    }

    /// Enrols a user's PIN locally (at the server or an enrolment screen).
    pub fn enrol(&self, user_id: &str, role: &str, pin: &str) -> Result<(), EngineError> {
        self.logins.enrol(user_id, role, pin)
    }

    /// Probes the server: feeds the latency into the sync machine's
    /// connection quality and the connection history, and takes the
    /// limits the server publishes (later `record`s refuse items over
    /// them).
    pub async fn ping(&self) -> Result<Duration, EngineError> {
        let t = self.clock.now();
        let r = self.transport.ping().await;
        let rtt = self.clock.now() - t;
        match r {
            Ok(limits) => {
                self.telemetry.succeeded("ping");
                self.outbox.record_latency(rtt);
                if let Some(l) = limits {
                    self.outbox.apply_server_limits(l);
                }
                self.set_online(true);
                Ok(rtt)
            }
            Err(e) => {
                self.telemetry.failed("ping", e.to_string());
                self.set_online(false);
                Err(e.into())
            }
        }
    }

    /// A snapshot of sync for a UI: connection, what waits by priority and
    /// since when, the last success as a wall time, the last failure, the
    /// next retry, a halt.
    pub fn status(&self) -> SyncStatus {
        let h = self.outbox.health(&self.clock);
        let now = self.clock.now();
        let wall = self.clock.wall_ms();
        let pending_by_priority = h.pending.map(|(n, _)| n);
        // Unreadable card rows are a store error elsewhere; the status shows none.
        let cards = self.store().offline_cards().unwrap_or_default();
        let pending = self.outbox.pending();
        SyncStatus {
            connection: self.telemetry.connection(),
            pending,
            pending_by_priority,
            in_flight: h.in_flight_items,
            quarantined: h.quarantined,
            oldest_pending: h.pending.iter().filter_map(|(_, age)| *age).max(),
            last_success_ms: h.last_push_ok.map(|t| {
                wall.saturating_sub(u64::try_from((now - t).as_millis()).unwrap_or(u64::MAX))
            }),
            last_error: self.telemetry.last_error(),
            next_retry_in: (pending > 0)
                .then(|| {
                    self.next_wakeup()
                        .map(|at| at.saturating_duration_since(now))
                })
                .flatten(),
            halted: h.halted,
            offline_card_cents: cards.iter().fold(0i64, |a, (_, c, _)| a.saturating_add(*c)),
            oldest_offline_card: cards
                .iter()
                .map(|(_, _, at)| Duration::from_millis(wall.saturating_sub(*at)))
                .max(),
        }
    }

    /// Calls `hook` after every saved sale (the driver wakes on it); one
    /// hook, replacing any earlier one.
    pub fn on_record(&self, hook: impl Fn() + Send + Sync + 'static) {
        *crate::telemetry::lock(&self.on_record) = Some(Box::new(hook));
    }

    fn recorded(&self) {
        if let Some(hook) = crate::telemetry::lock(&self.on_record).as_ref() {
            hook();
        }
    }

    /// The engine's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The sync queue's health now (depth, age, bytes moved).
    pub fn health(&self) -> pdc_sync::QueueHealth {
        self.outbox.health(&self.clock)
    }

    /// Evaluates the alert rules over the engine's metrics now; fired and
    /// resolved alerts also become [`EngineEvent`]s. The driver calls this
    /// periodically.
    pub fn check_alerts(&self) -> Vec<AlertEvent> {
        let metrics = self.metrics();
        self.telemetry.check_alerts(&metrics, self.clock.now())
    }

    /// The next UI event, if any.
    pub fn poll_event(&self) -> Option<EngineEvent> {
        self.telemetry.poll_event()
    }

    /// A snapshot of the engine's metrics.
    pub fn metrics(&self) -> Registry {
        let mut reg = self.telemetry.metrics();
        // The cache is busy only during a lookup; skip the gauge then.
        if let Some(ratio) = self.catalogue.hit_ratio() {
            if let Ok(k) = MetricKey::new("pdc_cache_hit_ratio", &[]) {
                reg.gauge(&k, ratio);
            }
        }
        reg
    }
}
