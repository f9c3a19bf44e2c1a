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

use pdc_codec::{Order, OrderLine, Payment, PaymentMethod, Product, Transaction, TxKind, TxStatus};
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
                    OrderLine {
                        product_id: p.id,
                        quantity,
                        unit_price_cents: p.price_cents,
                        discount_cents,
                        tax_rate_bp: p.tax_rate_bp,
                    }
                })
                .collect();
            let total: i64 = lines.iter().map(OrderLine::amount_cents).sum();
            let payments = if r.gen_bool(0.1) && total > 100 {
                let first = r.gen_range(1..total);
                vec![
                    Payment {
                        method: PaymentMethod::Voucher,
                        amount_cents: first,
                    },
                    Payment {
                        method: PaymentMethod::Card,
                        amount_cents: total - first,
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
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
