//! Your first till, against a real `pdc serve` (see the README):
//! `PDC_URL=http://127.0.0.1:8080 PDC_TOKEN=<from pdc terminal add> cargo run --example first_till -p pdc-engine`
use std::{sync::Arc, time::Duration};

use pdc_clock::SystemClock;
use pdc_codec::PaymentMethod;
use pdc_core::{DriverConfig, EngineConfig, HttpOptions, HttpTransport, OfflineEngine, Sale};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("PDC_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let transport = HttpTransport::new(&url, &std::env::var("PDC_TOKEN")?, HttpOptions::default())?;
    let config = EngineConfig::new("till-1".parse()?, "till-1.pdc");
    let engine = Arc::new(OfflineEngine::open(config, transport, SystemClock::new())?);
    let driver = engine.start(DriverConfig::default()); // probes, pulls and syncs in the background

    // Products and cashiers come from the server and stay on the till:
    // offline, the stored copy serves the login and the lookup.
    let _ = engine.pull().await;
    let cashier = engine.login_cashier("alice", "582917")?.cashier_id;
    let coffee = engine.product_by_barcode("4006381333900").await?;
    let (cashier, coffee) = (cashier.ok_or("no cashier")?, coffee.ok_or("no barcode")?);

    // A sale: checked with the server's rules, durable and numbered on return.
    let sale = Sale::new(cashier)
        .add(&coffee, 2)
        .pay_rest(PaymentMethod::Card);
    let receipt = engine.sell(&sale)?;
    println!("receipt {}: {} cents", receipt.number, receipt.total_cents);

    // The status a UI shows; then wait (bounded) for the server to have it.
    let status = driver.status().borrow().clone();
    println!("{} pending, {:?}", status.pending, status.connection);
    match driver.wait_synced(Duration::from_secs(10)).await {
        Ok(_) => println!("synced"),
        Err(e) => println!("still offline, kept on the till: {e}"),
    }
    driver.shutdown().await?;
    Ok(())
}
