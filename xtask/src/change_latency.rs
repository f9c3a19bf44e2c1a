//! `cargo xtask change-latency [--postgres URL] [--terminals N]`: how long
//! until a store's online terminals hold a price change, with N (default
//! 1,000) terminals of 10 stores connected to one `pdc serve` on
//! PostgreSQL, each waiting on the change stream (`GET /v1/changes`) and
//! pulling when woken. Five rounds, one store each: `pdc dataset import
//! products --store S` changes one price; the time is from the import's
//! commit (the CLI's exit) to each of that store's terminals having
//! applied the pull. Also counts terminals of other stores that were woken
//! (the view's change filter should make it zero).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pdc_codec::Codec;
use pdc_core::{HttpOptions, HttpTransport};
use pdc_sync::{LocalDataset, PullRequest, PullResponse, SyncTransport};

use crate::server_load::{pdc, serve};
use crate::{cargo, run};

const STORES: usize = 10;

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(pdc())
        .args(args)
        .output()
        .map_err(|e| format!("pdc {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pdc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn pull(
    t: &HttpTransport,
    id: &pdc_codec::TerminalId,
    local: &mut LocalDataset,
) -> Result<(), String> {
    let codec = Codec::new();
    let req = PullRequest {
        schema: pdc_sync::BASE_SCHEMA,
        terminal_id: id.clone(),
        datasets: vec![local.state()],
    };
    let body = codec.encode(&req).map_err(|e| e.to_string())?;
    let answer = t.pull(body).await.map_err(|e| e.to_string())?;
    let resp: PullResponse = codec.decode(&answer).map_err(|e| e.to_string())?;
    for d in &resp.datasets {
        local.apply(d).map_err(|e| e.to_string())?;
    }
    Ok(())
}

type Events = Arc<Mutex<Vec<(usize, Instant)>>>;

async fn terminal(
    url: String,
    id: String,
    token: String,
    store: usize,
    events: Events,
    ready: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<(), String> {
    let t = HttpTransport::new(
        &url,
        &token,
        HttpOptions {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        },
    )
    .map_err(|e| e.to_string())?;
    let tid: pdc_codec::TerminalId = id.parse().map_err(|e| format!("{e}"))?;
    let mut local = LocalDataset::new("products");
    pull(&t, &tid, &mut local).await?;
    ready.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    loop {
        let known = vec![("products".to_owned(), local.version.unwrap_or(0))];
        match t.wait_changes(known, Duration::from_secs(25)).await {
            Ok(Some(changed)) if !changed.is_empty() => {
                pull(&t, &tid, &mut local).await?;
                if let Ok(mut e) = events.lock() {
                    e.push((store, Instant::now()));
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err("the server has no change stream".into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn run_report(args: &[String]) -> Result<(), String> {
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let base = arg("--postgres")
        .or_else(|| std::env::var("PDC_TEST_DATABASE_URL").ok())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let n: usize = arg("--terminals").map_or(Ok(1_000), |v| {
        v.parse().map_err(|e| format!("--terminals: {e}"))
    })?;
    run(cargo().args(["build", "--release", "-p", "pdc-cli"]))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let schema = format!("pdc_change_latency_{}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    // A fresh schema (the server creates its tables in it).
    let config = dir.path().join("pdc.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = {url:?}\n[limits]\nmax_connections = {}\nrate_per_sec = 200\nburst = 400\nrequest_timeout_ms = 30000\n",
            4 * n + 64
        ),
    )
    .map_err(|e| e.to_string())?;
    let cfg = config.to_string_lossy().into_owned();
    psql(
        &base,
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
    )?;
    // Terminals, 10 stores.
    let mut tokens = Vec::new();
    for s in 0..STORES {
        let file = dir.path().join(format!("tokens-{s}"));
        let per = n / STORES + usize::from(s < n % STORES);
        if per == 0 {
            continue;
        }
        sh(&[
            "terminal",
            "add",
            &format!("s{s}"),
            "--count",
            &per.to_string(),
            "--store",
            &format!("s{s}"),
            "--tokens-file",
            &file.to_string_lossy(),
            "--config",
            &cfg,
        ])?;
        let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some(id), Some(tok)) = (w.next(), w.next()) {
                tokens.push((id.to_owned(), tok.to_owned(), s));
            }
        }
    }
    let catalog = pdc_datasets::catalog(5_000, 3);
    let chain = dir.path().join("chain.json");
    std::fs::write(
        &chain,
        serde_json::to_vec(&catalog).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    sh(&[
        "dataset",
        "import",
        "products",
        &chain.to_string_lossy(),
        "--config",
        &cfg,
    ])?;

    // `serve` adds the rate and burst of the config file's limits.
    let (_serve, server) = serve(&["--config".to_owned(), cfg.clone()])?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let events: Events = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let per_store: BTreeMap<usize, usize> = tokens.iter().fold(BTreeMap::new(), |mut m, t| {
        *m.entry(t.2).or_default() += 1;
        m
    });
    let tasks: Vec<_> = tokens
        .iter()
        .map(|(id, tok, s)| {
            rt.spawn(terminal(
                server.clone(),
                id.clone(),
                tok.clone(),
                *s,
                Arc::clone(&events),
                Arc::clone(&ready),
            ))
        })
        .collect();
    let started = Instant::now();
    while ready.load(std::sync::atomic::Ordering::SeqCst) < tokens.len() {
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "only {} of {} terminals pulled in 120 s",
                ready.load(std::sync::atomic::Ordering::SeqCst),
                tokens.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{} terminals of {} stores pulled 5,000 products in {:.1} s and wait on the change stream",
        tokens.len(),
        per_store.len(),
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let mut all = Vec::new();
    let mut others = 0usize;
    for (round, product) in catalog.iter().take(5).enumerate() {
        let store = round % STORES;
        let mut p = product.clone();
        p.price_cents += 11 + round as i64;
        let file = dir.path().join(format!("store-{round}.json"));
        let mut f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
        f.write_all(&serde_json::to_vec(&[p]).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        events.lock().map_err(|e| e.to_string())?.clear();
        sh(&[
            "dataset",
            "import",
            "products",
            &file.to_string_lossy(),
            "--store",
            &format!("s{store}"),
            "--config",
            &cfg,
        ])?;
        let committed = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let ev = events.lock().map_err(|e| e.to_string())?.clone();
        let mut ms: Vec<f64> = ev
            .iter()
            .filter(|(s, _)| *s == store)
            .map(|(_, at)| at.saturating_duration_since(committed).as_secs_f64() * 1e3)
            .collect();
        ms.sort_by(f64::total_cmp);
        let woken_others = ev.iter().filter(|(s, _)| *s != store).count();
        others += woken_others;
        println!(
            "round {round}: store s{store}: {} of {} terminals hold the change; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; terminals of other stores woken: {woken_others}",
            ms.len(),
            per_store.get(&store).copied().unwrap_or(0),
            pct(&ms, 0.5),
            pct(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN)
        );
        all.extend(ms);
    }
    // A chain-wide change: every terminal is woken and pulls at once.
    let mut changed = catalog.clone();
    changed[42].price_cents += 7;
    std::fs::write(
        &chain,
        serde_json::to_vec(&changed).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    events.lock().map_err(|e| e.to_string())?.clear();
    sh(&[
        "dataset",
        "import",
        "products",
        &chain.to_string_lossy(),
        "--config",
        &cfg,
    ])?;
    let committed = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let mut chain_ms: Vec<f64> = events
        .lock()
        .map_err(|e| e.to_string())?
        .iter()
        .map(|(_, at)| at.saturating_duration_since(committed).as_secs_f64() * 1e3)
        .collect();
    chain_ms.sort_by(f64::total_cmp);
    println!(
        "chain-wide change: {} of {} terminals hold it; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        chain_ms.len(),
        tokens.len(),
        pct(&chain_ms, 0.5),
        pct(&chain_ms, 0.99),
        chain_ms.last().copied().unwrap_or(f64::NAN)
    );
    all.sort_by(f64::total_cmp);
    println!(
        "all store rounds: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 <= 1000 ms); other stores' terminals woken: {others}",
        all.len(),
        pct(&all, 0.5),
        pct(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN)
    );
    for t in tasks {
        t.abort();
    }
    drop(rt);
    psql(&base, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))?;
    Ok(())
}

fn psql(url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args([url, "-q", "-c", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("psql: {}", String::from_utf8_lossy(&out.stderr)))
    }
}
