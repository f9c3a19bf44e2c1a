//! A till's day in miniature: pull the catalogue, sell online, lose the
//! network, keep selling and log a cashier in by PIN offline, crash and
//! reopen, come back online and sync everything exactly once, through the
//! in-memory loopback transport.
//!
//! `cargo run --example till -p pdc-engine`

use std::time::Duration;

use pdc_clock::SystemClock;
use pdc_codec::{Codec, PaymentMethod};
use pdc_core::{EngineConfig, EngineEvent, OfflineEngine, Sale};
use pdc_sync::{LoopbackTransport, ServerDataset};

/// The cashier's number on the orders (the users dataset's record id in a
/// real deployment; alice is enrolled locally here).
fn login_id() -> u32 {
    1
}

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

    let terminal: pdc_core::TerminalId = "till-7".parse()?;
    let config = || {
        let mut c = EngineConfig::new(terminal.clone(), &path);
        c.datasets = vec!["products".into()];
        c.sync.linger = Duration::ZERO;
        c
    };
    let engine = OfflineEngine::open(config(), transport.clone(), SystemClock::new())?;
    engine.enrol("alice", "cashier", "2580")?;
    pollster::block_on(engine.pull())?;
    let product = pollster::block_on(engine.product(42))?.ok_or("product 42")?;
    println!(
        "catalogue pulled; product 42 is {:?} at {} cents",
        product.name, product.price_cents
    );
    // A scanned barcode finds the same product.
    let scanned = pollster::block_on(engine.product_by_barcode(&product.barcode))?;
    assert_eq!(scanned.as_ref().map(|p| p.id), Some(42));

    // A sale: one or two products, paid in cash or by card; checked with
    // the server's rules, then saved and numbered in one durable commit.
    let sell = |n: u32| -> Result<pdc_core::Receipt, Box<dyn std::error::Error>> {
        let first =
            pollster::block_on(engine.product(u64::from(1 + n * 37 % 5_000)))?.ok_or("product")?;
        let mut sale = Sale::new(login_id()).add(&first, 1 + n % 3);
        if n % 2 == 0 {
            sale = sale.add(&product, 1);
        }
        let method = if n % 3 == 0 {
            PaymentMethod::Cash
        } else {
            PaymentMethod::Card
        };
        Ok(engine.sell(&sale.pay_rest(method))?)
    };
    for n in 0..20 {
        let receipt = sell(n)?;
        if n == 0 {
            println!(
                "first receipt {} for {} cents",
                receipt.number, receipt.total_cents
            );
        }
    }
    pollster::block_on(engine.sync_once())?;
    println!(
        "online: 20 sales recorded and synced, {} pending",
        engine.pending()
    );

    engine.set_online(false);
    for n in 20..50 {
        sell(n)?;
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
    let sell = |n: u32| -> Result<pdc_core::Receipt, Box<dyn std::error::Error>> {
        let p = pollster::block_on(engine.product(u64::from(1 + n)))?.ok_or("product")?;
        Ok(engine.sell(
            &Sale::new(login_id())
                .add(&p, 1)
                .pay_rest(PaymentMethod::Cash),
        )?)
    };
    for n in 50..60 {
        let receipt = sell(n)?;
        if n == 59 {
            println!(
                "last receipt {} (numbering survived the crash)",
                receipt.number
            );
        }
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
