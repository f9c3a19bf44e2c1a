//! Server configuration: a TOML file, overridden by flags and environment
//! variables in `pdc serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::datasets::{DatasetHub, DEFAULT_DATASETS};
use crate::http::{AppState, Limits};
use crate::ledger::{InsertForm, Ledger, PgLedger, PgOptions, RedbLedger, RedbOptions};
use crate::{PosApply, ServerError};

/// Everything `pdc serve` can be told.
///
/// ```toml
/// listen = "127.0.0.1:8440"
/// ledger_path = "pdc-ledger.redb"     # embedded ledger (default)
/// # database_url = "postgres://postgres@127.0.0.1/pdc"   # or PDC_DATABASE_URL
/// pool_size = 16
/// migration_lock = true              # false on CockroachDB
/// retention_days = 30
/// track_stock = false                # per-store stock from sales (pos_stock)
/// push_insert = "unnest"             # or "values" (the form Citus routes to one shard)
/// lock_timeout_ms = 2000             # a push blocked this long on a row lock: retry-later
/// [limits]
/// max_items = 1000
/// max_body_bytes = 8388608
/// rate_per_sec = 50
/// burst = 100
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// PostgreSQL URL; when absent, the embedded ledger at `ledger_path`.
    pub database_url: Option<String>,
    /// File of the embedded ledger.
    pub ledger_path: PathBuf,
    /// PostgreSQL connections.
    pub pool_size: usize,
    /// Serialize migrations across nodes with an advisory lock (turn off
    /// on CockroachDB, which has none; see docs/SERVER.md).
    pub migration_lock: bool,
    /// Applied items older than this many days are purged.
    pub retention_days: u64,
    /// Keep per-store stock levels from sales (see
    /// [`PosApply::with_stock`]; off by default for its cost on ingest).
    pub track_stock: bool,
    /// How a push inserts its batch on PostgreSQL (see [`InsertForm`]).
    pub push_insert: InsertForm,
    /// How long a push waits for a row lock on PostgreSQL before it is
    /// answered retry-later, in ms (0: no limit; see
    /// [`PgOptions::lock_timeout`]).
    pub lock_timeout_ms: u64,
    /// Request limits.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8440)),
            database_url: None,
            ledger_path: PathBuf::from("pdc-ledger.redb"),
            pool_size: 16,
            migration_lock: true,
            retention_days: 30,
            track_stock: false,
            push_insert: InsertForm::default(),
            lock_timeout_ms: 2_000,
            limits: Limits::default(),
        }
    }
}

impl ServerConfig {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ServerError::Config(format!("{}: {e}", path.display())))
    }

    /// How long applied items are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days.saturating_mul(86_400))
    }

    /// Opens the configured ledger with the default POS hook.
    pub async fn open_ledger(&self, pos: Arc<PosApply>) -> Result<Arc<dyn Ledger>, ServerError> {
        Ok(match &self.database_url {
            Some(url) => Arc::new(
                PgLedger::connect(
                    url,
                    pos,
                    PgOptions {
                        pool_size: self.pool_size,
                        migration_lock: self.migration_lock,
                        insert: self.push_insert,
                        lock_timeout: Duration::from_millis(self.lock_timeout_ms),
                        ..PgOptions::default()
                    },
                )
                .await?,
            ),
            None => Arc::new(RedbLedger::open(
                &self.ledger_path,
                pos,
                RedbOptions::default(),
            )?),
        })
    }

    /// Opens the ledger and the datasets and builds the service state.
    pub async fn open(&self) -> Result<Arc<AppState>, ServerError> {
        let pos = if self.track_stock {
            PosApply::new().with_stock()
        } else {
            PosApply::new()
        };
        let pos = Arc::new(pos);
        let ledger = self.open_ledger(Arc::clone(&pos)).await?;
        let hub = Arc::new(DatasetHub::load(Arc::clone(&ledger), &DEFAULT_DATASETS, 10_000).await?);
        AppState::new(ledger, hub, Some(pos), self.limits.clone()).await
    }
}
