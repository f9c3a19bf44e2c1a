//! `pdc inspect` and `pdc requeue`.

use std::collections::BTreeMap;
use std::path::Path;

use pdc_store::Store;
use pdc_sync::Priority;
use serde_json::json;

use crate::CliError;

fn open(path: &Path) -> Result<Store, CliError> {
    if !path.exists() {
        return Err(CliError::Msg(format!("{}: no such store", path.display())));
    }
    // An encrypted store's key comes from the environment, never from
    // the command line (which shells keep in their history).
    let keys = match std::env::var("PDC_STORE_KEY") {
        Ok(hex) => vec![pdc_store::StoreKey::from_hex(&hex)?],
        Err(_) => Vec::new(),
    };
    Ok(Store::open_with_options(
        path,
        pdc_store::StoreOptions {
            cache_bytes: None,
            keys,
        },
    )?)
}

/// Prints what a terminal store holds. Nothing is written.
pub fn inspect(path: &Path, as_json: bool) -> Result<(), CliError> {
    let store = open(path)?;
    let (pending, quarantined) = store.pending()?;
    let mut by_priority: BTreeMap<&str, usize> = BTreeMap::new();
    for p in Priority::ALL_DESC {
        by_priority.insert(priority_name(p), 0);
    }
    for i in &pending {
        *by_priority.entry(priority_name(i.priority)).or_default() += 1;
    }
    let dead = store.dead_letters()?;
    let mut datasets = Vec::new();
    for name in pdc_server::DEFAULT_DATASETS {
        let d = store.dataset(name)?;
        let local = store.dataset_local_changes(name)?.len();
        datasets.push(
            json!({"dataset": name, "version": d.version, "records": d.records.len(),
                             "local_changes": local}),
        );
    }
    let lockouts: Vec<_> = store
        .lockouts()?
        .into_iter()
        .map(|(k, s)| {
            json!({"key": format!("{k:?}"), "failures": s.failures,
                             "last_failure_ms": s.last_failure_ms})
        })
        .collect();
    let report = json!({
        "store": path.display().to_string(),
        "next_local_id": store.next_local_id()?,
        "pending": pending.len(),
        "pending_by_priority": by_priority,
        "oldest_pending": pending.first().map(|i| json!({"local_id": i.local_id, "created_at_ms": i.created_at_ms})),
        "quarantined": quarantined.len(),
        "dead_letters": dead.iter().map(|d| json!({"local_id": d.item.local_id, "kind": d.item.kind,
            "code": d.code, "message": d.message, "at_ms": d.at_ms})).collect::<Vec<_>>(),
        "datasets": datasets,
        "users": store.user_count()?,
        "lockouts": lockouts,
        "cache": "the engine's reference cache is in memory; datasets above are its backing store",
    });
    if as_json {
        outln!("{report:#}");
        return Ok(());
    }
    outln!("store          {}", path.display());
    outln!("next local id  {}", report["next_local_id"]);
    outln!(
        "pending        {} ({})",
        pending.len(),
        by_priority
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!("quarantined    {}", quarantined.len());
    outln!("dead letters   {}", dead.len());
    for d in &dead {
        outln!(
            "  #{:<8} kind {:<4} {}: {}",
            d.item.local_id,
            d.item.kind,
            d.code,
            d.message
        );
    }
    for d in report["datasets"].as_array().into_iter().flatten() {
        outln!(
            "dataset        {:<9} version {} records {} local changes {}",
            d["dataset"].as_str().unwrap_or(""),
            d["version"],
            d["records"],
            d["local_changes"]
        );
    }
    outln!("users          {}", report["users"]);
    outln!("lockouts       {}", lockouts.len());
    for l in &lockouts {
        outln!(
            "  {} failures {}",
            l["key"].as_str().unwrap_or(""),
            l["failures"]
        );
    }
    Ok(())
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Critical => "critical",
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

/// Moves dead letters back to the outbox.
pub fn requeue(path: &Path, ids: &[u64]) -> Result<(), CliError> {
    let store = open(path)?;
    for &id in ids {
        let item = store.requeue_dead_letter(id)?;
        outln!("requeued {id} as {}", item.local_id);
    }
    Ok(())
}
