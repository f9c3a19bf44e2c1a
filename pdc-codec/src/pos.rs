//! POS domain records and their compact columnar batch encodings.
//!
//! Single records are plain postcard: amounts as integer cents (zigzag
//! varints), enums as one-byte indices, timestamps as varint milliseconds.
//!
//! Batches of records from one terminal are stored column by column, with
//! the redundancy a till's data has taken out before lz4 sees it: ids and
//! timestamps as deltas, references split into a dictionary prefix and a
//! delta-coded number, an order line's unit price and tax rate as the
//! difference from the last time the same product appeared in the batch, and a
//! payment's amount as the difference from what was still due.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{Codec, CodecError, Record, RecordKind};

/// What a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxKind {
    /// Money taken for a sale.
    Payment,
    /// Money given back.
    Refund,
    /// Goods exchanged.
    Exchange,
    /// A cancelled sale.
    Void,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxStatus {
    /// Settled.
    Completed,
    /// Waiting for settlement.
    Pending,
    /// Declined or errored.
    Failed,
    /// Cancelled before settlement.
    Cancelled,
}

/// A POS money transaction, as the design study's baseline record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transaction {
    /// Terminal-local transaction id.
    pub id: u64,
    /// What the transaction did.
    pub kind: TxKind,
    /// Amount in cents (minor units).
    pub amount_cents: i64,
    /// Wall time in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Settlement state.
    pub status: TxStatus,
    /// Human-readable reference such as `TX-2025-000001`.
    pub reference: String,
}

impl Transaction {
    /// The design study's baseline transaction: `{id: 12345, type: "payment",
    /// amount: 99.99, timestamp: 1704067200000, status: "completed",
    /// reference: "TX-2025-001"}`.
    pub fn seed_baseline() -> Self {
        Transaction {
            id: 12345,
            kind: TxKind::Payment,
            amount_cents: 9999,
            timestamp_ms: 1_704_067_200_000,
            status: TxStatus::Completed,
            reference: "TX-2025-001".into(),
        }
    }
}

impl Record for Transaction {
    const KIND: RecordKind = RecordKind::TRANSACTION;
    const SCHEMA: u8 = 1;
}

/// How a payment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentMethod {
    /// Notes and coins.
    Cash,
    /// Card.
    Card,
    /// Voucher or gift card.
    Voucher,
}

/// One payment towards an order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Payment {
    /// How it was paid.
    pub method: PaymentMethod,
    /// Amount in cents.
    pub amount_cents: i64,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderLine {
    /// Catalogue product id.
    pub product_id: u32,
    /// Units sold.
    pub quantity: u32,
    /// Price of one unit in cents.
    pub unit_price_cents: i64,
    /// Discount on the whole line in cents.
    pub discount_cents: i64,
    /// Tax rate in basis points (2000 = 20%).
    pub tax_rate_bp: u16,
}

impl OrderLine {
    /// The line's amount: quantity × unit price − discount.
    pub fn amount_cents(&self) -> i64 {
        i64::from(self.quantity)
            .wrapping_mul(self.unit_price_cents)
            .wrapping_sub(self.discount_cents)
    }
}

/// A POS order: lines and payments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Order {
    /// Terminal-local order id.
    pub id: u64,
    /// The terminal that took the order.
    pub terminal_id: u32,
    /// The cashier logged in.
    pub cashier_id: u32,
    /// The loyalty customer, when known.
    pub customer_id: Option<u32>,
    /// Wall time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// What was sold.
    pub lines: Vec<OrderLine>,
    /// How it was paid.
    pub payments: Vec<Payment>,
}

impl Order {
    /// Sum of the lines' amounts.
    pub fn total_cents(&self) -> i64 {
        self.lines
            .iter()
            .fold(0i64, |acc, l| acc.wrapping_add(l.amount_cents()))
    }
}

impl Record for Order {
    const KIND: RecordKind = RecordKind::ORDER;
    const SCHEMA: u8 = 1;
}

/// A catalogue product as the server sends it as reference data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Product {
    /// Product id.
    pub id: u32,
    /// Display name.
    pub name: String,
    /// EAN-13 barcode.
    pub barcode: String,
    /// Category name.
    pub category: String,
    /// Price in cents.
    pub price_cents: i64,
    /// Tax rate in basis points.
    pub tax_rate_bp: u16,
    /// Whether it can be sold.
    pub active: bool,
}

impl Record for Product {
    const KIND: RecordKind = RecordKind::PRODUCT;
    const SCHEMA: u8 = 1;
}

/// A batch of transactions stored column by column (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TransactionColumns {
    id_deltas: Vec<i64>,
    kinds: Vec<TxKind>,
    statuses: Vec<TxStatus>,
    amounts: Vec<i64>,
    timestamp_deltas: Vec<i64>,
    ref_prefixes: Vec<String>,
    ref_prefix_index: Vec<u32>,
    ref_widths: Vec<u8>,
    ref_number_deltas: Vec<i64>,
}

impl Record for TransactionColumns {
    const KIND: RecordKind = RecordKind::TRANSACTION_COLUMNS;
    const SCHEMA: u8 = 1;
}

/// Splits a reference into (prefix, zero-padded width, number) when it ends
/// in 1 to 18 ASCII digits; width 0 means "no number, the prefix is all".
fn split_reference(r: &str) -> (&str, u8, u64) {
    let digits = r.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 18 {
        return (r, 0, 0);
    }
    let (prefix, num) = r.split_at(r.len() - digits);
    match num.parse::<u64>() {
        Ok(n) => (prefix, digits as u8, n),
        Err(_) => (r, 0, 0),
    }
}

impl TransactionColumns {
    /// Builds the columns from records.
    pub fn from_records(txs: &[Transaction]) -> Self {
        let mut c = TransactionColumns::default();
        let mut prefixes: HashMap<&str, u32> = HashMap::new();
        let (mut last_id, mut last_ts, mut last_num) = (0u64, 0u64, 0u64);
        for t in txs {
            c.id_deltas.push(t.id.wrapping_sub(last_id) as i64);
            last_id = t.id;
            c.kinds.push(t.kind);
            c.statuses.push(t.status);
            c.amounts.push(t.amount_cents);
            c.timestamp_deltas
                .push(t.timestamp_ms.wrapping_sub(last_ts) as i64);
            last_ts = t.timestamp_ms;
            let (prefix, width, num) = split_reference(&t.reference);
            let next = prefixes.len() as u32;
            let idx = *prefixes.entry(prefix).or_insert_with(|| {
                c.ref_prefixes.push(prefix.to_owned());
                next
            });
            c.ref_prefix_index.push(idx);
            c.ref_widths.push(width);
            c.ref_number_deltas.push(num.wrapping_sub(last_num) as i64);
            last_num = num;
        }
        c
    }

    /// Number of records in the batch.
    pub fn len(&self) -> usize {
        self.id_deltas.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.id_deltas.is_empty()
    }

    /// Rebuilds the records, checking that the columns agree.
    pub fn into_records(self) -> Result<Vec<Transaction>, CodecError> {
        let n = self.id_deltas.len();
        let lens = [
            self.kinds.len(),
            self.statuses.len(),
            self.amounts.len(),
            self.timestamp_deltas.len(),
            self.ref_prefix_index.len(),
            self.ref_widths.len(),
            self.ref_number_deltas.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(CodecError::Malformed(
                "transaction columns have different lengths".into(),
            ));
        }
        let mut out = Vec::with_capacity(n);
        let (mut id, mut ts, mut num) = (0u64, 0u64, 0u64);
        for i in 0..n {
            id = id.wrapping_add(self.id_deltas[i] as u64);
            ts = ts.wrapping_add(self.timestamp_deltas[i] as u64);
            num = num.wrapping_add(self.ref_number_deltas[i] as u64);
            let prefix = self
                .ref_prefixes
                .get(self.ref_prefix_index[i] as usize)
                .ok_or_else(|| CodecError::Malformed("reference prefix out of range".into()))?;
            let width = self.ref_widths[i];
            let reference = match width {
                0 => prefix.clone(),
                1..=18 => {
                    let digits = format!("{num:0w$}", w = width as usize);
                    if digits.len() != width as usize {
                        return Err(CodecError::Malformed(
                            "reference number wider than its width".into(),
                        ));
                    }
                    format!("{prefix}{digits}")
                }
                _ => return Err(CodecError::Malformed("reference width over 18".into())),
            };
            out.push(Transaction {
                id,
                kind: self.kinds[i],
                amount_cents: self.amounts[i],
                timestamp_ms: ts,
                status: self.statuses[i],
                reference,
            });
        }
        Ok(out)
    }
}

/// A batch of orders stored column by column (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderColumns {
    id_deltas: Vec<i64>,
    terminal_ids: Vec<u32>,
    cashier_ids: Vec<u32>,
    /// Customer id + 1, 0 for none.
    customers: Vec<u32>,
    created_deltas: Vec<i64>,
    line_counts: Vec<u32>,
    product_ids: Vec<u32>,
    quantities: Vec<u32>,
    /// Unit price minus the last unit price of the same product in the batch.
    price_deltas: Vec<i64>,
    discounts: Vec<i64>,
    /// Tax rate minus the last tax rate of the same product, wrapping.
    tax_deltas: Vec<u16>,
    payment_counts: Vec<u32>,
    payment_methods: Vec<PaymentMethod>,
    /// Amount minus what was still due before this payment.
    payment_residuals: Vec<i64>,
}

impl Record for OrderColumns {
    const KIND: RecordKind = RecordKind::ORDER_COLUMNS;
    const SCHEMA: u8 = 1;
}

impl OrderColumns {
    /// Builds the columns from records.
    pub fn from_records(orders: &[Order]) -> Self {
        let mut c = OrderColumns::default();
        let mut last_seen: HashMap<u32, (i64, u16)> = HashMap::new();
        let (mut last_id, mut last_ts) = (0u64, 0u64);
        for o in orders {
            c.id_deltas.push(o.id.wrapping_sub(last_id) as i64);
            last_id = o.id;
            c.terminal_ids.push(o.terminal_id);
            c.cashier_ids.push(o.cashier_id);
            c.customers
                .push(o.customer_id.map_or(0, |id| id.wrapping_add(1)));
            c.created_deltas
                .push(o.created_at_ms.wrapping_sub(last_ts) as i64);
            last_ts = o.created_at_ms;
            c.line_counts.push(o.lines.len() as u32);
            for l in &o.lines {
                let (price, tax) = last_seen.get(&l.product_id).copied().unwrap_or((0, 0));
                c.product_ids.push(l.product_id);
                c.quantities.push(l.quantity);
                c.price_deltas.push(l.unit_price_cents.wrapping_sub(price));
                c.discounts.push(l.discount_cents);
                c.tax_deltas.push(l.tax_rate_bp.wrapping_sub(tax));
                last_seen.insert(l.product_id, (l.unit_price_cents, l.tax_rate_bp));
            }
            c.payment_counts.push(o.payments.len() as u32);
            let mut due = o.total_cents();
            for p in &o.payments {
                c.payment_methods.push(p.method);
                c.payment_residuals.push(p.amount_cents.wrapping_sub(due));
                due = due.wrapping_sub(p.amount_cents);
            }
        }
        c
    }

    /// Number of orders in the batch.
    pub fn len(&self) -> usize {
        self.id_deltas.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.id_deltas.is_empty()
    }

    /// Rebuilds the records, checking that the columns agree.
    pub fn into_records(self) -> Result<Vec<Order>, CodecError> {
        let n = self.id_deltas.len();
        let per_order = [
            self.terminal_ids.len(),
            self.cashier_ids.len(),
            self.customers.len(),
            self.created_deltas.len(),
            self.line_counts.len(),
            self.payment_counts.len(),
        ];
        let malformed = |m: &str| CodecError::Malformed(format!("order columns: {m}"));
        if per_order.iter().any(|&l| l != n) {
            return Err(malformed("per-order columns have different lengths"));
        }
        let total_lines = self
            .line_counts
            .iter()
            .try_fold(0usize, |a, &c| a.checked_add(c as usize))
            .ok_or_else(|| malformed("line count overflow"))?;
        let line_cols = [
            self.product_ids.len(),
            self.quantities.len(),
            self.price_deltas.len(),
            self.discounts.len(),
            self.tax_deltas.len(),
        ];
        if line_cols.iter().any(|&l| l != total_lines) {
            return Err(malformed("line columns do not match the line counts"));
        }
        let total_payments = self
            .payment_counts
            .iter()
            .try_fold(0usize, |a, &c| a.checked_add(c as usize))
            .ok_or_else(|| malformed("payment count overflow"))?;
        if self.payment_methods.len() != total_payments
            || self.payment_residuals.len() != total_payments
        {
            return Err(malformed("payment columns do not match the payment counts"));
        }
        let mut last_seen: HashMap<u32, (i64, u16)> = HashMap::new();
        let mut out = Vec::with_capacity(n);
        let (mut id, mut ts) = (0u64, 0u64);
        let (mut li, mut pi) = (0usize, 0usize);
        for i in 0..n {
            id = id.wrapping_add(self.id_deltas[i] as u64);
            ts = ts.wrapping_add(self.created_deltas[i] as u64);
            let nl = self.line_counts[i] as usize;
            let mut lines = Vec::with_capacity(nl);
            for j in li..li + nl {
                let pid = self.product_ids[j];
                let (price, tax) = last_seen.get(&pid).copied().unwrap_or((0, 0));
                let line = OrderLine {
                    product_id: pid,
                    quantity: self.quantities[j],
                    unit_price_cents: price.wrapping_add(self.price_deltas[j]),
                    discount_cents: self.discounts[j],
                    tax_rate_bp: tax.wrapping_add(self.tax_deltas[j]),
                };
                last_seen.insert(pid, (line.unit_price_cents, line.tax_rate_bp));
                lines.push(line);
            }
            li += nl;
            let np = self.payment_counts[i] as usize;
            let mut payments = Vec::with_capacity(np);
            let mut due = lines
                .iter()
                .fold(0i64, |acc, l| acc.wrapping_add(l.amount_cents()));
            for j in pi..pi + np {
                let amount = due.wrapping_add(self.payment_residuals[j]);
                payments.push(Payment {
                    method: self.payment_methods[j],
                    amount_cents: amount,
                });
                due = due.wrapping_sub(amount);
            }
            pi += np;
            out.push(Order {
                id,
                terminal_id: self.terminal_ids[i],
                cashier_id: self.cashier_ids[i],
                customer_id: self.customers[i].checked_sub(1),
                created_at_ms: ts,
                lines,
                payments,
            });
        }
        Ok(out)
    }
}

impl Codec {
    /// Encodes transactions as one columnar, compressed frame.
    pub fn encode_transactions(&self, txs: &[Transaction]) -> Result<Vec<u8>, CodecError> {
        self.check_count(txs.len())?;
        self.encode(&TransactionColumns::from_records(txs))
    }

    /// Decodes a frame written by [`Codec::encode_transactions`].
    pub fn decode_transactions(&self, bytes: &[u8]) -> Result<Vec<Transaction>, CodecError> {
        let cols: TransactionColumns = self.decode(bytes)?;
        self.check_count(cols.len())?;
        cols.into_records()
    }

    /// Encodes orders as one columnar, compressed frame.
    pub fn encode_orders(&self, orders: &[Order]) -> Result<Vec<u8>, CodecError> {
        self.check_count(orders.len())?;
        self.encode(&OrderColumns::from_records(orders))
    }

    /// Decodes a frame written by [`Codec::encode_orders`].
    pub fn decode_orders(&self, bytes: &[u8]) -> Result<Vec<Order>, CodecError> {
        let cols: OrderColumns = self.decode(bytes)?;
        self.check_count(cols.len())?;
        cols.into_records()
    }

    fn check_count(&self, count: usize) -> Result<(), CodecError> {
        let limit = self.limits().max_batch_items;
        if count > limit {
            return Err(CodecError::TooManyItems { count, limit });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_baseline_payload_is_at_most_25_bytes() {
        let p = postcard::to_allocvec(&Transaction::seed_baseline()).unwrap();
        assert!(p.len() <= 25, "{} bytes", p.len());
    }

    #[test]
    fn reference_split_round_trips_edge_cases() {
        let refs = ["TX-2025-000001", "TX-2025-000002", "", "ABC", "007", "X9999999999999999999999", "TX-2025-0"];
        let txs: Vec<Transaction> = refs
            .iter()
            .enumerate()
            .map(|(i, r)| Transaction {
                reference: (*r).into(),
                id: i as u64,
                ..Transaction::seed_baseline()
            })
            .collect();
        let back = TransactionColumns::from_records(&txs).into_records().unwrap();
        assert_eq!(back, txs);
    }

    #[test]
    fn inconsistent_columns_are_malformed_not_panics() {
        let mut c = TransactionColumns::from_records(&[Transaction::seed_baseline()]);
        c.ref_prefix_index[0] = 7;
        assert!(matches!(c.into_records(), Err(CodecError::Malformed(_))));
        let mut c = TransactionColumns::from_records(&[Transaction::seed_baseline()]);
        c.amounts.clear();
        assert!(matches!(c.into_records(), Err(CodecError::Malformed(_))));
        let mut c = TransactionColumns::from_records(&[Transaction::seed_baseline()]);
        c.ref_number_deltas[0] = 12345;
        assert!(matches!(c.into_records(), Err(CodecError::Malformed(_))));
        let o = Order {
            id: 1,
            terminal_id: 1,
            cashier_id: 1,
            customer_id: None,
            created_at_ms: 1,
            lines: vec![],
            payments: vec![],
        };
        let mut c = OrderColumns::from_records(&[o]);
        c.line_counts[0] = u32::MAX;
        assert!(matches!(c.into_records(), Err(CodecError::Malformed(_))));
    }
}
