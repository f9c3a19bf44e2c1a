//! `cargo xtask engine-figures [--pending N]`: engine open time with
//! 10,000 (or N) pending sales and a 5,000-product catalogue, product
//! lookups (memory hit, miss served from redb), and resident memory.

use std::time::{Duration, Instant};

use pdc_clock::SystemClock;
use pdc_codec::Codec;
use pdc_core::{EngineConfig, OfflineEngine};
use pdc_store::{NewItem, Store};
use pdc_sync::{DatasetState, LoopbackTransport, Priority, ServerDataset, StreamKey};

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A store at `path` with `pending` orders in the outbox and the
/// 5,000-product catalogue applied as the server would send it.
fn build_store(path: &std::path::Path, pending: usize) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let codec = Codec::new();
    let store = Store::open(path).map_err(|x| e(&x))?;
    let items = pdc_datasets::orders(pending, 3)
        .iter()
        .map(|o| {
            Ok(NewItem {
                stream: StreamKey(o.id),
                priority: Priority::High,
                kind: 2,
                created_at_ms: o.created_at_ms,
                payload: codec.encode(o)?,
            })
        })
        .collect::<Result<Vec<_>, pdc_codec::CodecError>>()
        .map_err(|x| e(&x))?;
    store.append_many(items).map_err(|x| e(&x))?;
    let mut catalogue = ServerDataset::new("products", 10);
    for p in pdc_datasets::catalog(5_000, 1) {
        catalogue.upsert(u64::from(p.id), codec.encode(&p).map_err(|x| e(&x))?);
    }
    let snap = catalogue.answer(&DatasetState {
        dataset: "products".into(),
        version: None,
        buckets: vec![],
    });
    store.apply_dataset(&snap).map_err(|x| e(&x))
}

/// Resident memory of one engine with a 5,000-product catalogue (all
/// looked up, so cached) and `pending` sales (default 1,000), in a fresh
/// process.
pub fn rss(pending: usize) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let dir = std::env::temp_dir().join(format!("pdc-engine-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|x| e(&x))?;
    let path = dir.join("till.pdc");
    // The store is built by a child process, so that building it leaves
    // nothing in this one's memory.
    let status = std::process::Command::new(std::env::current_exe().map_err(|x| e(&x))?)
        .args(["engine-figures", "--build-store", &pending.to_string()])
        .arg(&path)
        .status()
        .map_err(|x| e(&x))?;
    if !status.success() {
        return Err(format!("building the store failed: {status}"));
    }
    let baseline = rss_kib("VmRSS:");
    let mut c = EngineConfig::new("till-1", &path);
    c.datasets = vec!["products".into()];
    let engine =
        OfflineEngine::open(c, LoopbackTransport::new(), SystemClock::new()).map_err(|x| e(&x))?;
    for id in 1..=5_000u64 {
        pollster::block_on(engine.reference("products", id)).map_err(|x| e(&x))?;
    }
    let rss = rss_kib("VmRSS:");
    println!(
        "engine with 5,000 cached products and {} pending sales: resident {:.1} MB (process baseline {:.1} MB, engine share {:.1} MB; peak {:.1} MB)",
        engine.pending(),
        rss as f64 / 1024.0,
        baseline as f64 / 1024.0,
        (rss.saturating_sub(baseline)) as f64 / 1024.0,
        rss_kib("VmHWM:") as f64 / 1024.0
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `engine-figures --build-store N PATH`: the store of [`rss`], built in
/// its own process.
pub fn build_store_at(pending: usize, path: &std::path::Path) -> Result<(), String> {
    build_store(path, pending)
}

pub fn run(pending: usize) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let dir = std::env::temp_dir().join(format!("pdc-engine-figures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|x| e(&x))?;
    let path = dir.join("till.pdc");
    build_store(&path, pending)?;
    let rss_before = rss_kib("VmRSS:");
    let config = || {
        let mut c = EngineConfig::new("till-1", &path);
        c.datasets = vec!["products".into()];
        c
    };
    let mut opens = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let engine = OfflineEngine::open(config(), LoopbackTransport::new(), SystemClock::new())
            .map_err(|x| e(&x))?;
        opens.push(t.elapsed());
        assert_eq!(engine.pending(), pending);
    }
    opens.sort();
    let engine = OfflineEngine::open(config(), LoopbackTransport::new(), SystemClock::new())
        .map_err(|x| e(&x))?;
    let lookup = |id: u64| pollster::block_on(engine.reference("products", id));
    let t = Instant::now();
    for id in 1..=5_000u64 {
        lookup(id).map_err(|x| e(&x))?.ok_or("missing product")?;
    }
    let miss = t.elapsed() / 5_000;
    let rounds = 20u32;
    let t = Instant::now();
    for _ in 0..rounds {
        for id in 1..=5_000u64 {
            lookup(id).map_err(|x| e(&x))?;
        }
    }
    let hit = t.elapsed() / (5_000 * rounds);
    let rss = rss_kib("VmRSS:");
    let hwm = rss_kib("VmHWM:");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("engine open with {pending} pending sales and a 5,000-product catalogue: median {:.1} ms (min {:.1}, max {:.1}; includes one Argon2id dummy hash)", ms(opens[2]), ms(opens[0]), ms(opens[4]));
    println!(
        "product lookup, memory hit: {} ns; miss served from redb: {:.1} µs",
        hit.as_nanos(),
        miss.as_secs_f64() * 1e6
    );
    println!(
        "resident memory: {:.1} MB now (peak {:.1} MB; {:.1} MB before the engines were opened)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
