//! The PostgreSQL ledger: many stateless server processes side by side;
//! exactly-once holds across them because the unique key
//! (terminal_id, store_id, local_id) lives in the database.
//!
//! A batch is one transaction: the Apply hook's verdicts are computed, the
//! whole batch goes in with **one** `INSERT … SELECT … FROM UNNEST(…)
//! ON CONFLICT (terminal_id, store_id, local_id) DO NOTHING RETURNING …`,
//! the rows that were not inserted are answered from what the first
//! application recorded (a conflict when the payload digest differs), and
//! the hook writes the effects of the new rows in the same transaction.
//! Serialization failures and deadlocks (SQLSTATE 40001, 40P01: what
//! CockroachDB answers under contention) are retried.
//!
//! When the batch fails for a reason tied to its items (SQLSTATE classes
//! 21, 22, 23, 27, 44, P0: see `sqlstate_transient`), the transaction is
//! rolled back and the batch is applied again in a new one, bisected under
//! a savepoint per attempt: the good items are applied, each failing one is
//! recorded and answered `rejected{code: "storage"}`, all in one commit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use pdc_sync::{Entry, ItemResult, OutboxItem, Scope, StoreId, View};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use super::{
    check_item, payload_digest, transient, Bisect, Ledger, LedgerItem, LedgerTotals, PayloadDigest,
    PosOrder, Recorded, StoreSeen, StoredDataset, StoredRecord, TerminalInfo, TokenDigest,
    STATUS_APPLIED, STATUS_REJECTED, STORAGE_REJECTION,
};
use crate::apply::{Accepted, Apply, Rejection};
use crate::error::{describe_pg, pg_transient};
use crate::ServerError;

/// Versioned migrations, applied in order at start under an advisory lock.
const MIGRATIONS: &[&str] = &[
    "
CREATE SEQUENCE IF NOT EXISTS pdc_server_seq;
CREATE TABLE IF NOT EXISTS pdc_items (
    terminal_id text NOT NULL,
    local_id bigint NOT NULL,
    server_seq bigint NOT NULL DEFAULT nextval('pdc_server_seq'),
    status smallint NOT NULL,
    code text,
    message text,
    stream bigint NOT NULL,
    priority smallint NOT NULL,
    kind int NOT NULL,
    created_at_ms bigint NOT NULL,
    applied_at_ms bigint NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (terminal_id, local_id)
);
CREATE INDEX IF NOT EXISTS pdc_items_applied_at ON pdc_items (applied_at_ms);
CREATE TABLE IF NOT EXISTS pdc_terminals (
    terminal_id text PRIMARY KEY,
    token_digest bytea NOT NULL UNIQUE,
    created_at_ms bigint NOT NULL,
    revoked boolean NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS pdc_datasets (
    name text PRIMARY KEY,
    version bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS pdc_dataset_records (
    dataset text NOT NULL,
    id bigint NOT NULL,
    version bigint NOT NULL,
    body bytea,
    PRIMARY KEY (dataset, id)
);
",
    "
ALTER TABLE pdc_items ADD COLUMN store_id bytea NOT NULL DEFAULT decode(repeat('00', 16), 'hex');
ALTER TABLE pdc_items ALTER COLUMN store_id DROP DEFAULT;
ALTER TABLE pdc_items ADD COLUMN digest bytea;
UPDATE pdc_items SET digest = sha256(payload);
ALTER TABLE pdc_items DROP CONSTRAINT pdc_items_pkey;
ALTER TABLE pdc_items ADD PRIMARY KEY (terminal_id, store_id, local_id);
CREATE TABLE pdc_terminal_stores (
    terminal_id text NOT NULL,
    store_id bytea NOT NULL,
    first_seen_ms bigint NOT NULL,
    PRIMARY KEY (terminal_id, store_id)
);
INSERT INTO pdc_terminal_stores
    SELECT terminal_id, store_id, min(applied_at_ms) FROM pdc_items GROUP BY 1, 2;
",
    "
ALTER TABLE pdc_dataset_records ADD COLUMN hidden boolean NOT NULL DEFAULT false;
CREATE INDEX pdc_dataset_records_version ON pdc_dataset_records (version);
ALTER TABLE pdc_terminals ADD COLUMN store text;
ALTER TABLE pdc_terminals ADD COLUMN region text;
",
];

const INSERT_BATCH: &str = "
INSERT INTO pdc_items (terminal_id, store_id, local_id, status, code, message, stream, priority,
                       kind, created_at_ms, applied_at_ms, payload, digest)
SELECT $1, $2, l, s, c, m, st, p, k, cr, $3, pl, d
FROM UNNEST($4::bigint[], $5::smallint[], $6::text[], $7::text[], $8::bigint[], $9::smallint[],
            $10::int[], $11::bigint[], $12::bytea[], $13::bytea[])
     AS x(l, s, c, m, st, p, k, cr, pl, d)
ON CONFLICT (terminal_id, store_id, local_id) DO NOTHING
RETURNING local_id, server_seq";

/// The range on `local_id` is redundant with `ANY($3)` but keeps the plan
/// an index range scan whatever the statistics say: with stale statistics
/// (a table grown since its last ANALYZE) PostgreSQL 15 otherwise filters
/// `ANY` over every row of the (terminal, store) prefix (measured: a resend
/// of 50 took 78 ms instead of 1 ms after 100,000 fresh items).
const SELECT_EXISTING: &str = "
SELECT local_id, server_seq, status, code, message, digest FROM pdc_items
WHERE terminal_id = $1 AND store_id = $2 AND local_id = ANY($3)
  AND local_id BETWEEN $4 AND $5";

/// Items the Apply hook refused after all: recorded as rejected.
const REFUSE_APPLIED: &str = "
UPDATE pdc_items p SET status = 2, code = x.c, message = x.m
FROM UNNEST($3::bigint[], $4::text[], $5::text[]) AS x(l, c, m)
WHERE p.terminal_id = $1 AND p.store_id = $2 AND p.local_id = x.l";

/// Connection options of the PostgreSQL ledger.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections in the pool.
    pub pool_size: usize,
    /// How long a push waits for a free connection before it is answered
    /// retry-later.
    pub wait_timeout: Duration,
    /// A schema to create and use instead of the connection's default
    /// (tests use one per test).
    pub schema: Option<String>,
    /// Serialize concurrent migrations with `pg_advisory_xact_lock`
    /// (default). CockroachDB has no advisory locks: turn this off there
    /// and start the first node of a new version alone.
    pub migration_lock: bool,
    /// How a push inserts its batch (see [`InsertForm`]).
    pub insert: InsertForm,
    /// How long a statement waits for a row lock before the push is
    /// answered retry-later (`lock_timeout` on every pooled connection;
    /// `Duration::ZERO`: wait as long as PostgreSQL lets it). A resend
    /// waits on the row of an earlier attempt that is still in flight, or
    /// held by an in-doubt prepared transaction on a distributed engine
    /// until an operator resolves it; without a bound the request would
    /// run into the HTTP timeout (408) instead of a clear retry-later.
    pub lock_timeout: Duration,
}

/// The statement a push inserts its batch with (`push_insert = "unnest"`
/// or `"values"` in `pdc.toml`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InsertForm {
    /// [`InsertForm::Values`] on Citus (detected at connect), else
    /// [`InsertForm::Unnest`] (the default).
    #[default]
    Auto,
    /// `INSERT … SELECT … FROM UNNEST($4::bigint[], …)`: one statement
    /// text for every batch size.
    Unnest,
    /// `INSERT … VALUES (…), (…), …`: one statement text per batch size,
    /// ten parameters a row; the form a distributed engine such as Citus
    /// routes to one shard (UNNEST is planned there as a pull to the
    /// coordinator with a two-phase commit). One caller measured the same
    /// as UNNEST on plain PostgreSQL; under a flat-out load it was not
    /// compared yet, so UNNEST stays the default there (BENCHMARKS.md).
    /// Batches beyond 6,000 items use UNNEST (PostgreSQL's limit of 65,535
    /// parameters).
    Values,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            wait_timeout: Duration::from_secs(5),
            schema: None,
            migration_lock: true,
            insert: InsertForm::default(),
            lock_timeout: Duration::from_secs(2),
        }
    }
}

/// The multi-row `VALUES` form of [`INSERT_BATCH`] for `n` rows: `$1`
/// terminal, `$2` store, `$3` applied at, then ten parameters per row.
fn insert_values(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO pdc_items (terminal_id, store_id, local_id, status, code, message, stream, \
         priority, kind, created_at_ms, applied_at_ms, payload, digest) VALUES ",
    );
    for r in 0..n {
        let b = 4 + r * 10;
        if r > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "($1, $2, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, $3, ${}, ${})",
            b,
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8,
            b + 9
        ));
    }
    sql.push_str(
        " ON CONFLICT (terminal_id, store_id, local_id) DO NOTHING RETURNING local_id, server_seq",
    );
    sql
}

/// Where a table lives on Citus (a PostgreSQL-compatible distributed
/// engine); see [`crate::Apply::postgres_placement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Sharded by its `terminal_id` column and colocated with `pdc_items`,
    /// so that every statement of a push routes to its terminal's shard
    /// (one-phase commit).
    ByTerminal,
    /// A copy on every node: small tables that every node reads and that
    /// change rarely (terminals, datasets, folded stock).
    Reference,
}

/// The ledger's own tables on Citus; `pdc_items` first (it anchors the
/// colocation group). `pdc_schema` stays on the coordinator.
pub const LEDGER_PLACEMENT: &[(&str, Placement)] = &[
    ("pdc_items", Placement::ByTerminal),
    ("pdc_terminal_stores", Placement::ByTerminal),
    ("pdc_terminals", Placement::Reference),
    ("pdc_datasets", Placement::Reference),
    ("pdc_dataset_records", Placement::Reference),
];

/// `name` if it is safe to write into SQL unquoted (`[a-z0-9_]+`), else a
/// configuration error naming `what`.
fn identifier<'a>(what: &str, name: &'a str) -> Result<&'a str, ServerError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ServerError::Config(format!(
            "{what} {name:?}: use [a-z0-9_]"
        )));
    }
    Ok(name)
}

/// The Citus call that places `table`.
pub fn placement_sql(table: &str, placement: Placement) -> Result<String, ServerError> {
    identifier("table", table)?;
    Ok(match placement {
        Placement::ByTerminal if table == "pdc_items" => {
            format!("SELECT create_distributed_table('{table}', 'terminal_id')")
        }
        Placement::ByTerminal => format!(
            "SELECT create_distributed_table('{table}', 'terminal_id', colocate_with => 'pdc_items')"
        ),
        Placement::Reference => format!("SELECT create_reference_table('{table}')"),
    })
}

/// Takes the migration lock for the transaction `tx` (when `lock`; see
/// [`PgOptions::migration_lock`]), waiting as long as another node's
/// migration takes (no `lock_timeout`).
async fn schema_lock(
    tx: &deadpool_postgres::Transaction<'_>,
    lock: bool,
) -> Result<(), ServerError> {
    tx.batch_execute("SET LOCAL lock_timeout = 0").await?;
    if lock {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('pdc_migrations:' || current_schema()))",
            &[],
        )
        .await?;
    }
    Ok(())
}

/// `None` without the `citus` extension; else whether this node is the
/// coordinator (Citus before 11, without `citus_is_coordinator()`, is
/// taken to be one).
async fn citus_role(c: &tokio_postgres::Client) -> Result<Option<bool>, ServerError> {
    let has: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')",
            &[],
        )
        .await?
        .get(0);
    if !has {
        return Ok(None);
    }
    let probe: bool = c
        .query_one(
            "SELECT to_regproc('pg_catalog.citus_is_coordinator') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !probe {
        return Ok(Some(true));
    }
    let coordinator: bool = c
        .query_one("SELECT citus_is_coordinator()", &[])
        .await?
        .get(0);
    Ok(Some(coordinator))
}

/// The PostgreSQL ledger.
#[derive(Clone)]
pub struct PgLedger {
    pool: Pool,
    apply: Arc<dyn Apply>,
    insert: InsertForm,
    /// The channel dataset changes are announced on (`NOTIFY`).
    channel: String,
    notified: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger").finish_non_exhaustive()
    }
}

enum Fail {
    Pg(tokio_postgres::Error),
    Other(ServerError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<ServerError> for Fail {
    fn from(e: ServerError) -> Self {
        Fail::Other(e)
    }
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Fail::Other(e.into())
    }
}

impl Fail {
    /// See [`super::transient`].
    fn transient(&self) -> bool {
        match self {
            Fail::Pg(e) => pg_transient(e),
            Fail::Other(e) => transient(e),
        }
    }

    fn message(&self) -> String {
        match self {
            Fail::Pg(e) => describe_pg(e),
            Fail::Other(e) => e.to_string(),
        }
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// What the ledger recorded, from a row of `SELECT_EXISTING`.
fn row_recorded(r: &tokio_postgres::Row) -> Recorded {
    Recorded {
        status: r.get(2),
        // Sequences come from a bigint sequence starting at 1.
        seq: r.get::<_, i64>(1) as u64,
        code: r.get::<_, Option<String>>(3).unwrap_or_default(),
        message: r.get::<_, Option<String>>(4).unwrap_or_default(),
        digest: r
            .get::<_, Option<Vec<u8>>>(5)
            .and_then(|d| PayloadDigest::try_from(d.as_slice()).ok()),
    }
}

/// The smallest and largest of some ids (`(0, -1)`, an empty range, for
/// none).
fn id_span(ids: &[i64]) -> (i64, i64) {
    match (ids.iter().min(), ids.iter().max()) {
        (Some(&lo), Some(&hi)) => (lo, hi),
        _ => (0, -1),
    }
}

fn i64_of(v: u64, what: &str) -> Result<i64, ServerError> {
    i64::try_from(v).map_err(|_| ServerError::InvalidItem(format!("{what} {v} is above 2^63-1")))
}

/// What every statement of one push shares.
struct Key<'a> {
    terminal_id: &'a str,
    store: &'a [u8; 16],
    now_ms: i64,
}

impl PgLedger {
    /// Connects, creates the schema if asked, and runs pending migrations
    /// (the ledger's and the Apply hook's).
    pub async fn connect(
        url: &str,
        apply: Arc<dyn Apply>,
        options: PgOptions,
    ) -> Result<Self, ServerError> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| ServerError::Config(format!("database url: {e}")))?;
        if let Some(schema) = &options.schema {
            identifier("schema", schema)?;
            cfg.options(format!("-c search_path={schema}"));
        }
        let listen_cfg = cfg.clone();
        if !options.lock_timeout.is_zero() {
            let mut o = cfg.get_options().unwrap_or_default().to_owned();
            o.push_str(&format!(
                " -c lock_timeout={}",
                options.lock_timeout.as_millis().max(1)
            ));
            cfg.options(o.trim_start());
        }
        let mgr = Manager::from_config(
            cfg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.wait_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let channel = match &options.schema {
            Some(s) => format!("pdc_datasets_{s}"),
            None => "pdc_datasets".to_owned(),
        };
        let (tx, notified) = tokio::sync::watch::channel(0u64);
        let citus = citus_role(&*pool.get().await?).await?;
        if citus == Some(false) {
            return Err(ServerError::Config(
                "this database is a Citus worker node: connect pdc to the coordinator".into(),
            ));
        }
        let insert = match options.insert {
            InsertForm::Auto if citus.is_some() => InsertForm::Values,
            InsertForm::Auto => InsertForm::Unnest,
            f => f,
        };
        let ledger = PgLedger {
            pool,
            apply,
            insert,
            channel: channel.clone(),
            notified,
        };
        ledger
            .migrate(options.schema.as_deref(), options.migration_lock)
            .await?;
        if citus.is_some() {
            ledger.distribute(options.migration_lock).await?;
        }
        tokio::spawn(listen_for_datasets(listen_cfg, channel, tx));
        Ok(ledger)
    }

    async fn migrate(&self, schema: Option<&str>, lock: bool) -> Result<(), ServerError> {
        let mut client = self.pool.get().await?;
        if let Some(s) = schema {
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await?;
        }
        let tx = client.transaction().await?;
        schema_lock(&tx, lock).await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS pdc_schema (version int NOT NULL)")
            .await?;
        let current: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM pdc_schema", &[])
            .await?
            .get(0);
        let known = MIGRATIONS.len() as i32;
        if current > known {
            return Err(ServerError::Storage(format!(
                "database has ledger schema {current}, this build knows {known}"
            )));
        }
        for (n, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(m).await?;
            tx.execute("INSERT INTO pdc_schema VALUES ($1)", &[&(n as i32 + 1)])
                .await?;
        }
        let hook = self.apply.postgres_schema();
        if !hook.is_empty() {
            tx.batch_execute(hook).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Places the ledger's and the hook's tables on Citus, once: sharded
    /// by terminal and colocated with `pdc_items`, or reference tables
    /// (see [`Placement`]); a table placed already is left as it is.
    async fn distribute(&self, lock: bool) -> Result<(), ServerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        schema_lock(&tx, lock).await?;
        let placed = tx
            .prepare("SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass($1))")
            .await?;
        let tables = LEDGER_PLACEMENT
            .iter()
            .chain(self.apply.postgres_placement());
        for (table, placement) in tables {
            let done: bool = tx.query_one(&placed, &[table]).await?.get(0);
            if !done {
                tx.batch_execute(&placement_sql(table, *placement)?).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn push_once(
        &self,
        terminal_id: &str,
        store: StoreId,
        items: &[OutboxItem],
        now_ms: i64,
    ) -> Result<Vec<ItemResult>, Fail> {
        let digests: Vec<PayloadDigest> =
            items.iter().map(|i| payload_digest(&i.payload)).collect();
        let key = Key {
            terminal_id,
            store: &store.0,
            now_ms,
        };
        let none = HashMap::new();
        let mut client = self.pool.get().await?;
        {
            let tx = client.transaction().await?;
            match self
                .apply_range(&tx, &key, items, &digests, 0..items.len(), &none)
                .await
            {
                Ok(results) => {
                    tx.commit().await?;
                    return Ok(results);
                }
                Err(f) if f.transient() => return Err(f),
                // Dropping the transaction rolls it back.
                Err(f) => tracing::warn!(
                    error = %f.message(), terminal_id,
                    "ledger batch failed; isolating its items"
                ),
            }
        }
        let tx = client.transaction().await?;
        let mut results: Vec<Option<ItemResult>> = vec![None; items.len()];
        let mut poison: HashMap<usize, String> = HashMap::new();
        // The whole batch is known to fail: start with the halves. One
        // savepoint stays set for the next attempt: after a failure,
        // ROLLBACK TO keeps it; after a success a new one is set on top.
        let mut bisect = Bisect::after_failure(items.len());
        tx.batch_execute("SAVEPOINT pdc_isolate").await?;
        while let Some(r) = bisect.next() {
            match self
                .apply_range(&tx, &key, items, &digests, r.clone(), &poison)
                .await
            {
                Ok(rs) => {
                    tx.batch_execute("SAVEPOINT pdc_isolate").await?;
                    for (slot, res) in results[r].iter_mut().zip(rs) {
                        *slot = Some(res);
                    }
                }
                Err(f) if f.transient() => return Err(f),
                Err(f) => {
                    tx.batch_execute("ROLLBACK TO SAVEPOINT pdc_isolate")
                        .await?;
                    if r.len() == 1 {
                        // Record it as refused (no hook runs for it), so a
                        // resend is answered the same.
                        poison.insert(r.start, f.message());
                        let rs = self
                            .apply_range(&tx, &key, items, &digests, r.clone(), &poison)
                            .await?;
                        tx.batch_execute("SAVEPOINT pdc_isolate").await?;
                        results[r.start] = rs.into_iter().next();
                    }
                    bisect.failed(r);
                }
            }
        }
        tx.commit().await?;
        results
            .into_iter()
            .enumerate()
            .map(|(n, r)| {
                r.ok_or_else(|| {
                    Fail::Other(ServerError::Storage(format!(
                        "item {n} left without a result"
                    )))
                })
            })
            .collect()
    }

    /// Applies `items[range]` in the open transaction: one UNNEST insert,
    /// the recorded answers of the rows that existed, the hook's effects
    /// and refusals. Items in `poison` are recorded as refused for storage
    /// instead of being checked and applied.
    async fn apply_range(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        key: &Key<'_>,
        items: &[OutboxItem],
        digests: &[PayloadDigest],
        range: std::ops::Range<usize>,
        poison: &HashMap<usize, String>,
    ) -> Result<Vec<ItemResult>, Fail> {
        let start = range.start;
        let items = &items[range.clone()];
        let digests = &digests[range];
        let verdicts: Vec<Result<(), Rejection>> = items
            .iter()
            .enumerate()
            .map(|(n, i)| match poison.get(&(start + n)) {
                Some(m) => Err(Rejection::new(STORAGE_REJECTION, m.clone())),
                None => self.apply.check(key.terminal_id, i),
            })
            .collect();
        let mut ids = Vec::with_capacity(items.len());
        let mut status = Vec::with_capacity(items.len());
        let mut codes = Vec::with_capacity(items.len());
        let mut messages = Vec::with_capacity(items.len());
        let mut streams = Vec::with_capacity(items.len());
        let mut prios = Vec::with_capacity(items.len());
        let mut kinds = Vec::with_capacity(items.len());
        let mut created = Vec::with_capacity(items.len());
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(items.len());
        let digest_refs: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
        for (i, v) in items.iter().zip(&verdicts) {
            ids.push(i64_of(i.local_id, "local id")?);
            status.push(if v.is_ok() {
                STATUS_APPLIED
            } else {
                STATUS_REJECTED
            });
            codes.push(v.as_ref().err().map(|r| r.code.as_str()));
            messages.push(v.as_ref().err().map(|r| r.message.as_str()));
            streams.push(i64_of(i.stream.0, "stream")?);
            prios.push(i.priority.index() as i16);
            kinds.push(i32::from(i.kind));
            created.push(i64_of(i.created_at_ms, "created_at_ms")?);
            payloads.push(&i.payload);
        }
        let store = key.store.as_slice();
        let form = if ids.len() > 6_000 {
            InsertForm::Unnest
        } else {
            self.insert
        };
        let rows = match form {
            // `Auto` was resolved at connect.
            InsertForm::Unnest | InsertForm::Auto => {
                let insert = tx.prepare_cached(INSERT_BATCH).await?;
                tx.query(
                    &insert,
                    &[
                        &key.terminal_id,
                        &store,
                        &key.now_ms,
                        &ids,
                        &status,
                        &codes,
                        &messages,
                        &streams,
                        &prios,
                        &kinds,
                        &created,
                        &payloads,
                        &digest_refs,
                    ],
                )
                .await?
            }
            InsertForm::Values => {
                let insert = tx.prepare_cached(&insert_values(ids.len())).await?;
                let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    Vec::with_capacity(3 + 10 * ids.len());
                params.push(&key.terminal_id);
                params.push(&store);
                params.push(&key.now_ms);
                for r in 0..ids.len() {
                    params.push(&ids[r]);
                    params.push(&status[r]);
                    params.push(&codes[r]);
                    params.push(&messages[r]);
                    params.push(&streams[r]);
                    params.push(&prios[r]);
                    params.push(&kinds[r]);
                    params.push(&created[r]);
                    params.push(&payloads[r]);
                    params.push(&digest_refs[r]);
                }
                tx.query(&insert, &params).await?
            }
        };
        let mut inserted: HashMap<i64, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !inserted.contains_key(id))
            .collect();
        let mut existing: HashMap<i64, Recorded> = HashMap::new();
        if !missing.is_empty() {
            let select = tx.prepare_cached(SELECT_EXISTING).await?;
            let (lo, hi) = id_span(&missing);
            for r in tx
                .query(
                    &select,
                    &[&key.terminal_id, &key.store.as_slice(), &missing, &lo, &hi],
                )
                .await?
            {
                existing.insert(r.get(0), row_recorded(&r));
            }
        }
        let mut results = Vec::with_capacity(items.len());
        let mut accepted = Vec::new();
        let mut accepted_at = Vec::new();
        for (((item, id), verdict), digest) in items.iter().zip(&ids).zip(verdicts).zip(digests) {
            // `remove`: a local id repeated inside one batch is new once and
            // answered from the first after.
            if let Some(seq) = inserted.remove(id) {
                let seq = seq as u64;
                let (st, code, message, result) = match verdict {
                    Ok(()) => {
                        accepted.push(Accepted {
                            terminal_id: key.terminal_id,
                            server_seq: seq,
                            item,
                        });
                        accepted_at.push(results.len());
                        (
                            STATUS_APPLIED,
                            String::new(),
                            String::new(),
                            ItemResult::Applied { server_seq: seq },
                        )
                    }
                    Err(r) => (
                        STATUS_REJECTED,
                        r.code.clone(),
                        r.message.clone(),
                        ItemResult::Rejected {
                            code: r.code,
                            message: r.message,
                        },
                    ),
                };
                existing.insert(
                    *id,
                    Recorded {
                        status: st,
                        seq,
                        code,
                        message,
                        digest: Some(*digest),
                    },
                );
                results.push(result);
            } else {
                let rec = existing.get(id).cloned().ok_or_else(|| {
                    ServerError::Storage(format!("item {id} neither inserted nor found"))
                })?;
                results.push(rec.answer(item.local_id, Some(digest)));
            }
        }
        if !accepted.is_empty() {
            let refused = self.apply.apply_postgres(tx, &accepted).await?;
            if !refused.is_empty() {
                let mut ids = Vec::with_capacity(refused.len());
                let mut codes = Vec::with_capacity(refused.len());
                let mut messages = Vec::with_capacity(refused.len());
                for (n, r) in refused {
                    let at = *accepted_at.get(n).ok_or_else(|| {
                        ServerError::Apply(format!("hook refused item {n} of {}", accepted.len()))
                    })?;
                    ids.push(i64_of(accepted[n].item.local_id, "local id")?);
                    codes.push(r.code.clone());
                    messages.push(r.message.clone());
                    results[at] = ItemResult::Rejected {
                        code: r.code,
                        message: r.message,
                    };
                }
                let stmt = tx.prepare_cached(REFUSE_APPLIED).await?;
                tx.execute(
                    &stmt,
                    &[
                        &key.terminal_id,
                        &key.store.as_slice(),
                        &ids,
                        &codes,
                        &messages,
                    ],
                )
                .await?;
            }
        }
        Ok(results)
    }

    /// The design study's per-item loop (one `INSERT` per item inside the
    /// batch's transaction), kept as the baseline of the ledger benchmark.
    /// Same results as [`Ledger::push`].
    pub async fn push_per_item(
        &self,
        terminal_id: &str,
        store: StoreId,
        items: &[OutboxItem],
        now_ms: u64,
    ) -> Result<Vec<ItemResult>, ServerError> {
        let now_ms = i64_of(now_ms, "now_ms")?;
        let store = store.0.as_slice();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut results = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            check_item(n, item)?;
            let digest = payload_digest(&item.payload);
            let verdict = self.apply.check(terminal_id, item);
            let (st, code, message) = match &verdict {
                Ok(()) => (STATUS_APPLIED, None, None),
                Err(r) => (
                    STATUS_REJECTED,
                    Some(r.code.as_str()),
                    Some(r.message.as_str()),
                ),
            };
            let id = i64_of(item.local_id, "local id")?;
            let row = tx
                .query_opt(
                    "INSERT INTO pdc_items (terminal_id, store_id, local_id, status, code, \
                     message, stream, priority, kind, created_at_ms, applied_at_ms, payload, \
                     digest) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (terminal_id, store_id, local_id) DO NOTHING \
                     RETURNING server_seq",
                    &[
                        &terminal_id,
                        &store,
                        &id,
                        &st,
                        &code,
                        &message,
                        &i64_of(item.stream.0, "stream")?,
                        &(item.priority.index() as i16),
                        &i32::from(item.kind),
                        &i64_of(item.created_at_ms, "created_at_ms")?,
                        &now_ms,
                        &item.payload,
                        &digest.as_slice(),
                    ],
                )
                .await?;
            results.push(match (row, verdict) {
                (Some(r), Ok(())) => {
                    let seq = r.get::<_, i64>(0) as u64;
                    let refused = self
                        .apply
                        .apply_postgres(
                            &tx,
                            &[Accepted {
                                terminal_id,
                                server_seq: seq,
                                item,
                            }],
                        )
                        .await?;
                    match refused.into_iter().next() {
                        None => ItemResult::Applied { server_seq: seq },
                        Some((_, r)) => {
                            tx.execute(
                                REFUSE_APPLIED,
                                &[
                                    &terminal_id,
                                    &store,
                                    &vec![id],
                                    &vec![&r.code],
                                    &vec![&r.message],
                                ],
                            )
                            .await?;
                            ItemResult::Rejected {
                                code: r.code,
                                message: r.message,
                            }
                        }
                    }
                }
                (Some(_), Err(r)) => ItemResult::Rejected {
                    code: r.code,
                    message: r.message,
                },
                (None, _) => {
                    let r = tx
                        .query_one(
                            SELECT_EXISTING,
                            &[&terminal_id, &store, &vec![id], &id, &id],
                        )
                        .await?;
                    row_recorded(&r).answer(item.local_id, Some(&digest))
                }
            });
        }
        tx.commit().await?;
        Ok(results)
    }
}

#[async_trait::async_trait]
impl Ledger for PgLedger {
    async fn push(
        &self,
        terminal_id: &str,
        store: StoreId,
        items: Vec<OutboxItem>,
        now_ms: u64,
    ) -> Result<Vec<ItemResult>, ServerError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        for (n, item) in items.iter().enumerate() {
            check_item(n, item)?;
        }
        let now_ms = i64_of(now_ms, "now_ms")?;
        let mut attempt = 0;
        loop {
            match self.push_once(terminal_id, store, &items, now_ms).await {
                Ok(r) => return Ok(r),
                Err(Fail::Pg(e)) if retryable(&e) && attempt < 4 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                Err(Fail::Pg(e)) => return Err(e.into()),
                Err(Fail::Other(e)) => return Err(e),
            }
        }
    }

    async fn status(
        &self,
        terminal_id: &str,
        store: StoreId,
        local_ids: &[u64],
    ) -> Result<Vec<Option<ItemResult>>, ServerError> {
        let ids: Vec<i64> = local_ids
            .iter()
            .map(|&i| i64_of(i, "local id"))
            .collect::<Result<_, _>>()?;
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(SELECT_EXISTING).await?;
        let (lo, hi) = id_span(&ids);
        let found: HashMap<i64, ItemResult> = client
            .query(&stmt, &[&terminal_id, &store.0.as_slice(), &ids, &lo, &hi])
            .await?
            .iter()
            .map(|r| {
                let id: i64 = r.get(0);
                (id, row_recorded(r).answer(id as u64, None))
            })
            .collect();
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    async fn note_store(
        &self,
        terminal_id: &str,
        store: StoreId,
        now_ms: u64,
    ) -> Result<bool, ServerError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "INSERT INTO pdc_terminal_stores (terminal_id, store_id, first_seen_ms) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[
                    &terminal_id,
                    &store.0.as_slice(),
                    &i64_of(now_ms, "now_ms")?,
                ],
            )
            .await?;
        Ok(n == 1)
    }

    async fn terminal_items(
        &self,
        terminal_id: &str,
        limit: usize,
    ) -> Result<Vec<LedgerItem>, ServerError> {
        let client = self.pool.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT store_id, local_id, server_seq, status, code, message, applied_at_ms                  FROM (SELECT * FROM pdc_items WHERE terminal_id = $1                        ORDER BY server_seq DESC LIMIT $2) last ORDER BY server_seq",
                &[&terminal_id, &limit],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.get(0);
                let store: [u8; 16] = id
                    .as_slice()
                    .try_into()
                    .map_err(|_| ServerError::Storage(format!("store id of {} bytes", id.len())))?;
                let recorded = Recorded {
                    status: r.get(3),
                    seq: r.get::<_, i64>(2) as u64,
                    code: r.get::<_, Option<String>>(4).unwrap_or_default(),
                    message: r.get::<_, Option<String>>(5).unwrap_or_default(),
                    digest: None,
                };
                Ok(LedgerItem {
                    store: StoreId(store),
                    local_id: r.get::<_, i64>(1) as u64,
                    result: recorded.outcome(),
                    recorded_at_ms: r.get::<_, i64>(6) as u64,
                })
            })
            .collect()
    }

    async fn terminal_orders(
        &self,
        terminal_id: &str,
        limit: usize,
    ) -> Result<Vec<PosOrder>, ServerError> {
        let client = self.pool.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match client
            .query(
                "SELECT order_id, server_seq, receipt, cashier_id, \
                 (extract(epoch FROM created_at) * 1000)::bigint, total_cents, lines \
                 FROM (SELECT * FROM pos_orders WHERE terminal_id = $1 \
                       ORDER BY server_seq DESC LIMIT $2) last ORDER BY server_seq",
                &[&terminal_id, &limit],
            )
            .await
        {
            Ok(rows) => rows,
            // The hook keeps no orders here.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(rows
            .iter()
            .map(|r| PosOrder {
                order_id: r.get::<_, i64>(0) as u64,
                server_seq: r.get::<_, i64>(1) as u64,
                receipt: r.get(2),
                cashier_id: r.get::<_, i64>(3) as u32,
                created_at_ms: r.get::<_, i64>(4).max(0) as u64,
                total_cents: r.get(5),
                lines: r.get::<_, i32>(6).max(0) as u32,
            })
            .collect())
    }

    async fn terminal_stores(&self, terminal_id: &str) -> Result<Vec<StoreSeen>, ServerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT store_id, first_seen_ms FROM pdc_terminal_stores WHERE terminal_id = $1 \
                 ORDER BY first_seen_ms, store_id",
                &[&terminal_id],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: Vec<u8> = r.get(0);
                let id: [u8; 16] = id
                    .as_slice()
                    .try_into()
                    .map_err(|_| ServerError::Storage(format!("store id of {} bytes", id.len())))?;
                Ok(StoreSeen {
                    store_id: StoreId(id),
                    first_seen_ms: r.get::<_, i64>(1) as u64,
                })
            })
            .collect()
    }

    async fn totals(&self) -> Result<LedgerTotals, ServerError> {
        let client = self.pool.get().await?;
        let r = client
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 1), count(*) FILTER (WHERE status = 2) \
                 FROM pdc_items",
                &[],
            )
            .await?;
        Ok(LedgerTotals {
            applied: r.get::<_, i64>(0) as u64,
            rejected: r.get::<_, i64>(1) as u64,
        })
    }

    async fn maintain(&self) -> Result<u64, ServerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let n = self.apply.maintain_postgres(&tx).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn stock_since(
        &self,
        store: &str,
        since: u64,
        limit: usize,
    ) -> Result<Vec<pdc_sync::StockLevel>, ServerError> {
        let client = self.pool.get().await?;
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match client
            .query(
                "SELECT product_id, quantity, seq FROM pos_stock \
                 WHERE store = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&store, &since, &limit],
            )
            .await
        {
            Ok(rows) => rows,
            // A hook without stock tables keeps no stock.
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        rows.iter()
            .map(|r| {
                let product: i64 = r.get(0);
                let seq: i64 = r.get(2);
                Ok(pdc_sync::StockLevel {
                    product_id: u32::try_from(product).map_err(|_| {
                        ServerError::Storage(format!("pos_stock: product id {product}"))
                    })?,
                    quantity: r.get(1),
                    seq: u64::try_from(seq)
                        .map_err(|_| ServerError::Storage(format!("pos_stock: seq {seq}")))?,
                })
            })
            .collect()
    }

    async fn purge_before(&self, cutoff_ms: u64, chunk: usize) -> Result<u64, ServerError> {
        let client = self.pool.get().await?;
        let cutoff = i64::try_from(cutoff_ms).unwrap_or(i64::MAX);
        let n = client
            .execute(
                "DELETE FROM pdc_items WHERE (terminal_id, local_id) IN \
                 (SELECT terminal_id, local_id FROM pdc_items WHERE applied_at_ms < $1 LIMIT $2)",
                &[&cutoff, &(chunk as i64)],
            )
            .await?;
        Ok(n)
    }

    async fn add_terminal(
        &self,
        terminal_id: &str,
        token: &TokenDigest,
        now_ms: u64,
    ) -> Result<(), ServerError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "INSERT INTO pdc_terminals (terminal_id, token_digest, created_at_ms) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&terminal_id, &token.as_slice(), &i64_of(now_ms, "now_ms")?],
            )
            .await?;
        if n == 0 {
            return Err(ServerError::TerminalExists(terminal_id.to_owned()));
        }
        Ok(())
    }

    async fn revoke_terminal(&self, terminal_id: &str) -> Result<bool, ServerError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE pdc_terminals SET revoked = true WHERE terminal_id = $1",
                &[&terminal_id],
            )
            .await?;
        Ok(n > 0)
    }

    async fn rotate_terminal(
        &self,
        terminal_id: &str,
        token: &TokenDigest,
    ) -> Result<bool, ServerError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE pdc_terminals SET token_digest = $2, revoked = false WHERE terminal_id = $1",
                &[&terminal_id, &token.as_slice()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn terminals(&self) -> Result<Vec<TerminalInfo>, ServerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT terminal_id, created_at_ms, revoked, region, store FROM pdc_terminals \
                 ORDER BY terminal_id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| TerminalInfo {
                terminal_id: r.get(0),
                created_at_ms: r.get::<_, i64>(1) as u64,
                revoked: r.get(2),
                view: View {
                    region: r.get(3),
                    store: r.get(4),
                },
            })
            .collect())
    }

    async fn terminal_for_token(&self, token: &TokenDigest) -> Result<Option<String>, ServerError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT terminal_id FROM pdc_terminals WHERE token_digest = $1 AND NOT revoked",
            )
            .await?;
        Ok(client
            .query_opt(&stmt, &[&token.as_slice()])
            .await?
            .map(|r| r.get(0)))
    }

    async fn set_terminal_view(&self, terminal_id: &str, view: &View) -> Result<bool, ServerError> {
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "UPDATE pdc_terminals SET region = $2, store = $3 WHERE terminal_id = $1",
                &[&terminal_id, &view.region, &view.store],
            )
            .await?;
        Ok(n > 0)
    }

    async fn terminal_view(&self, terminal_id: &str) -> Result<Option<View>, ServerError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT region, store FROM pdc_terminals WHERE terminal_id = $1")
            .await?;
        Ok(client
            .query_opt(&stmt, &[&terminal_id])
            .await?
            .map(|r| View {
                region: r.get(0),
                store: r.get(1),
            }))
    }

    fn dataset_notifications(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.notified.clone())
    }

    async fn dataset_version(&self, name: &str) -> Result<Option<u64>, ServerError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT version FROM pdc_datasets WHERE name = $1")
            .await?;
        Ok(client
            .query_opt(&stmt, &[&name])
            .await?
            .map(|r| r.get::<_, i64>(0) as u64))
    }

    async fn load_dataset_since(
        &self,
        name: &str,
        after: u64,
    ) -> Result<Option<StoredDataset>, ServerError> {
        let mut client = self.pool.get().await?;
        // One snapshot for the version and the records.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let Some(v) = tx
            .query_opt("SELECT version FROM pdc_datasets WHERE name = $1", &[&name])
            .await?
        else {
            return Ok(None);
        };
        let rows = tx
            .query(
                "SELECT dataset, id, version, body, hidden FROM pdc_dataset_records \
                 WHERE (dataset = $1 OR left(dataset, length($1) + 1) = $1 || '@') \
                   AND version > $2 ORDER BY version",
                &[&name, &i64_of(after, "version")?],
            )
            .await?;
        tx.commit().await?;
        let mut records = Vec::with_capacity(rows.len());
        for r in &rows {
            let qualified: &str = r.get(0);
            let (_, scope) = Scope::split(qualified)
                .map_err(|e| ServerError::Storage(format!("pdc_dataset_records: {e}")))?;
            let body: Option<Vec<u8>> = r.get(3);
            let hidden: bool = r.get(4);
            records.push(StoredRecord {
                scope,
                id: r.get::<_, i64>(1) as u64,
                version: r.get::<_, i64>(2) as u64,
                entry: match (body, hidden) {
                    (_, true) => Some(Entry::Hidden),
                    (Some(b), false) => Some(Entry::Record(b)),
                    (None, false) => None,
                },
            });
        }
        Ok(Some(StoredDataset {
            version: v.get::<_, i64>(0) as u64,
            records,
        }))
    }

    async fn store_dataset(
        &self,
        name: &str,
        expected: u64,
        version: u64,
        changes: &[StoredRecord],
    ) -> Result<(), ServerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let new = i64_of(version, "version")?;
        // Compare-and-set: the row's version must still be the one the
        // change was planned on (an UPDATE re-checks it after waiting for
        // a concurrent writer; an INSERT of a new dataset conflicts).
        let n = if expected == 0 {
            tx.execute(
                "INSERT INTO pdc_datasets (name, version) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &new],
            )
            .await?
        } else {
            tx.execute(
                "UPDATE pdc_datasets SET version = $2 WHERE name = $1 AND version = $3",
                &[&name, &new, &i64_of(expected, "version")?],
            )
            .await?
        };
        if n == 0 {
            let found = tx
                .query_opt("SELECT version FROM pdc_datasets WHERE name = $1", &[&name])
                .await?
                .map_or(0, |r| r.get::<_, i64>(0) as u64);
            return Err(ServerError::DatasetConflict {
                dataset: name.to_owned(),
                expected,
                found,
            });
        }
        let names: Vec<String> = changes.iter().map(|c| c.scope.qualify(name)).collect();
        let ids: Vec<i64> = changes
            .iter()
            .map(|c| i64_of(c.id, "record id"))
            .collect::<Result<_, _>>()?;
        let versions: Vec<i64> = changes
            .iter()
            .map(|c| i64_of(c.version, "version"))
            .collect::<Result<_, _>>()?;
        let bodies: Vec<Option<&[u8]>> = changes
            .iter()
            .map(|c| match &c.entry {
                Some(Entry::Record(b)) => Some(b.as_slice()),
                _ => None,
            })
            .collect();
        let hidden: Vec<bool> = changes
            .iter()
            .map(|c| c.entry == Some(Entry::Hidden))
            .collect();
        // Delivered at commit to every node listening (see
        // `listen_for_datasets`).
        tx.execute("SELECT pg_notify($1, $2)", &[&self.channel, &name])
            .await?;
        tx.execute(
            "INSERT INTO pdc_dataset_records (dataset, id, version, body, hidden) \
             SELECT d, i, v, b, h FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bool[]) \
                  AS x(d, i, v, b, h) \
             ON CONFLICT (dataset, id) DO UPDATE \
                SET version = EXCLUDED.version, body = EXCLUDED.body, hidden = EXCLUDED.hidden",
            &[&names, &ids, &versions, &bodies, &hidden],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Keeps a connection that `LISTEN`s on `channel` and bumps `tx` on every
/// notification (and after each reconnect, when one may have been missed);
/// ends when nobody holds a receiver any more. The server's periodic
/// version check covers the time the connection is down.
async fn listen_for_datasets(
    cfg: tokio_postgres::Config,
    channel: String,
    tx: tokio::sync::watch::Sender<u64>,
) {
    let bump = |tx: &tokio::sync::watch::Sender<u64>| tx.send_modify(|n| *n = n.wrapping_add(1));
    while !tx.is_closed() {
        match cfg.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (msgs, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        match m {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                if msgs.send(()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {channel}"))
                    .await
                    .is_ok()
                {
                    bump(&tx);
                    loop {
                        tokio::select! {
                            m = rx.recv() => match m {
                                Some(()) => bump(&tx),
                                None => break,
                            },
                            _ = tx.closed() => break,
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::debug!(error = %e, "dataset listener cannot connect"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tx.closed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_placed_by_terminal_colocated_with_the_ledger_or_as_references() {
        assert_eq!(
            placement_sql("pdc_items", Placement::ByTerminal).unwrap(),
            "SELECT create_distributed_table('pdc_items', 'terminal_id')"
        );
        assert_eq!(
            placement_sql("pos_orders", Placement::ByTerminal).unwrap(),
            "SELECT create_distributed_table('pos_orders', 'terminal_id', colocate_with => 'pdc_items')"
        );
        assert_eq!(
            placement_sql("pdc_terminals", Placement::Reference).unwrap(),
            "SELECT create_reference_table('pdc_terminals')"
        );
        for bad in ["", "x'); DROP TABLE pdc_items; --", "Pos", "a.b"] {
            assert!(matches!(
                placement_sql(bad, Placement::Reference),
                Err(ServerError::Config(_))
            ));
        }
        // The colocation anchor comes first.
        assert_eq!(LEDGER_PLACEMENT[0], ("pdc_items", Placement::ByTerminal));
    }
}
