//! Codec throughput: pdc's columnar frame against serde_json, JSON+gzip
//! (flate2, level 6), MessagePack (rmp-serde) and bincode, on 1,000 orders.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::io::{Read, Write};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pdc_codec::{Codec, Order};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn codec(c: &mut Criterion) {
    let orders = pdc_datasets::orders(1000, 1);
    let codec = Codec::new();

    let mut g = c.benchmark_group("codec_encode/orders1k");
    g.throughput(Throughput::Elements(orders.len() as u64));
    g.bench_function("pdc", |b| {
        b.iter(|| codec.encode_orders(black_box(&orders)).unwrap())
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&orders)).unwrap())
    });
    g.bench_function("json_gzip", |b| {
        b.iter(|| gzip(&serde_json::to_vec(black_box(&orders)).unwrap()))
    });
    g.bench_function("msgpack", |b| {
        b.iter(|| rmp_serde::to_vec(black_box(&orders)).unwrap())
    });
    g.bench_function("bincode", |b| {
        b.iter(|| bincode::serialize(black_box(&orders)).unwrap())
    });
    g.finish();

    let pdc = codec.encode_orders(&orders).unwrap();
    let json = serde_json::to_vec(&orders).unwrap();
    let json_gz = gzip(&json);
    let msgpack = rmp_serde::to_vec(&orders).unwrap();
    let bincode_bytes = bincode::serialize(&orders).unwrap();

    let mut g = c.benchmark_group("codec_decode/orders1k");
    g.throughput(Throughput::Elements(orders.len() as u64));
    g.bench_function("pdc", |b| {
        b.iter(|| codec.decode_orders(black_box(&pdc)).unwrap())
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Order>>(black_box(&json)).unwrap())
    });
    g.bench_function("json_gzip", |b| {
        b.iter(|| serde_json::from_slice::<Vec<Order>>(&gunzip(black_box(&json_gz))).unwrap())
    });
    g.bench_function("msgpack", |b| {
        b.iter(|| rmp_serde::from_slice::<Vec<Order>>(black_box(&msgpack)).unwrap())
    });
    g.bench_function("bincode", |b| {
        b.iter(|| bincode::deserialize::<Vec<Order>>(black_box(&bincode_bytes)).unwrap())
    });
    g.finish();
}

/// Encode and decode on orders nobody tuned the codec for (issue 17):
/// 1,000 orders of `orders_shaped`'s sparse, dense and rich shapes, pdc beside
/// serde_json in the same run.
fn codec_shapes(c: &mut Criterion) {
    let codec = Codec::new();
    let dense = |level| {
        Codec::new().with_compression(pdc_codec::Compression::Dense {
            min_bytes: 64,
            level,
        })
    };
    let (dense1, dense6) = (dense(1), dense(6));
    for (name, shape) in [
        ("sparse", pdc_datasets::OrderShape::sparse()),
        ("dense", pdc_datasets::OrderShape::dense()),
        ("rich", pdc_datasets::OrderShape::rich()),
    ] {
        let orders = pdc_datasets::orders_shaped(1000, 3, &shape);
        let mut g = c.benchmark_group(format!("codec_encode/shaped_{name}_1k"));
        g.throughput(Throughput::Elements(1000));
        g.bench_function("pdc", |b| {
            b.iter(|| codec.encode_orders(black_box(&orders)).unwrap())
        });
        g.bench_function("pdc_dense1", |b| {
            b.iter(|| dense1.encode_orders(black_box(&orders)).unwrap())
        });
        g.bench_function("pdc_dense6", |b| {
            b.iter(|| dense6.encode_orders(black_box(&orders)).unwrap())
        });
        g.bench_function("serde_json", |b| {
            b.iter(|| serde_json::to_vec(black_box(&orders)).unwrap())
        });
        g.finish();
        let pdc = codec.encode_orders(&orders).unwrap();
        let pdc_dense = dense6.encode_orders(&orders).unwrap();
        let json = serde_json::to_vec(&orders).unwrap();
        let mut g = c.benchmark_group(format!("codec_decode/shaped_{name}_1k"));
        g.throughput(Throughput::Elements(1000));
        g.bench_function("pdc", |b| {
            b.iter(|| codec.decode_orders(black_box(&pdc)).unwrap())
        });
        g.bench_function("pdc_dense6", |b| {
            b.iter(|| codec.decode_orders(black_box(&pdc_dense)).unwrap())
        });
        g.bench_function("serde_json", |b| {
            b.iter(|| serde_json::from_slice::<Vec<pdc_codec::Order>>(black_box(&json)).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, codec, codec_shapes);
criterion_main!(benches);
