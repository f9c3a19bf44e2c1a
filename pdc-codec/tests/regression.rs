//! One test per fixed defect of pdc-codec, named after the defect.
#![allow(clippy::unwrap_used)]

use pdc_codec::{Codec, Order, OrderLine, Payment, PaymentMethod, Unit};

/// A grocery order as a real till rings it: a weighed line, an open-price
/// line with its own name, a note, an order discount, and a split tender
/// (gift card with its number, the rest in cash with change given).
fn real_order() -> Order {
    let mut cheese = OrderLine::new(410_233, 742, 2_390, 550);
    cheese.unit = Unit::Kilogram; // 742 g at 23.90 a kilogram = 17.73
    let mut open = OrderLine::new(900_001, 1, 450, 2000);
    open.name = Some("Repair: shoe heel".into());
    let mut sandwich = OrderLine::new(118_020, 2, 399, 1000);
    sandwich.note = Some("no onions".into());
    sandwich.discount_cents = 100;
    let lines = vec![cheese, open, sandwich];
    // 1773 + 450 + 798 - 100 = 2921, minus an order discount of 221.
    let due = 2_921 - 221;
    let mut gift = Payment::new(PaymentMethod::GiftCard, 1_500);
    gift.reference = Some("GC-6034-9981-0042".into());
    let mut cash = Payment::new(PaymentMethod::Cash, due - 1_500);
    cash.tendered_cents = Some(2_000);
    Order {
        id: 7,
        cashier_id: 3,
        customer_id: Some(55),
        created_at_ms: 1_764_000_000_000,
        lines,
        payments: vec![
            gift,
            cash,
            Payment::new(PaymentMethod::Other("meal_ticket".into()), 0),
        ],
        receipt: Some("till-1-000007".into()),
        discount_cents: 221,
    }
}

/// Issue 17: the Order record could not hold a real order — no line name
/// or note, no unit or weight, no tendered amount or change, no order
/// discount, and three payment methods, so gift cards, vouchers and meal
/// tickets collapsed into one. (Before schema 4 this order could not be
/// written at all: the fields did not exist.) It now passes the order
/// rules and comes back whole from the row and the column codecs.
#[test]
fn the_order_record_cannot_hold_a_real_order() {
    let order = real_order();
    assert_eq!(order.lines[0].gross_cents(), Some(1_773));
    assert_eq!(order.total_cents(), 2_700);
    assert_eq!(order.check().unwrap(), 2_700);
    assert_eq!(order.payments[1].change_cents(), 800);
    assert_eq!(order.change_cents(), 800);
    let codec = Codec::new();
    let row = codec.encode(&order).unwrap();
    assert_eq!(codec.decode::<Order>(&row).unwrap(), order);
    let batch = vec![order.clone(), Order { id: 8, ..order }];
    let columns = codec.encode_orders(&batch).unwrap();
    assert_eq!(codec.decode_orders(&columns).unwrap(), batch);
    // The tenders stay apart by name.
    let names: Vec<&str> = batch[0].payments.iter().map(|p| p.method.name()).collect();
    assert_eq!(names, ["gift_card", "cash", "meal_ticket"]);
}
