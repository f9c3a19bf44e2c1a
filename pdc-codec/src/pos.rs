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
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::column::{Col, Varint};
use crate::text::{Texts, TextsBuilder};
use crate::{Codec, CodecError, Record, RecordKind};

/// A multiplicative hasher for the batch encoders' small keys (product
/// ids, tax rates, cashiers, text stems): they look one up per line, and
/// SipHash's flood resistance buys nothing for keys that only size a
/// dictionary of the encoder's own batch.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Eight bytes a step (text stems), the rest as one word.
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

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

/// How a payment was made: the common tenders by name, and any other by
/// the till's own name for it ([`PaymentMethod::Other`], 1 to
/// [`MAX_TENDER_NAME_LEN`] bytes), so a gift card, a voucher and a meal
/// ticket stay apart instead of collapsing into one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentMethod {
    /// Notes and coins.
    #[default]
    Cash,
    /// Card.
    Card,
    /// Paper or digital voucher (a coupon worth money).
    Voucher,
    /// Gift card.
    GiftCard,
    /// A phone wallet or a QR payment.
    MobileWallet,
    /// Credit the store owes the customer (from an earlier refund).
    StoreCredit,
    /// Any other tender, by name (`meal_ticket`, `invoice`).
    Other(String),
}

/// The longest name a [`PaymentMethod::Other`] may have, in bytes.
pub const MAX_TENDER_NAME_LEN: usize = 32;

impl PaymentMethod {
    /// The method's stable name: `cash`, `card`, `voucher`, `gift_card`,
    /// `mobile_wallet`, `store_credit`, or an other tender's own name.
    pub fn name(&self) -> &str {
        match self {
            PaymentMethod::Cash => "cash",
            PaymentMethod::Card => "card",
            PaymentMethod::Voucher => "voucher",
            PaymentMethod::GiftCard => "gift_card",
            PaymentMethod::MobileWallet => "mobile_wallet",
            PaymentMethod::StoreCredit => "store_credit",
            PaymentMethod::Other(name) => name,
        }
    }

    /// The method [`PaymentMethod::name`] names: a known name gives its
    /// variant, any other [`PaymentMethod::Other`] (checked by
    /// [`Order::check`], not here).
    pub fn from_name(name: &str) -> PaymentMethod {
        match name {
            "cash" => PaymentMethod::Cash,
            "card" => PaymentMethod::Card,
            "voucher" => PaymentMethod::Voucher,
            "gift_card" => PaymentMethod::GiftCard,
            "mobile_wallet" => PaymentMethod::MobileWallet,
            "store_credit" => PaymentMethod::StoreCredit,
            other => PaymentMethod::Other(other.to_owned()),
        }
    }
}

/// One payment towards an order. An order may have several (a split
/// tender: part on a gift card, the rest in cash).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Payment {
    /// How it was paid.
    pub method: PaymentMethod,
    /// Amount in cents counted towards the order.
    pub amount_cents: i64,
    /// What the customer handed over, when more than the amount can be
    /// (cash): at least `amount_cents`; the change is the difference
    /// ([`Payment::change_cents`]). Schema 4.
    pub tendered_cents: Option<i64>,
    /// The tender's reference (card authorisation, voucher or gift-card
    /// number), 1 to [`MAX_TEXT_LEN`] bytes. Schema 4.
    pub reference: Option<String>,
}

impl Payment {
    /// A payment of `amount_cents` by `method`, nothing tendered over it
    /// and no reference.
    pub fn new(method: PaymentMethod, amount_cents: i64) -> Payment {
        Payment {
            method,
            amount_cents,
            tendered_cents: None,
            reference: None,
        }
    }

    /// The change given back: tendered − amount (0 without a tendered
    /// amount).
    pub fn change_cents(&self) -> i64 {
        self.tendered_cents
            .map_or(0, |t| t.wrapping_sub(self.amount_cents))
    }
}

/// What a line's quantity counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unit {
    /// Pieces: the quantity is a count and the price is per piece.
    #[default]
    Each,
    /// Weight: the quantity is in grams, the price per kilogram.
    Kilogram,
    /// Volume: the quantity is in millilitres, the price per litre.
    Litre,
    /// Length: the quantity is in millimetres, the price per metre.
    Metre,
}

impl Unit {
    /// Quantity units in one priced unit: 1 for pieces, 1,000 for the
    /// measured units (grams in a kilogram).
    pub fn per_price(self) -> i64 {
        match self {
            Unit::Each => 1,
            Unit::Kilogram | Unit::Litre | Unit::Metre => 1000,
        }
    }

    fn code(self) -> u8 {
        match self {
            Unit::Each => 0,
            Unit::Kilogram => 1,
            Unit::Litre => 2,
            Unit::Metre => 3,
        }
    }

    fn from_code(c: u8) -> Unit {
        match c & 3 {
            0 => Unit::Each,
            1 => Unit::Kilogram,
            2 => Unit::Litre,
            _ => Unit::Metre,
        }
    }
}

/// The longest line name, line note or payment reference, in bytes.
pub const MAX_TEXT_LEN: usize = 200;

/// One line of an order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrderLine {
    /// Catalogue product id.
    pub product_id: u32,
    /// How much was sold, in units of `unit`: pieces, or thousandths of
    /// the priced unit (grams for a price per kilogram).
    pub quantity: u32,
    /// What the quantity counts (schema 4; [`Unit::Each`] before).
    pub unit: Unit,
    /// Price of one piece, or of one whole priced unit (a kilogram), in
    /// cents.
    pub unit_price_cents: i64,
    /// Discount on the whole line in cents.
    pub discount_cents: i64,
    /// Tax rate in basis points (2000 = 20%).
    pub tax_rate_bp: u16,
    /// The name printed for the line when it is not the catalogue's (an
    /// open-price item, a renamed line), 1 to [`MAX_TEXT_LEN`] bytes.
    /// Schema 4.
    pub name: Option<String>,
    /// The cashier's note on the line ("no onions"), 1 to
    /// [`MAX_TEXT_LEN`] bytes. Schema 4.
    pub note: Option<String>,
}

impl OrderLine {
    /// A line of `quantity` pieces at `unit_price_cents` each, without
    /// discount, name or note.
    pub fn new(product_id: u32, quantity: u32, unit_price_cents: i64, tax_rate_bp: u16) -> Self {
        OrderLine {
            product_id,
            quantity,
            unit_price_cents,
            tax_rate_bp,
            ..OrderLine::default()
        }
    }

    /// The line's price before its discount: quantity × unit price, for a
    /// measured unit divided by 1,000 and rounded to the nearest cent
    /// (halves up). `None` on overflow.
    pub fn gross_cents(&self) -> Option<i64> {
        let q = i64::from(self.quantity);
        match self.unit.per_price() {
            1 => q.checked_mul(self.unit_price_cents),
            per => {
                let g = i128::from(q) * i128::from(self.unit_price_cents);
                let per = i128::from(per);
                i64::try_from((g + per / 2).div_euclid(per)).ok()
            }
        }
    }

    /// The line's amount: its gross price ([`OrderLine::gross_cents`])
    /// minus the discount, wrapping on overflow ([`Order::check`] refuses
    /// an order that overflows).
    pub fn amount_cents(&self) -> i64 {
        let q = i64::from(self.quantity);
        let gross = self
            .gross_cents()
            .unwrap_or_else(|| q.wrapping_mul(self.unit_price_cents));
        gross.wrapping_sub(self.discount_cents)
    }
}

/// A POS order: lines and payments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Order {
    /// Terminal-local order id.
    pub id: u64,
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
    /// The receipt number printed for it (schema 2; at most
    /// [`MAX_RECEIPT_LEN`] bytes), e.g. `till-7-3FA9C1D2-000123`; `None`
    /// in orders written by schema 1.
    pub receipt: Option<String>,
    /// A discount on the whole order (a coupon, a staff discount), in
    /// cents: at least 0 and at most the lines' sum. Schema 4.
    pub discount_cents: i64,
}
// The order names no terminal (schema 3 dropped the number that schemas 1
// and 2 carried): the terminal is the authenticated [`crate::TerminalId`]
// that pushed it, so a record cannot name another.

/// The longest receipt number an order may carry, in bytes.
pub const MAX_RECEIPT_LEN: usize = 64;

/// How a payment method was written before schema 4 of orders and 3 of
/// refunds (three methods).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
enum MethodV1 {
    Cash,
    Card,
    Voucher,
}

/// A payment as it was written before schema 4 of orders.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct PaymentV1 {
    method: MethodV1,
    amount_cents: i64,
}

impl From<PaymentV1> for Payment {
    fn from(p: PaymentV1) -> Payment {
        let method = match p.method {
            MethodV1::Cash => PaymentMethod::Cash,
            MethodV1::Card => PaymentMethod::Card,
            MethodV1::Voucher => PaymentMethod::Voucher,
        };
        Payment::new(method, p.amount_cents)
    }
}

/// A line as it was written before schema 4 of orders (pieces, no text).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderLineV1 {
    product_id: u32,
    quantity: u32,
    unit_price_cents: i64,
    discount_cents: i64,
    tax_rate_bp: u16,
}

impl From<OrderLineV1> for OrderLine {
    fn from(l: OrderLineV1) -> OrderLine {
        OrderLine {
            discount_cents: l.discount_cents,
            ..OrderLine::new(l.product_id, l.quantity, l.unit_price_cents, l.tax_rate_bp)
        }
    }
}

/// Lines and payments of a pre-schema-4 record, converted.
fn upgrade(lines: Vec<OrderLineV1>, payments: Vec<PaymentV1>) -> (Vec<OrderLine>, Vec<Payment>) {
    (
        lines.into_iter().map(OrderLine::from).collect(),
        payments.into_iter().map(Payment::from).collect(),
    )
}

/// An order as schema 1 wrote it (no receipt number).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderV1 {
    id: u64,
    terminal_id: u32,
    cashier_id: u32,
    customer_id: Option<u32>,
    created_at_ms: u64,
    lines: Vec<OrderLineV1>,
    payments: Vec<PaymentV1>,
}

/// An order as schema 2 wrote it (a terminal number, ignored since).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderV2 {
    id: u64,
    terminal_id: u32,
    cashier_id: u32,
    customer_id: Option<u32>,
    created_at_ms: u64,
    lines: Vec<OrderLineV1>,
    payments: Vec<PaymentV1>,
    receipt: Option<String>,
}

/// An order as schema 3 wrote it (pieces only, three payment methods, no
/// texts, no order discount).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderV3 {
    id: u64,
    cashier_id: u32,
    customer_id: Option<u32>,
    created_at_ms: u64,
    lines: Vec<OrderLineV1>,
    payments: Vec<PaymentV1>,
    receipt: Option<String>,
}

impl From<OrderV3> for Order {
    fn from(o: OrderV3) -> Order {
        let (lines, payments) = upgrade(o.lines, o.payments);
        Order {
            id: o.id,
            cashier_id: o.cashier_id,
            customer_id: o.customer_id,
            created_at_ms: o.created_at_ms,
            lines,
            payments,
            receipt: o.receipt,
            discount_cents: 0,
        }
    }
}

impl From<OrderV2> for Order {
    fn from(o: OrderV2) -> Order {
        let _ = o.terminal_id;
        Order::from(OrderV3 {
            id: o.id,
            cashier_id: o.cashier_id,
            customer_id: o.customer_id,
            created_at_ms: o.created_at_ms,
            lines: o.lines,
            payments: o.payments,
            receipt: o.receipt,
        })
    }
}

impl From<OrderV1> for Order {
    fn from(o: OrderV1) -> Order {
        let _ = o.terminal_id;
        Order::from(OrderV3 {
            id: o.id,
            cashier_id: o.cashier_id,
            customer_id: o.customer_id,
            created_at_ms: o.created_at_ms,
            lines: o.lines,
            payments: o.payments,
            receipt: None,
        })
    }
}

impl Order {
    /// What the customer pays: the lines' amounts minus the order's
    /// discount.
    pub fn total_cents(&self) -> i64 {
        self.lines
            .iter()
            .fold(0i64, |acc, l| acc.wrapping_add(l.amount_cents()))
            .wrapping_sub(self.discount_cents)
    }

    /// The change given back over all payments.
    pub fn change_cents(&self) -> i64 {
        self.payments
            .iter()
            .fold(0i64, |acc, p| acc.wrapping_add(p.change_cents()))
    }
}

/// The rules of [`Order::check`], each with the stable code the server
/// answers a refused order with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderRule {
    /// The order id is above 2^63 − 1 (what the wire and the orders tables
    /// hold).
    IdOutOfRange,
    /// The order has no line.
    Empty,
    /// A line has a negative unit price or is worth less than zero.
    NegativeLine,
    /// A line, the total or the payments overflow 64 bits.
    Overflow,
    /// The payments do not add up to the lines' total.
    TotalMismatch,
    /// The receipt number is empty or longer than [`MAX_RECEIPT_LEN`].
    BadReceipt,
    /// A line name, line note or payment reference is empty or longer
    /// than [`MAX_TEXT_LEN`].
    BadText,
    /// An other tender's name is empty or longer than
    /// [`MAX_TENDER_NAME_LEN`], or a payment's tendered amount is below
    /// its amount.
    BadTender,
    /// The order's discount is negative or more than its lines' sum.
    BadDiscount,
}

impl OrderRule {
    /// The rule's stable code (`out_of_range`, `empty_order`,
    /// `negative_line`, `overflow`, `total_mismatch`, `bad_receipt`,
    /// `bad_text`, `bad_tender`, `bad_discount`).
    pub fn code(self) -> &'static str {
        match self {
            OrderRule::BadText => "bad_text",
            OrderRule::BadTender => "bad_tender",
            OrderRule::BadDiscount => "bad_discount",
            OrderRule::IdOutOfRange => "out_of_range",
            OrderRule::Empty => "empty_order",
            OrderRule::NegativeLine => "negative_line",
            OrderRule::Overflow => "overflow",
            OrderRule::TotalMismatch => "total_mismatch",
            OrderRule::BadReceipt => "bad_receipt",
        }
    }
}

impl Order {
    /// The rules every order must keep, checked by the till before it
    /// saves a sale and by pdc-server's `PosApply` before it applies one
    /// (one function, so that they cannot disagree): an id below 2^63, at
    /// least one line, no negative unit price, no line worth less than
    /// zero, no overflow, an order discount from 0 to the lines' sum,
    /// payments that add up to the total (lines minus the order's
    /// discount) exactly, each tendered amount at least its payment, other
    /// tenders named in 1 to [`MAX_TENDER_NAME_LEN`] bytes, texts (line
    /// names and notes, payment references) of 1 to [`MAX_TEXT_LEN`]
    /// bytes, and a receipt number, if any, of 1 to [`MAX_RECEIPT_LEN`]
    /// bytes. Returns the total in cents.
    pub fn check(&self) -> Result<i64, CodecError> {
        check_sale(
            self.id,
            &self.lines,
            &self.payments,
            self.receipt.as_deref(),
            self.discount_cents,
        )
    }
}

/// A receipt number, if any, of 1 to [`MAX_RECEIPT_LEN`] bytes.
fn check_receipt(receipt: Option<&str>, what: &str) -> Result<(), CodecError> {
    match receipt {
        Some(r) if r.is_empty() || r.len() > MAX_RECEIPT_LEN => Err(CodecError::InvalidOrder {
            rule: OrderRule::BadReceipt,
            detail: format!("{what} of {} bytes (1 to {MAX_RECEIPT_LEN})", r.len()),
        }),
        _ => Ok(()),
    }
}

/// The rules of [`Order::check`] and [`Refund::check`]: one function, so
/// that a sale and a refund are held to the same.
fn check_sale(
    id: u64,
    lines: &[OrderLine],
    payments: &[Payment],
    receipt: Option<&str>,
    discount_cents: i64,
) -> Result<i64, CodecError> {
    let fail = |rule, detail: String| CodecError::InvalidOrder { rule, detail };
    check_receipt(receipt, "receipt number")?;
    let text = |t: &Option<String>, what: &str| match t {
        Some(t) if t.is_empty() || t.len() > MAX_TEXT_LEN => Err(fail(
            OrderRule::BadText,
            format!("{what} of {} bytes (1 to {MAX_TEXT_LEN})", t.len()),
        )),
        _ => Ok(()),
    };
    for (n, l) in lines.iter().enumerate() {
        text(&l.name, &format!("line {n}'s name"))?;
        text(&l.note, &format!("line {n}'s note"))?;
    }
    for (n, p) in payments.iter().enumerate() {
        text(&p.reference, &format!("payment {n}'s reference"))?;
        if let PaymentMethod::Other(name) = &p.method {
            if name.is_empty() || name.len() > MAX_TENDER_NAME_LEN {
                return Err(fail(
                    OrderRule::BadTender,
                    format!(
                        "payment {n}'s tender name of {} bytes (1 to {MAX_TENDER_NAME_LEN})",
                        name.len()
                    ),
                ));
            }
        }
        if let Some(t) = p.tendered_cents {
            if t < p.amount_cents {
                return Err(fail(
                    OrderRule::BadTender,
                    format!(
                        "payment {n} tendered {t} cents for {} cents",
                        p.amount_cents
                    ),
                ));
            }
        }
    }
    if id > i64::MAX as u64 {
        return Err(fail(
            OrderRule::IdOutOfRange,
            format!("order id {} is above 2^63-1", id),
        ));
    }
    if lines.is_empty() {
        return Err(fail(OrderRule::Empty, "an order needs a line".into()));
    }
    let mut total: i64 = 0;
    for (n, l) in lines.iter().enumerate() {
        let amount = l
            .gross_cents()
            .and_then(|g| g.checked_sub(l.discount_cents))
            .ok_or_else(|| fail(OrderRule::Overflow, format!("line {n} overflows")))?;
        if amount < 0 || l.unit_price_cents < 0 {
            return Err(fail(
                OrderRule::NegativeLine,
                format!("line {n} is worth {amount} cents"),
            ));
        }
        total = total
            .checked_add(amount)
            .ok_or_else(|| fail(OrderRule::Overflow, "order total overflows".into()))?;
    }
    if discount_cents < 0 || discount_cents > total {
        return Err(fail(
            OrderRule::BadDiscount,
            format!("order discount of {discount_cents} cents on lines of {total} cents"),
        ));
    }
    let total = total - discount_cents;
    let paid = payments
        .iter()
        .try_fold(0i64, |acc, p| acc.checked_add(p.amount_cents))
        .ok_or_else(|| fail(OrderRule::Overflow, "payments overflow".into()))?;
    if paid != total {
        return Err(fail(
            OrderRule::TotalMismatch,
            format!("lines total {total} cents, payments {paid} cents"),
        ));
    }
    Ok(total)
}

impl Record for Order {
    const KIND: RecordKind = RecordKind::ORDER;
    /// 2 added the receipt number; 3 dropped the terminal number; 4 added
    /// units, line names and notes, open tenders with tendered amounts and
    /// references, and the order discount.
    const SCHEMA: u8 = 4;

    fn take_older(schema: u8, bytes: &[u8]) -> Result<(Self, &[u8]), CodecError> {
        match schema {
            1 => postcard::take_from_bytes::<OrderV1>(bytes)
                .map(|(o, rest)| (o.into(), rest))
                .map_err(|e| CodecError::Malformed(format!("order (schema 1): {e}"))),
            2 => postcard::take_from_bytes::<OrderV2>(bytes)
                .map(|(o, rest)| (o.into(), rest))
                .map_err(|e| CodecError::Malformed(format!("order (schema 2): {e}"))),
            3 => postcard::take_from_bytes::<OrderV3>(bytes)
                .map(|(o, rest)| (o.into(), rest))
                .map_err(|e| CodecError::Malformed(format!("order (schema 3): {e}"))),
            _ => Err(CodecError::UnsupportedSchema {
                kind: Self::KIND,
                schema,
            }),
        }
    }
}

/// A refund: goods taken back and money paid back, referring to the sale
/// it undoes (by order id and, when the cashier scanned it, the original
/// receipt number). The lines are what is taken back (quantities and
/// amounts positive, as in an order), the payments what is paid back; the
/// same rules as an order hold ([`Refund::check`]). It takes a number from
/// the till's sale counter like a sale, so refunds and sales share one
/// gapless receipt sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Refund {
    /// Terminal-local id, from the same counter as order ids.
    pub id: u64,
    /// The cashier logged in.
    pub cashier_id: u32,
    /// The order it refunds (its `id`).
    pub original_order_id: u64,
    /// The original sale's receipt number, when known.
    pub original_receipt: Option<String>,
    /// Wall time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// What is taken back.
    pub lines: Vec<OrderLine>,
    /// What is paid back, by method.
    pub payments: Vec<Payment>,
    /// The refund's own receipt number.
    pub receipt: Option<String>,
}

impl Refund {
    /// Sum of the lines' amounts (what is paid back).
    pub fn total_cents(&self) -> i64 {
        self.lines
            .iter()
            .fold(0i64, |acc, l| acc.wrapping_add(l.amount_cents()))
    }

    /// The order rules ([`Order::check`]) applied to the refund, plus the
    /// original's id below 2^63 and its receipt number, if any, of 1 to
    /// [`MAX_RECEIPT_LEN`] bytes. Returns the total paid back in cents.
    pub fn check(&self) -> Result<i64, CodecError> {
        let fail = |rule, detail: String| CodecError::InvalidOrder { rule, detail };
        if self.original_order_id > i64::MAX as u64 {
            return Err(fail(
                OrderRule::IdOutOfRange,
                format!(
                    "original order id {} is above 2^63-1",
                    self.original_order_id
                ),
            ));
        }
        check_receipt(self.original_receipt.as_deref(), "original receipt number")?;
        check_sale(
            self.id,
            &self.lines,
            &self.payments,
            self.receipt.as_deref(),
            0,
        )
    }
}

/// A refund as schema 1 wrote it (a terminal number, ignored since).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RefundV1 {
    id: u64,
    terminal_id: u32,
    cashier_id: u32,
    original_order_id: u64,
    original_receipt: Option<String>,
    created_at_ms: u64,
    lines: Vec<OrderLineV1>,
    payments: Vec<PaymentV1>,
    receipt: Option<String>,
}

/// A refund as schema 2 wrote it (pieces only, three payment methods, no
/// texts).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct RefundV2 {
    id: u64,
    cashier_id: u32,
    original_order_id: u64,
    original_receipt: Option<String>,
    created_at_ms: u64,
    lines: Vec<OrderLineV1>,
    payments: Vec<PaymentV1>,
    receipt: Option<String>,
}

impl From<RefundV2> for Refund {
    fn from(r: RefundV2) -> Refund {
        let (lines, payments) = upgrade(r.lines, r.payments);
        Refund {
            id: r.id,
            cashier_id: r.cashier_id,
            original_order_id: r.original_order_id,
            original_receipt: r.original_receipt,
            created_at_ms: r.created_at_ms,
            lines,
            payments,
            receipt: r.receipt,
        }
    }
}

impl Record for Refund {
    const KIND: RecordKind = RecordKind::REFUND;
    /// 2 dropped the terminal number; 3 took schema 4's lines and payments
    /// of orders.
    const SCHEMA: u8 = 3;

    fn take_older(schema: u8, bytes: &[u8]) -> Result<(Self, &[u8]), CodecError> {
        match schema {
            1 => postcard::take_from_bytes::<RefundV1>(bytes)
                .map(|(r, rest)| {
                    let _ = r.terminal_id;
                    let v2 = RefundV2 {
                        id: r.id,
                        cashier_id: r.cashier_id,
                        original_order_id: r.original_order_id,
                        original_receipt: r.original_receipt,
                        created_at_ms: r.created_at_ms,
                        lines: r.lines,
                        payments: r.payments,
                        receipt: r.receipt,
                    };
                    (Refund::from(v2), rest)
                })
                .map_err(|e| CodecError::Malformed(format!("refund (schema 1): {e}"))),
            2 => postcard::take_from_bytes::<RefundV2>(bytes)
                .map(|(r, rest)| (Refund::from(r), rest))
                .map_err(|e| CodecError::Malformed(format!("refund (schema 2): {e}"))),
            _ => Err(CodecError::UnsupportedSchema {
                kind: Self::KIND,
                schema,
            }),
        }
    }
}

/// Something the till saw that is not money: a basket viewed, a drawer
/// opened, a price looked up. Named (`basket_view`), with string
/// properties; sent at low priority, after every sale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnalyticsEvent {
    /// The event's name: 1 to 64 bytes of `a-z`, `0-9`, `_`, `.`.
    pub name: String,
    /// Wall time in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Properties: at most 32, keys of 1 to 64 bytes, values of at most
    /// 256.
    pub properties: Vec<(String, String)>,
}

impl AnalyticsEvent {
    /// Checks the bounds of [`AnalyticsEvent`]'s fields (the till before
    /// it saves one, the server before it applies one).
    pub fn check(&self) -> Result<(), CodecError> {
        let bad = |m: String| CodecError::Malformed(format!("analytics event: {m}"));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
        if !name_ok {
            return Err(bad(format!("name {:?}: 1 to 64 of a-z 0-9 _ .", self.name)));
        }
        if self.properties.len() > 32 {
            return Err(bad(format!(
                "{} properties, at most 32",
                self.properties.len()
            )));
        }
        for (k, v) in &self.properties {
            if k.is_empty() || k.len() > 64 || v.len() > 256 {
                return Err(bad(format!(
                    "property {k:?}: key 1 to 64 bytes, value at most 256"
                )));
            }
        }
        Ok(())
    }
}

/// An analytics event as schema 1 wrote it (a terminal number, ignored
/// since).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct AnalyticsEventV1 {
    name: String,
    terminal_id: u32,
    at_ms: u64,
    properties: Vec<(String, String)>,
}

impl Record for AnalyticsEvent {
    const KIND: RecordKind = RecordKind::ANALYTICS;
    /// 2 dropped the terminal number.
    const SCHEMA: u8 = 2;

    fn take_older(schema: u8, bytes: &[u8]) -> Result<(Self, &[u8]), CodecError> {
        match schema {
            1 => postcard::take_from_bytes::<AnalyticsEventV1>(bytes)
                .map(|(e, rest)| {
                    let _ = e.terminal_id;
                    let event = AnalyticsEvent {
                        name: e.name,
                        at_ms: e.at_ms,
                        properties: e.properties,
                    };
                    (event, rest)
                })
                .map_err(|e| CodecError::Malformed(format!("analytics event (schema 1): {e}"))),
            _ => Err(CodecError::UnsupportedSchema {
                kind: Self::KIND,
                schema,
            }),
        }
    }
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
    id_deltas: Col<i64>,
    kinds: Vec<TxKind>,
    statuses: Vec<TxStatus>,
    amounts: Col<i64>,
    timestamp_deltas: Col<i64>,
    ref_prefixes: Vec<String>,
    ref_prefix_index: Col<u32>,
    ref_widths: Vec<u8>,
    ref_number_deltas: Col<i64>,
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

/// A column whose values are mostly one default: only the exceptions are
/// stored, as (gap since the previous exception, value).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Sparse<T: Varint> {
    gaps: Col<u32>,
    values: Col<T>,
}

impl<T: Varint + PartialEq> Sparse<T> {
    fn push(&mut self, index: usize, value: T, default: T, last: &mut usize) {
        if value != default {
            // Batches are bounded by max_batch_items (a u32 in practice), so
            // the gap fits; saturate rather than wrap if a caller goes past.
            self.gaps
                .push(u32::try_from(index - *last).unwrap_or(u32::MAX));
            self.values.push(value);
            *last = index;
        }
    }

    fn expand(&self, n: usize, default: T, what: &str) -> Result<Vec<T>, CodecError> {
        if self.gaps.len() != self.values.len() {
            return Err(CodecError::Malformed(format!(
                "{what}: gaps and values differ in length"
            )));
        }
        let mut out = vec![default; n];
        let mut at = 0usize;
        for (gap, v) in self.gaps.iter().zip(&self.values) {
            at = at
                .checked_add(*gap as usize)
                .filter(|&i| i < n)
                .ok_or_else(|| CodecError::Malformed(format!("{what}: index out of range")))?;
            out[at] = *v;
        }
        Ok(out)
    }
}

/// A sparse column builder: remembers the last exception's index. Indices
/// are offset by one so that an exception at index 0 has a gap of 1 and
/// gaps are never ambiguous.
struct SparseBuilder<T: Varint> {
    col: Sparse<T>,
    last: usize,
    default: T,
}

impl<T: Varint + PartialEq> SparseBuilder<T> {
    fn new(default: T) -> Self {
        SparseBuilder {
            col: Sparse {
                gaps: Col::default(),
                values: Col::default(),
            },
            last: 0,
            default,
        }
    }
    fn push(&mut self, index: usize, value: T) {
        let d = self.default;
        self.col.push(index + 1, value, d, &mut self.last);
    }
}

fn expand_sparse<T: Varint + PartialEq>(
    col: &Sparse<T>,
    n: usize,
    default: T,
    what: &str,
) -> Result<Vec<T>, CodecError> {
    // Indices are stored offset by one (see SparseBuilder).
    let mut v = col.expand(n + 1, default, what)?;
    if !col.gaps.is_empty() && col.gaps[0] == 0 {
        return Err(CodecError::Malformed(format!("{what}: zero first gap")));
    }
    v.remove(0);
    Ok(v)
}

/// Quantities other than 1, each as one varint `gap << 3 | q` where `gap`
/// is the distance in lines from the previous exception and `q` is the
/// quantity when below 7; 7 means "the next value of `large`". Most POS
/// lines sell one unit, and most exceptions fit in one byte this way.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Quantities {
    codes: Col<u64>,
    large: Col<u32>,
}

impl Quantities {
    /// Records the quantity of line `index` (lines in order).
    fn push(&mut self, index: usize, v: u32, last: &mut usize) {
        if v != 1 {
            let gap = (index + 1 - *last) as u64;
            *last = index + 1;
            let code = if v < 7 { u64::from(v) } else { 7 };
            if code == 7 {
                self.large.push(v);
            }
            self.codes.push(gap << 3 | code);
        }
    }

    fn expand(&self, n: usize) -> Result<Vec<u32>, CodecError> {
        let bad = || CodecError::Malformed("quantities: index out of range".into());
        let mut out = vec![1u32; n];
        let mut large = self.large.iter();
        let mut at = 0usize;
        for &c in &self.codes {
            let gap = usize::try_from(c >> 3).map_err(|_| bad())?;
            at = at
                .checked_add(gap)
                .filter(|&i| gap > 0 && i <= n)
                .ok_or_else(bad)?;
            out[at - 1] = match c & 7 {
                7 => *large.next().ok_or_else(|| {
                    CodecError::Malformed("quantities: missing large value".into())
                })?,
                v => v as u32,
            };
        }
        if large.next().is_some() {
            return Err(CodecError::Malformed(
                "quantities: unused large values".into(),
            ));
        }
        Ok(out)
    }
}

/// A batch of orders stored column by column (see the module docs).
///
/// Each distinct product's unit price and tax rate are stored once, in the
/// order products first appear; a line whose price or rate differs from that
/// is an exception in a sparse column, as are quantities other than 1,
/// non-zero discounts and orders with a customer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderColumns {
    id_deltas: Col<i64>,
    cashier_ids: Col<u32>,
    /// One byte per order: line count (bits 0-3, 15 = see `long_line_counts`),
    /// has a customer (bit 4), payment count (bits 5-6, 3 = see
    /// `long_payment_counts`).
    headers: Vec<u8>,
    /// Customer ids of the orders that have one.
    customers: Col<u32>,
    created_deltas: Col<i64>,
    /// Line counts of orders with 15 lines or more, in order.
    long_line_counts: Col<u32>,
    /// Payment counts of orders with 3 payments or more, in order.
    long_payment_counts: Col<u32>,
    /// The batch's distinct product ids, most frequent first, each as the
    /// difference from the one before (schema 4): a line names its product
    /// by its rank here, so the few products that make most lines take one
    /// byte whatever their ids look like; ids that follow popularity (a
    /// dense catalogue) cost a byte each in the dictionary.
    product_dict: Col<i64>,
    /// Each line's product, as a rank in `product_dict`.
    product_refs: Col<u32>,
    /// Price and tax rate of each product of `product_dict` (as first seen
    /// in the batch); the tax rate as an index into `tax_rates`, as varints
    /// here, or (schema 5, when the batch has at most 16 rates) packed in
    /// `dict_tax_packed` and this column empty.
    dict_prices: Col<i64>,
    dict_tax_index: Col<u32>,
    tax_rates: Col<u16>,
    quantities: Quantities,
    price_overrides: Sparse<i64>,
    tax_overrides: Sparse<u16>,
    discounts: Sparse<i64>,
    /// Payment methods, four 2-bit codes per byte.
    payment_methods: Vec<u8>,
    /// Amount minus what was still due before this payment.
    payment_residuals: Sparse<i64>,
    /// Receipt numbers of the orders that have one (schema 2).
    receipts: Vec<String>,
    /// Order discounts other than 0 (schema 5).
    order_discounts: Sparse<i64>,
    /// Per line: the unit (bits 0-1), has a name (bit 2), has a note (bit
    /// 3); most lines are pieces without text (schema 5).
    line_flags: Sparse<u8>,
    /// The names and notes of the lines flagged, in line order, a line's
    /// name before its note.
    line_texts: Texts,
    /// The methods of the payments whose 2-bit code is the escape (3):
    /// every method but cash, card and voucher (schema 5).
    rare_methods: Vec<PaymentMethod>,
    /// Per payment: has a tendered amount (bit 0), has a reference (bit 1).
    payment_flags: Sparse<u8>,
    /// Change (tendered − amount) of each payment with a tendered amount.
    payment_changes: Col<i64>,
    /// References of the payments that have one.
    payment_refs: Texts,
    /// The batch's distinct cashiers in order of first appearance, when
    /// there are at most 127 (schema 5): `cashier_ids` are then indices
    /// into it, one byte each. Empty: `cashier_ids` are the ids.
    cashier_dict: Col<u32>,
    /// The dictionary's tax-rate indices packed [`tax_bits`] bits each, low
    /// bits first (schema 5): nothing for one rate, 1 bit for two, 2 for up
    /// to four, 4 for up to sixteen.
    dict_tax_packed: Vec<u8>,
    /// Raw product ids bit-packed (schema 5; `ids_width` > 0, and then
    /// `product_refs` and `product_dict` are empty): each line's id minus
    /// `ids_base`, `ids_width` bits each, low bits first.
    ids_packed: Vec<u8>,
    ids_base: u32,
    ids_width: u8,
}

/// The columns as schema 4 wrote them: schema 5's without units, texts,
/// order discounts or tender details.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderColumnsV4 {
    id_deltas: Col<i64>,
    cashier_ids: Col<u32>,
    headers: Vec<u8>,
    customers: Col<u32>,
    created_deltas: Col<i64>,
    long_line_counts: Col<u32>,
    long_payment_counts: Col<u32>,
    product_dict: Col<i64>,
    product_refs: Col<u32>,
    dict_prices: Col<i64>,
    dict_tax_index: Col<u32>,
    tax_rates: Col<u16>,
    quantities: Quantities,
    price_overrides: Sparse<i64>,
    tax_overrides: Sparse<u16>,
    discounts: Sparse<i64>,
    payment_methods: Vec<u8>,
    payment_residuals: Sparse<i64>,
    receipts: Vec<String>,
}

impl From<OrderColumnsV4> for OrderColumns {
    fn from(c: OrderColumnsV4) -> OrderColumns {
        OrderColumns {
            id_deltas: c.id_deltas,
            cashier_ids: c.cashier_ids,
            headers: c.headers,
            customers: c.customers,
            created_deltas: c.created_deltas,
            long_line_counts: c.long_line_counts,
            long_payment_counts: c.long_payment_counts,
            product_dict: c.product_dict,
            product_refs: c.product_refs,
            dict_prices: c.dict_prices,
            dict_tax_index: c.dict_tax_index,
            tax_rates: c.tax_rates,
            quantities: c.quantities,
            price_overrides: c.price_overrides,
            tax_overrides: c.tax_overrides,
            discounts: c.discounts,
            payment_methods: c.payment_methods,
            payment_residuals: c.payment_residuals,
            receipts: c.receipts,
            ..OrderColumns::default()
        }
    }
}

/// The columns as schema 3 wrote them: a product id per line (raw), the
/// price dictionary in order of first appearance.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderColumnsV3 {
    id_deltas: Col<i64>,
    cashier_ids: Col<u32>,
    headers: Vec<u8>,
    customers: Col<u32>,
    created_deltas: Col<i64>,
    long_line_counts: Col<u32>,
    long_payment_counts: Col<u32>,
    product_ids: Col<u32>,
    dict_prices: Col<i64>,
    dict_tax_index: Col<u32>,
    tax_rates: Col<u16>,
    quantities: Quantities,
    price_overrides: Sparse<i64>,
    tax_overrides: Sparse<u16>,
    discounts: Sparse<i64>,
    payment_methods: Vec<u8>,
    payment_residuals: Sparse<i64>,
    receipts: Vec<String>,
}

impl From<OrderColumnsV3> for OrderColumnsV4 {
    /// Schema 3's layout is schema 4's without a dictionary (raw ids).
    fn from(c: OrderColumnsV3) -> OrderColumnsV4 {
        OrderColumnsV4 {
            id_deltas: c.id_deltas,
            cashier_ids: c.cashier_ids,
            headers: c.headers,
            customers: c.customers,
            created_deltas: c.created_deltas,
            long_line_counts: c.long_line_counts,
            long_payment_counts: c.long_payment_counts,
            product_dict: Col::default(),
            product_refs: c.product_ids,
            dict_prices: c.dict_prices,
            dict_tax_index: c.dict_tax_index,
            tax_rates: c.tax_rates,
            quantities: c.quantities,
            price_overrides: c.price_overrides,
            tax_overrides: c.tax_overrides,
            discounts: c.discounts,
            payment_methods: c.payment_methods,
            payment_residuals: c.payment_residuals,
            receipts: c.receipts,
        }
    }
}

/// A varint's length in bytes.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Raw product ids per line → the distinct ids in order of first
/// appearance and each line's index among them.
fn index_raw_ids(raw: &[u32]) -> (Vec<u32>, Col<u32>) {
    let mut index: IdMap<u32, u32> = IdMap::default();
    let mut ids = Vec::new();
    let mut refs = Col::with_capacity(raw.len());
    for &id in raw {
        let next = ids.len() as u32;
        let ix = *index.entry(id).or_insert_with(|| {
            ids.push(id);
            next
        });
        refs.push(ix);
    }
    (ids, refs)
}

/// The dictionary column back to ids; `None` when one leaves `u32`.
fn undelta_ids(deltas: &[i64]) -> Option<Vec<u32>> {
    let mut last = 0i64;
    deltas
        .iter()
        .map(|&d| {
            last = last.checked_add(d)?;
            u32::try_from(last).ok()
        })
        .collect()
}

/// The columns as schema 2 wrote them: with a terminal number per order
/// (read, checked for length and dropped).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderColumnsV2 {
    id_deltas: Col<i64>,
    terminal_ids: Col<u32>,
    cashier_ids: Col<u32>,
    headers: Vec<u8>,
    customers: Col<u32>,
    created_deltas: Col<i64>,
    long_line_counts: Col<u32>,
    long_payment_counts: Col<u32>,
    product_ids: Col<u32>,
    dict_prices: Col<i64>,
    dict_tax_index: Col<u32>,
    tax_rates: Col<u16>,
    quantities: Quantities,
    price_overrides: Sparse<i64>,
    tax_overrides: Sparse<u16>,
    discounts: Sparse<i64>,
    payment_methods: Vec<u8>,
    payment_residuals: Sparse<i64>,
    receipts: Vec<String>,
}

impl TryFrom<OrderColumnsV2> for OrderColumnsV3 {
    type Error = CodecError;
    fn try_from(c: OrderColumnsV2) -> Result<OrderColumnsV3, CodecError> {
        if c.terminal_ids.len() != c.id_deltas.len() {
            return Err(CodecError::Malformed(
                "order columns: per-order columns have different lengths".into(),
            ));
        }
        Ok(OrderColumnsV3 {
            id_deltas: c.id_deltas,
            cashier_ids: c.cashier_ids,
            headers: c.headers,
            customers: c.customers,
            created_deltas: c.created_deltas,
            long_line_counts: c.long_line_counts,
            long_payment_counts: c.long_payment_counts,
            product_ids: c.product_ids,
            dict_prices: c.dict_prices,
            dict_tax_index: c.dict_tax_index,
            tax_rates: c.tax_rates,
            quantities: c.quantities,
            price_overrides: c.price_overrides,
            tax_overrides: c.tax_overrides,
            discounts: c.discounts,
            payment_methods: c.payment_methods,
            payment_residuals: c.payment_residuals,
            receipts: c.receipts,
        })
    }
}

/// The columns as schema 1 wrote them: those of schema 2 without receipts.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OrderColumnsV1 {
    id_deltas: Col<i64>,
    terminal_ids: Col<u32>,
    cashier_ids: Col<u32>,
    headers: Vec<u8>,
    customers: Col<u32>,
    created_deltas: Col<i64>,
    long_line_counts: Col<u32>,
    long_payment_counts: Col<u32>,
    product_ids: Col<u32>,
    dict_prices: Col<i64>,
    dict_tax_index: Col<u32>,
    tax_rates: Col<u16>,
    quantities: Quantities,
    price_overrides: Sparse<i64>,
    tax_overrides: Sparse<u16>,
    discounts: Sparse<i64>,
    payment_methods: Vec<u8>,
    payment_residuals: Sparse<i64>,
}

impl From<OrderColumnsV1> for OrderColumnsV2 {
    fn from(c: OrderColumnsV1) -> OrderColumnsV2 {
        OrderColumnsV2 {
            id_deltas: c.id_deltas,
            terminal_ids: c.terminal_ids,
            cashier_ids: c.cashier_ids,
            headers: c.headers,
            customers: c.customers,
            created_deltas: c.created_deltas,
            long_line_counts: c.long_line_counts,
            long_payment_counts: c.long_payment_counts,
            product_ids: c.product_ids,
            dict_prices: c.dict_prices,
            dict_tax_index: c.dict_tax_index,
            tax_rates: c.tax_rates,
            quantities: c.quantities,
            price_overrides: c.price_overrides,
            tax_overrides: c.tax_overrides,
            discounts: c.discounts,
            payment_methods: c.payment_methods,
            payment_residuals: c.payment_residuals,
            receipts: Vec::new(),
        }
    }
}

impl Record for OrderColumns {
    const KIND: RecordKind = RecordKind::ORDER_COLUMNS;
    /// 2 added the receipt numbers; 3 dropped the terminal numbers; 4
    /// names products by rank in a per-batch dictionary; 5 holds schema 4
    /// orders (units, texts, open tenders, order discounts).
    const SCHEMA: u8 = 5;

    fn take_older(schema: u8, bytes: &[u8]) -> Result<(Self, &[u8]), CodecError> {
        if schema == 4 {
            let (v4, rest) = postcard::take_from_bytes::<OrderColumnsV4>(bytes)
                .map_err(|e| CodecError::Malformed(format!("order columns (schema 4): {e}")))?;
            return Ok((OrderColumns::from(v4), rest));
        }
        if schema == 3 {
            let (v3, rest) = postcard::take_from_bytes::<OrderColumnsV3>(bytes)
                .map_err(|e| CodecError::Malformed(format!("order columns (schema 3): {e}")))?;
            return Ok((OrderColumns::from(OrderColumnsV4::from(v3)), rest));
        }
        let (v2, rest) = match schema {
            1 => postcard::take_from_bytes::<OrderColumnsV1>(bytes)
                .map(|(c, rest)| (OrderColumnsV2::from(c), rest))
                .map_err(|e| CodecError::Malformed(format!("order columns (schema 1): {e}")))?,
            2 => postcard::take_from_bytes::<OrderColumnsV2>(bytes)
                .map_err(|e| CodecError::Malformed(format!("order columns (schema 2): {e}")))?,
            _ => {
                return Err(CodecError::UnsupportedSchema {
                    kind: Self::KIND,
                    schema,
                })
            }
        };
        let v4 = OrderColumnsV4::from(OrderColumnsV3::try_from(v2)?);
        Ok((OrderColumns::from(v4), rest))
    }
}

const LINES_ESCAPE: u8 = 15;
const HAS_CUSTOMER: u8 = 1 << 4;
const PAYMENTS_SHIFT: u8 = 5;
const PAYMENTS_ESCAPE: u8 = 3;
const HAS_RECEIPT: u8 = 1 << 7;

/// A payment method's 2-bit code: the three commonest, and
/// [`METHOD_ESCAPE`] for the rest (kept whole in `rare_methods`).
fn method_code(m: &PaymentMethod) -> u8 {
    match m {
        PaymentMethod::Cash => 0,
        PaymentMethod::Card => 1,
        PaymentMethod::Voucher => 2,
        _ => METHOD_ESCAPE,
    }
}

const METHOD_ESCAPE: u8 = 3;

/// Bits a packed tax-rate index takes for `rates` distinct rates (a
/// divisor of 8), or `None` above 16 (then varints).
fn tax_bits(rates: usize) -> Option<u32> {
    match rates {
        0 | 1 => Some(0),
        2 => Some(1),
        3 | 4 => Some(2),
        5..=16 => Some(4),
        _ => None,
    }
}

/// `values` (each below `1 << width`, width 1 to 32) packed `width` bits
/// each into a bit stream, low bits first.
fn pack_wide(values: &[u32], width: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((values.len() * width as usize).div_ceil(8));
    let (mut acc, mut have) = (0u64, 0u32);
    for &v in values {
        acc |= u64::from(v) << have;
        have += width;
        while have >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            have -= 8;
        }
    }
    if have > 0 {
        out.push(acc as u8);
    }
    out
}

/// The `n` values of [`pack_wide`], or `None` when `packed` is not
/// exactly their length or its bits past the last value are not zero.
fn unpack_wide(packed: &[u8], width: u32, n: usize) -> Option<Vec<u32>> {
    if !(1..=32).contains(&width) || packed.len() != n.checked_mul(width as usize)?.div_ceil(8) {
        return None;
    }
    let mask = if width == 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << width) - 1
    };
    let mut out = Vec::with_capacity(n);
    let (mut acc, mut have) = (0u64, 0u32);
    let mut bytes = packed.iter();
    for _ in 0..n {
        while have < width {
            acc |= u64::from(*bytes.next()?) << have;
            have += 8;
        }
        out.push((acc & mask) as u32);
        acc >>= width;
        have -= width;
    }
    // What is left of the last byte must be zero.
    (acc == 0).then_some(out)
}

/// `codes` (each below `1 << bits`) packed `bits` each, low bits first.
fn pack_bits(codes: &[u32], bits: u32) -> Vec<u8> {
    if bits == 0 {
        return Vec::new();
    }
    let per = (8 / bits) as usize;
    let mut out = vec![0u8; codes.len().div_ceil(per)];
    for (i, &c) in codes.iter().enumerate() {
        out[i / per] |= (c as u8) << (bits as usize * (i % per));
    }
    out
}

/// The `n` codes of [`pack_bits`], or `None` when `packed` is not exactly
/// their length or its unused high bits are not zero.
fn unpack_bits(packed: &[u8], bits: u32, n: usize) -> Option<Vec<u32>> {
    if bits == 0 {
        return packed.is_empty().then(|| vec![0; n]);
    }
    let per = (8 / bits) as usize;
    if packed.len() != n.div_ceil(per) {
        return None;
    }
    let mask = (1u8 << bits) - 1;
    let codes: Vec<u32> = (0..n)
        .map(|i| u32::from((packed[i / per] >> (bits as usize * (i % per))) & mask))
        .collect();
    // Canonical: the bits past the last code are zero.
    (pack_bits(&codes, bits) == packed).then_some(codes)
}
/// The most cashiers a batch's cashier dictionary holds (one-byte
/// indices).
const CASHIER_DICT_MAX: usize = 127;
const LINE_HAS_NAME: u8 = 1 << 2;
const LINE_HAS_NOTE: u8 = 1 << 3;
const PAY_HAS_TENDERED: u8 = 1;
const PAY_HAS_REFERENCE: u8 = 1 << 1;

impl OrderColumns {
    /// Builds the columns from records.
    pub fn from_records(orders: &[Order]) -> Self {
        let n = orders.len();
        // Pass 1: the distinct products in order of first appearance, with
        // their count and their first price and tax rate; each line's entry.
        let total_lines: usize = orders.iter().map(|o| o.lines.len()).sum();
        // Sized for a distinct product every other line (growing it was a
        // sixth of the encoder's time on sparse ids).
        let guess = (total_lines / 2).min(1 << 16);
        let mut seen: IdMap<u32, u32> = IdMap::with_capacity_and_hasher(guess, Default::default());
        let mut firsts: Vec<(u32, u32, i64, u16)> = Vec::with_capacity(guess);
        let mut line_first: Vec<u32> = Vec::with_capacity(total_lines);
        for l in orders.iter().flat_map(|o| &o.lines) {
            let next = firsts.len() as u32;
            let ix = *seen.entry(l.product_id).or_insert_with(|| {
                firsts.push((l.product_id, 0, l.unit_price_cents, l.tax_rate_bp));
                next
            });
            firsts[ix as usize].1 += 1;
            line_first.push(ix);
        }
        // Ranks: most frequent first, ties in order of first appearance.
        // A counting sort: counts are at most the line count, so the
        // table is bounded by the input, and it keeps ties in order.
        let max_count = firsts.iter().map(|f| f.1 as usize).max().unwrap_or(0);
        let mut slot = vec![0u32; max_count + 1];
        for f in &firsts {
            slot[max_count - f.1 as usize] += 1;
        }
        let mut at = 0u32;
        for s in &mut slot {
            let n = *s;
            *s = at;
            at += n;
        }
        let mut by_rank = vec![0u32; firsts.len()];
        for (i, f) in firsts.iter().enumerate() {
            let s = &mut slot[max_count - f.1 as usize];
            by_rank[*s as usize] = i as u32;
            *s += 1;
        }
        let mut rank_of = vec![0u32; firsts.len()];
        for (rank, &i) in by_rank.iter().enumerate() {
            rank_of[i as usize] = rank as u32;
        }
        // The dictionary pays when repeats are many (a long batch, sparse
        // ids); a short batch of mostly distinct products is smaller with
        // raw ids. Pick by the varint bytes of each (lz4 comes after).
        let raw_bytes: usize = line_first
            .iter()
            .map(|&f| varint_len(u64::from(firsts[f as usize].0)))
            .sum();
        let mut dict_bytes: usize = line_first
            .iter()
            .map(|&f| varint_len(u64::from(rank_of[f as usize])))
            .sum();
        let mut last = 0i64;
        for &i in &by_rank {
            let id = i64::from(firsts[i as usize].0);
            dict_bytes += varint_len((id - last).to_varint());
            last = id;
        }
        // Raw ids may also go bit-packed, each as its difference from the
        // batch's lowest id in the fewest bits the spread needs (schema 5).
        let (id_min, id_max) = firsts
            .iter()
            .fold((u32::MAX, 0u32), |(lo, hi), f| (lo.min(f.0), hi.max(f.0)));
        let id_width = if firsts.is_empty() {
            0
        } else {
            (32 - (id_max - id_min).leading_zeros()).max(1)
        };
        let packed_bytes = (total_lines * id_width as usize).div_ceil(8) + 6;
        let use_dict = dict_bytes < raw_bytes.min(packed_bytes);
        let pack_ids = !use_dict && id_width > 0 && packed_bytes < raw_bytes;
        if !use_dict {
            // Raw ids: the price dictionary in order of first appearance.
            for (i, r) in rank_of.iter_mut().enumerate() {
                *r = i as u32;
                by_rank[i] = i as u32;
            }
        }
        let mut c = OrderColumns {
            id_deltas: Col::with_capacity(n),
            cashier_ids: Col::with_capacity(n),
            headers: Vec::with_capacity(n),
            created_deltas: Col::with_capacity(n),
            product_dict: Col::with_capacity(firsts.len()),
            product_refs: Col::with_capacity(total_lines),
            dict_prices: Col::with_capacity(firsts.len()),
            dict_tax_index: Col::with_capacity(firsts.len()),
            payment_methods: Vec::with_capacity(n / 2 + 1),
            ..OrderColumns::default()
        };
        let mut tax_index: IdMap<u16, u32> = IdMap::default();
        let mut last_dict_id = 0i64;
        for &i in &by_rank {
            let (id, _, price, tax) = firsts[i as usize];
            if use_dict {
                c.product_dict.push(i64::from(id) - last_dict_id);
                last_dict_id = i64::from(id);
            }
            c.dict_prices.push(price);
            let next = tax_index.len() as u32;
            let ix = *tax_index.entry(tax).or_insert_with(|| {
                c.tax_rates.push(tax);
                next
            });
            c.dict_tax_index.push(ix);
        }
        if let Some(bits) = tax_bits(c.tax_rates.len()) {
            c.dict_tax_packed = pack_bits(&c.dict_tax_index, bits);
            c.dict_tax_index.clear();
        }
        let mut last_quantity = 0usize;
        let mut prices = SparseBuilder::new(0i64);
        let mut taxes = SparseBuilder::new(0u16);
        let mut discounts = SparseBuilder::new(0i64);
        let mut residuals = SparseBuilder::new(0i64);
        let mut order_discounts = SparseBuilder::new(0i64);
        let mut line_flags = SparseBuilder::new(0u8);
        let mut payment_flags = SparseBuilder::new(0u8);
        let (mut line_texts, mut payment_refs) = (TextsBuilder::default(), TextsBuilder::default());
        let mut cashiers: IdMap<u32, u32> = IdMap::default();
        for o in orders {
            let next = cashiers.len() as u32;
            cashiers.entry(o.cashier_id).or_insert_with(|| {
                c.cashier_dict.push(o.cashier_id);
                next
            });
        }
        if cashiers.len() > CASHIER_DICT_MAX {
            c.cashier_dict.clear();
        }
        let (mut last_id, mut last_ts) = (0u64, 0u64);
        let (mut line_ix, mut pay_ix) = (0usize, 0usize);
        for (order_ix, o) in orders.iter().enumerate() {
            order_discounts.push(order_ix, o.discount_cents);
            c.id_deltas.push(o.id.wrapping_sub(last_id) as i64);
            last_id = o.id;
            c.cashier_ids.push(if c.cashier_dict.is_empty() {
                o.cashier_id
            } else {
                // Every cashier was indexed above.
                cashiers.get(&o.cashier_id).copied().unwrap_or_default()
            });
            c.created_deltas
                .push(o.created_at_ms.wrapping_sub(last_ts) as i64);
            last_ts = o.created_at_ms;
            let mut header = 0u8;
            if o.lines.len() < LINES_ESCAPE as usize {
                header |= o.lines.len() as u8;
            } else {
                header |= LINES_ESCAPE;
                c.long_line_counts.push(o.lines.len() as u32);
            }
            if let Some(customer) = o.customer_id {
                header |= HAS_CUSTOMER;
                c.customers.push(customer);
            }
            if let Some(receipt) = &o.receipt {
                header |= HAS_RECEIPT;
                c.receipts.push(receipt.clone());
            }
            if o.payments.len() < PAYMENTS_ESCAPE as usize {
                header |= (o.payments.len() as u8) << PAYMENTS_SHIFT;
            } else {
                header |= PAYMENTS_ESCAPE << PAYMENTS_SHIFT;
                c.long_payment_counts.push(o.payments.len() as u32);
            }
            c.headers.push(header);
            let mut total = 0i64;
            for l in &o.lines {
                total = total.wrapping_add(l.amount_cents());
                c.quantities.push(line_ix, l.quantity, &mut last_quantity);
                let first = line_first[line_ix] as usize;
                c.product_refs.push(if use_dict {
                    rank_of[first]
                } else {
                    l.product_id
                });
                let (_, _, price, tax) = firsts[first];
                prices.push(line_ix, l.unit_price_cents.wrapping_sub(price));
                taxes.push(line_ix, l.tax_rate_bp.wrapping_sub(tax));
                discounts.push(line_ix, l.discount_cents);
                let mut flags = l.unit.code();
                if let Some(name) = &l.name {
                    flags |= LINE_HAS_NAME;
                    line_texts.push(name);
                }
                if let Some(note) = &l.note {
                    flags |= LINE_HAS_NOTE;
                    line_texts.push(note);
                }
                line_flags.push(line_ix, flags);
                line_ix += 1;
            }
            let mut due = total.wrapping_sub(o.discount_cents);
            for p in &o.payments {
                if pay_ix % 4 == 0 {
                    c.payment_methods.push(0);
                }
                let code = method_code(&p.method);
                if code == METHOD_ESCAPE {
                    c.rare_methods.push(p.method.clone());
                }
                if let Some(b) = c.payment_methods.last_mut() {
                    *b |= code << (2 * (pay_ix % 4));
                }
                let mut flags = 0u8;
                if p.tendered_cents.is_some() {
                    flags |= PAY_HAS_TENDERED;
                    c.payment_changes.push(p.change_cents());
                }
                if let Some(r) = &p.reference {
                    flags |= PAY_HAS_REFERENCE;
                    payment_refs.push(r);
                }
                payment_flags.push(pay_ix, flags);
                residuals.push(pay_ix, p.amount_cents.wrapping_sub(due));
                due = due.wrapping_sub(p.amount_cents);
                pay_ix += 1;
            }
        }
        c.price_overrides = prices.col;
        c.tax_overrides = taxes.col;
        c.discounts = discounts.col;
        c.payment_residuals = residuals.col;
        c.order_discounts = order_discounts.col;
        c.line_flags = line_flags.col;
        c.payment_flags = payment_flags.col;
        c.line_texts = line_texts.finish();
        if pack_ids {
            let spread: Vec<u32> = c.product_refs.iter().map(|&id| id - id_min).collect();
            c.ids_packed = pack_wide(&spread, id_width);
            c.ids_base = id_min;
            c.ids_width = id_width as u8;
            c.product_refs.clear();
        }
        c.payment_refs = payment_refs.finish();
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

    /// Encoded bytes of each column (postcard, and postcard then lz4), for
    /// seeing where a batch's bytes go.
    pub fn column_sizes(&self) -> Vec<(&'static str, usize, usize)> {
        fn size<T: Serialize>(name: &'static str, v: &T) -> (&'static str, usize, usize) {
            let raw = postcard::to_allocvec(v).unwrap_or_default();
            (name, raw.len(), lz4_flex::block::compress(&raw).len())
        }
        vec![
            size("id_deltas", &self.id_deltas),
            size("cashier_ids", &self.cashier_ids),
            size("headers", &self.headers),
            size("customers", &self.customers),
            size("created_deltas", &self.created_deltas),
            size("product_dict", &self.product_dict),
            size("product_refs", &self.product_refs),
            size("dict_prices", &self.dict_prices),
            size("dict_tax_index", &self.dict_tax_index),
            size("quantities", &self.quantities),
            size("price_overrides", &self.price_overrides),
            size("tax_overrides", &self.tax_overrides),
            size("discounts", &self.discounts),
            size("payment_methods", &self.payment_methods),
            size("payment_residuals", &self.payment_residuals),
            size("receipts", &self.receipts),
            size("order_discounts", &self.order_discounts),
            size("line_flags", &self.line_flags),
            size("line_texts", &self.line_texts),
            size("rare_methods", &self.rare_methods),
            size("payment_flags", &self.payment_flags),
            size("payment_changes", &self.payment_changes),
            size("payment_refs", &self.payment_refs),
            size("cashier_dict", &self.cashier_dict),
            size("dict_tax_packed", &self.dict_tax_packed),
            size("ids_packed", &self.ids_packed),
        ]
    }

    /// Rebuilds the records, checking that the columns agree.
    pub fn into_records(mut self) -> Result<Vec<Order>, CodecError> {
        let n = self.id_deltas.len();
        let malformed = |m: &str| CodecError::Malformed(format!("order columns: {m}"));
        let per_order = [
            self.cashier_ids.len(),
            self.created_deltas.len(),
            self.headers.len(),
        ];
        if per_order.iter().any(|&l| l != n) {
            return Err(malformed("per-order columns have different lengths"));
        }
        let mut line_counts = Vec::with_capacity(n);
        let mut payment_counts = Vec::with_capacity(n);
        let (mut long_lines, mut long_pays) = (
            self.long_line_counts.iter(),
            self.long_payment_counts.iter(),
        );
        let (mut total_lines, mut total_payments, mut with_customer) = (0usize, 0usize, 0usize);
        let mut with_receipt = 0usize;
        for &h in &self.headers {
            with_receipt += usize::from(h & HAS_RECEIPT != 0);
            let lines = match h & LINES_ESCAPE {
                LINES_ESCAPE => *long_lines
                    .next()
                    .ok_or_else(|| malformed("missing long line count"))?
                    as usize,
                v => v as usize,
            };
            let pays = match (h >> PAYMENTS_SHIFT) & PAYMENTS_ESCAPE {
                PAYMENTS_ESCAPE => *long_pays
                    .next()
                    .ok_or_else(|| malformed("missing long payment count"))?
                    as usize,
                v => v as usize,
            };
            with_customer += usize::from(h & HAS_CUSTOMER != 0);
            total_lines = total_lines
                .checked_add(lines)
                .ok_or_else(|| malformed("line count overflow"))?;
            total_payments = total_payments
                .checked_add(pays)
                .ok_or_else(|| malformed("payment count overflow"))?;
            line_counts.push(lines);
            payment_counts.push(pays);
        }
        if long_lines.next().is_some() || long_pays.next().is_some() {
            return Err(malformed("unused long counts"));
        }
        if with_customer != self.customers.len() {
            return Err(malformed("customer column does not match the headers"));
        }
        if with_receipt != self.receipts.len() {
            return Err(malformed("receipt column does not match the headers"));
        }
        let mut receipts = self.receipts.into_iter();
        if self.ids_width > 0 {
            if !self.product_refs.is_empty() || !self.product_dict.is_empty() || self.ids_width > 32
            {
                return Err(malformed("packed product ids beside other product columns"));
            }
            let spread = unpack_wide(&self.ids_packed, u32::from(self.ids_width), total_lines)
                .ok_or_else(|| malformed("packed product ids do not match the line counts"))?;
            self.product_refs = Col(spread
                .into_iter()
                .map(|d| self.ids_base.checked_add(d))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| malformed("packed product id out of range"))?);
        } else if !self.ids_packed.is_empty() || self.ids_base != 0 {
            return Err(malformed("packed product ids without a width"));
        }
        if self.product_refs.len() != total_lines {
            return Err(malformed("product refs do not match the line counts"));
        }
        if self.payment_methods.len() != total_payments.div_ceil(4) {
            return Err(malformed("payment methods do not match the payment counts"));
        }
        if !self.product_dict.is_empty() && self.dict_prices.len() != self.product_dict.len() {
            return Err(malformed("product dictionary columns differ in length"));
        }
        let tax_index: Vec<u32> = if self.dict_tax_index.len() == self.dict_prices.len() {
            if !self.dict_tax_packed.is_empty() {
                return Err(malformed("tax indices both packed and not"));
            }
            self.dict_tax_index.0
        } else if self.dict_tax_index.is_empty() {
            tax_bits(self.tax_rates.len())
                .and_then(|bits| unpack_bits(&self.dict_tax_packed, bits, self.dict_prices.len()))
                .ok_or_else(|| malformed("packed tax indices do not match the dictionary"))?
        } else {
            return Err(malformed("product dictionary columns differ in length"));
        };
        let mut customers = self.customers.iter();
        let quantities = self.quantities.expand(total_lines)?;
        let price_overrides = expand_sparse(&self.price_overrides, total_lines, 0, "prices")?;
        let tax_overrides = expand_sparse(&self.tax_overrides, total_lines, 0, "tax rates")?;
        let discounts = expand_sparse(&self.discounts, total_lines, 0, "discounts")?;
        let residuals = expand_sparse(&self.payment_residuals, total_payments, 0, "payments")?;
        let order_discounts = expand_sparse(&self.order_discounts, n, 0, "order discounts")?;
        let line_flags = expand_sparse(&self.line_flags, total_lines, 0, "line flags")?;
        let payment_flags = expand_sparse(&self.payment_flags, total_payments, 0, "payment flags")?;
        if line_flags.iter().any(|&f| f > 0b1111) || payment_flags.iter().any(|&f| f > 0b11) {
            return Err(malformed("unknown line or payment flags"));
        }
        let (mut line_texts, mut rare_methods) = (
            self.line_texts.into_strings()?.into_iter(),
            self.rare_methods.into_iter(),
        );
        let (mut changes, mut payment_refs) = (
            self.payment_changes.iter(),
            self.payment_refs.into_strings()?.into_iter(),
        );
        let cashier_ids = if self.cashier_dict.is_empty() {
            self.cashier_ids.0
        } else {
            self.cashier_ids
                .iter()
                .map(|&i| self.cashier_dict.get(i as usize).copied())
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| malformed("cashier index out of range"))?
        };

        // Raw ids (no dictionary): index them in order of first appearance,
        // the order their prices have.
        let raw_refs;
        let (product_ids, product_refs): (Vec<u32>, &[u32]) = if self.product_dict.is_empty() {
            let (ids, refs) = index_raw_ids(&self.product_refs);
            raw_refs = refs;
            (ids, &raw_refs)
        } else {
            let ids = undelta_ids(&self.product_dict)
                .ok_or_else(|| malformed("product id out of range"))?;
            (ids, &self.product_refs)
        };
        // Each product's tax rate, checked once.
        let dict_taxes = tax_index
            .iter()
            .map(|&i| self.tax_rates.get(i as usize).copied())
            .collect::<Option<Vec<u16>>>()
            .ok_or_else(|| malformed("tax rate index out of range"))?;
        let mut out = Vec::with_capacity(n);
        let (mut id, mut ts) = (0u64, 0u64);
        let (mut li, mut pi) = (0usize, 0usize);
        for i in 0..n {
            id = id.wrapping_add(self.id_deltas[i] as u64);
            ts = ts.wrapping_add(self.created_deltas[i] as u64);
            let nl = line_counts[i];
            let mut lines = Vec::with_capacity(nl);
            for j in li..li + nl {
                let rank = product_refs[j] as usize;
                let (Some(&pid), Some(&price), Some(&tax)) = (
                    product_ids.get(rank),
                    self.dict_prices.get(rank),
                    dict_taxes.get(rank),
                ) else {
                    return Err(malformed("product ref out of range"));
                };
                let flags = line_flags[j];
                let mut text = |bit: u8| {
                    if flags & bit == 0 {
                        return Ok(None);
                    }
                    line_texts
                        .next()
                        .map(Some)
                        .ok_or_else(|| malformed("missing line text"))
                };
                let (name, note) = (text(LINE_HAS_NAME)?, text(LINE_HAS_NOTE)?);
                lines.push(OrderLine {
                    product_id: pid,
                    quantity: quantities[j],
                    unit: Unit::from_code(flags),
                    unit_price_cents: price.wrapping_add(price_overrides[j]),
                    discount_cents: discounts[j],
                    tax_rate_bp: tax.wrapping_add(tax_overrides[j]),
                    name,
                    note,
                });
            }
            li += nl;
            let np = payment_counts[i];
            let mut payments = Vec::with_capacity(np);
            let mut due = lines
                .iter()
                .fold(0i64, |acc, l| acc.wrapping_add(l.amount_cents()))
                .wrapping_sub(order_discounts[i]);
            for (j, residual) in residuals.iter().enumerate().skip(pi).take(np) {
                let amount = due.wrapping_add(*residual);
                let method = match (self.payment_methods[j / 4] >> (2 * (j % 4))) & 0b11 {
                    0 => PaymentMethod::Cash,
                    1 => PaymentMethod::Card,
                    2 => PaymentMethod::Voucher,
                    _ => rare_methods
                        .next()
                        .ok_or_else(|| malformed("missing payment method"))?,
                };
                let flags = payment_flags[j];
                let tendered_cents = if flags & PAY_HAS_TENDERED != 0 {
                    let change = changes.next().ok_or_else(|| malformed("missing change"))?;
                    Some(amount.wrapping_add(*change))
                } else {
                    None
                };
                let reference = if flags & PAY_HAS_REFERENCE != 0 {
                    Some(
                        payment_refs
                            .next()
                            .ok_or_else(|| malformed("missing payment reference"))?,
                    )
                } else {
                    None
                };
                payments.push(Payment {
                    method,
                    amount_cents: amount,
                    tendered_cents,
                    reference,
                });
                due = due.wrapping_sub(amount);
            }
            pi += np;
            out.push(Order {
                id,
                cashier_id: cashier_ids[i],
                customer_id: if self.headers[i] & HAS_CUSTOMER != 0 {
                    customers.next().copied()
                } else {
                    None
                },
                created_at_ms: ts,
                lines,
                payments,
                receipt: if self.headers[i] & HAS_RECEIPT != 0 {
                    receipts.next()
                } else {
                    None
                },
                discount_cents: order_discounts[i],
            });
        }
        if line_texts.next().is_some()
            || rare_methods.next().is_some()
            || changes.next().is_some()
            || payment_refs.next().is_some()
        {
            return Err(malformed("unused line texts or payment details"));
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

    /// Encodes orders as one columnar, compressed frame. A line name or
    /// note or a payment reference over [`MAX_TEXT_LEN`] bytes is refused
    /// ([`CodecError::TooLarge`]; the row codec writes any order, the
    /// order rules refuse such texts).
    pub fn encode_orders(&self, orders: &[Order]) -> Result<Vec<u8>, CodecError> {
        self.check_count(orders.len())?;
        // The column decoder refuses longer texts (it bounds what one byte
        // of a frame may decode to), so they are refused here, before
        // anything is written, rather than written undecodable.
        let texts = orders.iter().flat_map(|o| {
            let lines = o.lines.iter().flat_map(|l| [&l.name, &l.note]);
            lines.chain(o.payments.iter().map(|p| &p.reference))
        });
        if let Some(t) = texts.flatten().find(|t| t.len() > MAX_TEXT_LEN) {
            return Err(CodecError::TooLarge {
                what: "line or payment text",
                size: t.len(),
                limit: MAX_TEXT_LEN,
            });
        }
        let cols = OrderColumns::from_records(orders);
        // About 3 bytes a line and 8 an order (see `xtask sizes`).
        let hint = cols.product_refs.len() * 3 + cols.len() * 8 + 64;
        self.encode_value_sized(OrderColumns::KIND, OrderColumns::SCHEMA, &cols, hint)
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

    /// The columns with raw cashier ids and varint tax indices (the only
    /// forms schemas 1 to 4 have), for building older batches from the
    /// current encoder's.
    fn raw_cashiers(mut c: OrderColumns) -> OrderColumns {
        if !c.cashier_dict.is_empty() {
            for i in c.cashier_ids.iter_mut() {
                *i = c.cashier_dict[*i as usize];
            }
            c.cashier_dict.clear();
        }
        if c.ids_width > 0 {
            let mut long = c.long_line_counts.iter();
            let n: usize = c
                .headers
                .iter()
                .map(|h| match h & LINES_ESCAPE {
                    LINES_ESCAPE => *long.next().unwrap() as usize,
                    v => v as usize,
                })
                .sum();
            let mut ids = unpack_wide(&c.ids_packed, u32::from(c.ids_width), n).unwrap();
            for id in &mut ids {
                *id += c.ids_base;
            }
            c.product_refs = Col(ids);
            (c.ids_packed, c.ids_base, c.ids_width) = (Vec::new(), 0, 0);
        }
        if c.dict_tax_index.len() != c.dict_prices.len() {
            let bits = tax_bits(c.tax_rates.len()).unwrap();
            c.dict_tax_index =
                Col(unpack_bits(&c.dict_tax_packed, bits, c.dict_prices.len()).unwrap());
            c.dict_tax_packed.clear();
        }
        c
    }

    proptest! {
        /// Model: the values themselves.
        #[test]
        fn wide_packing_round_trips(width in 1u32..=32, raw in prop::collection::vec(any::<u32>(), 0..50)) {
            let mask = if width == 32 { u32::MAX } else { (1 << width) - 1 };
            let values: Vec<u32> = raw.iter().map(|v| v & mask).collect();
            let packed = pack_wide(&values, width);
            prop_assert_eq!(packed.len(), (values.len() * width as usize).div_ceil(8));
            prop_assert_eq!(unpack_wide(&packed, width, values.len()), Some(values.clone()));
            let mut long = packed.clone();
            long.push(0);
            prop_assert_eq!(unpack_wide(&long, width, values.len()), None);
            if (values.len() * width as usize) % 8 != 0 {
                let mut stray = packed;
                *stray.last_mut().unwrap() |= 0x80;
                prop_assert_eq!(unpack_wide(&stray, width, values.len()), None);
            }
        }
    }

    /// Every damage of `c` in `broken` makes it malformed.
    fn each_is_malformed(c: &OrderColumns, broken: &[fn(&mut OrderColumns)]) {
        for (n, b) in broken.iter().enumerate() {
            let mut c = c.clone();
            b(&mut c);
            assert!(
                matches!(c.into_records(), Err(CodecError::Malformed(_))),
                "case {n}"
            );
        }
    }

    /// A short batch of distinct nearby ids goes bit-packed; packed ids
    /// that disagree with the other columns are malformed.
    #[test]
    fn packed_product_ids_round_trip_and_refuse_damage() {
        let orders: Vec<Order> = (0..30u32)
            .map(|i| {
                let line = OrderLine::new(500_000 + i * 37, 1, 100, 700);
                Order {
                    id: u64::from(i),
                    payments: vec![Payment::new(PaymentMethod::Card, 100)],
                    lines: vec![line],
                    ..Order::default()
                }
            })
            .collect();
        let c = OrderColumns::from_records(&orders);
        assert!(c.ids_width > 0 && c.product_refs.is_empty() && c.product_dict.is_empty());
        assert_eq!(c.ids_base, 500_000);
        assert_eq!(c.clone().into_records().unwrap(), orders);
        let broken: [fn(&mut OrderColumns); 4] = [
            |c| c.ids_packed.push(0),
            |c| c.ids_base = u32::MAX,
            |c| c.product_refs.push(1),
            |c| c.ids_width = 0,
        ];
        each_is_malformed(&c, &broken);
    }

    #[test]
    fn tax_indices_pack_and_refuse_odd_lengths_and_stray_bits() {
        for (rates, bits) in [(1usize, 0u32), (2, 1), (4, 2), (16, 4)] {
            assert_eq!(tax_bits(rates), Some(bits));
            for n in 0..20usize {
                let codes: Vec<u32> = (0..n as u32).map(|i| i % rates as u32).collect();
                let packed = pack_bits(&codes, bits);
                assert_eq!(unpack_bits(&packed, bits, n), Some(codes), "{rates} {n}");
                if bits > 0 && n % (8 / bits as usize) != 0 {
                    let mut stray = packed.clone();
                    *stray.last_mut().unwrap() |= 0x80;
                    assert_eq!(unpack_bits(&stray, bits, n), None);
                }
                let mut long = packed;
                long.push(0);
                assert_eq!(unpack_bits(&long, bits, n), None);
            }
        }
        assert_eq!(tax_bits(17), None);
    }
    use proptest::prelude::*;

    /// Lines as schemas before 4 wrote them (pieces, no texts).
    fn old_lines(lines: &[OrderLine]) -> Vec<OrderLineV1> {
        lines
            .iter()
            .map(|l| OrderLineV1 {
                product_id: l.product_id,
                quantity: l.quantity,
                unit_price_cents: l.unit_price_cents,
                discount_cents: l.discount_cents,
                tax_rate_bp: l.tax_rate_bp,
            })
            .collect()
    }

    /// Payments as schemas before 4 wrote them (three methods).
    fn old_payments(payments: &[Payment]) -> Vec<PaymentV1> {
        payments
            .iter()
            .map(|p| PaymentV1 {
                method: match p.method {
                    PaymentMethod::Card => MethodV1::Card,
                    PaymentMethod::Voucher => MethodV1::Voucher,
                    _ => MethodV1::Cash,
                },
                amount_cents: p.amount_cents,
            })
            .collect()
    }

    /// Schema 1-3's raw product id per line, from schema 4's ranks.
    fn raw_ids(c: &OrderColumns) -> Col<u32> {
        if c.product_dict.is_empty() {
            return c.product_refs.clone();
        }
        let mut ids = Col::with_capacity(c.product_refs.len());
        for &r in &c.product_refs {
            ids.push(undelta_ids(&c.product_dict).unwrap()[r as usize]);
        }
        ids
    }

    /// Orders and order columns written by schema 1 (before receipt
    /// numbers) and schema 2 (with a terminal number) still decode.
    #[test]
    fn schema_1_and_2_orders_and_columns_still_decode() {
        let codec = Codec::new();
        let line = |product_id, quantity| OrderLine {
            product_id,
            quantity,
            unit_price_cents: 240,
            discount_cents: 0,
            tax_rate_bp: 700,
            ..Default::default()
        };
        let orders: Vec<Order> = (1..=3u64)
            .map(|i| Order {
                id: 100 + i,
                cashier_id: 2,
                customer_id: (i == 2).then_some(4711),
                created_at_ms: 1_704_067_200_000 + i,
                lines: vec![line(7001, i as u32), line(7002, 1)],
                payments: vec![Payment {
                    method: PaymentMethod::Cash,
                    amount_cents: 240 * (i as i64 + 1),
                    ..Default::default()
                }],
                receipt: None,
                ..Default::default()
            })
            .collect();
        let v1 = |o: &Order| OrderV1 {
            id: o.id,
            terminal_id: 7,
            cashier_id: o.cashier_id,
            customer_id: o.customer_id,
            created_at_ms: o.created_at_ms,
            lines: old_lines(&o.lines),
            payments: old_payments(&o.payments),
        };
        let v2 = |o: &Order| OrderV2 {
            id: o.id,
            terminal_id: 7,
            cashier_id: o.cashier_id,
            customer_id: o.customer_id,
            created_at_ms: o.created_at_ms,
            lines: old_lines(&o.lines),
            payments: old_payments(&o.payments),
            receipt: Some(format!("till-7-3FA9C1D2-{:06}", o.id)),
        };
        for o in &orders {
            let frame = codec.encode_value(RecordKind::ORDER, 1, &v1(o)).unwrap();
            assert_eq!(codec.decode::<Order>(&frame).unwrap(), *o);
            let frame = codec.encode_value(RecordKind::ORDER, 2, &v2(o)).unwrap();
            let back = codec.decode::<Order>(&frame).unwrap();
            assert_eq!(back.receipt, v2(o).receipt);
            assert_eq!(
                Order {
                    receipt: None,
                    ..back
                },
                *o
            );
        }
        let c = raw_cashiers(OrderColumns::from_records(&orders));
        let terminals = || {
            let mut t = Col::with_capacity(orders.len());
            for _ in &orders {
                t.push(7u32);
            }
            t
        };
        let v2_columns = OrderColumnsV2 {
            id_deltas: c.id_deltas.clone(),
            terminal_ids: terminals(),
            cashier_ids: c.cashier_ids.clone(),
            headers: c.headers.clone(),
            customers: c.customers.clone(),
            created_deltas: c.created_deltas.clone(),
            long_line_counts: c.long_line_counts.clone(),
            long_payment_counts: c.long_payment_counts.clone(),
            product_ids: raw_ids(&c),
            dict_prices: c.dict_prices.clone(),
            dict_tax_index: c.dict_tax_index.clone(),
            tax_rates: c.tax_rates.clone(),
            quantities: c.quantities.clone(),
            price_overrides: c.price_overrides.clone(),
            tax_overrides: c.tax_overrides.clone(),
            discounts: c.discounts.clone(),
            payment_methods: c.payment_methods.clone(),
            payment_residuals: c.payment_residuals.clone(),
            receipts: c.receipts.clone(),
        };
        let frame = codec
            .encode_value(RecordKind::ORDER_COLUMNS, 2, &v2_columns)
            .unwrap();
        assert_eq!(codec.decode_orders(&frame).unwrap(), orders);
        // A schema-2 batch whose terminal column is short is malformed.
        let short = OrderColumnsV2 {
            terminal_ids: Col::with_capacity(0),
            ..v2_columns
        };
        let frame = codec
            .encode_value(RecordKind::ORDER_COLUMNS, 2, &short)
            .unwrap();
        assert!(matches!(
            codec.decode_orders(&frame),
            Err(CodecError::Malformed(_))
        ));
        let old_ids = raw_ids(&c);
        let old = OrderColumnsV1 {
            id_deltas: c.id_deltas,
            terminal_ids: terminals(),
            cashier_ids: c.cashier_ids,
            headers: c.headers,
            customers: c.customers,
            created_deltas: c.created_deltas,
            long_line_counts: c.long_line_counts,
            long_payment_counts: c.long_payment_counts,
            product_ids: old_ids,
            dict_prices: c.dict_prices,
            dict_tax_index: c.dict_tax_index,
            tax_rates: c.tax_rates,
            quantities: c.quantities,
            price_overrides: c.price_overrides,
            tax_overrides: c.tax_overrides,
            discounts: c.discounts,
            payment_methods: c.payment_methods,
            payment_residuals: c.payment_residuals,
        };
        let frame = codec
            .encode_value(RecordKind::ORDER_COLUMNS, 1, &old)
            .unwrap();
        assert_eq!(codec.decode_orders(&frame).unwrap(), orders);
        // And a receipt survives the columns of schema 2.
        let mut with = orders.clone();
        with[1].receipt = Some("till-7-3FA9C1D2-000002".into());
        let frame = codec.encode_orders(&with).unwrap();
        assert_eq!(codec.decode_orders(&frame).unwrap(), with);
    }

    /// Order columns written by schema 3 (a raw product id per line, the
    /// price dictionary in order of first appearance) still decode, when
    /// the most frequent product is not the first seen.
    #[test]
    fn schema_3_order_columns_still_decode() {
        let line = |product_id, price| OrderLine {
            product_id,
            quantity: 1,
            unit_price_cents: price,
            discount_cents: 0,
            tax_rate_bp: if product_id == 900_009 { 1900 } else { 700 },
            ..Default::default()
        };
        // 5 first, then 9 often, then 5 at another price (an override).
        let mut orders = Vec::new();
        for i in 0..6u64 {
            let lines = match i {
                0 => vec![line(100_005, 100)],
                5 => vec![line(100_005, 90), line(900_009, 300)],
                _ => vec![line(900_009, 300); 6],
            };
            let total = lines.iter().map(OrderLine::amount_cents).sum();
            orders.push(Order {
                id: 10 + i,
                cashier_id: 1,
                customer_id: None,
                created_at_ms: 1_000 + i,
                lines,
                payments: vec![Payment {
                    method: PaymentMethod::Card,
                    amount_cents: total,
                    ..Default::default()
                }],
                receipt: None,
                ..Default::default()
            });
        }
        let c = raw_cashiers(OrderColumns::from_records(&orders));
        assert_eq!(
            undelta_ids(&c.product_dict).unwrap(),
            vec![900_009, 100_005],
            "most frequent first"
        );
        // Schema 3's dictionary: first appearance order.
        let mut order: Vec<usize> = Vec::new();
        for &r in &c.product_refs {
            if !order.contains(&(r as usize)) {
                order.push(r as usize);
            }
        }
        let mut dict_prices = Col::with_capacity(order.len());
        let mut dict_tax_index = Col::with_capacity(order.len());
        for &r in &order {
            dict_prices.push(c.dict_prices[r]);
            dict_tax_index.push(c.dict_tax_index[r]);
        }
        let v3 = OrderColumnsV3 {
            product_ids: raw_ids(&c),
            id_deltas: c.id_deltas,
            cashier_ids: c.cashier_ids,
            headers: c.headers,
            customers: c.customers,
            created_deltas: c.created_deltas,
            long_line_counts: c.long_line_counts,
            long_payment_counts: c.long_payment_counts,
            dict_prices,
            dict_tax_index,
            tax_rates: c.tax_rates,
            quantities: c.quantities,
            price_overrides: c.price_overrides,
            tax_overrides: c.tax_overrides,
            discounts: c.discounts,
            payment_methods: c.payment_methods,
            payment_residuals: c.payment_residuals,
            receipts: c.receipts,
        };
        let codec = Codec::new();
        let frame = codec
            .encode_value(RecordKind::ORDER_COLUMNS, 3, &v3)
            .unwrap();
        assert_eq!(codec.decode_orders(&frame).unwrap(), orders);
    }

    /// A rank outside the dictionary is malformed, not a panic.
    #[test]
    fn a_product_ref_out_of_range_is_malformed() {
        let o = Order {
            receipt: None,
            id: 1,
            cashier_id: 1,
            customer_id: None,
            created_at_ms: 1,
            lines: vec![OrderLine {
                product_id: 300_003,
                quantity: 1,
                unit_price_cents: 5,
                discount_cents: 0,
                tax_rate_bp: 0,
                ..Default::default()
            }],
            payments: vec![],
            ..Default::default()
        };
        // Two ids far apart, repeated: the dictionary (packed raw ids
        // would take 20 bits a line).
        let far = OrderLine {
            product_id: 999_001,
            ..o.lines[0].clone()
        };
        let o = Order {
            lines: [o.lines[0].clone(), far]
                .iter()
                .cycle()
                .take(20)
                .cloned()
                .collect(),
            payments: vec![Payment {
                method: PaymentMethod::Cash,
                amount_cents: 100,
                ..Default::default()
            }],
            ..o
        };
        let mut c = OrderColumns::from_records(&[o]);
        assert!(
            !c.product_dict.is_empty(),
            "a repeated 6-digit id: dictionary"
        );
        c.product_refs[0] = 2;
        assert!(matches!(c.into_records(), Err(CodecError::Malformed(_))));
    }

    /// Orders of schema 3, order columns of schema 4 and refunds of schema
    /// 2 (pieces only, three payment methods, no texts) still decode, as
    /// schema 4 orders with the defaults.
    #[test]
    fn schema_3_orders_and_schema_4_columns_still_decode() {
        let codec = Codec::new();
        let orders: Vec<Order> = (1..=40u64)
            .map(|i| {
                let line = OrderLine {
                    discount_cents: (i % 3) as i64,
                    ..OrderLine::new(7000 + (i % 5) as u32, 1 + (i % 2) as u32, 240, 700)
                };
                let total = line.amount_cents();
                let method = [
                    PaymentMethod::Cash,
                    PaymentMethod::Card,
                    PaymentMethod::Voucher,
                ][(i % 3) as usize]
                    .clone();
                Order {
                    id: i,
                    cashier_id: 2,
                    customer_id: (i % 4 == 0).then_some(9),
                    created_at_ms: 1_704_067_200_000 + i * 1000,
                    lines: vec![line],
                    payments: vec![Payment::new(method, total)],
                    receipt: Some(format!("R-{i}")),
                    discount_cents: 0,
                }
            })
            .collect();
        for o in &orders {
            let v3 = OrderV3 {
                id: o.id,
                cashier_id: o.cashier_id,
                customer_id: o.customer_id,
                created_at_ms: o.created_at_ms,
                lines: old_lines(&o.lines),
                payments: old_payments(&o.payments),
                receipt: o.receipt.clone(),
            };
            let frame = codec.encode_value(RecordKind::ORDER, 3, &v3).unwrap();
            assert_eq!(codec.decode::<Order>(&frame).unwrap(), *o);
            let v2 = RefundV2 {
                id: o.id,
                cashier_id: o.cashier_id,
                original_order_id: 1,
                original_receipt: None,
                created_at_ms: o.created_at_ms,
                lines: old_lines(&o.lines),
                payments: old_payments(&o.payments),
                receipt: o.receipt.clone(),
            };
            let frame = codec.encode_value(RecordKind::REFUND, 2, &v2).unwrap();
            let back = codec.decode::<Refund>(&frame).unwrap();
            assert_eq!(
                (back.lines, back.payments),
                (o.lines.clone(), o.payments.clone())
            );
        }
        let c = raw_cashiers(OrderColumns::from_records(&orders));
        let v4 = OrderColumnsV4 {
            id_deltas: c.id_deltas,
            cashier_ids: c.cashier_ids,
            headers: c.headers,
            customers: c.customers,
            created_deltas: c.created_deltas,
            long_line_counts: c.long_line_counts,
            long_payment_counts: c.long_payment_counts,
            product_dict: c.product_dict,
            product_refs: c.product_refs,
            dict_prices: c.dict_prices,
            dict_tax_index: c.dict_tax_index,
            tax_rates: c.tax_rates,
            quantities: c.quantities,
            price_overrides: c.price_overrides,
            tax_overrides: c.tax_overrides,
            discounts: c.discounts,
            payment_methods: c.payment_methods,
            payment_residuals: c.payment_residuals,
            receipts: c.receipts,
        };
        let frame = codec
            .encode_value(RecordKind::ORDER_COLUMNS, 4, &v4)
            .unwrap();
        assert_eq!(codec.decode_orders(&frame).unwrap(), orders);
    }

    /// Up to 127 cashiers are indexed, more are written as ids; both
    /// decode.
    #[test]
    fn cashiers_are_indexed_up_to_127() {
        for (n, indexed) in [(127u32, true), (128, false)] {
            let orders: Vec<Order> = (0..2 * n)
                .map(|i| Order {
                    id: u64::from(i),
                    cashier_id: 1000 + i % n,
                    ..Order::default()
                })
                .collect();
            let c = OrderColumns::from_records(&orders);
            assert_eq!(c.cashier_dict.len() == n as usize, indexed);
            assert_eq!(c.cashier_dict.is_empty(), !indexed);
            assert_eq!(c.into_records().unwrap(), orders);
        }
    }

    /// A payment's text or method that the columns name but do not hold
    /// is malformed, as are unknown flags.
    #[test]
    fn rich_columns_that_disagree_are_malformed() {
        let order = Order {
            id: 1,
            lines: vec![OrderLine {
                unit: Unit::Kilogram,
                name: Some("loose apples".into()),
                note: Some("bruised".into()),
                ..OrderLine::new(5, 1234, 299, 700)
            }],
            payments: vec![Payment {
                tendered_cents: Some(1000),
                reference: Some("GC-1".into()),
                ..Payment::new(PaymentMethod::GiftCard, 369)
            }],
            ..Order::default()
        };
        assert_eq!(order.check().unwrap(), 369);
        let c = OrderColumns::from_records(std::slice::from_ref(&order));
        assert_eq!(c.clone().into_records().unwrap(), vec![order.clone()]);
        assert_eq!(c.cashier_dict.0, [0], "one cashier, indexed");
        let broken: [fn(&mut OrderColumns); 6] = [
            |c| c.line_texts = Texts::default(),
            |c| c.rare_methods.clear(),
            |c| c.payment_refs = Texts::of(&["GC-1", "extra"]),
            |c| c.cashier_ids.0[0] = 1,
            |c| c.payment_changes = Col::default(),
            |c| c.line_flags.values.0[0] |= 0x40,
        ];
        each_is_malformed(&c, &broken);
    }

    /// Refunds and analytics events written by schema 1 (with a terminal
    /// number) still decode.
    #[test]
    fn schema_1_refunds_and_analytics_events_still_decode() {
        let codec = Codec::new();
        let line = OrderLine {
            product_id: 7001,
            quantity: 1,
            unit_price_cents: 240,
            discount_cents: 0,
            tax_rate_bp: 700,
            ..Default::default()
        };
        let pay = Payment {
            method: PaymentMethod::Cash,
            amount_cents: 240,
            ..Default::default()
        };
        let old = RefundV1 {
            id: 9,
            terminal_id: 7,
            cashier_id: 2,
            original_order_id: 3,
            original_receipt: Some("R-3".into()),
            created_at_ms: 5,
            lines: old_lines(std::slice::from_ref(&line)),
            payments: old_payments(std::slice::from_ref(&pay)),
            receipt: Some("R-9".into()),
        };
        let frame = codec.encode_value(RecordKind::REFUND, 1, &old).unwrap();
        let want = Refund {
            id: 9,
            cashier_id: 2,
            original_order_id: 3,
            original_receipt: Some("R-3".into()),
            created_at_ms: 5,
            lines: vec![line],
            payments: vec![pay],
            receipt: Some("R-9".into()),
        };
        assert_eq!(codec.decode::<Refund>(&frame).unwrap(), want);
        let old = AnalyticsEventV1 {
            name: "drawer_open".into(),
            terminal_id: 7,
            at_ms: 11,
            properties: vec![("why".into(), "change".into())],
        };
        let frame = codec.encode_value(RecordKind::ANALYTICS, 1, &old).unwrap();
        let want = AnalyticsEvent {
            name: "drawer_open".into(),
            at_ms: 11,
            properties: vec![("why".into(), "change".into())],
        };
        assert_eq!(codec.decode::<AnalyticsEvent>(&frame).unwrap(), want);
    }

    /// The rules of `Order::check` in unbounded arithmetic (i128 cannot
    /// overflow on these inputs), as the reference.
    fn model(o: &Order) -> Result<i64, OrderRule> {
        let bad_text =
            |t: &Option<String>| t.as_ref().is_some_and(|t| t.is_empty() || t.len() > 200);
        if o.receipt
            .as_ref()
            .is_some_and(|r| r.is_empty() || r.len() > 64)
        {
            return Err(OrderRule::BadReceipt);
        }
        if o.lines
            .iter()
            .any(|l| bad_text(&l.name) || bad_text(&l.note))
        {
            return Err(OrderRule::BadText);
        }
        for p in &o.payments {
            if bad_text(&p.reference) {
                return Err(OrderRule::BadText);
            }
            if matches!(&p.method, PaymentMethod::Other(n) if n.is_empty() || n.len() > 32) {
                return Err(OrderRule::BadTender);
            }
            if p.tendered_cents.is_some_and(|t| t < p.amount_cents) {
                return Err(OrderRule::BadTender);
            }
        }
        if o.id > i64::MAX as u64 {
            return Err(OrderRule::IdOutOfRange);
        }
        if o.lines.is_empty() {
            return Err(OrderRule::Empty);
        }
        let mut total: i128 = 0;
        for l in &o.lines {
            let exact = i128::from(l.quantity) * i128::from(l.unit_price_cents);
            // Measured units: thousandths, rounded to the nearest cent.
            let gross = match l.unit {
                Unit::Each => exact,
                _ => (exact + 500).div_euclid(1000),
            };
            let amount = gross - i128::from(l.discount_cents);
            if i64::try_from(gross).is_err() || i64::try_from(amount).is_err() {
                return Err(OrderRule::Overflow);
            }
            if amount < 0 || l.unit_price_cents < 0 {
                return Err(OrderRule::NegativeLine);
            }
            total += amount;
            if i64::try_from(total).is_err() {
                return Err(OrderRule::Overflow);
            }
        }
        if o.discount_cents < 0 || i128::from(o.discount_cents) > total {
            return Err(OrderRule::BadDiscount);
        }
        total -= i128::from(o.discount_cents);
        let mut paid: i128 = 0;
        for p in &o.payments {
            paid += i128::from(p.amount_cents);
            if i64::try_from(paid).is_err() {
                return Err(OrderRule::Overflow);
            }
        }
        if paid != total {
            return Err(OrderRule::TotalMismatch);
        }
        Ok(total as i64)
    }

    fn arb_order() -> impl Strategy<Value = Order> {
        let price = prop_oneof![-5i64..5_000, Just(i64::MAX / 2), Just(i64::MIN / 3)];
        let unit = prop_oneof![
            3 => Just(Unit::Each),
            1 => Just(Unit::Kilogram),
            1 => Just(Unit::Metre),
        ];
        let text = prop_oneof![
            6 => Just(None),
            1 => Just(Some(String::new())),
            1 => Just(Some("x".repeat(200))),
            1 => Just(Some("x".repeat(201))),
        ];
        let line = (
            (prop_oneof![0u32..50, 900u32..1_500], price, unit),
            prop_oneof![Just(0i64), -10i64..200, Just(i64::MIN)],
            (text.clone(), text.clone()),
        )
            .prop_map(
                |((quantity, unit_price_cents, unit), discount_cents, (name, note))| OrderLine {
                    product_id: 1,
                    quantity,
                    unit,
                    unit_price_cents,
                    discount_cents,
                    tax_rate_bp: 700,
                    name,
                    note,
                },
            );
        let method = prop_oneof![
            4 => Just(PaymentMethod::Card),
            1 => Just(PaymentMethod::GiftCard),
            1 => Just(PaymentMethod::Other(String::new())),
            1 => Just(PaymentMethod::Other("m".repeat(32))),
            1 => Just(PaymentMethod::Other("m".repeat(33))),
        ];
        let tender = (
            prop_oneof![3 => Just(None), 1 => Just(Some(0i64)), 1 => Just(Some(-1)), 1 => Just(Some(500))],
            text,
        );
        (
            prop_oneof![0u64..1_000, Just(i64::MAX as u64), Just(u64::MAX)],
            prop::collection::vec(line, 0..4),
            prop::collection::vec((-100i64..100_000, method, tender.clone()), 0..3),
            (any::<bool>(), prop_oneof![3 => Just(0i64), 1 => -5i64..300]),
            tender,
        )
            .prop_map(|(id, lines, extra, (exact, discount), (over, reference))| {
                // Half the orders pay their exact total, the rest at random;
                // a tendered amount is the payment plus `over` (negative:
                // short).
                let total = lines
                    .iter()
                    .fold(0i64, |a, l: &OrderLine| a.wrapping_add(l.amount_cents()))
                    .wrapping_sub(discount);
                let payments = if exact {
                    vec![Payment {
                        method: PaymentMethod::Cash,
                        amount_cents: total,
                        tendered_cents: over.map(|o| total.wrapping_add(o)),
                        reference,
                    }]
                } else {
                    extra
                        .into_iter()
                        .map(|(amount_cents, method, (over, reference))| Payment {
                            method,
                            amount_cents,
                            tendered_cents: over.map(|o| amount_cents + o),
                            reference,
                        })
                        .collect()
                };
                Order {
                    receipt: None,
                    id,
                    cashier_id: 1,
                    customer_id: None,
                    created_at_ms: 0,
                    lines,
                    payments,
                    discount_cents: discount,
                }
            })
    }

    proptest! {
        /// Column payloads of arbitrary orders, with bytes flipped: the
        /// decoder answers an error or orders, never panics; undamaged
        /// they round-trip; texts over the limit are refused by the
        /// encoder, not written undecodable.
        #[test]
        fn damaged_order_columns_are_errors_not_panics(
            orders in prop::collection::vec(arb_order(), 0..6),
            cashiers in prop::collection::vec(0u32..400, 6),
            flips in prop::collection::vec((any::<usize>(), 1u8..=255), 1..6),
        ) {
            let mut orders = orders;
            for (o, c) in orders.iter_mut().zip(&cashiers) {
                o.cashier_id = *c;
            }
            let codec = Codec::new();
            let too_long = orders.iter().any(|o| {
                o.lines.iter().any(|l| [&l.name, &l.note].iter().any(|t| t.as_ref().is_some_and(|t| t.len() > MAX_TEXT_LEN)))
                    || o.payments.iter().any(|p| p.reference.as_ref().is_some_and(|t| t.len() > MAX_TEXT_LEN))
            });
            match codec.encode_orders(&orders) {
                Err(CodecError::TooLarge { .. }) => prop_assert!(too_long),
                Err(e) => prop_assert!(false, "unexpected {e}"),
                Ok(frame) => {
                    prop_assert!(!too_long);
                    prop_assert_eq!(codec.decode_orders(&frame).unwrap(), orders.clone());
                    let mut bytes = postcard::to_allocvec(&OrderColumns::from_records(&orders)).unwrap();
                    for (at, x) in flips {
                        let i = at % bytes.len();
                        bytes[i] ^= x;
                    }
                    if let Ok(c) = postcard::from_bytes::<OrderColumns>(&bytes) {
                        let _ = c.into_records();
                    }
                }
            }
        }

        #[test]
        fn order_check_agrees_with_the_model(o in arb_order()) {
            let got = o.check().map_err(|e| match e {
                CodecError::InvalidOrder { rule, .. } => rule,
                other => panic!("unexpected error {other}"),
            });
            prop_assert_eq!(got, model(&o));
        }
    }

    #[test]
    fn seed_baseline_payload_is_at_most_25_bytes() {
        let p = postcard::to_allocvec(&Transaction::seed_baseline()).unwrap();
        assert!(p.len() <= 25, "{} bytes", p.len());
    }

    #[test]
    fn reference_split_round_trips_edge_cases() {
        let refs = [
            "TX-2025-000001",
            "TX-2025-000002",
            "",
            "ABC",
            "007",
            "X9999999999999999999999",
            "TX-2025-0",
        ];
        let txs: Vec<Transaction> = refs
            .iter()
            .enumerate()
            .map(|(i, r)| Transaction {
                reference: (*r).into(),
                id: i as u64,
                ..Transaction::seed_baseline()
            })
            .collect();
        let back = TransactionColumns::from_records(&txs)
            .into_records()
            .unwrap();
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
            receipt: None,
            id: 1,
            cashier_id: 1,
            customer_id: None,
            created_at_ms: 1,
            lines: vec![],
            payments: vec![],
            ..Default::default()
        };
        let mut c = OrderColumns::from_records(&[o]);
        c.headers[0] = 0x80;
        assert!(matches!(c.into_records(), Err(CodecError::Malformed(_))));
    }
}
