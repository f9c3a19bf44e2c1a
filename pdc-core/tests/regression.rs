//! One test per fixed bug of pdc-core, named after the bug.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pdc_clock::SystemClock;
use pdc_core::{EngineConfig, OfflineEngine};
use pdc_store::{NewItem, Store};
use pdc_sync::{LoopbackTransport, Priority, StreamKey};

fn config(path: &std::path::Path, max_item_bytes: usize) -> EngineConfig {
    let mut c = EngineConfig::new("till-1".parse().unwrap(), path);
    c.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    c.sync.linger = Duration::ZERO;
    c.sync.max_item_bytes = max_item_bytes;
    c.seed = Some(3);
    c
}

fn sale(bytes: usize) -> NewItem {
    NewItem {
        stream: StreamKey(1),
        priority: Priority::High,
        kind: 100, // opaque: kind 2 must be a valid order
        created_at_ms: 1,
        payload: vec![7; bytes],
    }
}

/// Issue 14, defect 1: `record` committed the item, then the sync machine
/// refused it (`ItemTooLarge`): the caller was told the sale was not
/// saved, and the next open failed on that stored item.
#[test]
fn record_can_save_and_then_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    {
        let engine = OfflineEngine::open(
            config(&path, 1_000),
            LoopbackTransport::new(),
            SystemClock::new(),
        )
        .unwrap();
        engine.record(sale(10)).unwrap();
        let e = engine.record(sale(5_000)).unwrap_err();
        assert!(e.to_string().contains("5"), "{e}");
        assert_eq!(engine.pending(), 1);
        assert_eq!(
            engine.store().pending().unwrap().0.len(),
            1,
            "nothing saved"
        );
        // The same for a bulk import: all or nothing, before saving.
        assert!(engine.record_many(vec![sale(1), sale(5_000)]).is_err());
        assert_eq!(engine.store().pending().unwrap().0.len(), 1);
    }
    let engine = OfflineEngine::open(
        config(&path, 1_000),
        LoopbackTransport::new(),
        SystemClock::new(),
    )
    .unwrap();
    assert_eq!(engine.pending(), 1);
}

/// Issue 14, defect 1 (restore): a stored item the machine can no longer
/// send (here: the item limit was lowered) made `restore` fail, and the
/// till could not open at all. It now goes to the dead letters with its
/// reason, and the rest is restored.
#[test]
fn restore_fails_on_a_stored_item_and_the_till_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    {
        let store = Store::open(&path).unwrap();
        store.append(sale(10)).unwrap();
        store.append(sale(5_000)).unwrap();
        store.append(sale(10)).unwrap();
    }
    let engine = OfflineEngine::open(
        config(&path, 1_000),
        LoopbackTransport::new(),
        SystemClock::new(),
    )
    .unwrap();
    assert_eq!(engine.pending(), 2);
    let dead = engine.store().dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].item.local_id, 2);
    assert_eq!(dead[0].code, "unsendable");
    assert!(dead[0].message.contains("limit"), "{}", dead[0].message);
    assert_eq!(engine.store().pending().unwrap().0.len(), 2);
}

/// Issue 14, defect 5: pulls applied only upserts to the auth store; a
/// cashier deleted at the server (a delta's delete, or absent from a
/// snapshot) kept a working PIN on the till, offline.
#[test]
fn cashiers_removed_at_the_server_keep_logging_in_offline() {
    use pdc_sync::ServerDataset;
    use rand::SeedableRng;
    let dir = tempfile::tempdir().unwrap();
    let transport = LoopbackTransport::new();
    let hasher = pdc_auth::PinHasher::new(pdc_auth::KdfParams::INSECURE_TEST, None);
    let mut rng = rand_chacha::ChaCha8Rng::from_seed([5; 32]);
    let mut user = |id: &str, pin: &str| {
        postcard::to_allocvec(&pdc_auth::UserRecord {
            user_id: id.into(),
            role: "cashier".into(),
            credential: hasher
                .hash(
                    &pdc_auth::PinPolicy::default().enrol(pin).unwrap(),
                    &mut rng,
                )
                .unwrap(),
            disabled: false,
        })
        .unwrap()
    };
    // A small change log: the second change is too far back for a delta,
    // so the till gets a snapshot then.
    let mut users = ServerDataset::new("users", 1);
    users.upsert(1, user("ann", "4826"));
    users.upsert(2, user("bob", "7305"));
    users.upsert(3, user("cy", "9137"));
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .insert("users".into(), users);
    let mut c = config(&dir.path().join("till.pdc"), 1 << 20);
    c.datasets = vec!["users".into()];
    let engine = OfflineEngine::open(c, transport.clone(), SystemClock::new()).unwrap();
    pollster::block_on(engine.pull()).unwrap();
    for (u, p) in [("ann", "4826"), ("bob", "7305"), ("cy", "9137")] {
        assert!(engine.login(u, p).is_ok(), "{u} logs in");
    }
    // bob is deleted (a delta with a delete).
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .get_mut("users")
        .unwrap()
        .delete(2);
    pollster::block_on(engine.pull()).unwrap();
    assert!(engine.login("bob", "7305").is_err(), "deleted user refused");
    assert!(engine.login("ann", "4826").is_ok());
    // cy is removed together with more changes than the log holds: the
    // till gets a snapshot without cy.
    {
        let mut server = transport.server.lock().unwrap();
        let users = server.datasets.get_mut("users").unwrap();
        users.delete(3);
        users.upsert(4, user("dee", "2580"));
        users.upsert(1, user("ann", "1470"));
    }
    pollster::block_on(engine.pull()).unwrap();
    assert!(
        engine.login("cy", "9137").is_err(),
        "user absent from the snapshot refused"
    );
    assert!(engine.login("ann", "1470").is_ok());
    assert!(engine.login("dee", "2580").is_ok());
    // A cashier enrolled on the till itself is not the server's to remove.
    engine.enrol("local", "cashier", "3691").unwrap();
    pollster::block_on(engine.pull()).unwrap();
    assert!(engine.login("local", "3691").is_ok());
}

/// Issue 14, defect 2: `sync_once` drained the machine's events, then
/// persisted them one by one; a failing write returned early, and the
/// outcomes not yet written were gone from memory while the machine had
/// already forgotten the items. Now one response's outcomes are one store
/// transaction, and if it fails the machine takes the items back.
#[test]
fn outcomes_are_forgotten_before_they_are_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let disk = pdc_test::FlakyBackend::new();
    let transport = LoopbackTransport::new();
    transport
        .server
        .lock()
        .unwrap()
        .reject_kinds
        .insert(9, "invalid_sku".into());
    let open = || {
        OfflineEngine::with_store(
            config(&dir.path().join("unused.pdc"), 1 << 20),
            Store::open_with_backend(disk.clone()).unwrap(),
            transport.clone(),
            SystemClock::new(),
        )
        .unwrap()
    };
    let engine = open();
    for kind in [100, 9, 100] {
        engine.record(NewItem { kind, ..sale(10) }).unwrap();
    }
    disk.fail(true);
    assert!(pollster::block_on(engine.sync_once()).is_err());
    assert_eq!(
        engine.store().pending().unwrap().0.len(),
        3,
        "nothing settled"
    );
    assert_eq!(
        engine.pending(),
        3,
        "the machine still holds what the store holds"
    );
    disk.fail(false);
    drop(engine);
    // redb refuses writes after an I/O error until reopened (a restart).
    let engine = open();
    for _ in 0..20 {
        pollster::block_on(engine.sync_once()).unwrap();
    }
    assert_eq!(engine.pending(), 0);
    assert!(engine.store().pending().unwrap().0.is_empty());
    assert_eq!(engine.store().dead_letters().unwrap().len(), 1);
    assert_eq!(transport.server.lock().unwrap().applied_count(), 2);
}

fn rss_kib() -> isize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

const RSS_CHILD: &str = "PDC_RSS_CHILD";

/// The child of [`memory_grows_with_the_queue`]: opens the engine over the
/// store at `$PDC_RSS_CHILD` in a fresh process and prints what the open
/// added to its resident memory.
#[test]
fn rss_child() {
    let Ok(path) = std::env::var(RSS_CHILD) else {
        return;
    };
    let before = rss_kib();
    let engine = OfflineEngine::open(
        config(std::path::Path::new(&path), 1 << 20),
        LoopbackTransport::new(),
        SystemClock::new(),
    )
    .unwrap();
    println!(
        "pending={} open_kib={}",
        engine.pending(),
        rss_kib() - before
    );
}

/// Issue 14, defect 6: `restore` loaded every pending payload into the
/// sync machine, so a till offline for a week held its whole week in
/// memory. Now the machine keeps only what scheduling needs (tens of
/// bytes an item) and reads payloads from the store when it builds a
/// batch. Measured as the resident memory an open adds, in a fresh process
/// (Linux).
#[test]
fn memory_grows_with_the_queue() {
    if std::env::var(RSS_CHILD).is_ok() || !std::path::Path::new("/proc/self/status").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    let (items, payload) = (800usize, 50_000usize);
    {
        let store = Store::open(&path).unwrap();
        store
            .append_many((0..items).map(|_| sale(payload)).collect())
            .unwrap();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["rss_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(RSS_CHILD, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find("pending=").map(|i| &l[i..]))
        .unwrap_or_else(|| {
            panic!(
                "child said: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let field = |name: &str| -> isize {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    assert_eq!(field("pending=") as usize, items);
    let open_kib = field("open_kib=");
    // 40 MB of payloads pending: the open may hold its caches and the
    // scheduling data, not the payloads.
    assert!(
        open_kib < (items * payload / 1024 / 4) as isize,
        "open added {open_kib} KiB for {items} pending items of {payload} bytes"
    );
    // And they still go out whole.
    let transport = LoopbackTransport::new();
    let engine = OfflineEngine::open(
        config(&path, 1 << 20),
        transport.clone(),
        SystemClock::new(),
    )
    .unwrap();
    while engine.pending() > 0 {
        pollster::block_on(engine.sync_once()).unwrap();
    }
    assert_eq!(transport.server.lock().unwrap().applied_count(), items);
}

/// Issue 18: the till saved an order the server refuses (here, payments
/// short of the total; before that, the crate's own example recorded
/// `b"sale"` as an order): it only failed at the server, as a dead letter.
/// `record` of an order item now applies the server's rules first.
#[test]
fn an_order_the_server_refuses_is_saved_at_the_till() {
    use pdc_codec::{Order, OrderLine, Payment, PaymentMethod};
    let dir = tempfile::tempdir().unwrap();
    let engine = OfflineEngine::open(
        config(&dir.path().join("t.pdc"), 1 << 20),
        LoopbackTransport::new(),
        SystemClock::new(),
    )
    .unwrap();
    let order = |paid: i64| Order {
        receipt: None,
        id: 1,
        cashier_id: 1,
        customer_id: None,
        created_at_ms: 1,
        lines: vec![OrderLine {
            product_id: 7,
            quantity: 2,
            unit_price_cents: 150,
            discount_cents: 0,
            tax_rate_bp: 700,
            ..Default::default()
        }],
        payments: vec![Payment {
            method: PaymentMethod::Cash,
            amount_cents: paid,
            ..Default::default()
        }],
        ..Default::default()
    };
    let item = |payload: Vec<u8>| NewItem {
        stream: StreamKey(1),
        priority: Priority::High,
        kind: 2,
        created_at_ms: 1,
        payload,
    };
    let codec = pdc_codec::Codec::new();
    assert!(matches!(
        engine.record(item(codec.encode(&order(200)).unwrap())),
        Err(pdc_core::EngineError::InvalidSale { .. })
    ));
    assert!(engine.record(item(b"sale".to_vec())).is_err());
    assert!(engine
        .record_many(vec![
            item(codec.encode(&order(300)).unwrap()),
            item(b"sale".to_vec())
        ])
        .is_err());
    assert_eq!(engine.pending(), 0, "nothing was saved");
    engine
        .record(item(codec.encode(&order(300)).unwrap()))
        .unwrap();
    assert_eq!(engine.pending(), 1);
}

/// Issue 18: every pull emitted `DatasetUpdated` for a dataset that had
/// not changed (here an empty one): a UI reloading on that event reloaded
/// on every pull.
#[test]
fn an_unchanged_dataset_is_reported_updated_on_every_pull() {
    let dir = tempfile::tempdir().unwrap();
    let transport = LoopbackTransport::new();
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .insert("config".into(), pdc_sync::ServerDataset::new("config", 100));
    let mut cfg = config(&dir.path().join("t.pdc"), 1 << 20);
    cfg.datasets = vec!["config".into()];
    let engine = OfflineEngine::open(cfg, transport, SystemClock::new()).unwrap();
    let updates = |engine: &OfflineEngine<LoopbackTransport, SystemClock>| {
        std::iter::from_fn(|| engine.poll_event())
            .filter(|e| matches!(e, pdc_core::EngineEvent::DatasetUpdated { .. }))
            .count()
    };
    pollster::block_on(engine.pull()).unwrap();
    assert!(
        updates(&engine) <= 1,
        "the first pull may bring the dataset"
    );
    for _ in 0..3 {
        pollster::block_on(engine.pull()).unwrap();
    }
    assert_eq!(updates(&engine), 0, "nothing changed");
}

/// Issue 18: an engine started `Online` and reported Online → Offline
/// without ever having reached a server.
#[test]
fn a_fresh_engine_claims_to_have_been_online() {
    let dir = tempfile::tempdir().unwrap();
    let engine = OfflineEngine::open(
        config(&dir.path().join("t.pdc"), 1 << 20),
        LoopbackTransport::new(),
        SystemClock::new(),
    )
    .unwrap();
    engine.set_online(false);
    let switches: Vec<_> = std::iter::from_fn(|| engine.poll_event())
        .filter_map(|e| match e {
            pdc_core::EngineEvent::ModeSwitch { from, to } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        switches,
        [(
            pdc_monitor::ConnectionState::Unknown,
            pdc_monitor::ConnectionState::Offline
        )]
    );
}

/// Issue 18: a sync pass that moved nothing still queued a
/// `SyncCompleted { acked: 0, .. }`; a driver polling every few seconds
/// filled the bounded event queue with them and pushed real events out.
#[test]
fn empty_sync_passes_evict_real_events() {
    let dir = tempfile::tempdir().unwrap();
    let engine = OfflineEngine::open(
        config(&dir.path().join("t.pdc"), 1 << 20),
        LoopbackTransport::new(),
        SystemClock::new(),
    )
    .unwrap();
    engine.record(sale(10)).unwrap();
    pollster::block_on(engine.sync_once()).unwrap();
    for _ in 0..2 * pdc_core::MAX_EVENTS {
        pollster::block_on(engine.sync_once()).unwrap();
    }
    let completed: Vec<usize> = std::iter::from_fn(|| engine.poll_event())
        .filter_map(|e| match e {
            pdc_core::EngineEvent::SyncCompleted { acked, .. } => Some(acked),
            _ => None,
        })
        .collect();
    assert_eq!(
        completed,
        [1],
        "the real pass is kept, the empty ones are not queued"
    );
}

/// Issue 18, lifecycle: there was no way to close an engine — the store
/// stayed locked until every clone of the `Arc` was dropped somewhere,
/// and the demo's restarted till retried its open in a loop while the
/// aborted driver let go of the file. `close` releases the file when it
/// returns `Ok`, and gives the engine back while a driver still runs.
#[test]
fn there_is_no_way_to_close_an_engine() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("till.pdc");
        let open = || {
            OfflineEngine::open(
                config(&path, 1 << 20),
                LoopbackTransport::new(),
                SystemClock::new(),
            )
        };
        let engine = std::sync::Arc::new(open().unwrap());
        engine.record(sale(10)).unwrap();
        let driver = engine.start(pdc_core::DriverConfig::default());
        // A driver holds the engine: close refuses and gives it back.
        let engine = engine.close().unwrap_err();
        assert!(matches!(
            open(),
            Err(pdc_core::EngineError::Store(pdc_store::StoreError::Locked))
        ));
        driver.shutdown().await.unwrap();
        engine.close().unwrap();
        // Released at once: no retry loop.
        let again = open().unwrap();
        assert_eq!(again.store().next_local_id().unwrap(), 2, "the same store");
    });
}

/// Issue 18: two terminal identities. `EngineConfig` had a `terminal_id`
/// (receipts, logins) and a `sync.terminal_id` (pushes) that
/// `EngineConfig::new` set once: a host that changed the first after `new`
/// printed receipts of `till-7` and pushed them as `till-1`, and the
/// order records carried a third identity, a number. Now the engine pushes
/// under its one `TerminalId`, and records carry none.
#[test]
fn the_engine_pushes_under_another_terminal_id_than_its_receipts() {
    use pdc_codec::{PaymentMethod, Product};
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("till.pdc"), 1 << 20);
    c.terminal_id = "till-7".parse().unwrap();
    let transport = LoopbackTransport::new();
    let engine = OfflineEngine::open(c, transport.clone(), SystemClock::new()).unwrap();
    let tea = Product {
        id: 7,
        name: "Tea".into(),
        barcode: "4006381333931".into(),
        category: "Drinks".into(),
        price_cents: 180,
        tax_rate_bp: 700,
        active: true,
    };
    let sale = pdc_core::Sale::new(1)
        .add(&tea, 1)
        .pay_rest(PaymentMethod::Cash);
    let receipt = engine.sell(&sale).unwrap();
    assert!(receipt.number.starts_with("till-7-"), "{}", receipt.number);
    pollster::block_on(engine.sync_once()).unwrap();
    let server = transport.server.lock().unwrap();
    assert!(
        server.has("till-7", receipt.local_id),
        "the receipt says till-7; the push must too"
    );
    assert!(!server.has("till-1", receipt.local_id));
}
