//! `pdc terminal` and `pdc dataset`.

use std::io::Write;
use std::sync::Arc;

use pdc_server::{DatasetHub, Ledger, PosApply, ServerConfig, DEFAULT_DATASETS};
use pdc_sync::{Scope, View};

use crate::{CliError, DatasetAction, LedgerAction, LedgerArgs, TerminalAction};

/// The server configuration from the file and the flags.
pub fn config(args: &LedgerArgs) -> Result<ServerConfig, CliError> {
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(l) = &args.ledger {
        config.ledger_path = l.clone();
    }
    if let Some(u) = &args.database_url {
        config.database_url = Some(u.clone());
    }
    Ok(config)
}

async fn ledger(args: &LedgerArgs) -> Result<Arc<dyn Ledger>, CliError> {
    Ok(config(args)?.open_ledger(Arc::new(PosApply::new())).await?)
}

/// `pdc terminal …`.
pub async fn terminal(args: &LedgerArgs, action: TerminalAction) -> Result<(), CliError> {
    let ledger = ledger(args).await?;
    match action {
        TerminalAction::Add {
            id,
            count,
            tokens_file,
            store,
            region,
        } => {
            let view = View::new(region.as_deref(), store.as_deref())
                .map_err(|e| CliError::Msg(e.to_string()))?;
            let ids: Vec<String> = match count {
                None => vec![id],
                Some(n) => (1..=n).map(|i| format!("{id}-{i:04}")).collect(),
            };
            let mut lines = String::new();
            for id in &ids {
                let token = pdc_server::add_terminal(&*ledger, id).await?;
                if view != View::chain() {
                    ledger.set_terminal_view(id, &view).await?;
                }
                lines.push_str(&format!("{id} {token}\n"));
            }
            match tokens_file {
                Some(path) => {
                    let mut f = open_private(&path)?;
                    f.write_all(lines.as_bytes())?;
                    eprintln!(
                        "{} terminal(s) added; tokens in {}",
                        ids.len(),
                        path.display()
                    );
                }
                None => {
                    use std::io::Write as _;
                    write!(std::io::stdout(), "{lines}")?;
                }
            }
        }
        TerminalAction::Place { id, store, region } => {
            let view = View::new(region.as_deref(), store.as_deref())
                .map_err(|e| CliError::Msg(e.to_string()))?;
            if !ledger.set_terminal_view(&id, &view).await? {
                return Err(CliError::Msg(format!("no terminal {id:?}")));
            }
            outln!("{id} pulls the view of {view}");
        }
        TerminalAction::List => {
            for t in ledger.terminals().await? {
                outln!(
                    "{}\tadded {}\t{}\t{}",
                    t.terminal_id,
                    t.created_at_ms,
                    if t.revoked { "revoked" } else { "active" },
                    t.view
                );
            }
        }
        TerminalAction::Show { id } => {
            let t = ledger
                .terminals()
                .await?
                .into_iter()
                .find(|t| t.terminal_id == id)
                .ok_or_else(|| CliError::Msg(format!("no terminal {id:?}")))?;
            outln!("terminal\t{}", t.terminal_id);
            outln!("added\t{}", t.created_at_ms);
            outln!("status\t{}", if t.revoked { "revoked" } else { "active" });
            outln!("view\t{}", t.view);
            let stores = ledger.terminal_stores(&id).await?;
            outln!("stores\t{}", stores.len());
            for s in stores {
                let legacy = if s.store_id == pdc_sync::StoreId::LEGACY {
                    " (legacy: created before store ids)"
                } else {
                    ""
                };
                outln!(
                    "store\t{}\tfirst seen {}{legacy}",
                    s.store_id,
                    s.first_seen_ms
                );
            }
        }
        TerminalAction::Revoke { id } => {
            if !ledger.revoke_terminal(&id).await? {
                return Err(CliError::Msg(format!("no terminal {id:?}")));
            }
            outln!("revoked {id}");
        }
        TerminalAction::Rotate { id } => match pdc_server::rotate_terminal(&*ledger, &id).await? {
            Some(token) => outln!("{id} {token}"),
            None => return Err(CliError::Msg(format!("no terminal {id:?}"))),
        },
    }
    Ok(())
}

fn open_private(path: &std::path::Path) -> Result<std::fs::File, CliError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    Ok(o.open(path)?)
}

/// `pdc dataset …`.
/// `pdc ledger show`.
pub async fn ledger_cmd(args: &LedgerArgs, action: LedgerAction) -> Result<(), CliError> {
    let ledger = ledger(args).await?;
    match action {
        LedgerAction::Show {
            terminal,
            limit,
            json,
        } => {
            let known = ledger
                .terminals()
                .await?
                .into_iter()
                .find(|t| t.terminal_id == terminal);
            let Some(info) = known else {
                return Err(CliError::Msg(format!("no terminal {terminal:?}")));
            };
            let items = ledger.terminal_items(&terminal, limit).await?;
            let orders = ledger.terminal_orders(&terminal, limit).await?;
            let row = |i: &pdc_server::LedgerItem| match &i.result {
                pdc_sync::ItemResult::Applied { server_seq } => {
                    serde_json::json!({"store": i.store.to_string(), "local_id": i.local_id,
                        "result": "applied", "server_seq": server_seq, "recorded_at_ms": i.recorded_at_ms})
                }
                pdc_sync::ItemResult::Rejected { code, message } => {
                    serde_json::json!({"store": i.store.to_string(), "local_id": i.local_id,
                        "result": "rejected", "code": code, "message": message,
                        "recorded_at_ms": i.recorded_at_ms})
                }
                other => serde_json::json!({"store": i.store.to_string(), "local_id": i.local_id,
                    "result": format!("{other:?}"), "recorded_at_ms": i.recorded_at_ms}),
            };
            if json {
                let v = serde_json::json!({
                    "terminal": terminal, "revoked": info.revoked,
                    "items": items.iter().map(row).collect::<Vec<_>>(),
                    "orders": orders,
                });
                outln!("{v}");
            } else {
                outln!(
                    "terminal\t{terminal}\t{}\t{} item(s) shown",
                    if info.revoked { "revoked" } else { "active" },
                    items.len()
                );
                for i in &items {
                    match &i.result {
                        pdc_sync::ItemResult::Applied { server_seq } => outln!(
                            "{}\t{}\tapplied seq {server_seq}\t{}",
                            i.store,
                            i.local_id,
                            i.recorded_at_ms
                        ),
                        pdc_sync::ItemResult::Rejected { code, message } => outln!(
                            "{}\t{}\trejected {code}: {message}\t{}",
                            i.store,
                            i.local_id,
                            i.recorded_at_ms
                        ),
                        other => outln!(
                            "{}\t{}\t{other:?}\t{}",
                            i.store,
                            i.local_id,
                            i.recorded_at_ms
                        ),
                    }
                }
                outln!("orders\t{} shown", orders.len());
                for o in &orders {
                    outln!(
                        "order\t{}\tseq {}\t{}\tcashier {}\t{} line(s)\t{} cents\t{}",
                        o.order_id,
                        o.server_seq,
                        o.receipt.as_deref().unwrap_or("-"),
                        o.cashier_id,
                        o.lines,
                        o.total_cents,
                        o.created_at_ms
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn dataset(args: &LedgerArgs, action: DatasetAction) -> Result<(), CliError> {
    let ledger = ledger(args).await?;
    let hub = DatasetHub::load(ledger, &DEFAULT_DATASETS, 10_000).await?;
    match action {
        DatasetAction::Import {
            name,
            file,
            store,
            region,
        } => {
            let scope = match (store, region) {
                (Some(s), _) => Scope::store(&s),
                (None, Some(r)) => Scope::region(&r),
                (None, None) => Ok(Scope::Chain),
            }
            .map_err(|e| CliError::Msg(e.to_string()))?;
            let json = std::fs::read(&file)
                .map_err(|e| CliError::Msg(format!("{}: {e}", file.display())))?;
            let entries = pdc_server::entries_from_json(
                &name,
                &scope,
                &json,
                pdc_auth::KdfParams::default(),
            )?;
            let hidden = entries
                .iter()
                .filter(|(_, e)| matches!(e, pdc_sync::Entry::Hidden))
                .count();
            let n = entries.len() - hidden;
            let v = hub.replace_scoped(&name, &scope, entries).await?;
            if scope == Scope::Chain {
                outln!("{name}: {n} records, version {v}");
            } else {
                outln!("{name} ({scope}): {n} records, {hidden} hidden, version {v}");
            }
        }
        DatasetAction::Show => {
            for name in DEFAULT_DATASETS {
                let Some(ids) = hub.scoped_ids(name).await else {
                    outln!("{name}\tversion 0\t0 records");
                    continue;
                };
                outln!(
                    "{name}\tversion {}\t{} records",
                    ids.version,
                    ids.chain.len()
                );
                let mut layers: Vec<_> = ids.layers.iter().collect();
                layers.sort_by(|a, b| a.0.cmp(b.0));
                for (scope, entries) in layers {
                    let shown = entries.values().filter(|&&p| p).count();
                    outln!(
                        "{name}@{scope}\t{shown} overrides\t{} hidden",
                        entries.len() - shown
                    );
                }
            }
        }
    }
    Ok(())
}
