//! `cargo xtask store-latency`: p50/p99 of durable single-sale appends and
//! the throughput of group commits of 100, on this machine's disk.

use std::time::Instant;

use pdc_monitor::Sketch;
use pdc_store::{NewItem, Store};
use pdc_sync::{Priority, StreamKey};

fn sale(i: u64) -> NewItem {
    NewItem {
        stream: StreamKey(i),
        priority: Priority::High,
        kind: 2,
        created_at_ms: 1_704_067_200_000 + i,
        payload: vec![(i % 251) as u8; 120],
    }
}

pub fn run() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("pdc-store-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("till.pdc");
    let store = Store::open(&path).map_err(|e| e.to_string())?;
    let mut sketch = Sketch::new();
    let n = 2_000u64;
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        store.append(sale(i)).map_err(|e| e.to_string())?;
        sketch.record(t.elapsed().as_secs_f64() * 1e6);
    }
    let single_rate = n as f64 / start.elapsed().as_secs_f64();
    let groups = 200u64;
    let start = Instant::now();
    for g in 0..groups {
        store
            .append_many((0..100).map(|j| sale(n + g * 100 + j)).collect())
            .map_err(|e| e.to_string())?;
    }
    let group_rate = (groups * 100) as f64 / start.elapsed().as_secs_f64();
    let s = sketch.summary();
    println!("durable append, one sale per commit ({n} sales): p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs, {:.0} sales/s", s.p50, s.p99, s.max, single_rate);
    println!(
        "group commit of 100 ({} sales): {:.0} sales/s",
        groups * 100,
        group_rate
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
