//! `cargo xtask engine-figures [--pending N]`: engine open time with
//! 10,000 (or N) pending sales and a 5,000-product catalogue, product
//! lookups (memory hit, miss served from redb), and resident memory.

use std::time::{Duration, Instant};

use pdc_clock::SystemClock;
use pdc_codec::Codec;
use pdc_core::{EngineConfig, OfflineEngine};
use pdc_store::{NewItem, Store};
use pdc_sync::{DatasetState, LoopbackTransport, Priority, ServerDataset, StreamKey};

/// A field (kB) of this process's `/proc/self/status`, e.g. `VmRSS:`.
pub(crate) fn rss_kib(field: &str) -> u64 {
    pdc_test::proc_status_kib(field).unwrap_or(0)
}

/// A store at `path` with `pending` orders in the outbox and the
/// 5,000-product catalogue applied as the server would send it.
fn build_store(path: &std::path::Path, pending: usize) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let codec = Codec::new();
    // `--streams N`: sales spread over N ordering streams (default: one
    // stream per order).
    let streams = std::env::var("PDC_FIGURES_STREAMS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0);
    let store = Store::open(path).map_err(|x| e(&x))?;
    let items = pdc_datasets::orders(pending, 3)
        .iter()
        .map(|o| {
            Ok(NewItem {
                stream: StreamKey(streams.map_or(o.id, |n| o.id % n)),
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
    let mut c = EngineConfig::new(till_1()?, &path);
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
    let terminal = till_1()?;
    let config = || {
        let mut c = EngineConfig::new(terminal.clone(), &path);
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
    let mut sales = order_items(22_000, 11).into_iter();
    let mut lat = Vec::with_capacity(2_000);
    for sale in sales.by_ref().take(2_000) {
        let t = Instant::now();
        engine.record(sale).map_err(|x| e(&x))?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let t = Instant::now();
    let mut grouped = 0usize;
    loop {
        let chunk: Vec<NewItem> = sales.by_ref().take(100).collect();
        if chunk.is_empty() {
            break;
        }
        grouped += engine.record_many(chunk).map_err(|x| e(&x))?.len();
    }
    let group_rate = grouped as f64 / t.elapsed().as_secs_f64();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "durable record through the engine: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs (2,000 single sales); record_many of 100: {group_rate:.0} sales/s ({grouped} sales)",
        us(lat[1_000]),
        us(lat[1_980]),
        us(lat[1_999])
    );
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

/// `engine-figures --http [--pending N]`: a till with N pending sales
/// (default 10,000) syncs them to a real `pdc serve` (embedded ledger)
/// over loopback HTTP: time, batches, bytes each way.
pub fn http(pending: usize) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    crate::run(crate::cargo().current_dir(crate::root()).args([
        "build",
        "--release",
        "-p",
        "pdc-cli",
    ]))?;
    let dir = std::env::temp_dir().join(format!("pdc-engine-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|x| e(&x))?;
    let ledger = vec![
        "--ledger".to_owned(),
        dir.join("ledger.redb").display().to_string(),
    ];
    let tokens = dir.join("tokens.txt");
    let status = std::process::Command::new(crate::server_load::pdc())
        .args(["terminal", "add", "till-1", "--tokens-file"])
        .arg(&tokens)
        .args(&ledger)
        .status()
        .map_err(|x| e(&x))?;
    if !status.success() {
        return Err("pdc terminal add failed".into());
    }
    let token = std::fs::read_to_string(&tokens)
        .map_err(|x| e(&x))?
        .split_whitespace()
        .nth(1)
        .ok_or("no token")?
        .to_owned();
    let (server, url) = crate::server_load::serve(&ledger)?;
    let path = dir.join("till.pdc");
    build_store(&path, pending)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|x| e(&x))?;
    let transport = pdc_core::HttpTransport::new(&url, &token, pdc_core::HttpOptions::default())
        .map_err(|x| e(&x))?;
    let mut c = EngineConfig::new(till_1()?, &path);
    c.datasets = vec![];
    c.sync.linger = Duration::ZERO;
    let engine = OfflineEngine::open(c, transport, SystemClock::new()).map_err(|x| e(&x))?;
    let t = Instant::now();
    let mut passes = 0u32;
    rt.block_on(async {
        while engine.pending() > 0 && t.elapsed() < Duration::from_secs(300) {
            passes += 1;
            let _ = engine.sync_once().await;
            if let Some(at) = engine.next_wakeup() {
                let wait = at.saturating_duration_since(pdc_clock::Clock::now(&SystemClock::new()));
                tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
            }
        }
    });
    let took = t.elapsed();
    let h = engine.health();
    let dead = engine.store().dead_letters().map_err(|x| e(&x))?.len();
    println!(
        "sync of {pending} pending sales over loopback HTTP to pdc serve (embedded ledger): {:.2} s ({:.0} sales/s), {} left, {dead} dead-lettered, {passes} passes; {:.1} KB up ({:.1} B/sale), {:.1} KB down",
        took.as_secs_f64(),
        pending as f64 / took.as_secs_f64(),
        engine.pending(),
        h.bytes_up as f64 / 1000.0,
        h.bytes_up as f64 / pending as f64,
        h.bytes_down as f64 / 1000.0,
    );
    drop(engine);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// `n` of pdc-datasets' orders (seed `seed`) as outbox items, one stream
/// per order.
fn order_items(n: usize, seed: u64) -> Vec<NewItem> {
    let codec = Codec::new();
    pdc_datasets::orders(n, seed)
        .iter()
        .map(|o| NewItem {
            stream: StreamKey(o.id),
            priority: Priority::High,
            kind: 2,
            created_at_ms: o.created_at_ms,
            payload: codec.encode(o).unwrap_or_default(),
        })
        .collect()
}

/// `engine-figures --encryption`: durable `record` latency with and
/// without encryption at rest, interleaved sale by sale on two engines
/// (two files in one directory), so both see the same disk moments. Two
/// shapes: pdc-datasets' orders (about 100 B encoded) and opaque 2 KiB
/// items.
pub fn encryption() -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let dir = std::env::temp_dir().join(format!("pdc-encryption-figures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|x| e(&x))?;
    let terminal = till_1()?;
    let orders = order_items(3_000, 17);
    let opaque: Vec<NewItem> = (0..3_000u64)
        .map(|i| NewItem {
            stream: StreamKey(i % 16),
            priority: Priority::Normal,
            kind: 100,
            created_at_ms: i,
            payload: (0..2048u64).map(|j| (i * 31 + j * 7) as u8).collect(),
        })
        .collect();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (shape, sales) in [
        ("orders (pdc_datasets::orders)", orders),
        ("opaque 2 KiB items", opaque),
    ] {
        let open = |name: &str, keys: Vec<pdc_store::StoreKey>| {
            let mut c = EngineConfig::new(terminal.clone(), dir.join(name));
            c.datasets = Vec::new();
            c.store_keys = keys;
            OfflineEngine::open(c, LoopbackTransport::new(), SystemClock::new())
        };
        let tag = shape.len();
        let plain = open(&format!("plain-{tag}.pdc"), Vec::new()).map_err(|x| e(&x))?;
        let sealed = open(
            &format!("sealed-{tag}.pdc"),
            vec![pdc_store::StoreKey::generate().map_err(|x| e(&x))?],
        )
        .map_err(|x| e(&x))?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, sale) in sales.into_iter().enumerate() {
            // Alternate which goes first, so neither always follows the other.
            let order: [(&_, &mut Vec<Duration>); 2] = if i % 2 == 0 {
                [(&plain, &mut a), (&sealed, &mut b)]
            } else {
                [(&sealed, &mut b), (&plain, &mut a)]
            };
            for (engine, lat) in order {
                let t = Instant::now();
                engine.record(sale.clone()).map_err(|x| e(&x))?;
                lat.push(t.elapsed());
            }
        }
        // The first 500 warm the files up.
        let stats = |v: &mut Vec<Duration>| {
            let mut v = v.split_off(500);
            v.sort();
            (us(v[v.len() / 2]), us(v[v.len() * 99 / 100]))
        };
        let ((p50a, p99a), (p50b, p99b)) = (stats(&mut a), stats(&mut b));
        println!(
            "{shape}, 2,500 sales each, interleaved: plain p50 {p50a:.0} µs p99 {p99a:.0} µs; encrypted p50 {p50b:.0} µs p99 {p99b:.0} µs; ratio p50 {:.3}×, p99 {:.3}×",
            p50b / p50a,
            p99b / p99a
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The figures' terminal id.
fn till_1() -> Result<pdc_core::TerminalId, String> {
    "till-1"
        .parse()
        .map_err(|e: pdc_codec::CodecError| e.to_string())
}
