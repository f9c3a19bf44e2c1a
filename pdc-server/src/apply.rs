//! The `Apply` hook: business logic that runs inside the ledger
//! transaction, and [`PosApply`], the default for the POS records of
//! pdc-codec.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use pdc_codec::{Codec, RecordKind};
use pdc_codec::{Order, Refund, Transaction, TxKind};
use pdc_sync::{OutboxItem, View};
use redb::{ReadableTable, TableDefinition};

use crate::datasets::ScopedIds;
use crate::ServerError;

/// Why an item is refused for good (answered `rejected{code, message}`;
/// the terminal moves it to its dead letters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Machine-readable reason, e.g. `total_mismatch`.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
}

impl Rejection {
    /// A rejection with this code and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Rejection {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// An item the ledger has just recorded as applied (never a duplicate).
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    /// The pushing terminal.
    pub terminal_id: &'a str,
    /// The sequence the ledger gave it.
    pub server_seq: u64,
    /// The item itself.
    pub item: &'a OutboxItem,
}

/// Items of an `apply_*` call the hook refuses after all, by index into
/// the `items` it was given, with the reason: the ledger records them as
/// rejected instead of applied, in the same transaction. Their effects must
/// not have been written.
pub type Refusals = Vec<(usize, Rejection)>;

/// Business logic the embedding server runs exactly once per item.
///
/// The ledger calls [`Apply::check`] for every item of a batch (a pure
/// decision: accept or reject with a reason), records the idempotency key
/// with the verdict, and then, **in the same transaction**, calls
/// `apply_redb` or `apply_postgres` with only the items that were newly
/// recorded as applied: a duplicate never reaches them, so effects written
/// there (stock, loyalty points, an orders table) happen exactly once.
/// They return the items they refuse on what the database holds (e.g. an
/// order id already taken), see [`Refusals`].
///
/// An error from them aborts the transaction. Return
/// [`ServerError::Unavailable`] for a cause that may pass (a service the
/// hook needs is down): the batch is answered retry-later. Any other error
/// is taken as tied to the items: the ledger isolates the failing ones by
/// bisection and answers them `rejected{code: "storage"}` while the others
/// are applied.
#[async_trait::async_trait]
pub trait Apply: Send + Sync + 'static {
    /// Accepts or rejects one well-formed item. Must not have side effects:
    /// it may run for an item that turns out to be a duplicate.
    fn check(&self, terminal_id: &str, item: &OutboxItem) -> Result<(), Rejection>;

    /// Writes the effects of newly applied items on the embedded ledger.
    fn apply_redb(
        &self,
        _tx: &redb::WriteTransaction,
        _items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        Ok(Vec::new())
    }

    /// DDL for the hook's own PostgreSQL tables, run at start (must be
    /// idempotent: `CREATE TABLE IF NOT EXISTS …`).
    fn postgres_schema(&self) -> &'static str {
        ""
    }

    /// Writes the effects of newly applied items on PostgreSQL, inside the
    /// ledger's transaction.
    async fn apply_postgres(
        &self,
        _tx: &deadpool_postgres::Transaction<'_>,
        _items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        Ok(Vec::new())
    }

    /// Where the hook's PostgreSQL tables go on Citus (see
    /// [`Placement`](crate::Placement)); placed once, after
    /// [`Apply::postgres_schema`]. A table sharded by terminal must have
    /// a `terminal_id text` column in each of its unique keys.
    fn postgres_placement(&self) -> &'static [(&'static str, crate::Placement)] {
        &[]
    }

    /// Periodic upkeep of the hook's PostgreSQL tables (e.g. folding
    /// append-only movements into totals), in its own transaction; the
    /// server runs it about once a second on every node, so it must be
    /// safe to run concurrently with itself and with pushes. Returns how
    /// many rows it handled.
    async fn maintain_postgres(
        &self,
        _tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<u64, ServerError> {
        Ok(0)
    }
}

/// Accepts everything and writes nothing: a bare exactly-once ledger.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl Apply for AcceptAll {
    fn check(&self, _terminal_id: &str, _item: &OutboxItem) -> Result<(), Rejection> {
        Ok(())
    }
}

/// A row of [`REDB_ORDERS`]: (server seq, cashier, created at ms, total
/// cents, lines).
pub type OrderRow = (u64, u32, u64, i64, u32);

/// The embedded ledger's stock levels: (store, product id) → quantity
/// (`""` for terminals without a store). Sales subtract, refunds add back;
/// a level below zero is two tills having sold the last unit offline:
/// flagged for the back office, never a refused sale.
pub const REDB_STOCK: TableDefinition<'static, (&str, u32), i64> =
    TableDefinition::new("pos_stock");

/// The embedded ledger's stock feed: (store, position) → product id, one
/// entry per product at the position of its latest level change.
pub const REDB_STOCK_FEED: TableDefinition<'static, (&str, u64), u32> =
    TableDefinition::new("pos_stock_feed");

/// Where each product's entry sits in [`REDB_STOCK_FEED`]: (store,
/// product id) → position.
pub const REDB_STOCK_AT: TableDefinition<'static, (&str, u32), u64> =
    TableDefinition::new("pos_stock_at");

/// The embedded ledger's orders table: (terminal, order id) → [`OrderRow`].
pub const REDB_ORDERS: TableDefinition<'static, (&str, u64), OrderRow> =
    TableDefinition::new("pos_orders");

/// The receipt numbers of the orders in [`REDB_ORDERS`] that carry one
/// (order schema 2), by (terminal, order id).
pub const REDB_RECEIPTS: TableDefinition<'static, (&str, u64), &str> =
    TableDefinition::new("pos_receipts");

/// Receipt number → (terminal, order id): finds the sale a refund names by
/// its receipt, wherever it was sold.
pub const REDB_RECEIPT_INDEX: TableDefinition<'static, &str, (&str, u64)> =
    TableDefinition::new("pos_receipt_index");

/// A refund as the embedded ledger keeps it: (ledger sequence, original
/// order id, total paid back in cents, whether the original sale was
/// applied when the refund was, its receipt number, the original receipt
/// number; "" for none).
pub type RefundRow<'a> = (u64, u64, i64, bool, &'a str, &'a str);

/// The refunds, by (terminal, refund id).
pub const REDB_REFUNDS: TableDefinition<'static, (&str, u64), RefundRow<'static>> =
    TableDefinition::new("pos_refunds");

/// The default hook for the POS records of pdc-codec:
///
/// * an order (kind 2) must decode, have an id below 2^63 (what the orders
///   tables store), at least one line, only known product ids (once a
///   catalogue is known), no line worth less than zero, and payments that
///   add up to the lines' total; it is written to `pos_orders` (+
///   `pos_order_lines` on PostgreSQL) for the back office. An order whose
///   (terminal, order id) already belongs to another applied item is
///   refused `duplicate_order`, atomically with the ledger: the orders
///   tables hold exactly the applied orders;
/// * a transaction (kind 1) must decode and have a non-negative amount
///   unless it is a refund;
/// * any other kind is recorded in the ledger as is.
#[derive(Debug, Clone, Default)]
pub struct PosApply {
    codec: Codec,
    catalog: Arc<RwLock<Option<ScopedIds>>>,
    views: Arc<RwLock<HashMap<String, View>>>,
    stock: bool,
}

impl PosApply {
    /// Also keeps per-store stock levels from the applied sales and
    /// refunds ([`REDB_STOCK`] on the embedded ledger; on PostgreSQL the
    /// view `pos_stock_levels`). Off by default.
    ///
    /// On PostgreSQL a push only appends its movements (one row per store
    /// and product of the batch) to `pos_stock_moves`, which has no key and
    /// no index, so pushes of one store's terminals selling the same
    /// products never wait on each other; the server's upkeep
    /// ([`Apply::maintain_postgres`], about once a second) folds the
    /// movements into `pos_stock`, and `pos_stock_levels` is the sum of
    /// both (exact at any moment, folded or not).
    pub fn with_stock(mut self) -> Self {
        self.stock = true;
        self
    }

    /// Whether this hook keeps stock ([`PosApply::with_stock`]).
    pub fn tracks_stock(&self) -> bool {
        self.stock
    }

    /// A hook with no catalogue yet (product ids are not checked).
    pub fn new() -> Self {
        PosApply::default()
    }

    /// Sets the known product ids (the server calls this when the products
    /// dataset changes).
    pub fn set_catalog(&self, ids: impl IntoIterator<Item = u32>) {
        self.set_scoped_catalog(ScopedIds {
            chain: ids.into_iter().map(u64::from).collect(),
            ..ScopedIds::default()
        });
    }

    /// Sets the known product ids per layer: a terminal's order is checked
    /// against the catalogue its store sees (its region's and store's
    /// overrides and hidden products over the chain's).
    pub fn set_scoped_catalog(&self, ids: ScopedIds) {
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = Some(ids);
    }

    /// Records a terminal's store and region (the server calls this when
    /// it authenticates the terminal); an unknown terminal sees the chain.
    pub fn set_terminal_view(&self, terminal_id: &str, view: &View) {
        let mut views = self.views.write().unwrap_or_else(|p| p.into_inner());
        if views.get(terminal_id) != Some(view) {
            views.insert(terminal_id.to_owned(), view.clone());
        }
    }

    /// Whether every product the orders among `items` name is in the
    /// catalogue `terminal_id`'s store sees (or no catalogue is set);
    /// undecodable items are left to [`Apply::check`].
    pub fn knows_products(&self, terminal_id: &str, items: &[OutboxItem]) -> bool {
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        let Some(known) = catalog.as_ref() else {
            return true;
        };
        let views = self.views.read().unwrap_or_else(|p| p.into_inner());
        let chain = View::chain();
        let view = views.get(terminal_id).unwrap_or(&chain);
        items
            .iter()
            .filter(|i| i.kind == u16::from(RecordKind::ORDER.0))
            .filter_map(|i| self.order(i).ok())
            .all(|o| {
                o.lines
                    .iter()
                    .all(|l| known.contains(view, u64::from(l.product_id)))
            })
    }

    /// The store whose stock a terminal's sales move (`""`: none).
    fn store_of(&self, terminal_id: &str) -> String {
        self.views
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(terminal_id)
            .and_then(|v| v.store.clone())
            .unwrap_or_default()
    }

    /// The stock movements of the accepted orders (minus) and refunds
    /// (plus) of `items`, leaving out the refused ones, summed per (store,
    /// product) in key order (so that concurrent batches lock rows in the
    /// same order).
    fn stock_moves(
        &self,
        items: &[Accepted<'_>],
        refused: &Refusals,
    ) -> BTreeMap<(String, u32), i64> {
        let mut moves: BTreeMap<(String, u32), i64> = BTreeMap::new();
        if !self.stock {
            return moves;
        }
        let refused: HashSet<usize> = refused.iter().map(|(n, _)| *n).collect();
        let mut add = |terminal: &str, lines: &[pdc_codec::OrderLine], sign: i64| {
            let store = self.store_of(terminal);
            for l in lines {
                *moves.entry((store.clone(), l.product_id)).or_default() +=
                    sign * i64::from(l.quantity);
            }
        };
        for (n, a, o) in self.orders(items) {
            if !refused.contains(&n) {
                add(a.terminal_id, &o.lines, -1);
            }
        }
        for (n, a, r) in self.refunds(items) {
            if !refused.contains(&n) {
                add(a.terminal_id, &r.lines, 1);
            }
        }
        moves.retain(|_, q| *q != 0);
        moves
    }

    fn order(&self, item: &OutboxItem) -> Result<Order, Rejection> {
        self.codec
            .decode::<Order>(&item.payload)
            .map_err(|e| Rejection::new("undecodable", format!("order: {e}")))
    }

    fn refund(&self, item: &OutboxItem) -> Result<Refund, Rejection> {
        self.codec
            .decode::<Refund>(&item.payload)
            .map_err(|e| Rejection::new("undecodable", format!("refund: {e}")))
    }

    /// The accepted refunds with their index in `items`.
    fn refunds<'a>(&self, items: &'a [Accepted<'a>]) -> Vec<(usize, &'a Accepted<'a>, Refund)> {
        items
            .iter()
            .enumerate()
            .filter(|(_, a)| a.item.kind == u16::from(RecordKind::REFUND.0))
            // check() accepted these, so they decode.
            .filter_map(|(n, a)| self.refund(a.item).ok().map(|r| (n, a, r)))
            .collect()
    }

    fn check_order(&self, terminal_id: &str, o: &Order) -> Result<(), Rejection> {
        // The rules the till checks too (one function in pdc-codec).
        o.check().map_err(|e| rule_rejection(e, "invalid_order"))?;
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = catalog.as_ref() {
            let views = self.views.read().unwrap_or_else(|p| p.into_inner());
            let chain = View::chain();
            let view = views.get(terminal_id).unwrap_or(&chain);
            if let Some(l) = o
                .lines
                .iter()
                .find(|l| !known.contains(view, u64::from(l.product_id)))
            {
                return Err(Rejection::new(
                    "unknown_product",
                    format!("product {} is not in the catalogue of {view}", l.product_id),
                ));
            }
        }
        Ok(())
    }

    /// The accepted orders with their index in `items`.
    fn orders<'a>(&self, items: &'a [Accepted<'a>]) -> Vec<(usize, &'a Accepted<'a>, Order)> {
        items
            .iter()
            .enumerate()
            .filter(|(_, a)| a.item.kind == u16::from(RecordKind::ORDER.0))
            // check() accepted these, so they decode.
            .filter_map(|(n, a)| self.order(a.item).ok().map(|o| (n, a, o)))
            .collect()
    }
}

const POS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pos_stock (
    store text NOT NULL,
    product_id bigint NOT NULL,
    quantity bigint NOT NULL,
    PRIMARY KEY (store, product_id)
);
CREATE SEQUENCE IF NOT EXISTS pos_stock_seq;
ALTER TABLE pos_stock ADD COLUMN IF NOT EXISTS seq bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS pos_stock_feed ON pos_stock (store, seq);
CREATE TABLE IF NOT EXISTS pos_stock_moves (
    terminal_id text NOT NULL,
    store text NOT NULL,
    product_id bigint NOT NULL,
    quantity bigint NOT NULL
);
CREATE OR REPLACE VIEW pos_stock_levels AS
    SELECT store, product_id, sum(quantity)::bigint AS quantity FROM (
        SELECT store, product_id, quantity FROM pos_stock
        UNION ALL
        SELECT store, product_id, quantity FROM pos_stock_moves
    ) m GROUP BY store, product_id;
CREATE TABLE IF NOT EXISTS pos_orders (
    terminal_id text NOT NULL,
    order_id bigint NOT NULL,
    server_seq bigint NOT NULL,
    cashier_id bigint NOT NULL,
    customer_id bigint,
    created_at timestamptz NOT NULL,
    total_cents bigint NOT NULL,
    lines int NOT NULL,
    PRIMARY KEY (terminal_id, order_id)
);
ALTER TABLE pos_orders ADD COLUMN IF NOT EXISTS receipt text;
CREATE INDEX IF NOT EXISTS pos_orders_receipt ON pos_orders (receipt);
CREATE TABLE IF NOT EXISTS pos_refunds (
    terminal_id text NOT NULL,
    refund_id bigint NOT NULL,
    server_seq bigint NOT NULL,
    cashier_id bigint NOT NULL,
    original_order_id bigint NOT NULL,
    original_receipt text,
    receipt text,
    created_at timestamptz NOT NULL,
    total_cents bigint NOT NULL,
    original_known boolean NOT NULL,
    PRIMARY KEY (terminal_id, refund_id)
);
CREATE TABLE IF NOT EXISTS pos_order_lines (
    terminal_id text NOT NULL,
    order_id bigint NOT NULL,
    line_no int NOT NULL,
    product_id bigint NOT NULL,
    quantity bigint NOT NULL,
    unit_price_cents bigint NOT NULL,
    discount_cents bigint NOT NULL,
    tax_rate_bp int NOT NULL,
    PRIMARY KEY (terminal_id, order_id, line_no)
);
CREATE INDEX IF NOT EXISTS pos_orders_created_at ON pos_orders (created_at);
CREATE INDEX IF NOT EXISTS pos_order_lines_product ON pos_order_lines (product_id);
ALTER TABLE pos_orders ADD COLUMN IF NOT EXISTS discount_cents bigint NOT NULL DEFAULT 0;
ALTER TABLE pos_order_lines ADD COLUMN IF NOT EXISTS unit text NOT NULL DEFAULT 'each';
ALTER TABLE pos_order_lines ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE pos_order_lines ADD COLUMN IF NOT EXISTS note text;
CREATE TABLE IF NOT EXISTS pos_payments (
    terminal_id text NOT NULL,
    order_id bigint NOT NULL,
    payment_no int NOT NULL,
    method text NOT NULL,
    amount_cents bigint NOT NULL,
    tendered_cents bigint,
    reference text,
    PRIMARY KEY (terminal_id, order_id, payment_no)
);
";

/// Orders and their lines in one statement: an order whose (terminal,
/// order id) is taken is not inserted, and only the inserted orders' lines
/// are (joined on the ledger sequence); the statement returns the
/// sequences of the inserted orders, so the others are refused.
const INSERT_ORDERS: &str = "WITH o AS (INSERT INTO pos_orders (terminal_id, order_id, \
     server_seq, cashier_id, customer_id, created_at, total_cents, lines, receipt, \
     discount_cents) \
     SELECT t, o, s, c, cu, to_timestamp(a / 1000.0), tot, n, rc, dc FROM UNNEST($1::text[], \
     $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], \
     $8::int[], $18::text[], $30::bigint[]) AS x(t, o, s, c, cu, a, tot, n, rc, dc) \
     ON CONFLICT (terminal_id, order_id) DO NOTHING RETURNING server_seq), \
     l AS (INSERT INTO pos_order_lines (terminal_id, order_id, line_no, product_id, quantity, \
     unit_price_cents, discount_cents, tax_rate_bp, unit, name, note) \
     SELECT x.t, x.o, x.n, x.p, x.q, x.u, x.d, x.r, x.un, x.na, x.no FROM UNNEST($9::bigint[], \
     $10::text[], $11::bigint[], $12::int[], $13::bigint[], $14::bigint[], $15::bigint[], \
     $16::bigint[], $17::int[], $19::text[], $20::text[], $21::text[]) \
     AS x(s, t, o, n, p, q, u, d, r, un, na, no) JOIN o ON o.server_seq = x.s), \
     p AS (INSERT INTO pos_payments (terminal_id, order_id, payment_no, method, amount_cents, \
     tendered_cents, reference) \
     SELECT x.t, x.o, x.n, x.m, x.a, x.td, x.rf FROM UNNEST($22::bigint[], $23::text[], \
     $24::bigint[], $25::int[], $26::text[], $27::bigint[], $28::bigint[], $29::text[]) \
     AS x(s, t, o, n, m, a, td, rf) JOIN o ON o.server_seq = x.s) \
     SELECT server_seq FROM o";

/// Refunds in one statement: a refund whose (terminal, refund id) is taken
/// is not inserted; `original_known` says whether the sale it names (by
/// the terminal's order id, or by receipt number from any terminal) was
/// applied by then. Returns the sequences of the inserted refunds.
const INSERT_REFUNDS: &str = "INSERT INTO pos_refunds (terminal_id, refund_id, server_seq, \
     cashier_id, original_order_id, original_receipt, receipt, created_at, total_cents, \
     original_known) \
     SELECT t, r, s, c, oo, orc, rc, to_timestamp(a / 1000.0), tot, \
     EXISTS (SELECT 1 FROM pos_orders o WHERE (o.terminal_id = x.t AND o.order_id = x.oo) \
     OR (x.orc IS NOT NULL AND o.receipt = x.orc)) \
     FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
     $6::text[], $7::text[], $8::bigint[], $9::bigint[]) AS x(t, r, s, c, oo, orc, rc, a, tot) \
     ON CONFLICT (terminal_id, refund_id) DO NOTHING RETURNING server_seq";

/// A broken order rule as the rejection the till sees (the rule's code);
/// any other error under `code`.
fn rule_rejection(e: pdc_codec::CodecError, code: &str) -> Rejection {
    match e {
        pdc_codec::CodecError::InvalidOrder { rule, detail } => Rejection::new(rule.code(), detail),
        other => Rejection::new(code, other.to_string()),
    }
}

fn duplicate_refund(terminal: &str, refund_id: u64) -> Rejection {
    Rejection::new(
        "duplicate_refund",
        format!("refund {refund_id} of terminal {terminal} was already applied as another item"),
    )
}

fn duplicate_order(terminal: &str, order_id: u64) -> Rejection {
    Rejection::new(
        "duplicate_order",
        format!("order {order_id} of terminal {terminal} was already applied as another item"),
    )
}

#[async_trait::async_trait]
impl Apply for PosApply {
    fn check(&self, terminal_id: &str, item: &OutboxItem) -> Result<(), Rejection> {
        if item.kind == u16::from(RecordKind::ORDER.0) {
            let o = self.order(item)?;
            self.check_order(terminal_id, &o)
        } else if item.kind == u16::from(RecordKind::ANALYTICS.0) {
            // Kept in the ledger as is, once checked.
            let e: pdc_codec::AnalyticsEvent = self
                .codec
                .decode(&item.payload)
                .map_err(|e| Rejection::new("undecodable", format!("analytics event: {e}")))?;
            e.check()
                .map_err(|e| Rejection::new("invalid_event", e.to_string()))
        } else if item.kind == u16::from(RecordKind::REFUND.0) {
            // The order rules (one function in pdc-codec). The original
            // need not be known: it may be sold at a till still offline.
            self.refund(item)?
                .check()
                .map(drop)
                .map_err(|e| rule_rejection(e, "invalid_refund"))
        } else if item.kind == u16::from(RecordKind::TRANSACTION.0) {
            let t: Transaction = self
                .codec
                .decode(&item.payload)
                .map_err(|e| Rejection::new("undecodable", format!("transaction: {e}")))?;
            if t.amount_cents < 0 && t.kind != TxKind::Refund {
                return Err(Rejection::new(
                    "negative_amount",
                    format!("{:?} of {} cents", t.kind, t.amount_cents),
                ));
            }
            Ok(())
        } else {
            Ok(())
        }
    }

    fn apply_redb(
        &self,
        tx: &redb::WriteTransaction,
        items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        let mut table = tx.open_table(REDB_ORDERS)?;
        let mut receipts = tx.open_table(REDB_RECEIPTS)?;
        let mut index = tx.open_table(REDB_RECEIPT_INDEX)?;
        let mut refused = Vec::new();
        for (n, a, o) in self.orders(items) {
            let lines = u32::try_from(o.lines.len()).unwrap_or(u32::MAX);
            if table.get((a.terminal_id, o.id))?.is_some() {
                refused.push((n, duplicate_order(a.terminal_id, o.id)));
            } else {
                table.insert(
                    (a.terminal_id, o.id),
                    (
                        a.server_seq,
                        o.cashier_id,
                        o.created_at_ms,
                        o.total_cents(),
                        lines,
                    ),
                )?;
                if let Some(r) = &o.receipt {
                    receipts.insert((a.terminal_id, o.id), r.as_str())?;
                    index.insert(r.as_str(), (a.terminal_id, o.id))?;
                }
            }
        }
        let mut refunds = tx.open_table(REDB_REFUNDS)?;
        for (n, a, r) in self.refunds(items) {
            if refunds.get((a.terminal_id, r.id))?.is_some() {
                refused.push((n, duplicate_refund(a.terminal_id, r.id)));
                continue;
            }
            let by_id = table.get((a.terminal_id, r.original_order_id))?.is_some();
            let by_receipt = match &r.original_receipt {
                Some(rc) => index.get(rc.as_str())?.is_some(),
                None => false,
            };
            refunds.insert(
                (a.terminal_id, r.id),
                (
                    a.server_seq,
                    r.original_order_id,
                    r.total_cents(),
                    by_id || by_receipt,
                    r.receipt.as_deref().unwrap_or(""),
                    r.original_receipt.as_deref().unwrap_or(""),
                ),
            )?;
        }
        let mut stock = tx.open_table(REDB_STOCK)?;
        let mut feed = tx.open_table(REDB_STOCK_FEED)?;
        let mut at = tx.open_table(REDB_STOCK_AT)?;
        for ((store, product), q) in self.stock_moves(items, &refused) {
            let key = (store.as_str(), product);
            let now = stock.get(key)?.map_or(0, |v| v.value());
            stock.insert(key, now.saturating_add(q))?;
            // The product moves to the end of its store's feed.
            let last = feed
                .range((store.as_str(), 0)..=(store.as_str(), u64::MAX))?
                .next_back()
                .transpose()?
                .map_or(0, |(k, _)| k.value().1);
            if let Some(old) = at.insert(key, last + 1)? {
                feed.remove((store.as_str(), old.value()))?;
            }
            feed.insert((store.as_str(), last + 1), product)?;
        }
        Ok(refused)
    }

    fn postgres_schema(&self) -> &'static str {
        POS_SCHEMA
    }

    fn postgres_placement(&self) -> &'static [(&'static str, crate::Placement)] {
        use crate::Placement::{ByTerminal, Reference};
        &[
            ("pos_orders", ByTerminal),
            ("pos_order_lines", ByTerminal),
            ("pos_payments", ByTerminal),
            ("pos_refunds", ByTerminal),
            ("pos_stock_moves", ByTerminal),
            ("pos_stock", Reference),
        ]
    }

    async fn maintain_postgres(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<u64, ServerError> {
        if !self.stock {
            return Ok(0);
        }
        // One fold at a time across nodes (another node folding now: skip
        // this tick), so the stock feed's positions are handed out in
        // commit order and a till reading the feed never skips a change.
        let mine: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock(hashtext('pdc_stock_fold:' || current_schema()))",
                &[],
            )
            .await?
            .get(0);
        if !mine {
            return Ok(0);
        }
        // The deleted rows are exactly the ones folded; a push committing
        // meanwhile is left for the next fold.
        let n = tx
            .execute(
                "WITH m AS (DELETE FROM pos_stock_moves RETURNING store, product_id, quantity) \
                 INSERT INTO pos_stock (store, product_id, quantity, seq) \
                 SELECT store, product_id, sum(quantity)::bigint, nextval('pos_stock_seq') FROM m \
                 GROUP BY store, product_id \
                 ON CONFLICT (store, product_id) DO UPDATE \
                    SET quantity = pos_stock.quantity + EXCLUDED.quantity, seq = EXCLUDED.seq",
                &[],
            )
            .await?;
        Ok(n)
    }

    async fn apply_postgres(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        let mut refused = self.apply_orders_postgres(tx, items).await?;
        // After the orders: a sale and its refund in one batch find each
        // other, as on the embedded ledger.
        refused.extend(self.apply_refunds_postgres(tx, items).await?);
        let moves = self.stock_moves(items, &refused);
        if !moves.is_empty() {
            let stores: Vec<&str> = moves.keys().map(|(s, _)| s.as_str()).collect();
            let products: Vec<i64> = moves.keys().map(|(_, p)| i64::from(*p)).collect();
            let qty: Vec<i64> = moves.values().copied().collect();
            // One push is one terminal's (its shard on Citus).
            let terminal = items.first().map_or("", |a| a.terminal_id);
            // Append-only: no row another push could hold a lock on.
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO pos_stock_moves (terminal_id, store, product_id, quantity) \
                     SELECT $1, s, p, q FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS x(s, p, q)",
                )
                .await?;
            tx.execute(&stmt, &[&terminal, &stores, &products, &qty])
                .await?;
        }
        Ok(refused)
    }
}

impl PosApply {
    /// The orders of `items` into `pos_orders` and `pos_order_lines`.
    async fn apply_orders_postgres(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        let orders = self.orders(items);
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let mut o_cols = OrderColumns::default();
        let mut l_cols = LineColumns::default();
        let mut p_cols = PaymentColumns::default();
        for (_, a, o) in &orders {
            o_cols.push(a, o);
            for (n, l) in o.lines.iter().enumerate() {
                l_cols.push(a, o.id, n, l);
            }
            for (n, p) in o.payments.iter().enumerate() {
                p_cols.push(a, o.id, n, p);
            }
        }
        let stmt = tx.prepare_cached(INSERT_ORDERS).await?;
        let o = &o_cols;
        let l = &l_cols;
        let p = &p_cols;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 30] = [
            &o.term,
            &o.oid,
            &o.seq,
            &o.cashier,
            &o.cust,
            &o.at,
            &o.total,
            &o.nlines,
            &l.seq,
            &l.term,
            &l.oid,
            &l.no,
            &l.prod,
            &l.qty,
            &l.price,
            &l.disc,
            &l.tax,
            &o.receipt,
            &l.unit,
            &l.name,
            &l.note,
            &p.seq,
            &p.term,
            &p.oid,
            &p.no,
            &p.method,
            &p.amount,
            &p.tendered,
            &p.reference,
            &o.discount,
        ];
        insert_returning(tx, &stmt, &params, &orders, |a, o| {
            duplicate_order(a.terminal_id, o.id)
        })
        .await
    }

    /// The refunds of `items` into `pos_refunds`; `original_known` says
    /// whether the server held the sale when the refund arrived.
    async fn apply_refunds_postgres(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        items: &[Accepted<'_>],
    ) -> Result<Refusals, ServerError> {
        let refunds = self.refunds(items);
        if refunds.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = RefundColumns::default();
        for (_, a, r) in &refunds {
            c.push(a, r);
        }
        let stmt = tx.prepare_cached(INSERT_REFUNDS).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
            &c.term,
            &c.rid,
            &c.seq,
            &c.cashier,
            &c.orig,
            &c.orig_receipt,
            &c.receipt,
            &c.at,
            &c.total,
        ];
        let refused = insert_returning(tx, &stmt, &params, &refunds, |a, r| {
            duplicate_refund(a.terminal_id, r.id)
        });
        refused.await
    }
}

/// The refunds of one `apply_postgres` call as UNNEST columns (ids below
/// 2^63: `Refund::check`).
#[derive(Default)]
struct RefundColumns<'a> {
    term: Vec<&'a str>,
    rid: Vec<i64>,
    seq: Vec<i64>,
    cashier: Vec<i64>,
    orig: Vec<i64>,
    orig_receipt: Vec<Option<&'a str>>,
    receipt: Vec<Option<&'a str>>,
    at: Vec<i64>,
    total: Vec<i64>,
}

impl<'a> RefundColumns<'a> {
    fn push(&mut self, a: &Accepted<'a>, r: &'a Refund) {
        self.term.push(a.terminal_id);
        self.rid.push(r.id as i64);
        self.seq.push(a.server_seq as i64);
        self.cashier.push(i64::from(r.cashier_id));
        self.orig.push(r.original_order_id as i64);
        self.orig_receipt.push(r.original_receipt.as_deref());
        self.receipt.push(r.receipt.as_deref());
        self.at.push(r.created_at_ms.min(i64::MAX as u64) as i64);
        self.total.push(r.total_cents());
    }
}

/// Runs an insert that returns the ledger sequences of the rows it
/// inserted; the `rows` whose sequence is not among them are refused with
/// `refuse` (their key was taken).
async fn insert_returning<T>(
    tx: &deadpool_postgres::Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    rows: &[(usize, &Accepted<'_>, T)],
    refuse: impl Fn(&Accepted<'_>, &T) -> Rejection,
) -> Result<Refusals, ServerError> {
    let inserted: HashSet<i64> = tx
        .query(stmt, params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(rows
        .iter()
        .filter(|(_, a, _)| !inserted.contains(&(a.server_seq as i64)))
        .map(|(n, a, t)| (*n, refuse(a, t)))
        .collect())
}

/// The orders of one `apply_postgres` call as UNNEST columns. Ids were
/// range-checked by `check` (order id, sequence below 2^63), so the casts
/// to `bigint` are lossless.
#[derive(Default)]
struct OrderColumns<'a> {
    term: Vec<&'a str>,
    oid: Vec<i64>,
    seq: Vec<i64>,
    cashier: Vec<i64>,
    cust: Vec<Option<i64>>,
    at: Vec<i64>,
    total: Vec<i64>,
    nlines: Vec<i32>,
    receipt: Vec<Option<&'a str>>,
    discount: Vec<i64>,
}

impl<'a> OrderColumns<'a> {
    fn push(&mut self, a: &Accepted<'a>, o: &'a Order) {
        self.receipt.push(o.receipt.as_deref());
        self.discount.push(o.discount_cents);
        self.term.push(a.terminal_id);
        self.oid.push(o.id as i64);
        self.seq.push(a.server_seq as i64);
        self.cashier.push(i64::from(o.cashier_id));
        self.cust.push(o.customer_id.map(i64::from));
        self.at.push(o.created_at_ms.min(i64::MAX as u64) as i64);
        self.total.push(o.total_cents());
        self.nlines
            .push(i32::try_from(o.lines.len()).unwrap_or(i32::MAX));
    }
}

/// The lines of those orders as UNNEST columns.
#[derive(Default)]
struct LineColumns<'a> {
    seq: Vec<i64>,
    term: Vec<&'a str>,
    oid: Vec<i64>,
    no: Vec<i32>,
    prod: Vec<i64>,
    qty: Vec<i64>,
    price: Vec<i64>,
    disc: Vec<i64>,
    tax: Vec<i32>,
    unit: Vec<&'static str>,
    name: Vec<Option<&'a str>>,
    note: Vec<Option<&'a str>>,
}

/// The payments of those orders as UNNEST columns.
#[derive(Default)]
struct PaymentColumns<'a> {
    seq: Vec<i64>,
    term: Vec<&'a str>,
    oid: Vec<i64>,
    no: Vec<i32>,
    method: Vec<&'a str>,
    amount: Vec<i64>,
    tendered: Vec<Option<i64>>,
    reference: Vec<Option<&'a str>>,
}

impl<'a> PaymentColumns<'a> {
    fn push(&mut self, a: &Accepted<'a>, order_id: u64, n: usize, p: &'a pdc_codec::Payment) {
        self.seq.push(a.server_seq as i64);
        self.term.push(a.terminal_id);
        self.oid.push(order_id as i64);
        self.no.push(i32::try_from(n).unwrap_or(i32::MAX));
        self.method.push(p.method.name());
        self.amount.push(p.amount_cents);
        self.tendered.push(p.tendered_cents);
        self.reference.push(p.reference.as_deref());
    }
}

impl<'a> LineColumns<'a> {
    fn push(&mut self, a: &Accepted<'a>, order_id: u64, n: usize, l: &'a pdc_codec::OrderLine) {
        self.seq.push(a.server_seq as i64);
        self.term.push(a.terminal_id);
        self.oid.push(order_id as i64);
        self.no.push(i32::try_from(n).unwrap_or(i32::MAX));
        self.prod.push(i64::from(l.product_id));
        self.qty.push(i64::from(l.quantity));
        self.price.push(l.unit_price_cents);
        self.disc.push(l.discount_cents);
        self.tax.push(i32::from(l.tax_rate_bp));
        self.unit.push(match l.unit {
            pdc_codec::Unit::Each => "each",
            pdc_codec::Unit::Kilogram => "kg",
            pdc_codec::Unit::Litre => "l",
            pdc_codec::Unit::Metre => "m",
        });
        self.name.push(l.name.as_deref());
        self.note.push(l.note.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pdc_codec::{OrderLine, Payment, PaymentMethod};
    use pdc_sync::{Priority, StreamKey};

    fn item(kind: u16, payload: Vec<u8>) -> OutboxItem {
        OutboxItem {
            local_id: 1,
            stream: StreamKey(1),
            priority: Priority::High,
            kind,
            created_at_ms: 0,
            payload,
        }
    }

    fn order(paid: i64) -> Order {
        Order {
            receipt: None,
            id: 7,
            cashier_id: 2,
            customer_id: None,
            created_at_ms: 0,
            lines: vec![OrderLine {
                product_id: 5,
                quantity: 2,
                unit_price_cents: 150,
                discount_cents: 0,
                tax_rate_bp: 2000,
                ..Default::default()
            }],
            payments: vec![Payment {
                method: PaymentMethod::Card,
                amount_cents: paid,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn orders_are_checked_against_their_lines_and_the_catalogue() {
        let c = Codec::new();
        let hook = PosApply::new();
        let ok = item(2, c.encode(&order(300)).unwrap());
        assert_eq!(hook.check("t", &ok), Ok(()));
        let bad = item(2, c.encode(&order(299)).unwrap());
        assert_eq!(hook.check("t", &bad).unwrap_err().code, "total_mismatch");
        assert_eq!(
            hook.check("t", &item(2, vec![1, 2, 3])).unwrap_err().code,
            "undecodable"
        );
        hook.set_catalog([1, 2, 3]);
        assert_eq!(hook.check("t", &ok).unwrap_err().code, "unknown_product");
        hook.set_catalog([5]);
        assert_eq!(hook.check("t", &ok), Ok(()));
        // Other kinds are opaque.
        assert_eq!(hook.check("t", &item(70, vec![1])), Ok(()));
    }

    #[test]
    fn only_refunds_may_be_negative() {
        let c = Codec::new();
        let hook = PosApply::new();
        let mut t = pdc_codec::Transaction::seed_baseline();
        t.amount_cents = -5;
        assert_eq!(
            hook.check("t", &item(1, c.encode(&t).unwrap()))
                .unwrap_err()
                .code,
            "negative_amount"
        );
        t.kind = TxKind::Refund;
        assert_eq!(hook.check("t", &item(1, c.encode(&t).unwrap())), Ok(()));
    }

    #[test]
    fn analytics_events_are_checked_and_kept() {
        let c = Codec::new();
        let hook = PosApply::new();
        let mut e = pdc_codec::AnalyticsEvent {
            name: "basket_view".into(),
            at_ms: 1,
            properties: vec![("lines".into(), "3".into())],
        };
        let kind = u16::from(RecordKind::ANALYTICS.0);
        assert_eq!(hook.check("t", &item(kind, c.encode(&e).unwrap())), Ok(()));
        e.name = "Basket View".into();
        assert_eq!(
            hook.check("t", &item(kind, c.encode(&e).unwrap()))
                .unwrap_err()
                .code,
            "invalid_event"
        );
        assert_eq!(
            hook.check("t", &item(kind, b"not a frame".to_vec()))
                .unwrap_err()
                .code,
            "undecodable"
        );
    }
}
