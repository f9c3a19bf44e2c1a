//! Integration tests of pdc-codec: round trips, damage, hostile input and
//! schema evolution, all through the public API.
#![allow(clippy::unwrap_used)]

use pdc_codec::{
    Codec, CodecError, Compression, Limits, Order, OrderLine, Payment, PaymentMethod, Product,
    Record, RecordKind, Transaction, TxKind, TxStatus, Unit,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn codecs() -> [Codec; 3] {
    [
        Codec::new(),
        Codec::new().with_compression(Compression::Never),
        Codec::new().with_compression(Compression::Dense {
            min_bytes: 16,
            level: 6,
        }),
    ]
}

fn tx_kind() -> impl Strategy<Value = TxKind> {
    prop_oneof![
        Just(TxKind::Payment),
        Just(TxKind::Refund),
        Just(TxKind::Exchange),
        Just(TxKind::Void)
    ]
}

fn tx_status() -> impl Strategy<Value = TxStatus> {
    prop_oneof![
        Just(TxStatus::Completed),
        Just(TxStatus::Pending),
        Just(TxStatus::Failed),
        Just(TxStatus::Cancelled)
    ]
}

fn transaction() -> impl Strategy<Value = Transaction> {
    (
        any::<u64>(),
        tx_kind(),
        any::<i64>(),
        any::<u64>(),
        tx_status(),
        prop_oneof!["TX-20[0-9]{2}-[0-9]{1,8}", ".{0,20}", "[0-9]{0,25}"],
    )
        .prop_map(
            |(id, kind, amount_cents, timestamp_ms, status, reference)| Transaction {
                id,
                kind,
                amount_cents,
                timestamp_ms,
                status,
                reference,
            },
        )
}

fn unit() -> impl Strategy<Value = Unit> {
    prop_oneof![
        4 => Just(Unit::Each),
        1 => Just(Unit::Kilogram),
        1 => Just(Unit::Litre),
        1 => Just(Unit::Metre),
    ]
}

fn method() -> impl Strategy<Value = PaymentMethod> {
    prop_oneof![
        Just(PaymentMethod::Cash),
        Just(PaymentMethod::Card),
        Just(PaymentMethod::Voucher),
        Just(PaymentMethod::GiftCard),
        Just(PaymentMethod::MobileWallet),
        Just(PaymentMethod::StoreCredit),
        ".{0,40}".prop_map(PaymentMethod::Other),
    ]
}

fn text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![3 => Just(None), 1 => proptest::option::of(".{0,30}")]
}

/// Any order, valid or not: every field over its whole range, the schema-4
/// additions (units, texts, open tenders, tendered amounts, references,
/// order discounts) included.
fn order() -> impl Strategy<Value = Order> {
    let line = (
        (0u32..50, any::<u32>(), unit()),
        (any::<i64>(), any::<i64>(), any::<u16>()),
        (text(), text()),
    )
        .prop_map(
            |(
                (product_id, quantity, unit),
                (unit_price_cents, discount_cents, tax_rate_bp),
                (name, note),
            )| OrderLine {
                product_id,
                quantity,
                unit,
                unit_price_cents,
                discount_cents,
                tax_rate_bp,
                name,
                note,
            },
        );
    let payment = (
        method(),
        any::<i64>(),
        proptest::option::of(any::<i64>()),
        text(),
    )
        .prop_map(
            |(method, amount_cents, tendered_cents, reference)| Payment {
                method,
                amount_cents,
                tendered_cents,
                reference,
            },
        );
    (
        (
            any::<u64>(),
            any::<u32>(),
            any::<Option<u32>>(),
            any::<u64>(),
        ),
        proptest::collection::vec(line, 0..20),
        proptest::collection::vec(payment, 0..5),
        proptest::option::of("[A-Za-z0-9-]{1,40}"),
        prop_oneof![3 => Just(0i64), 1 => any::<i64>()],
    )
        .prop_map(
            |((id, cashier_id, customer_id, created_at_ms), lines, payments, receipt, discount)| {
                Order {
                    id,
                    cashier_id,
                    customer_id,
                    created_at_ms,
                    lines,
                    payments,
                    receipt,
                    discount_cents: discount,
                }
            },
        )
}

fn product() -> impl Strategy<Value = Product> {
    (
        any::<u32>(),
        ".{0,30}",
        "[0-9]{13}",
        ".{0,10}",
        any::<i64>(),
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(
            |(id, name, barcode, category, price_cents, tax_rate_bp, active)| Product {
                id,
                name,
                barcode,
                category,
                price_cents,
                tax_rate_bp,
                active,
            },
        )
}

/// An arbitrary serde value: nested maps, sequences, strings, numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Value {
    Unit,
    Bool(bool),
    Int(i64),
    Uint(u128),
    Float(u64), // bit pattern: f64 NaN != NaN would break equality
    Text(String),
    Bytes(Vec<u8>),
    Seq(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Opt(Option<Box<Value>>),
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Unit),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<u128>().prop_map(Value::Uint),
        any::<u64>().prop_map(Value::Float),
        ".{0,12}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Seq),
            proptest::collection::btree_map(".{0,6}", inner.clone(), 0..6).prop_map(Value::Map),
            proptest::option::of(inner).prop_map(|o| Value::Opt(o.map(Box::new))),
        ]
    })
}

/// A refund of an order: its lines and payments, another id, a reference.
fn refund() -> impl Strategy<Value = pdc_codec::Refund> {
    (
        order(),
        any::<u64>(),
        proptest::option::of("[A-Za-z0-9-]{1,40}"),
    )
        .prop_map(
            |(o, original_order_id, original_receipt)| pdc_codec::Refund {
                id: o.id,
                cashier_id: o.cashier_id,
                original_order_id,
                original_receipt,
                created_at_ms: o.created_at_ms,
                lines: o.lines,
                payments: o.payments,
                receipt: o.receipt,
            },
        )
}

mod refunds {
    use super::*;

    proptest! {
        /// Analytics events round-trip; the check accepts exactly the names
        /// of the documented alphabet and length (the reference: a regex).
        #[test]
        fn analytics_events_round_trip_and_check_their_names(
            name in "[a-z0-9_.A-Z ]{0,70}",
            at_ms in any::<u64>(),
            properties in proptest::collection::vec(("[a-z]{1,10}", ".{0,20}"), 0..5),
        ) {
            let e = pdc_codec::AnalyticsEvent { name: name.clone(), at_ms, properties };
            for c in codecs() {
                prop_assert_eq!(c.decode::<pdc_codec::AnalyticsEvent>(&c.encode(&e).unwrap()).unwrap(), e.clone());
            }
            let ok = !name.is_empty() && name.len() <= 64
                && name.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '.');
            prop_assert_eq!(e.check().is_ok(), ok);
        }

        /// A refund round-trips, and is held to the order rules: its check
        /// agrees with the check of the order with the same id, lines,
        /// payments and receipt (the reference), plus the original's id.
        #[test]
        fn refunds_round_trip_and_keep_the_order_rules(r in refund()) {
            for c in codecs() {
                prop_assert_eq!(c.decode::<pdc_codec::Refund>(&c.encode(&r).unwrap()).unwrap(), r.clone());
            }
            let as_order = Order {
                id: r.id,
                cashier_id: r.cashier_id,
                customer_id: None,
                created_at_ms: r.created_at_ms,
                lines: r.lines.clone(),
                payments: r.payments.clone(),
                receipt: r.receipt.clone(), ..Default::default()
            };
            let rule = |e: CodecError| match e {
                CodecError::InvalidOrder { rule, .. } => rule,
                other => panic!("{other}"),
            };
            let want = if r.original_order_id > i64::MAX as u64 {
                Err(pdc_codec::OrderRule::IdOutOfRange)
            } else {
                as_order.check().map_err(rule)
            };
            prop_assert_eq!(r.check().map_err(rule), want);
        }
    }
}

mod round_trip {
    use super::*;

    proptest! {
        #[test]
        fn single_records(t in transaction(), o in order(), p in product()) {
            for c in codecs() {
                prop_assert_eq!(c.decode::<Transaction>(&c.encode(&t).unwrap()).unwrap(), t.clone());
                prop_assert_eq!(c.decode::<Order>(&c.encode(&o).unwrap()).unwrap(), o.clone());
                prop_assert_eq!(c.decode::<Product>(&c.encode(&p).unwrap()).unwrap(), p.clone());
            }
        }

        #[test]
        fn batches(ts in proptest::collection::vec(transaction(), 0..40),
                   os in proptest::collection::vec(order(), 0..20),
                   ps in proptest::collection::vec(product(), 0..20)) {
            for c in codecs() {
                prop_assert_eq!(c.decode_batch::<Transaction>(&c.encode_batch(&ts).unwrap()).unwrap(), ts.clone());
                prop_assert_eq!(c.decode_batch::<Order>(&c.encode_batch(&os).unwrap()).unwrap(), os.clone());
                prop_assert_eq!(c.decode_batch::<Product>(&c.encode_batch(&ps).unwrap()).unwrap(), ps.clone());
                prop_assert_eq!(c.decode_transactions(&c.encode_transactions(&ts).unwrap()).unwrap(), ts.clone());
                prop_assert_eq!(c.decode_orders(&c.encode_orders(&os).unwrap()).unwrap(), os.clone());
            }
        }

        #[test]
        fn arbitrary_serde_values(v in value(), vs in proptest::collection::vec(value(), 0..10)) {
            let kind = RecordKind::APPLICATION_BASE;
            for c in codecs() {
                let f = c.encode_value(kind, 3, &v).unwrap();
                prop_assert_eq!(c.decode_value::<Value>(kind, &f).unwrap(), (3, v.clone()));
                let b = c.encode_batch_values(kind, 3, &vs).unwrap();
                let frame = c.open(&b).unwrap();
                prop_assert!(frame.batch);
                let back: Vec<Value> = postcard::from_bytes(&frame.payload).unwrap();
                prop_assert_eq!(back, vs.clone());
            }
        }

        /// Frames read back to back from one buffer, as a stream reader does.
        #[test]
        fn concatenated_frames(ts in proptest::collection::vec(transaction(), 1..10)) {
            let c = Codec::new();
            let mut buf = Vec::new();
            for t in &ts { buf.extend(c.encode(t).unwrap()); }
            let mut rest = &buf[..];
            for t in &ts {
                let (frame, used) = c.open_prefix(rest).unwrap();
                prop_assert_eq!(frame.kind, Transaction::KIND);
                prop_assert_eq!(&postcard::from_bytes::<Transaction>(&frame.payload).unwrap(), t);
                rest = &rest[used..];
            }
            prop_assert!(rest.is_empty());
        }
    }
}

mod damage {
    use super::*;

    fn sample_frames() -> Vec<Vec<u8>> {
        let c = Codec::new();
        vec![
            c.encode(&Transaction::seed_baseline()).unwrap(),
            c.encode_transactions(&pdc_like_transactions()).unwrap(),
            Codec::new()
                .with_compression(Compression::Never)
                .encode_batch(&pdc_like_transactions())
                .unwrap(),
        ]
    }

    fn pdc_like_transactions() -> Vec<Transaction> {
        (0..40)
            .map(|i| Transaction {
                id: 100 + i,
                reference: format!("TX-2025-{:06}", i),
                timestamp_ms: 1_704_067_200_000 + i * 61_000,
                ..Transaction::seed_baseline()
            })
            .collect()
    }

    fn decode_any(c: &Codec, bytes: &[u8]) -> Vec<bool> {
        vec![
            c.decode::<Transaction>(bytes).is_ok(),
            c.decode_transactions(bytes).is_ok(),
            c.decode_batch::<Transaction>(bytes).is_ok(),
        ]
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_an_error(which in 0usize..3, bit in any::<usize>()) {
            let f = &sample_frames()[which];
            let mut bad = f.clone();
            let bit = bit % (bad.len() * 8);
            bad[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(Codec::new().open(&bad).is_err());
            prop_assert!(decode_any(&Codec::new(), &bad).iter().all(|ok| !ok));
        }

        #[test]
        fn any_truncation_is_an_error(which in 0usize..3, cut in any::<usize>()) {
            let f = &sample_frames()[which];
            let cut = cut % f.len();
            prop_assert!(Codec::new().open(&f[..cut]).is_err());
        }

        #[test]
        fn appended_bytes_are_an_error(which in 0usize..3, extra in proptest::collection::vec(any::<u8>(), 1..20)) {
            let mut f = sample_frames()[which].clone();
            f.extend(extra);
            let c = Codec::new();
            prop_assert!(matches!(c.open(&f), Err(CodecError::TrailingBytes(_))));
        }

        /// Arbitrary bytes never panic any decoder. With a valid header in
        /// front, they also reach the length, limit and checksum checks.
        #[test]
        fn hostile_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
                                     with_header in any::<bool>(), flags in 0u8..4) {
            if with_header && bytes.len() >= 8 {
                bytes[..4].copy_from_slice(b"PdcF");
                bytes[4] = 1;
                bytes[5] = flags;
            }
            let c = Codec::new().with_limits(Limits { max_frame_bytes: 256, max_decoded_bytes: 1024, max_batch_items: 16 });
            let _ = c.open(&bytes);
            let _ = c.open_prefix(&bytes);
            let _ = c.decode::<Transaction>(&bytes);
            let _ = c.decode::<Order>(&bytes);
            let _ = c.decode_batch::<Product>(&bytes);
            let _ = c.decode_transactions(&bytes);
            let _ = c.decode_orders(&bytes);
            let _ = c.decode_value::<Value>(RecordKind(64), &bytes);
        }

        /// Hostile payloads behind a valid header and checksum: the decoders
        /// of structured types meet arbitrary postcard bytes.
        #[test]
        fn hostile_payloads_behind_valid_checksum(payload in proptest::collection::vec(any::<u8>(), 0..200), kind in 1u8..6, batch in any::<bool>()) {
            let c = Codec::new().with_limits(Limits { max_frame_bytes: 4096, max_decoded_bytes: 4096, max_batch_items: 64 });
            let f = c.seal(RecordKind(kind), 1, batch, &payload).unwrap();
            let _ = c.decode::<Transaction>(&f);
            let _ = c.decode::<Order>(&f);
            let _ = c.decode_batch::<Transaction>(&f);
            let _ = c.decode_batch::<Order>(&f);
            let _ = c.decode_transactions(&f);
            let _ = c.decode_orders(&f);
        }
    }

    #[test]
    fn a_batch_claiming_more_items_than_allowed_is_rejected() {
        let c = Codec::new();
        let f = c.encode_batch(&pdc_like_transactions()).unwrap();
        let tight = c.with_limits(Limits {
            max_batch_items: 10,
            ..Limits::default()
        });
        assert_eq!(
            tight.decode_batch::<Transaction>(&f),
            Err(CodecError::TooManyItems {
                count: 40,
                limit: 10
            })
        );
        assert!(matches!(
            tight.encode_transactions(&pdc_like_transactions()),
            Err(CodecError::TooManyItems { .. })
        ));
    }
}

mod schema_evolution {
    use super::*;

    /// Version 1 of an application record, as an older build wrote it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct ShiftV1 {
        cashier: u32,
        opened_ms: u64,
    }
    impl Record for ShiftV1 {
        const KIND: RecordKind = RecordKind(70);
        const SCHEMA: u8 = 1;
    }

    /// Version 2 adds an optional field.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Shift {
        cashier: u32,
        opened_ms: u64,
        float_cents: Option<i64>,
    }
    impl Record for Shift {
        const KIND: RecordKind = RecordKind(70);
        const SCHEMA: u8 = 2;
        fn take_older(schema: u8, bytes: &[u8]) -> Result<(Self, &[u8]), CodecError> {
            match schema {
                1 => {
                    let (v1, rest) = postcard::take_from_bytes::<ShiftV1>(bytes)?;
                    Ok((
                        Shift {
                            cashier: v1.cashier,
                            opened_ms: v1.opened_ms,
                            float_cents: None,
                        },
                        rest,
                    ))
                }
                _ => Err(CodecError::UnsupportedSchema {
                    kind: Self::KIND,
                    schema,
                }),
            }
        }
    }

    #[test]
    fn version_1_frames_are_read_by_version_2() {
        let c = Codec::new();
        let old = ShiftV1 {
            cashier: 7,
            opened_ms: 1_704_067_200_000,
        };
        let want = Shift {
            cashier: 7,
            opened_ms: 1_704_067_200_000,
            float_cents: None,
        };
        assert_eq!(c.decode::<Shift>(&c.encode(&old).unwrap()).unwrap(), want);
        let olds = vec![old.clone(); 30];
        assert_eq!(
            c.decode_batch::<Shift>(&c.encode_batch(&olds).unwrap())
                .unwrap(),
            vec![want; 30]
        );
        // The current version reads itself.
        let new = Shift {
            float_cents: Some(10_000),
            ..c.decode::<Shift>(&c.encode(&old).unwrap()).unwrap()
        };
        assert_eq!(c.decode::<Shift>(&c.encode(&new).unwrap()).unwrap(), new);
    }

    #[test]
    fn a_newer_schema_is_a_clear_error() {
        let c = Codec::new();
        let new = Shift {
            cashier: 1,
            opened_ms: 2,
            float_cents: None,
        };
        assert_eq!(
            c.decode::<ShiftV1>(&c.encode(&new).unwrap()),
            Err(CodecError::UnsupportedSchema {
                kind: RecordKind(70),
                schema: 2
            })
        );
    }

    /// A golden frame written by format version 1 stays readable forever.
    #[test]
    fn golden_v1_frame_of_the_seed_baseline() {
        let golden: &[u8] = &[
            80, 100, 99, 70, 1, 0, 1, 1, 25, 185, 96, 0, 158, 156, 1, 128, 232, 199, 146, 204, 49,
            0, 11, 84, 88, 45, 50, 48, 50, 53, 45, 48, 48, 49, 240, 171, 38, 0, 6, 83, 22, 181,
        ];
        let c = Codec::new();
        assert_eq!(
            c.decode::<Transaction>(golden).unwrap(),
            Transaction::seed_baseline()
        );
        assert_eq!(
            c.encode(&Transaction::seed_baseline()).unwrap(),
            golden,
            "frame layout changed: bump FORMAT_VERSION and keep a decoder for version 1"
        );
    }
}

#[test]
fn json_and_frames_describe_the_same_records() {
    // The domain records are plain serde types: JSON works for other languages.
    let t = Transaction::seed_baseline();
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(serde_json::from_str::<Transaction>(&json).unwrap(), t);
}
