//! Deterministic, realistic POS data from a seed.
//!
//! The same `(n, seed)` always gives the same records, on every platform
//! (ChaCha8 is the generator), so benches, size tables, tests and the demo
//! compare like with like. Pure logic: no I/O, no clock.
//!
//! * [`seed_baseline`]: the design study's baseline transaction;
//! * [`transactions`]: a terminal's transactions over a trading day;
//! * [`orders`]: orders of 1 to 15 lines from a 5,000-product catalogue
//!   with Zipf popularity;
//! * [`catalog`]: product records as the server sends them;
//! * [`orders_shaped`]: a second order generator with knobs
//!   ([`OrderShape`]: id sparsity, popularity, line-count tail, tender mix),
//!   for figures across shapes;
//! * [`traces`]: cache access traces of seven shapes (Zipf, browse loops,
//!   a POS day, loops, scans, shifting popularity).
//!
//! ```
//! let a = pdc_datasets::orders(100, 1);
//! assert_eq!(a, pdc_datasets::orders(100, 1));
//! assert!(a.iter().all(|o| (1..=15).contains(&o.lines.len())));
//! assert_eq!(a.iter().map(|o| o.total_cents()).sum::<i64>(),
//!            a.iter().flat_map(|o| &o.payments).map(|p| p.amount_cents).sum::<i64>());
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod traces;

use pdc_codec::{
    Order, OrderLine, Payment, PaymentMethod, Product, Transaction, TxKind, TxStatus, Unit,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Products in the catalogue that [`orders`] draws from.
pub const CATALOG_SIZE: usize = 5_000;
/// 2024-01-01T08:00:00Z in ms: when the generated trading day opens.
pub const DAY_START_MS: u64 = 1_704_096_000_000;

/// The design study's baseline transaction.
pub fn seed_baseline() -> Transaction {
    Transaction::seed_baseline()
}

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// A price in cents with a long-tailed spread typical of a store: most items
/// cost a few units, some tens, few hundreds; ends in 9 or 5 or 0 as
/// retailers price.
fn retail_price(r: &mut ChaCha8Rng) -> i64 {
    // Log-uniform between 0.50 and 300.00.
    let lo = 50f64.ln();
    let hi = 30_000f64.ln();
    let v = r.gen_range(lo..hi).exp() as i64;
    let endings = [9, 9, 9, 5, 0];
    (v / 10) * 10 + endings[r.gen_range(0..endings.len())]
}

/// `n` transactions as one terminal makes them: sequential ids, timestamps
/// increasing by seconds to minutes, amounts in cents with a realistic
/// spread, mostly payments and completed, references `TX-YYYY-NNNNNN`.
pub fn transactions(n: usize, seed: u64) -> Vec<Transaction> {
    let mut r = rng(seed, 1);
    let mut ts = DAY_START_MS;
    let first_id = 10_000 + r.gen_range(0..1000u64);
    (0..n)
        .map(|i| {
            // Gaps: mostly 5 s to 3 min, sometimes a quiet 10 min, with ms jitter.
            ts += if r.gen_bool(0.1) {
                r.gen_range(180_000..600_000)
            } else {
                r.gen_range(5_000..180_000)
            };
            let kind = match r.gen_range(0..100) {
                0..=89 => TxKind::Payment,
                90..=95 => TxKind::Refund,
                96..=98 => TxKind::Exchange,
                _ => TxKind::Void,
            };
            let status = match r.gen_range(0..100) {
                0..=93 => TxStatus::Completed,
                94..=96 => TxStatus::Pending,
                97..=98 => TxStatus::Failed,
                _ => TxStatus::Cancelled,
            };
            let baskets = r.gen_range(1..=4);
            let amount: i64 = (0..baskets).map(|_| retail_price(&mut r)).sum();
            let id = first_id + i as u64;
            Transaction {
                id,
                kind,
                amount_cents: amount,
                timestamp_ms: ts,
                status,
                reference: format!("TX-2024-{:06}", id - 9_000),
            }
        })
        .collect()
}

const CATEGORIES: [&str; 12] = [
    "Bakery",
    "Dairy",
    "Produce",
    "Beverages",
    "Snacks",
    "Frozen",
    "Household",
    "Personal care",
    "Meat",
    "Deli",
    "Pantry",
    "Tobacco",
];
const ADJECTIVES: [&str; 10] = [
    "Organic", "Classic", "Fresh", "Premium", "Light", "Family", "Mini", "Extra", "Natural",
    "Spicy",
];
const NOUNS: [&str; 16] = [
    "Bread",
    "Milk",
    "Apples",
    "Cola",
    "Chips",
    "Pizza",
    "Detergent",
    "Shampoo",
    "Chicken",
    "Ham",
    "Pasta",
    "Rice",
    "Yogurt",
    "Coffee",
    "Tea",
    "Cheese",
];
const TAX_RATES_BP: [u16; 3] = [550, 1000, 2000];

/// `n` catalogue products (ids 1..=n) with names, EAN-13 barcodes,
/// categories, prices and tax rates; about 3% inactive.
pub fn catalog(n: usize, seed: u64) -> Vec<Product> {
    let mut r = rng(seed, 2);
    (1..=n as u32)
        .map(|id| {
            let cat = r.gen_range(0..CATEGORIES.len());
            let name = format!(
                "{} {} {}g",
                ADJECTIVES[r.gen_range(0..ADJECTIVES.len())],
                NOUNS[r.gen_range(0..NOUNS.len())],
                r.gen_range(1..20) * 50
            );
            Product {
                id,
                name,
                barcode: ean13(400_000_000_000 + u64::from(id) * 7 + r.gen_range(0..7)),
                category: CATEGORIES[cat].to_owned(),
                price_cents: retail_price(&mut r),
                tax_rate_bp: TAX_RATES_BP[cat % TAX_RATES_BP.len()],
                active: r.gen_range(0..100) >= 3,
            }
        })
        .collect()
}

fn ean13(body12: u64) -> String {
    let digits = format!("{:012}", body12 % 1_000_000_000_000);
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    format!("{digits}{}", (10 - sum % 10) % 10)
}

/// Zipf(s) sampler over ranks 1..=n by inverse CDF on a precomputed
/// table: the few best sellers dominate, as in a real store.
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Zipf with exponent 1 (the orders' product popularity).
    fn new(n: usize) -> Self {
        Zipf::with_exponent(n, 1.0)
    }

    /// Zipf with exponent `s` over `n` ranks.
    pub(crate) fn with_exponent(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n.max(1))
            .map(|k| {
                // Exactly 1/k for s = 1, so the orders stay what they were.
                acc += if s == 1.0 {
                    1.0 / k as f64
                } else {
                    1.0 / (k as f64).powf(s)
                };
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    /// A rank in 0..n.
    pub(crate) fn sample(&self, r: &mut ChaCha8Rng) -> usize {
        let u: f64 = r.gen();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// A line of `quantity` of `p` at its catalogue price and tax rate.
fn line_of(p: &Product, quantity: u32, discount_cents: i64) -> OrderLine {
    OrderLine {
        product_id: p.id,
        quantity,
        unit_price_cents: p.price_cents,
        discount_cents,
        tax_rate_bp: p.tax_rate_bp,
        ..Default::default()
    }
}

/// `n` orders of one trading day: 1 to 15 lines from the [`CATALOG_SIZE`]
/// catalogue of [`catalog`]`(CATALOG_SIZE, seed)` with Zipf popularity,
/// quantities, the catalogue's prices and tax rates, occasional discounts, 1
/// to 2 payments (cash/card/voucher) that add up to the total, a cashier,
/// sometimes a loyalty customer.
pub fn orders(n: usize, seed: u64) -> Vec<Order> {
    let products = catalog(CATALOG_SIZE, seed);
    let zipf = Zipf::new(products.len());
    let mut r = rng(seed, 3);
    // Orders carry no terminal since schema 3; the draw stays so that
    // every seed generates the orders it always did.
    let _terminal: u32 = r.gen_range(1..=50);
    let cashiers: Vec<u32> = (0..4).map(|_| r.gen_range(100..1000)).collect();
    let day_ms: u64 = 14 * 3_600_000;
    let mut ts = DAY_START_MS;
    let step = (day_ms / n.max(1) as u64).max(1);
    let first_id = 1_000_000 + r.gen_range(0..1000u64);
    (0..n)
        .map(|i| {
            ts += r.gen_range(step / 2..=step + step / 2);
            let nlines = 1 + (r.gen_range(0.0f64..1.0).powi(2) * 15.0) as usize;
            let lines: Vec<OrderLine> = (0..nlines.min(15))
                .map(|_| {
                    let p = &products[zipf.sample(&mut r)];
                    let quantity = if r.gen_bool(0.8) {
                        1
                    } else {
                        r.gen_range(2..=6)
                    };
                    let gross = i64::from(quantity) * p.price_cents;
                    let discount_cents = if r.gen_bool(0.08) { gross / 10 } else { 0 };
                    line_of(p, quantity, discount_cents)
                })
                .collect();
            let total: i64 = lines.iter().map(OrderLine::amount_cents).sum();
            let payments = if r.gen_bool(0.1) && total > 100 {
                let first = r.gen_range(1..total);
                vec![
                    Payment {
                        method: PaymentMethod::Voucher,
                        amount_cents: first,
                        ..Default::default()
                    },
                    Payment {
                        method: PaymentMethod::Card,
                        amount_cents: total - first,
                        ..Default::default()
                    },
                ]
            } else {
                let method = if r.gen_bool(0.35) {
                    PaymentMethod::Cash
                } else {
                    PaymentMethod::Card
                };
                vec![Payment {
                    method,
                    amount_cents: total,
                    ..Default::default()
                }]
            };
            Order {
                id: first_id + i as u64,
                cashier_id: cashiers[(i * cashiers.len()) / n.max(1)],
                customer_id: r.gen_bool(0.3).then(|| r.gen_range(1..200_000)),
                created_at_ms: ts,
                lines,
                payments,
                receipt: None,
                ..Default::default()
            }
        })
        .collect()
}

/// The knobs of [`orders_shaped`]: a second order generator, so that
/// codec figures are reported across shapes, not on [`orders`] alone.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderShape {
    /// Products in the catalogue.
    pub catalogue: usize,
    /// Product ids: `false` for 1..=catalogue in popularity order (dense,
    /// as [`orders`]); `true` for distinct random 6-digit ids unrelated to
    /// popularity (sparse, as a chain's ERP assigns them).
    pub sparse_ids: bool,
    /// Zipf exponent of product popularity.
    pub popularity: f64,
    /// Most lines in an order.
    pub max_lines: usize,
    /// Pareto index of the line count's tail (smaller: longer tail; lines
    /// = 1 + ⌊(u^(-1/tail) − 1) × 2⌋, capped at `max_lines`).
    pub line_tail: f64,
    /// Weights of the tender kinds, in the order of [`TENDER_KINDS`]
    /// (cash, card, voucher, gift card, mobile wallet, store credit, and
    /// an other tender named `meal_ticket`), for every payment.
    pub tenders: [f64; 7],
    /// Share of orders with a split tender.
    pub split: f64,
    /// Share of lines with a quantity above 1.
    pub multi_quantity: f64,
    /// Share of lines with a discount.
    pub discounted: f64,
    /// Share of orders with a loyalty customer.
    pub customer: f64,
    /// Share of lines sold by weight (grams of a per-kilogram price).
    pub weighed: f64,
    /// Share of lines with a name of their own (open items), drawn from
    /// `name_vocabulary` names with Zipf popularity.
    pub named: f64,
    /// Distinct line names.
    pub name_vocabulary: usize,
    /// Share of lines with a cashier's note.
    pub noted: f64,
    /// Share of cash payments with the tendered amount (rounded up to a
    /// note) and so change.
    pub cash_tendered: f64,
    /// Share of non-cash payments with a reference (an authorisation or
    /// a card number).
    pub references: f64,
    /// Share of orders with an order discount (5 to 15 % of the lines).
    pub order_discount: f64,
}

/// The tender kinds of [`OrderShape::tenders`], in order.
pub const TENDER_KINDS: [&str; 7] = [
    "cash",
    "card",
    "voucher",
    "gift_card",
    "mobile_wallet",
    "store_credit",
    "meal_ticket",
];

/// Words the shaped generator's line names and notes are made of.
const NAME_WORDS: [&str; 16] = [
    "deli", "bakery", "open", "item", "loose", "produce", "salad", "bar", "hot", "food", "misc",
    "grocery", "flowers", "bulk", "nuts", "coffee",
];
const NOTES: [&str; 8] = [
    "no onions",
    "gift wrap",
    "extra hot",
    "price checked",
    "damaged box",
    "customer's own bag",
    "for pickup at 5",
    "manager override",
];

impl OrderShape {
    /// Dense ids, short orders: close to [`orders`].
    pub fn dense() -> Self {
        OrderShape {
            catalogue: CATALOG_SIZE,
            sparse_ids: false,
            popularity: 1.0,
            max_lines: 15,
            line_tail: 1.6,
            tenders: [0.35, 0.6, 0.05, 0.0, 0.0, 0.0, 0.0],
            split: 0.1,
            multi_quantity: 0.2,
            discounted: 0.08,
            customer: 0.3,
            // No schema-4 detail, so the orders are those this preset made
            // before the details existed (a knob at 0 draws nothing).
            weighed: 0.0,
            named: 0.0,
            name_vocabulary: 1,
            noted: 0.0,
            cash_tendered: 0.0,
            references: 0.0,
            order_discount: 0.0,
        }
    }

    /// Sparse 6-digit ids, 1 to 40 lines with a long tail, several
    /// tenders: the shape an independent test of the codec used.
    pub fn sparse() -> Self {
        OrderShape {
            catalogue: 20_000,
            sparse_ids: true,
            popularity: 0.9,
            max_lines: 40,
            line_tail: 1.2,
            tenders: [0.3, 0.55, 0.15, 0.0, 0.0, 0.0, 0.0],
            split: 0.2,
            multi_quantity: 0.3,
            discounted: 0.12,
            customer: 0.4,
            ..OrderShape::dense()
        }
    }

    /// Sparse ids with everything a real till writes: weighed lines, open
    /// items with their own names, notes, six tender kinds and an other,
    /// cash tendered with change, references on card payments, order
    /// discounts.
    pub fn rich() -> Self {
        OrderShape {
            tenders: [0.3, 0.4, 0.05, 0.08, 0.1, 0.04, 0.03],
            weighed: 0.08,
            named: 0.05,
            name_vocabulary: 200,
            noted: 0.02,
            cash_tendered: 0.8,
            references: 0.9,
            order_discount: 0.05,
            ..OrderShape::sparse()
        }
    }
}

/// `p` as a draw, drawing nothing when `p` is 0 (so a knob at 0 leaves
/// the rest of the stream as it was before the knob existed).
fn chance(r: &mut ChaCha8Rng, p: f64) -> bool {
    p > 0.0 && r.gen_bool(p.clamp(0.0, 1.0))
}

/// `n` orders of the given shape from `seed` (deterministic, and payments
/// that add up to the total, like [`orders`]).
pub fn orders_shaped(n: usize, seed: u64, shape: &OrderShape) -> Vec<Order> {
    let mut products = catalog(shape.catalogue.max(1), seed);
    let mut r = rng(seed, 7);
    if shape.sparse_ids {
        let mut ids = std::collections::BTreeSet::new();
        while ids.len() < products.len() {
            ids.insert(r.gen_range(100_000..1_000_000u32));
        }
        let mut ids: Vec<u32> = ids.into_iter().collect();
        // Popularity unrelated to the id: shuffle before assigning.
        for i in (1..ids.len()).rev() {
            ids.swap(i, r.gen_range(0..=i));
        }
        for (p, id) in products.iter_mut().zip(ids) {
            p.id = id;
        }
    }
    let zipf = Zipf::with_exponent(products.len(), shape.popularity);
    let cashiers: Vec<u32> = (0..6).map(|_| r.gen_range(100..1000)).collect();
    let methods = TENDER_KINDS.map(PaymentMethod::from_name);
    let names = Zipf::with_exponent(shape.name_vocabulary.max(1), 1.0);
    let pick = |r: &mut ChaCha8Rng| {
        let u: f64 = r.gen::<f64>() * shape.tenders.iter().sum::<f64>();
        let mut acc = 0.0;
        for (m, w) in methods.iter().zip(shape.tenders) {
            acc += w;
            if u < acc {
                return m.clone();
            }
        }
        PaymentMethod::Card
    };
    // A payment's details: cash tendered up to a note, references on the
    // others.
    let detail = |r: &mut ChaCha8Rng, p: &mut Payment| {
        if p.method == PaymentMethod::Cash {
            if chance(r, shape.cash_tendered) {
                let note = [500i64, 1000, 2000, 5000, 10_000][r.gen_range(0..5)];
                p.tendered_cents = Some((p.amount_cents / note + 1) * note);
            }
        } else if chance(r, shape.references) {
            p.reference = Some(match p.method {
                PaymentMethod::Card => format!("AUTH{:06}", r.gen_range(0..1_000_000)),
                _ => format!("{:016}", r.gen_range(0..10_000_000_000_000_000u64)),
            });
        }
    };
    let step = (14 * 3_600_000 / n.max(1) as u64).max(1);
    let mut ts = DAY_START_MS;
    let first_id = 5_000_000 + r.gen_range(0..1000u64);
    (0..n)
        .map(|i| {
            ts += r.gen_range(step / 2..=step + step / 2);
            let u: f64 = r.gen_range(f64::EPSILON..1.0);
            let tail = (u.powf(-1.0 / shape.line_tail.max(0.1)) - 1.0) * 2.0;
            let nlines = (1 + tail.min(1e6) as usize).min(shape.max_lines.max(1));
            let lines: Vec<OrderLine> = (0..nlines)
                .map(|_| {
                    let p = &products[zipf.sample(&mut r)];
                    let quantity = if r.gen_bool(shape.multi_quantity.clamp(0.0, 1.0)) {
                        r.gen_range(2..=12)
                    } else {
                        1
                    };
                    let gross = i64::from(quantity) * p.price_cents;
                    let discount_cents = if r.gen_bool(shape.discounted.clamp(0.0, 1.0)) {
                        gross * r.gen_range(5..=30) / 100
                    } else {
                        0
                    };
                    let mut line = line_of(p, quantity, discount_cents);
                    if chance(&mut r, shape.weighed) {
                        line.unit = Unit::Kilogram;
                        line.quantity = r.gen_range(50..=2_500);
                        line.discount_cents = 0;
                    }
                    if chance(&mut r, shape.named) {
                        let k = names.sample(&mut r);
                        line.name = Some(format!(
                            "{} {} {k}",
                            NAME_WORDS[k % NAME_WORDS.len()],
                            NAME_WORDS[(k / NAME_WORDS.len() + 3) % NAME_WORDS.len()]
                        ));
                    }
                    if chance(&mut r, shape.noted) {
                        line.note = Some(NOTES[r.gen_range(0..NOTES.len())].into());
                    }
                    line
                })
                .collect();
            let lines_total: i64 = lines.iter().map(OrderLine::amount_cents).sum();
            let discount_cents = if chance(&mut r, shape.order_discount) {
                lines_total * r.gen_range(5..=15) / 100
            } else {
                0
            };
            let total = lines_total - discount_cents;
            let payments = if r.gen_bool(shape.split.clamp(0.0, 1.0)) && total > 300 {
                let parts = r.gen_range(2..=3);
                let mut left = total;
                let mut out = Vec::with_capacity(parts);
                for k in 0..parts {
                    let amount = if k + 1 == parts {
                        left
                    } else {
                        r.gen_range(1..left / 2 + 1)
                    };
                    left -= amount;
                    out.push(Payment::new(pick(&mut r), amount));
                }
                out
            } else {
                vec![Payment::new(pick(&mut r), total)]
            };
            let mut payments = payments;
            for p in &mut payments {
                detail(&mut r, p);
            }
            Order {
                id: first_id + i as u64,
                cashier_id: cashiers[r.gen_range(0..cashiers.len())],
                customer_id: r
                    .gen_bool(shape.customer.clamp(0.0, 1.0))
                    .then(|| r.gen_range(1..2_000_000)),
                created_at_ms: ts,
                lines,
                payments,
                receipt: None,
                discount_cents,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shaped_orders_pay_their_total_and_follow_their_shape() {
        for shape in [
            OrderShape::dense(),
            OrderShape::sparse(),
            OrderShape::rich(),
        ] {
            let a = orders_shaped(2_000, 5, &shape);
            assert_eq!(a, orders_shaped(2_000, 5, &shape));
            for o in &a {
                assert!((1..=shape.max_lines).contains(&o.lines.len()));
                assert_eq!(o.check(), Ok(o.total_cents()));
            }
            let ids: std::collections::HashSet<u32> = a
                .iter()
                .flat_map(|o| o.lines.iter().map(|l| l.product_id))
                .collect();
            if shape.sparse_ids {
                assert!(ids.iter().all(|&id| (100_000..1_000_000).contains(&id)));
            } else {
                assert!(ids.iter().all(|&id| id as usize <= shape.catalogue));
            }
            let split = a.iter().filter(|o| o.payments.len() > 1).count();
            assert!(split > 0, "some split tenders");
        }
        // The rich shape has every schema-4 detail, the others none.
        let rich = orders_shaped(2_000, 5, &OrderShape::rich());
        let lines = || rich.iter().flat_map(|o| &o.lines);
        let pays = || rich.iter().flat_map(|o| &o.payments);
        assert!(lines().any(|l| l.unit == Unit::Kilogram));
        assert!(lines().any(|l| l.name.is_some()) && lines().any(|l| l.note.is_some()));
        assert!(pays().any(|p| p.change_cents() > 0) && pays().any(|p| p.reference.is_some()));
        assert!(pays().any(|p| matches!(p.method, PaymentMethod::Other(_))));
        assert!(rich.iter().any(|o| o.discount_cents > 0));
        let plain = orders_shaped(2_000, 5, &OrderShape::sparse());
        assert!(plain.iter().all(|o| o.discount_cents == 0
            && o.lines
                .iter()
                .all(|l| l.unit == Unit::Each && l.name.is_none())
            && o.payments.iter().all(|p| p.tendered_cents.is_none())));
        // The sparse shape's long tail: some orders far above 15 lines.
        let long = orders_shaped(2_000, 5, &OrderShape::sparse())
            .iter()
            .filter(|o| o.lines.len() > 15)
            .count();
        assert!(long > 10, "{long} orders over 15 lines");
    }

    #[test]
    fn deterministic_and_seed_sensitive() {
        assert_eq!(transactions(50, 7), transactions(50, 7));
        assert_ne!(transactions(50, 7), transactions(50, 8));
        assert_eq!(catalog(10, 3), catalog(10, 3));
    }

    #[test]
    fn transactions_look_like_a_terminal() {
        let t = transactions(1000, 1);
        assert!(t.windows(2).all(|w| w[1].id == w[0].id + 1));
        assert!(t.windows(2).all(|w| w[1].timestamp_ms > w[0].timestamp_ms));
        assert!(t
            .iter()
            .all(|x| x.reference.starts_with("TX-2024-") && x.reference.len() == 14));
        let payments = t.iter().filter(|x| x.kind == TxKind::Payment).count();
        assert!(payments > 800 && payments < 980, "{payments}");
        assert!(t.iter().all(|x| x.amount_cents > 0));
    }

    #[test]
    fn orders_are_consistent() {
        let o = orders(2000, 1);
        let c = catalog(CATALOG_SIZE, 1);
        for order in &o {
            assert!((1..=15).contains(&order.lines.len()));
            assert!((1..=2).contains(&order.payments.len()));
            let paid: i64 = order.payments.iter().map(|p| p.amount_cents).sum();
            assert_eq!(paid, order.total_cents());
            for l in &order.lines {
                let p = &c[l.product_id as usize - 1];
                assert_eq!(p.price_cents, l.unit_price_cents);
                assert_eq!(p.tax_rate_bp, l.tax_rate_bp);
            }
        }
        // Zipf: the best seller appears far more than a median product.
        let top = o
            .iter()
            .flat_map(|x| &x.lines)
            .filter(|l| l.product_id == 1)
            .count();
        assert!(top > 50, "{top}");
    }

    #[test]
    fn barcodes_are_valid_ean13() {
        for p in catalog(100, 2) {
            assert_eq!(p.barcode.len(), 13);
            let sum: u32 = p
                .barcode
                .bytes()
                .enumerate()
                .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 1 } else { 3 })
                .sum();
            assert_eq!(sum % 10, 0);
        }
    }
}
