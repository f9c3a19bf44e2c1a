//! The engine against a reference model, driven by a script of bytes (so
//! that proptest and cargo-fuzz share it): random sequences of record,
//! record_many, sync, crash (drop without shutdown, reopen), lost answers,
//! whole-request 4xx, a server down, a full disk while outcomes are
//! committed, a poison item, items over the server's or the till's limit,
//! and the store deleted and recreated.
//!
//! Invariants after every step: the engine opens; pending in the store ==
//! pending in the machine (and held == quarantined); nothing left the
//! store's outbox that is neither on the server nor dead-lettered with a
//! reason; the server holds exactly the normal items it acknowledged,
//! each once; a dead letter is only ever a refused or oversized item.
//! At the end, once every fault is healed, every recorded sale of the
//! current store is on the server exactly once or dead-lettered with its
//! reason.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pdc_clock::{Clock, ManualClock};
use pdc_core::{EngineConfig, OfflineEngine};
use pdc_store::{NewItem, Store};
use pdc_sync::{
    LoopbackTransport, MemoryServer, Priority, ServerLimits, StoreId, StreamKey, SyncTransport,
    TransportError,
};
use pdc_test::FlakyBackend;

const TERMINAL: &str = "till-1";
const REJECTED: u16 = 9;
const POISON: u16 = 66;
/// An opaque kind (kind 2 is an order, checked at the till).
const OPAQUE: u16 = 100;
const SERVER_ITEM_LIMIT: u64 = 2_000;
const TILL_ITEM_LIMIT: usize = 8_000;

/// How the network behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// The server applies the push, the answer is lost.
    LoseAnswer,
    /// A proxy answers every request 404.
    Refuse,
    /// Nothing answers.
    Down,
}

#[derive(Clone)]
struct ModelTransport {
    inner: LoopbackTransport,
    mode: Arc<Mutex<Mode>>,
}

fn mode(m: &Mutex<Mode>) -> Mode {
    *m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait::async_trait]
impl SyncTransport for ModelTransport {
    async fn push(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        match mode(&self.mode) {
            Mode::Normal => self.inner.push(request).await,
            Mode::LoseAnswer => {
                // A 500 from a poison item is the server's answer: it comes through.
                self.inner.push(request).await?;
                Err(TransportError::Timeout)
            }
            Mode::Refuse => Err(TransportError::Client {
                status: 404,
                message: "no such route".into(),
            }),
            Mode::Down => Err(TransportError::Offline("no route to host".into())),
        }
    }
    async fn pull(&self, request: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        self.inner.pull(request).await
    }
    async fn ping(&self) -> Result<Option<ServerLimits>, TransportError> {
        match mode(&self.mode) {
            Mode::Down => Err(TransportError::Offline("no route to host".into())),
            _ => self.inner.ping().await,
        }
    }
    async fn report(&self, request: Vec<u8>) -> Result<(), TransportError> {
        self.inner.report(request).await
    }
}

/// What a saved item should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Applied,
    Rejected,
    TooLarge,
    Poison,
}

type Engine = OfflineEngine<ModelTransport, ManualClock>;

struct World {
    clock: ManualClock,
    transport: ModelTransport,
    disk: FlakyBackend,
    engine: Option<Engine>,
    pinged: bool,
    expect: BTreeMap<(StoreId, u64), Expect>,
    next_stream: u64,
}

/// What a run did, for the test's report.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Sales saved.
    pub saved: usize,
    /// Records refused before saving.
    pub refused: usize,
    /// Engine opens (crashes, recreations).
    pub opens: usize,
    /// Failed sync passes (commits on a full disk included).
    pub failed_syncs: usize,
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::new(TERMINAL.parse().unwrap(), "unused");
    c.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    c.datasets = vec![];
    c.seed = Some(5);
    c.sync.linger = Duration::ZERO;
    c.sync.max_item_bytes = TILL_ITEM_LIMIT;
    c.sync.max_batch_items = 8;
    c.sync.quarantine_after = 2;
    c.sync.halt_probe = Duration::from_secs(1);
    c.sync.reconnect_jitter = Duration::ZERO;
    c
}

impl World {
    fn open(&mut self, summary: &mut Summary) -> Result<(), String> {
        self.engine = None;
        let store = Store::open_with_backend(self.disk.clone())
            .map_err(|e| format!("the store does not open: {e}"))?;
        let engine =
            OfflineEngine::with_store(config(), store, self.transport.clone(), self.clock.clone())
                .map_err(|e| format!("the engine does not open: {e}"))?;
        self.engine = Some(engine);
        self.pinged = false;
        summary.opens += 1;
        Ok(())
    }

    fn engine(&self) -> Result<&Engine, String> {
        self.engine.as_ref().ok_or_else(|| "no engine".to_owned())
    }

    fn server(&self) -> std::sync::MutexGuard<'_, MemoryServer> {
        self.transport
            .inner
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn sale(&mut self, kind: u16, bytes: usize, stream: u8) -> NewItem {
        self.next_stream += 1;
        NewItem {
            stream: StreamKey(u64::from(stream % 4)),
            priority: [
                Priority::Low,
                Priority::Normal,
                Priority::High,
                Priority::Critical,
            ][usize::from(stream) % 4],
            kind,
            created_at_ms: self.clock.wall_ms(),
            payload: vec![(self.next_stream % 251) as u8; bytes],
        }
    }

    fn record(
        &mut self,
        kind: u16,
        bytes: usize,
        stream: u8,
        summary: &mut Summary,
    ) -> Result<(), String> {
        let item = self.sale(kind, bytes, stream);
        let engine = self.engine()?;
        let store_id = engine.store().store_id();
        let before = engine.store().pending_refs().map_err(|e| e.to_string())?;
        match engine.record(item) {
            Ok(id) => {
                let expect = match kind {
                    REJECTED => Expect::Rejected,
                    POISON => Expect::Poison,
                    _ if bytes as u64 > SERVER_ITEM_LIMIT => {
                        if self.pinged {
                            return Err(format!("item {id} over the published limit was saved"));
                        }
                        Expect::TooLarge
                    }
                    _ => Expect::Applied,
                };
                if bytes > TILL_ITEM_LIMIT {
                    return Err(format!("item {id} over the till's limit was saved"));
                }
                self.expect.insert((store_id, id), expect);
                summary.saved += 1;
            }
            Err(e) => {
                let over =
                    bytes > TILL_ITEM_LIMIT || (self.pinged && bytes as u64 > SERVER_ITEM_LIMIT);
                if !over {
                    return Err(format!("a sale of {bytes} bytes was refused: {e}"));
                }
                let after = engine.store().pending_refs().map_err(|e| e.to_string())?;
                if after != before {
                    return Err("a refused record changed the store".into());
                }
                summary.refused += 1;
            }
        }
        Ok(())
    }

    /// Sync passes until nothing is due (the clock jumps to each wake-up).
    fn sync(&mut self, passes: usize, summary: &mut Summary) -> Result<(), String> {
        for _ in 0..passes {
            let engine = self.engine()?;
            if pollster::block_on(engine.sync_once()).is_err() {
                summary.failed_syncs += 1;
            }
            match engine.next_wakeup() {
                Some(at) if at > self.clock.now() => self.clock.advance_to(at),
                Some(_) => {}
                None => break,
            }
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        let engine = self.engine()?;
        let store = engine.store();
        let store_id = store.store_id();
        let (pending, held) = store.pending_refs().map_err(|e| e.to_string())?;
        if engine.pending() != pending.len() {
            return Err(format!(
                "machine holds {} pending, store {}",
                engine.pending(),
                pending.len()
            ));
        }
        if engine.health().quarantined != held.len() {
            return Err(format!(
                "machine quarantines {}, store holds {}",
                engine.health().quarantined,
                held.len()
            ));
        }
        let in_store: std::collections::BTreeSet<u64> = pending
            .iter()
            .chain(held.iter().map(|(r, _)| r))
            .map(|r| r.local_id)
            .collect();
        let dead: BTreeMap<u64, (String, String)> = store
            .dead_letters()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|d| (d.item.local_id, (d.code, d.message)))
            .collect();
        let server = self.server();
        for (&(sid, id), &expect) in &self.expect {
            let applied = server.has_in(TERMINAL, sid, id);
            if applied && !matches!(expect, Expect::Applied | Expect::Poison) {
                return Err(format!("{expect:?} item {id} was applied"));
            }
            if sid != store_id {
                continue;
            }
            if let Some((code, message)) = dead.get(&id) {
                let ok = match expect {
                    Expect::Rejected => code == "invalid_sku",
                    Expect::TooLarge => code == "item_too_large",
                    _ => false,
                };
                if !ok || message.is_empty() {
                    return Err(format!(
                        "{expect:?} item {id} dead-lettered as {code}: {message}"
                    ));
                }
                continue;
            }
            if !in_store.contains(&id) && !applied {
                return Err(format!("item {id} left the outbox but the server lacks it"));
            }
        }
        let on_server = self
            .expect
            .keys()
            .filter(|(sid, id)| server.has_in(TERMINAL, *sid, *id))
            .count();
        if on_server != server.applied_count() {
            return Err(format!(
                "server applied {} items, {on_server} of them recorded",
                server.applied_count()
            ));
        }
        Ok(())
    }
}

/// Runs one script; `Err` names the broken invariant.
pub fn run(script: &[u8]) -> Result<Summary, String> {
    let mut server = MemoryServer::default();
    server.reject_kinds.insert(REJECTED, "invalid_sku".into());
    server.poison_kinds.push(POISON);
    server.limits = Some(ServerLimits {
        max_items: 1_000,
        max_body_bytes: 1 << 20,
        max_item_bytes: SERVER_ITEM_LIMIT,
    });
    let transport = ModelTransport {
        inner: LoopbackTransport::new(),
        mode: Arc::new(Mutex::new(Mode::Normal)),
    };
    *transport
        .inner
        .server
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = server;
    let mut w = World {
        clock: ManualClock::new(1_704_067_200_000),
        transport,
        disk: FlakyBackend::new(),
        engine: None,
        pinged: false,
        expect: BTreeMap::new(),
        next_stream: 0,
    };
    let mut summary = Summary::default();
    w.open(&mut summary)?;
    let mut bytes = script.iter().copied();
    let mut step = 0usize;
    while let Some(op) = bytes.next() {
        step += 1;
        let arg = bytes.next().unwrap_or(0);
        let r = match op % 14 {
            0..=2 => w.record(OPAQUE, 40 + usize::from(arg), arg, &mut summary),
            3 => w.record(REJECTED, 40, arg, &mut summary),
            4 => w.record(POISON, 40, arg, &mut summary),
            5 => w.record(OPAQUE, SERVER_ITEM_LIMIT as usize + 500, arg, &mut summary),
            6 => w.record(OPAQUE, TILL_ITEM_LIMIT + 1, arg, &mut summary),
            7 => {
                let items = (0..=arg % 5)
                    .map(|i| w.sale(OPAQUE, 30, arg.wrapping_add(i)))
                    .collect();
                let engine = w.engine()?;
                let sid = engine.store().store_id();
                let ids = engine
                    .record_many(items)
                    .map_err(|e| format!("record_many: {e}"))?;
                for id in ids {
                    w.expect.insert((sid, id), Expect::Applied);
                    summary.saved += 1;
                }
                Ok(())
            }
            8 | 9 => w.sync(1 + usize::from(arg % 8), &mut summary),
            10 => w.open(&mut summary), // a crash: dropped without shutdown, reopened
            11 => {
                let m = [Mode::Normal, Mode::LoseAnswer, Mode::Refuse, Mode::Down]
                    [usize::from(arg % 4)];
                *w.transport.mode.lock().unwrap_or_else(|p| p.into_inner()) = m;
                Ok(())
            }
            12 => match arg % 4 {
                // The disk fills up while outcomes are committed.
                0 => {
                    w.disk.fail(true);
                    let r = w.sync(1, &mut summary);
                    w.disk.fail(false);
                    r?;
                    // After an I/O error redb refuses writes until it is
                    // reopened: the host restarts the engine.
                    w.check()?;
                    w.open(&mut summary)
                }
                1 => {
                    let ok = pollster::block_on(w.engine()?.ping()).is_ok();
                    w.pinged |= ok;
                    Ok(())
                }
                2 => {
                    w.engine()?.resume_sync();
                    Ok(())
                }
                _ => {
                    // The store is deleted and a new one made: what it held
                    // and the server lacks is gone with it.
                    let old = w.engine()?.store().store_id();
                    let server = w.server();
                    let gone: Vec<(StoreId, u64)> = w
                        .expect
                        .keys()
                        .filter(|(sid, id)| *sid == old && !server.has_in(TERMINAL, *sid, *id))
                        .copied()
                        .collect();
                    drop(server);
                    for k in gone {
                        w.expect.remove(&k);
                    }
                    w.engine = None;
                    w.disk = FlakyBackend::new();
                    w.open(&mut summary)
                }
            },
            _ => {
                let engine = w.engine()?;
                let (_, held) = engine.store().pending_refs().map_err(|e| e.to_string())?;
                for (r, _) in held {
                    engine
                        .requeue_quarantined(r.local_id)
                        .map_err(|e| format!("requeue {}: {e}", r.local_id))?;
                }
                Ok(())
            }
        };
        r.map_err(|e| format!("step {step} (op {}): {e}", op % 14))?;
        w.check()
            .map_err(|e| format!("after step {step} (op {}): {e}", op % 14))?;
    }
    // Heal everything; then every sale of the current store gets its outcome.
    *w.transport.mode.lock().unwrap_or_else(|p| p.into_inner()) = Mode::Normal;
    w.server().poison_kinds.clear();
    w.open(&mut summary)?;
    for round in 0..50 {
        let engine = w.engine()?;
        engine.resume_sync();
        let (_, held) = engine.store().pending_refs().map_err(|e| e.to_string())?;
        for (r, _) in held {
            engine
                .requeue_quarantined(r.local_id)
                .map_err(|e| e.to_string())?;
        }
        w.sync(20, &mut summary)?;
        w.check()
            .map_err(|e| format!("healing round {round}: {e}"))?;
        if w.engine()?.pending() == 0 && w.engine()?.health().quarantined == 0 {
            break;
        }
    }
    let engine = w.engine()?;
    let sid = engine.store().store_id();
    if engine.pending() != 0 {
        return Err(format!("{} items never drained", engine.pending()));
    }
    let dead: BTreeMap<u64, String> = engine
        .store()
        .dead_letters()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| (d.item.local_id, d.code))
        .collect();
    let server = w.server();
    for (&(s, id), &expect) in w.expect.iter().filter(|((s, _), _)| *s == sid) {
        let applied = server.has_in(TERMINAL, s, id);
        let code = dead.get(&id).map(String::as_str);
        let ok = match expect {
            Expect::Applied | Expect::Poison => applied && code.is_none(),
            Expect::Rejected => !applied && code == Some("invalid_sku"),
            Expect::TooLarge => !applied && code == Some("item_too_large"),
        };
        if !ok {
            return Err(format!(
                "{expect:?} item {id}: applied={applied}, dead as {code:?}"
            ));
        }
    }
    Ok(summary)
}
