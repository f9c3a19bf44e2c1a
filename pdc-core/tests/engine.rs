//! The engine end to end over pdc-sync's loopback transport: offline
//! selling and login, restart, exactly-once sync, dead letters, reference
//! data, and the tokio driver.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use pdc_clock::SystemClock;
use pdc_core::{EngineConfig, EngineEvent, OfflineEngine};
use pdc_store::NewItem;
use pdc_sync::{LoopbackTransport, Priority, ServerDataset, StreamKey};
use rand::SeedableRng;

fn config(path: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new("till-1".parse().unwrap(), path);
    c.kdf = pdc_auth::KdfParams::INSECURE_TEST;
    c.sync.linger = Duration::ZERO;
    c.sync.reconnect_jitter = Duration::ZERO;
    c.datasets = vec!["products".into()];
    c.seed = Some(7);
    c
}

fn sale(i: u64, kind: u16) -> NewItem {
    NewItem {
        stream: StreamKey(i % 5),
        priority: Priority::High,
        kind,
        created_at_ms: i,
        payload: vec![i as u8; 40],
    }
}

#[test]
fn offline_sales_survive_restart_and_sync_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("till.pdc");
    let transport = LoopbackTransport::new();
    transport
        .server
        .lock()
        .unwrap()
        .reject_kinds
        .insert(9, "invalid_sku".into());
    let engine = OfflineEngine::open(config(&path), transport.clone(), SystemClock::new()).unwrap();
    engine.enrol("bob", "cashier", "3691").unwrap();
    engine.set_online(false);
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            engine
                .record(sale(i, if i == 13 { 9 } else { 100 }))
                .unwrap(),
        );
    }
    pollster::block_on(engine.sync_once()).unwrap();
    assert_eq!(
        transport.server.lock().unwrap().applied_count(),
        0,
        "offline sends nothing"
    );
    assert_eq!(engine.login("bob", "3691").unwrap().session.user_id, "bob");
    drop(engine);

    let engine = OfflineEngine::open(config(&path), transport.clone(), SystemClock::new()).unwrap();
    assert_eq!(engine.pending(), 25);
    // The login state survived too: a wrong PIN counts against the same account.
    assert!(engine.login("bob", "0000").is_err());
    engine.set_online(true);
    pollster::block_on(engine.sync_once()).unwrap();
    let server = transport.server.lock().unwrap();
    assert_eq!(server.applied_count(), 24);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(server.has("till-1", *id), i != 13);
    }
    drop(server);
    assert_eq!(engine.pending(), 0);
    let dl = engine.store().dead_letters().unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].code, "invalid_sku");
    assert!(
        engine.store().pending().unwrap().0.is_empty(),
        "acks removed items from the store"
    );
    let mut saw = (false, false);
    while let Some(ev) = engine.poll_event() {
        match ev {
            EngineEvent::DeadLettered { .. } => saw.0 = true,
            EngineEvent::SyncCompleted {
                acked: 24,
                dead_lettered: 1,
                ..
            } => saw.1 = true,
            _ => {}
        }
    }
    assert_eq!(saw, (true, true));
}

#[test]
fn reference_data_is_pulled_as_deltas_and_served_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let transport = LoopbackTransport::new();
    let mut products = ServerDataset::new("products", 1000);
    for id in 0..500 {
        products.upsert(id, format!("product {id}").into_bytes());
    }
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .insert("products".into(), products);
    let engine = OfflineEngine::open(
        config(&dir.path().join("t.pdc")),
        transport.clone(),
        SystemClock::new(),
    )
    .unwrap();
    assert_eq!(
        pollster::block_on(engine.reference("products", 7)).unwrap(),
        None
    );
    pollster::block_on(engine.pull()).unwrap();
    assert_eq!(
        &*pollster::block_on(engine.reference("products", 7))
            .unwrap()
            .unwrap(),
        b"product 7"
    );
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .get_mut("products")
        .unwrap()
        .upsert(7, b"new price".to_vec());
    pollster::block_on(engine.pull()).unwrap();
    assert_eq!(
        &*pollster::block_on(engine.reference("products", 7))
            .unwrap()
            .unwrap(),
        b"new price",
        "cache invalidated by the update"
    );
    assert!(std::iter::from_fn(|| engine.poll_event())
        .any(|e| matches!(e, EngineEvent::DatasetUpdated { .. })));
}

#[test]
fn the_tokio_driver_syncs_in_the_background() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let transport = LoopbackTransport::new();
        let engine = Arc::new(
            OfflineEngine::open(
                config(&dir.path().join("t.pdc")),
                transport.clone(),
                SystemClock::new(),
            )
            .unwrap(),
        );
        let (poke, stop) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let handle = pdc_core::spawn_driver(
            engine.clone(),
            poke.clone(),
            stop.clone(),
            SystemClock::new(),
        );
        for i in 0..10 {
            engine.record(sale(i, 100)).unwrap();
            poke.notify_one();
        }
        for _ in 0..200 {
            if transport.server.lock().unwrap().applied_count() == 10 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.notify_one();
        handle.await.unwrap();
        assert_eq!(transport.server.lock().unwrap().applied_count(), 10);
        assert_eq!(engine.pending(), 0);
    });
}

#[test]
fn users_pulled_from_the_server_log_in_online_and_then_offline() {
    let dir = tempfile::tempdir().unwrap();
    let transport = LoopbackTransport::new();
    let hasher = pdc_auth::PinHasher::new(pdc_auth::KdfParams::INSECURE_TEST, None);
    let mut rng = rand_chacha::ChaCha8Rng::from_seed([3; 32]);
    let user = |pin: &str, rng: &mut rand_chacha::ChaCha8Rng| pdc_auth::UserRecord {
        user_id: "ann".into(),
        role: "cashier".into(),
        credential: hasher
            .hash(&pdc_auth::PinPolicy::default().enrol(pin).unwrap(), rng)
            .unwrap(),
        disabled: false,
    };
    let mut users = ServerDataset::new("users", 100);
    users.upsert(1, postcard::to_allocvec(&user("4826", &mut rng)).unwrap());
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .insert("users".into(), users);
    let mut c = config(&dir.path().join("till.pdc"));
    c.datasets = vec!["users".into()];
    let engine = OfflineEngine::open(c, transport.clone(), SystemClock::new()).unwrap();
    // Online: the pull brings ann's credential, then the PIN is checked.
    let (login, fresh) = pollster::block_on(engine.login_online("ann", "4826")).unwrap();
    assert!(fresh);
    assert_eq!(login.session.user_id, "ann");
    // Her number on the orders is her record id in the users dataset.
    assert_eq!(engine.cashier_id("ann").unwrap(), Some(1));
    assert_eq!(engine.cashier_id("nobody").unwrap(), None);
    // The login result says it too, with the role.
    let cashier = engine.login_cashier("ann", "4826").unwrap();
    assert_eq!(
        (cashier.cashier_id, cashier.role.as_str()),
        (Some(1), "cashier")
    );
    assert_eq!(cashier.login.session.user_id, "ann");
    // The PIN changes at the server; the next online login sees it.
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .get_mut("users")
        .unwrap()
        .upsert(1, postcard::to_allocvec(&user("7305", &mut rng)).unwrap());
    assert!(pollster::block_on(engine.login_online("ann", "4826")).is_err());
    let (_, fresh) = pollster::block_on(engine.login_online("ann", "7305")).unwrap();
    assert!(fresh);
    // Offline: no pull, the stored credential.
    engine.set_online(false);
    let (_, fresh) = pollster::block_on(engine.login_online("ann", "7305")).unwrap();
    assert!(!fresh);
}

#[test]
fn warm_catalogue_and_a_delta_invalidates_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let transport = LoopbackTransport::new();
    let mut products = ServerDataset::new("products", 100);
    for id in 1..=10u64 {
        products.upsert(id, vec![id as u8; 8]);
    }
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .insert("products".into(), products);
    let engine = OfflineEngine::open(
        config(&dir.path().join("t.pdc")),
        transport.clone(),
        SystemClock::new(),
    )
    .unwrap();
    pollster::block_on(engine.pull()).unwrap();
    assert_eq!(pollster::block_on(engine.warm("products")).unwrap(), 10);
    for id in 1..=10u64 {
        let v = pollster::block_on(engine.reference("products", id))
            .unwrap()
            .unwrap();
        assert_eq!(&v[..], &[id as u8; 8][..]);
    }
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .get_mut("products")
        .unwrap()
        .upsert(3, vec![99; 8]);
    pollster::block_on(engine.pull()).unwrap();
    let v = pollster::block_on(engine.reference("products", 3))
        .unwrap()
        .unwrap();
    assert_eq!(&v[..], &[99u8; 8][..], "the changed record is fresh");
    pollster::block_on(engine.reference("products", 4))
        .unwrap()
        .unwrap();
    // 10 warm hits, 1 miss for the changed record, 1 hit for an unchanged one.
    let k = pdc_monitor::MetricKey::new("pdc_cache_hit_ratio", &[]).unwrap();
    let ratio = engine.metrics().gauges[&k];
    assert!((ratio - 11.0 / 12.0).abs() < 1e-9, "{ratio}");
}

#[test]
fn an_engine_over_an_in_memory_store_backend() {
    // What a browser build does with its own storage backend.
    let store =
        pdc_store::Store::open_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
    let transport = LoopbackTransport::new();
    let engine = OfflineEngine::with_store(
        config(std::path::Path::new("unused")),
        store,
        transport.clone(),
        SystemClock::new(),
    )
    .unwrap();
    let id = engine.record(sale(1, 100)).unwrap();
    pollster::block_on(engine.sync_once()).unwrap();
    assert!(transport.server.lock().unwrap().has("till-1", id));
    assert_eq!(engine.pending(), 0);
}

#[test]
fn sync_started_and_alerts_become_events() {
    let dir = tempfile::tempdir().unwrap();
    let transport = LoopbackTransport::new();
    let mut c = config(&dir.path().join("t.pdc"));
    c.alert_rules = vec![pdc_monitor::AlertRule {
        name: "any_record".into(),
        metric: "pdc_record_us".into(),
        stat: pdc_monitor::Stat::Max,
        op: pdc_monitor::Op::Above,
        threshold: 0.0,
        for_duration: Duration::ZERO,
        hysteresis: 0.0,
        severity: pdc_monitor::Severity::Warning,
    }];
    let engine = OfflineEngine::open(c, transport, SystemClock::new()).unwrap();
    assert!(engine.check_alerts().is_empty(), "nothing recorded yet");
    engine.record(sale(1, 100)).unwrap();
    let fired = engine.check_alerts();
    assert_eq!(fired.len(), 1, "{fired:?}");
    pollster::block_on(engine.sync_once()).unwrap();
    let events: Vec<EngineEvent> = std::iter::from_fn(|| engine.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EngineEvent::AlertFired { rule, .. } if rule == "any_record")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, EngineEvent::SyncStarted { pending: 1 })),
        "{events:?}"
    );
}

/// Typed product lookups: by id and by barcode, both following a pull
/// that changes a barcode; a record that is not a product is an error,
/// not a silent miss.
#[test]
fn products_are_looked_up_by_id_and_by_barcode() {
    let codec = pdc_codec::Codec::new();
    let product = |id: u32, barcode: &str| pdc_codec::Product {
        id,
        name: format!("Product {id}"),
        barcode: barcode.into(),
        category: "Bakery".into(),
        price_cents: 100 + i64::from(id),
        tax_rate_bp: 700,
        active: true,
    };
    let dir = tempfile::tempdir().unwrap();
    let transport = LoopbackTransport::new();
    let mut products = ServerDataset::new("products", 1000);
    for id in 1..=300u32 {
        let p = product(id, &format!("400000000{id:04}"));
        products.upsert(u64::from(id), codec.encode(&p).unwrap());
    }
    products.upsert(999, b"not a product".to_vec());
    transport
        .server
        .lock()
        .unwrap()
        .datasets
        .insert("products".into(), products);
    let engine = OfflineEngine::open(
        config(&dir.path().join("t.pdc")),
        transport.clone(),
        SystemClock::new(),
    )
    .unwrap();
    let by_code = |code: &str| pollster::block_on(engine.product_by_barcode(code)).unwrap();
    assert_eq!(by_code("4000000000042"), None, "nothing pulled yet");
    pollster::block_on(engine.pull()).unwrap();
    assert_eq!(
        pollster::block_on(engine.product(42)).unwrap(),
        Some(product(42, "4000000000042"))
    );
    assert_eq!(pollster::block_on(engine.product(301)).unwrap(), None);
    assert_eq!(by_code("4000000000042"), Some(product(42, "4000000000042")));
    assert_eq!(by_code("4000000009999"), None);
    assert!(matches!(
        pollster::block_on(engine.product(999)),
        Err(pdc_core::EngineError::Codec(_))
    ));
    // The barcode moves to another product at the server.
    {
        let mut server = transport.server.lock().unwrap();
        let ds = server.datasets.get_mut("products").unwrap();
        ds.upsert(42, codec.encode(&product(42, "4000000000000")).unwrap());
        ds.upsert(7, codec.encode(&product(7, "4000000000042")).unwrap());
    }
    pollster::block_on(engine.pull()).unwrap();
    assert_eq!(by_code("4000000000042"), Some(product(7, "4000000000042")));
    assert_eq!(by_code("4000000000000"), Some(product(42, "4000000000000")));
    assert_eq!(by_code("4000000000007"), None, "the old barcode is gone");
}

/// The typed sale: built from a looked-up product, checked with the
/// server's rules before anything is saved, numbered from the store's
/// counter (gapless across a refused sale and a reopen), and stored as the
/// order the receipt shows.
#[test]
fn sales_are_checked_numbered_and_stored_as_their_receipt_shows() {
    use pdc_codec::{OrderRule, PaymentMethod};
    use pdc_core::{EngineError, Sale};
    let codec = pdc_codec::Codec::new();
    let espresso = pdc_codec::Product {
        id: 7001,
        name: "Espresso".into(),
        barcode: "4006381333900".into(),
        category: "Drinks".into(),
        price_cents: 240,
        tax_rate_bp: 700,
        active: true,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pdc");
    let mut cfg = config(&path);
    cfg.terminal_id = "till-7".parse().unwrap();
    let engine = OfflineEngine::open(cfg, LoopbackTransport::new(), SystemClock::new()).unwrap();
    engine.set_online(false);
    let sale = Sale::new(3)
        .add(&espresso, 2)
        .add_discounted(&espresso, 1, 40)
        .pay(PaymentMethod::Voucher, 500)
        .pay_rest(PaymentMethod::Card);
    assert_eq!(sale.total_cents(), 680);
    let first = engine.sell(&sale).unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.total_cents, 680);
    let store_tag = &format!(
        "{:02X}{:02X}{:02X}{:02X}",
        engine.store().store_id().0[0],
        engine.store().store_id().0[1],
        engine.store().store_id().0[2],
        engine.store().store_id().0[3]
    );
    assert_eq!(first.number, format!("till-7-{store_tag}-000001"));
    assert_eq!(first.order.cashier_id, 3);
    // What was stored is the receipt's order.
    let stored = engine.store().load(&[first.local_id]).unwrap();
    let pdc_sync::Loaded::Item(item) = &stored[0] else {
        panic!("sale not stored: {stored:?}")
    };
    assert_eq!(item.kind, 2);
    assert_eq!(
        codec.decode::<pdc_codec::Order>(&item.payload).unwrap(),
        first.order
    );

    // A sale the server would refuse is refused here, and uses no number.
    let short = Sale::new(3).add(&espresso, 1).pay(PaymentMethod::Cash, 100);
    assert!(matches!(
        engine.sell(&short),
        Err(EngineError::InvalidSale {
            rule: OrderRule::TotalMismatch,
            ..
        })
    ));
    assert!(matches!(
        engine.sell(&Sale::new(3)),
        Err(EngineError::InvalidSale {
            rule: OrderRule::Empty,
            ..
        })
    ));
    assert_eq!(engine.pending(), 1);
    let cash = Sale::new(3).add(&espresso, 1).pay_rest(PaymentMethod::Cash);
    let second = engine.sell(&cash).unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(second.order.id, first.order.id + 1);
    drop(engine);

    // Reopened: the numbering continues.
    let mut cfg = config(&path);
    cfg.terminal_id = "till-7".parse().unwrap();
    let engine = OfflineEngine::open(cfg, LoopbackTransport::new(), SystemClock::new()).unwrap();
    let third = engine.sell(&cash).unwrap();
    assert_eq!((third.seq, third.number.ends_with("-000003")), (3, true));
    assert_eq!(engine.pending(), 3);
}

/// The driver as one handle: the status before any probe is `Unknown`; a
/// sale wakes the driver; a failing server shows in the status and as one
/// `Failed` event (not one per retry); `wait_synced` times out while it
/// fails and returns once everything is sent; `shutdown` stops it.
#[test]
fn the_driver_handle_reports_status_waits_until_synced_and_shuts_down() {
    use pdc_monitor::ConnectionState;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let transport = LoopbackTransport::new();
        let engine = Arc::new(
            OfflineEngine::open(
                config(&dir.path().join("t.pdc")),
                transport.clone(),
                SystemClock::new(),
            )
            .unwrap(),
        );
        transport.server.lock().unwrap().overloaded = Some(Duration::from_millis(20));
        let driver = engine.start(pdc_core::DriverConfig {
            ping_online: Duration::from_millis(200),
            ping_recovering: Duration::from_millis(50),
            ..pdc_core::DriverConfig::default()
        });
        assert_eq!(
            driver.status().borrow().connection,
            ConnectionState::Unknown
        );
        for i in 0..5 {
            engine.record(sale(i, 100)).unwrap();
        }
        let err = driver
            .wait_synced(Duration::from_millis(400))
            .await
            .unwrap_err();
        assert!(matches!(err, pdc_core::EngineError::Timeout(_)), "{err}");
        let status = driver.status().borrow().clone();
        assert_eq!(status.pending, 5, "{status:?}");
        assert!(status.last_error.is_some(), "{status:?}");
        let push_failures = std::iter::from_fn(|| engine.poll_event())
            .filter(|e| {
                matches!(
                    e,
                    EngineEvent::Failed {
                        operation: "push",
                        ..
                    }
                )
            })
            .count();
        assert_eq!(
            push_failures, 1,
            "one event for a failure, not one per retry"
        );

        transport.server.lock().unwrap().overloaded = None;
        let synced = driver.wait_synced(Duration::from_secs(20)).await.unwrap();
        assert!(synced.is_synced());
        assert_eq!(transport.server.lock().unwrap().applied_count(), 5);
        assert!(synced.last_success_ms.is_some());
        driver.shutdown().await.unwrap();
        let after = engine.status();
        assert_eq!(after.last_error, None, "{after:?}");
        assert_eq!(after.connection, ConnectionState::Online);
    });
}

/// Offline card payments (store-and-forward): limited per sale, in total
/// and in age while offline, never for cash; the stored total survives a
/// restart, shows in the status, and is cleared as the sales reach the
/// server.
#[test]
fn offline_card_payments_are_limited_and_forwarded() {
    use pdc_codec::PaymentMethod::{Card, Cash};
    use pdc_core::{EngineError, OfflineCardLimits, OfflineLimit, Sale};
    let item = pdc_codec::Product {
        id: 1,
        name: "Headphones".into(),
        barcode: "4000000000017".into(),
        category: "Audio".into(),
        price_cents: 4_000,
        tax_rate_bp: 1_900,
        active: true,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pdc");
    let clock = pdc_clock::ManualClock::new(1_764_000_000_000);
    let transport = LoopbackTransport::new();
    let open = || {
        let mut c = config(&path);
        c.offline_cards = OfflineCardLimits {
            per_sale_cents: 10_000,
            total_cents: 15_000,
            max_age: Duration::from_secs(24 * 3600),
        };
        OfflineEngine::open(c, transport.clone(), clock.clone()).unwrap()
    };
    let limit = |r: Result<pdc_core::Receipt, EngineError>| match r {
        Err(EngineError::OfflineCardLimit { limit, .. }) => Some(limit),
        Ok(_) => None,
        Err(e) => panic!("unexpected {e}"),
    };
    let engine = open();
    engine.set_online(false);
    let card = |n: u32| Sale::new(1).add(&item, n).pay_rest(Card);
    assert_eq!(limit(engine.sell(&card(3))), Some(OfflineLimit::PerSale));
    assert_eq!(limit(engine.sell(&card(2))), None);
    assert_eq!(limit(engine.sell(&card(1))), None);
    assert_eq!(engine.status().offline_card_cents, 12_000);
    assert_eq!(limit(engine.sell(&card(1))), Some(OfflineLimit::Total));
    // Cash is never refused; split tenders count only the card part.
    assert_eq!(
        limit(engine.sell(&Sale::new(1).add(&item, 9).pay_rest(Cash))),
        None
    );
    let split = Sale::new(1).add(&item, 2).pay(Card, 3_000).pay_rest(Cash);
    assert_eq!(limit(engine.sell(&split)), None);
    assert_eq!(engine.status().offline_card_cents, 15_000);
    drop(engine);

    // A day later, still offline, after a restart: the stored payments are
    // too old to add to, even below the total.
    clock.advance(Duration::from_secs(25 * 3600));
    let engine = open();
    engine.set_online(false);
    let status = engine.status();
    assert_eq!(status.offline_card_cents, 15_000);
    assert!(status.oldest_offline_card.unwrap() >= Duration::from_secs(25 * 3600));
    assert_eq!(
        limit(engine.sell(&Sale::new(1).add(&item, 1).pay(Card, 100).pay_rest(Cash))),
        Some(OfflineLimit::Age)
    );

    // Online again: the sales reach the server and the total is cleared;
    // card payments online are not limited.
    engine.set_online(true);
    clock.advance(Duration::from_secs(5));
    for _ in 0..20 {
        pollster::block_on(engine.sync_once()).unwrap();
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(engine.pending(), 0);
    let status = engine.status();
    assert_eq!(
        (status.offline_card_cents, status.oldest_offline_card),
        (0, None)
    );
    assert_eq!(limit(engine.sell(&card(3))), None);
    assert_eq!(engine.status().offline_card_cents, 0);
}

/// `track` saves a checked analytics event, durably, at low priority on
/// its own stream; a name the server would refuse saves nothing.
#[test]
fn track_saves_a_checked_event_at_low_priority() {
    let dir = tempfile::tempdir().unwrap();
    let engine = OfflineEngine::open(
        config(&dir.path().join("till.pdc")),
        LoopbackTransport::new(),
        SystemClock::new(),
    )
    .unwrap();
    let id = engine
        .track("basket_view", &[("lines", "3"), ("total_cents", "720")])
        .unwrap();
    assert!(matches!(
        engine.track("Basket View!", &[]),
        Err(pdc_core::EngineError::Codec(_))
    ));
    let (items, _) = engine.store().pending().unwrap();
    assert_eq!(items.len(), 1);
    let it = &items[0];
    assert_eq!((it.local_id, it.priority, it.kind), (id, Priority::Low, 7));
    assert_eq!(it.stream, StreamKey(pdc_core::ANALYTICS_STREAM));
    let e: pdc_codec::AnalyticsEvent = pdc_codec::Codec::new().decode(&it.payload).unwrap();
    assert_eq!(e.name, "basket_view");
    assert_eq!(e.properties[1], ("total_cents".into(), "720".into()));
}

#[test]
fn stock_levels_are_pulled_page_by_page_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let transport = LoopbackTransport::new();
    let path = dir.path().join("t.pdc");
    let engine = OfflineEngine::open(config(&path), transport.clone(), SystemClock::new()).unwrap();
    // A server that keeps no stock: nothing, and no error.
    assert_eq!(pollster::block_on(engine.pull_stock()).unwrap(), None);
    // More levels than one page holds (5,000), some changed twice.
    {
        let mut server = transport.server.lock().unwrap();
        for p in 0..12_001u32 {
            server.set_stock(p, i64::from(p % 7));
        }
        for p in 0..10u32 {
            server.set_stock(p, -1);
        }
    }
    assert_eq!(
        pollster::block_on(engine.pull_stock()).unwrap(),
        Some(12_001)
    );
    assert_eq!(engine.stock_level(3).unwrap(), Some(-1));
    assert_eq!(engine.stock_level(12_000).unwrap(), Some(12_000 % 7));
    assert_eq!(engine.stock_level(12_001).unwrap(), None);
    transport.server.lock().unwrap().set_stock(20, 99);
    assert_eq!(pollster::block_on(engine.pull_stock()).unwrap(), Some(1));
    drop(engine);
    // Offline after a restart, the levels are still there.
    let engine = OfflineEngine::open(config(&path), transport.clone(), SystemClock::new()).unwrap();
    assert_eq!(engine.stock_level(20).unwrap(), Some(99));
    assert_eq!(pollster::block_on(engine.pull_stock()).unwrap(), Some(0));
}
