//! A till's day in miniature: pull the catalogue, sell online, lose the
//! network, keep selling and log a cashier in by PIN offline, crash and
//! reopen, come back online and sync everything exactly once, through the
//! in-memory loopback transport.
//!
//! `cargo run --example till -p pdc-engine`

use std::time::Duration;

use pdc_clock::SystemClock;
use pdc_codec::Codec;
use pdc_core::{EngineConfig, EngineEvent, OfflineEngine};
use pdc_store::NewItem;
use pdc_sync::{LoopbackTransport, Priority, ServerDataset, StreamKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("pdc-till-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("till.pdc");
    let codec = Codec::new();

    // The "server": a catalogue of 5,000 products behind the loopback.
    let transport = LoopbackTransport::new();
    let mut catalogue = ServerDataset::new("products", 10_000);
    for p in pdc_datasets::catalog(5_000, 1) {
        catalogue.upsert(u64::from(p.id), codec.encode(&p)?);
    }
    transport
        .server
        .lock()
        .map_err(|_| "server lock")?
        .datasets
        .insert("products".into(), catalogue);

    let config = || {
        let mut c = EngineConfig::new("till-7", &path);
        c.datasets = vec!["products".into()];
        c.sync.linger = Duration::ZERO;
        c
    };
    let engine = OfflineEngine::open(config(), transport.clone(), SystemClock::new())?;
    engine.enrol("alice", "cashier", "2580")?;
    pollster::block_on(engine.pull())?;
    let product = pollster::block_on(engine.reference("products", 42))?.ok_or("product 42")?;
    let product: pdc_codec::Product = codec.decode(&product)?;
    println!(
        "catalogue pulled; product 42 is {:?} at {} cents",
        product.name, product.price_cents
    );

    let orders = pdc_datasets::orders(60, 7);
    let sale = |o: &pdc_codec::Order| -> Result<NewItem, pdc_codec::CodecError> {
        Ok(NewItem {
            stream: StreamKey(o.id),
            priority: Priority::High,
            kind: 2,
            created_at_ms: o.created_at_ms,
            payload: codec.encode(o)?,
        })
    };
    for o in &orders[..20] {
        engine.record(sale(o)?)?;
    }
    pollster::block_on(engine.sync_once())?;
    println!(
        "online: 20 sales recorded and synced, {} pending",
        engine.pending()
    );

    engine.set_online(false);
    for o in &orders[20..50] {
        engine.record(sale(o)?)?;
    }
    pollster::block_on(engine.sync_once())?; // offline: sends nothing
    let login = engine.login("alice", "2580")?;
    println!(
        "offline: 30 sales recorded, {} pending; alice logged in offline as {}",
        engine.pending(),
        login.session.role
    );

    // Crash: drop the engine without any shutdown, reopen from the file.
    drop(engine);
    let engine = OfflineEngine::open(config(), transport.clone(), SystemClock::new())?;
    println!(
        "reopened after a crash: {} pending restored from the store",
        engine.pending()
    );
    for o in &orders[50..] {
        engine.record(sale(o)?)?;
    }

    engine.set_online(true);
    std::thread::sleep(Duration::from_millis(600)); // past the reconnect jitter
    pollster::block_on(engine.sync_once())?;
    while let Some(ev) = engine.poll_event() {
        if let EngineEvent::SyncCompleted {
            acked, bytes_up, ..
        } = ev
        {
            if acked > 0 {
                println!("sync: {acked} acknowledged, {bytes_up} bytes up");
            }
        }
    }
    let applied = transport
        .server
        .lock()
        .map_err(|_| "server lock")?
        .applied_count();
    println!(
        "server has {applied} sales of 60 recorded; {} pending on the till",
        engine.pending()
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    if applied != 60 {
        return Err(format!("expected 60 sales applied, got {applied}").into());
    }
    Ok(())
}
