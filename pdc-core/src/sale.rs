//! Typed sales: a [`Sale`] built from looked-up products and tenders,
//! checked at the till with the rules the server applies
//! ([`pdc_codec::Order::check`]), and saved by
//! [`crate::OfflineEngine::sell`] with an order id and a receipt number
//! issued in the same durable commit.
//!
//! **Receipt numbers** are per store file: `1, 2, 3, …` with no gap (a
//! number is used exactly when its sale's commit lands) and no repeat
//! (the counter moves in that commit, so a crash cannot hand a number out
//! twice). A terminal whose store is replaced — a reinstalled app, a
//! swapped disk — starts a new store with a new random 128-bit id, and its
//! numbers start again at 1; the receipt number therefore carries the
//! store's identity (`{store}`, the first 32 bits of the store id in hex),
//! so that two receipts of one terminal never read the same. That choice
//! keeps numbering working offline from the first sale; a server-assigned
//! range would need the server before a new till could sell.
//!
//! **Order ids** are `base + number`, with `base` taken from the store id
//! (62 random bits): unique per store, and two stores of one terminal
//! collide only if their ranges overlap (about `n / 2^62` for `n` sales).

use pdc_codec::{Order, OrderLine, Payment, PaymentMethod, Product, Unit};

use crate::EngineError;

/// A sale being put together at the till: lines from products, tenders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    cashier_id: u32,
    customer_id: Option<u32>,
    lines: Vec<OrderLine>,
    payments: Vec<Payment>,
    discount_cents: i64,
}

impl Sale {
    /// An empty sale rung up by `cashier_id` (the numeric id of the logged
    /// in user, `Login::id`).
    pub fn new(cashier_id: u32) -> Self {
        Sale {
            cashier_id,
            customer_id: None,
            lines: Vec::new(),
            payments: Vec::new(),
            discount_cents: 0,
        }
    }

    /// Adds `quantity` of `product` at its catalogue price and tax rate.
    pub fn add(self, product: &Product, quantity: u32) -> Self {
        self.add_discounted(product, quantity, 0)
    }

    /// Adds `quantity` of `product` with `discount_cents` off the line.
    pub fn add_discounted(self, product: &Product, quantity: u32, discount_cents: i64) -> Self {
        self.line(OrderLine {
            discount_cents,
            ..OrderLine::new(
                product.id,
                quantity,
                product.price_cents,
                product.tax_rate_bp,
            )
        })
    }

    /// Adds `product` sold by weight, volume or length: `thousandths` of
    /// `unit` (grams for [`Unit::Kilogram`]) at the catalogue price, read
    /// as the price of one whole unit.
    pub fn add_measured(self, product: &Product, unit: Unit, thousandths: u32) -> Self {
        self.line(OrderLine {
            unit,
            ..OrderLine::new(
                product.id,
                thousandths,
                product.price_cents,
                product.tax_rate_bp,
            )
        })
    }

    /// Puts the cashier's note on the last line added ("no onions");
    /// nothing without a line.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        if let Some(l) = self.lines.last_mut() {
            l.note = Some(note.into());
        }
        self
    }

    /// A discount on the whole sale (a coupon), in cents, taken after the
    /// lines' own discounts.
    pub fn discount(mut self, discount_cents: i64) -> Self {
        self.discount_cents = discount_cents;
        self
    }

    /// Adds a line as is (a price override, an open-price item).
    pub fn line(mut self, line: OrderLine) -> Self {
        self.lines.push(line);
        self
    }

    /// The loyalty customer.
    pub fn customer(mut self, customer_id: u32) -> Self {
        self.customer_id = Some(customer_id);
        self
    }

    /// A tender: `amount_cents` paid by `method` (split tenders: call it
    /// once per tender).
    pub fn pay(self, method: PaymentMethod, amount_cents: i64) -> Self {
        self.tender(Payment::new(method, amount_cents))
    }

    /// A tender as is: with the amount handed over (cash, for the change)
    /// or a reference (a card authorisation, a gift-card number).
    pub fn tender(mut self, payment: Payment) -> Self {
        self.payments.push(payment);
        self
    }

    /// Cash of `tendered_cents` handed over for the rest of the total; the
    /// change is the difference ([`Payment::change_cents`]). Nothing when
    /// the sale is already paid.
    pub fn pay_cash(self, tendered_cents: i64) -> Self {
        let rest = self.due_cents();
        if rest <= 0 {
            return self;
        }
        self.tender(Payment {
            tendered_cents: Some(tendered_cents),
            ..Payment::new(PaymentMethod::Cash, rest)
        })
    }

    /// What is still to pay: the total minus the tenders so far.
    pub fn due_cents(&self) -> i64 {
        let paid = self
            .payments
            .iter()
            .fold(0i64, |a, p| a.saturating_add(p.amount_cents));
        self.total_cents().saturating_sub(paid)
    }

    /// Pays the rest of the total (total − tenders so far) by `method`;
    /// nothing when it is already paid.
    pub fn pay_rest(self, method: PaymentMethod) -> Self {
        let rest = self.due_cents();
        if rest > 0 {
            self.pay(method, rest)
        } else {
            self
        }
    }

    /// What the customer pays in cents: the lines minus the sale's
    /// discount (saturating; [`Sale::check`] reports an overflow).
    pub fn total_cents(&self) -> i64 {
        self.lines
            .iter()
            .fold(0i64, |a, l| a.saturating_add(l.amount_cents()))
            .saturating_sub(self.discount_cents)
    }

    /// The lines.
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// The tenders.
    pub fn payments(&self) -> &[Payment] {
        &self.payments
    }

    /// The discount on the whole sale, in cents.
    pub fn discount_cents(&self) -> i64 {
        self.discount_cents
    }

    /// The cashier.
    pub fn cashier_id(&self) -> u32 {
        self.cashier_id
    }

    /// Checks the sale with the server's rules without saving it (what
    /// [`crate::OfflineEngine::sell`] does first); returns the total.
    pub fn check(&self) -> Result<i64, EngineError> {
        Ok(self.order(0, 0, None).check()?)
    }

    /// The order this sale becomes.
    pub(crate) fn order(&self, id: u64, created_at_ms: u64, receipt: Option<String>) -> Order {
        Order {
            receipt,
            id,
            cashier_id: self.cashier_id,
            customer_id: self.customer_id,
            created_at_ms,
            lines: self.lines.clone(),
            payments: self.payments.clone(),
            discount_cents: self.discount_cents,
        }
    }
}

/// How receipt numbers read: a template with `{terminal}` (the terminal
/// id), `{store}` (the store's identity, 8 hex digits: required, see the
/// module docs) and `{seq}` or `{seq:N}` (the number, zero-padded to `N`
/// digits; required). Default: `{terminal}-{store}-{seq:6}`, e.g.
/// `till-7-3FA9C1D2-000123`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptFormat {
    /// The template, parsed once.
    parts: Vec<Part>,
}

/// A piece of a receipt template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Terminal,
    Store,
    Seq(usize),
}

const DEFAULT_RECEIPT_FORMAT: &str = "{terminal}-{store}-{seq:6}";

impl Default for ReceiptFormat {
    fn default() -> Self {
        // The default template is valid (unit test below).
        ReceiptFormat {
            parts: parse_template(DEFAULT_RECEIPT_FORMAT).unwrap_or_default(),
        }
    }
}

impl ReceiptFormat {
    /// A format from a template; refused (`EngineError::Config`) without
    /// `{seq}` / `{seq:N}` or without `{store}`, or with another
    /// placeholder.
    pub fn new(template: &str) -> Result<Self, EngineError> {
        let parts = parse_template(template).map_err(|p| {
            EngineError::Config(format!(
                "receipt format {template:?}: unknown placeholder {{{p}}}"
            ))
        })?;
        let seq = parts.iter().any(|p| matches!(p, Part::Seq(_)));
        if !seq || !parts.contains(&Part::Store) {
            return Err(EngineError::Config(format!(
                "receipt format {template:?} needs {{seq}} and {{store}} \
                 (without the store a replaced store would repeat numbers)"
            )));
        }
        Ok(ReceiptFormat { parts })
    }

    /// The receipt number of sale `seq` of store `store` on `terminal`.
    pub fn format(&self, terminal: &str, store: u32, seq: u64) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Terminal => out.push_str(terminal),
                Part::Store => out.push_str(&format!("{store:08X}")),
                Part::Seq(w) => out.push_str(&format!("{seq:0w$}")),
            }
        }
        out
    }
}

/// The template's parts; `Err` with the first unknown placeholder. Text
/// without a closing `}` is kept as text.
fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some((name, tail)) = rest[open + 1..].split_once('}') else {
            break;
        };
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        parts.push(match name {
            "terminal" => Part::Terminal,
            "store" => Part::Store,
            "seq" => Part::Seq(1),
            _ => match name.strip_prefix("seq:").map(str::parse::<usize>) {
                Some(Ok(w)) if (1..=20).contains(&w) => Part::Seq(w),
                _ => return Err(name.to_owned()),
            },
        });
        rest = tail;
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

/// Limits on card payments taken while the till is offline
/// (store-and-forward): the card is charged when the sale reaches the
/// back office, so the merchant carries the risk of a declined card until
/// then. [`crate::OfflineEngine::sell`] refuses a card payment taken
/// offline beyond any of them (`EngineError::OfflineCardLimit`); a sale
/// paid without a card is never refused for them.
///
/// Defaults follow what card SDKs publish for offline mode: a per-sale
/// limit, a total stored limit, and forwarding within 24 hours (set the
/// amounts to your acquirer's terms). "Offline" is the engine's connection
/// state: anything but online (including `Unknown`, before the first probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineCardLimits {
    /// The most a card may pay in one sale while offline (cents).
    pub per_sale_cents: i64,
    /// The most card payments taken offline may add up to before they
    /// reach the server (cents).
    pub total_cents: i64,
    /// No more offline card payments once the oldest stored one is this
    /// old (it must be forwarded first).
    pub max_age: std::time::Duration,
}

impl Default for OfflineCardLimits {
    fn default() -> Self {
        OfflineCardLimits {
            per_sale_cents: 10_000,
            total_cents: 50_000,
            max_age: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// Which offline card limit a sale would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineLimit {
    /// [`OfflineCardLimits::per_sale_cents`].
    PerSale,
    /// [`OfflineCardLimits::total_cents`].
    Total,
    /// [`OfflineCardLimits::max_age`].
    Age,
}

/// A saved sale: what to print and what was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The outbox item's local id.
    pub local_id: u64,
    /// The store's sale number (1, 2, 3, … gapless per store).
    pub seq: u64,
    /// The receipt number as formatted by the engine's [`ReceiptFormat`].
    pub number: String,
    /// The order as stored and sent.
    pub order: Order,
    /// The order's total in cents.
    pub total_cents: i64,
}

/// The sale a refund undoes: its order id (`Receipt::order.id`) and, when
/// the cashier scanned the receipt, its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// The original order's id.
    pub order_id: u64,
    /// The original receipt number, if known.
    pub receipt: Option<String>,
}

impl Original {
    /// The sale behind a receipt this till printed.
    pub fn of(receipt: &Receipt) -> Original {
        Original {
            order_id: receipt.order.id,
            receipt: Some(receipt.number.clone()),
        }
    }
}

/// What [`crate::OfflineEngine::refund`] saved: like a [`Receipt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReceipt {
    /// The outbox item's local id.
    pub local_id: u64,
    /// The store's sale number (refunds share the sales' sequence).
    pub seq: u64,
    /// The refund's receipt number.
    pub number: String,
    /// The refund as stored and sent.
    pub refund: pdc_codec::Refund,
    /// What is paid back, in cents.
    pub total_cents: i64,
}

/// The store identity shown in receipt numbers: the first 32 bits of the
/// store id.
pub(crate) fn store_tag(store: &pdc_sync::StoreId) -> u32 {
    u32::from_be_bytes([store.0[0], store.0[1], store.0[2], store.0[3]])
}

/// The base of this store's order ids: 62 bits of the store id (the
/// order id `base + seq` stays below 2^63 for any `seq` below 2^62).
pub(crate) fn order_id_base(store: &pdc_sync::StoreId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&store.0[8..16]);
    u64::from_le_bytes(b) & ((1 << 62) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(id: u32, price_cents: i64) -> Product {
        Product {
            id,
            name: format!("p{id}"),
            barcode: String::new(),
            category: String::new(),
            price_cents,
            tax_rate_bp: 700,
            active: true,
        }
    }

    #[test]
    fn a_weighed_discounted_split_tender_sale_adds_up() {
        let cheese = product(1, 2_390); // a kilogram
        let bread = product(2, 250);
        let sale = Sale::new(4)
            .add_measured(&cheese, Unit::Kilogram, 742) // 17.734 -> 17.73
            .add(&bread, 2)
            .note("sliced")
            .discount(223);
        assert_eq!(sale.total_cents(), 1_773 + 500 - 223);
        assert_eq!(sale.lines()[0].unit, Unit::Kilogram);
        assert_eq!(sale.lines()[1].note.as_deref(), Some("sliced"));
        assert_eq!(sale.lines()[0].note, None);
        let sale = sale.pay(PaymentMethod::GiftCard, 1_000);
        assert_eq!(sale.due_cents(), 1_050);
        // Cash for the rest, 20.00 handed over: 9.50 change.
        let sale = sale.pay_cash(2_000);
        assert_eq!(sale.due_cents(), 0);
        assert_eq!(sale.payments()[1].amount_cents, 1_050);
        assert_eq!(sale.payments()[1].change_cents(), 950);
        assert_eq!(sale.check().unwrap(), 2_050);
        // Paid: more cash adds nothing.
        assert_eq!(sale.clone().pay_cash(500).payments().len(), 2);
        // A discount over the lines' total is refused by the order rules.
        assert!(Sale::new(4).add(&bread, 1).discount(251).check().is_err());
        // Cash handed over below its amount is refused too.
        let short = Sale::new(4).add(&bread, 1).tender(Payment {
            tendered_cents: Some(100),
            ..Payment::new(PaymentMethod::Cash, 250)
        });
        assert!(short.check().is_err());
    }

    #[test]
    fn receipt_formats_fill_their_placeholders() {
        let f = ReceiptFormat::default();
        assert_eq!(
            f.format("till-7", 0x3fa9_c1d2, 123),
            "till-7-3FA9C1D2-000123"
        );
        let f = ReceiptFormat::new("S014-T07-{store}/{seq:8}").unwrap();
        assert_eq!(f.format("x", 1, 42), "S014-T07-00000001/00000042");
        assert_eq!(
            f.format("x", 1, 123_456_789_012),
            "S014-T07-00000001/123456789012"
        );
        assert!(ReceiptFormat::new("T07-{seq:6}").is_err(), "no store");
        assert!(ReceiptFormat::new("{store}").is_err(), "no seq");
        assert!(
            ReceiptFormat::new("{store}-{seq}-{date}").is_err(),
            "unknown"
        );
        assert!(ReceiptFormat::new("{store}-{seq:0}").is_err(), "zero width");
        assert_eq!(
            ReceiptFormat::new(DEFAULT_RECEIPT_FORMAT).unwrap(),
            f_default()
        );
    }

    fn f_default() -> ReceiptFormat {
        ReceiptFormat::default()
    }

    #[test]
    fn order_ids_stay_below_2_63() {
        let id = pdc_sync::StoreId([0xff; 16]);
        assert!(order_id_base(&id) + (1 << 40) <= i64::MAX as u64);
    }
}
