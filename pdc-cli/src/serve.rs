//! `pdc serve`.

use std::io::Write;

use pdc_server::ServerConfig;

use crate::CliError;

/// Runs the server until Ctrl-C or SIGTERM, with `extra` routes beside
/// the API (the web till).
pub async fn serve(config: ServerConfig, extra: axum::Router) -> Result<(), CliError> {
    let backend = match &config.database_url {
        Some(_) => "PostgreSQL".to_owned(),
        None => format!("embedded ledger {}", config.ledger_path.display()),
    };
    let state = config.open().await?;
    let handle =
        pdc_server::spawn_with_routes(config.listen, state, config.retention(), extra).await?;
    tracing::info!(addr = %handle.addr, backend, "serving");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{} ({backend})", handle.addr)?;
        out.flush()?;
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    handle.shutdown().await?;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
