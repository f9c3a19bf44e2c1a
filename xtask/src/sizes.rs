//! `cargo xtask sizes`: encoded sizes of the standard datasets in pdc's
//! frame and in the formats a user would pick instead, in one run.

use std::io::Write;

use pdc_codec::{Codec, Transaction};
use serde::Serialize;

fn gzip(bytes: &[u8]) -> usize {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing to a Vec cannot fail.
    enc.write_all(bytes).expect("write to Vec");
    enc.finish().expect("finish to Vec").len()
}

struct Row {
    dataset: &'static str,
    records: usize,
    sizes: Vec<(&'static str, usize)>,
}

fn row<T: Serialize>(dataset: &'static str, items: &[T], pdc_frame: usize) -> Row {
    let json = serde_json::to_vec(items).expect("serde_json");
    let msgpack = rmp_serde::to_vec(items).expect("rmp-serde");
    let bincode = bincode::serialize(items).expect("bincode");
    let postcard = postcard::to_allocvec(items).expect("postcard");
    Row {
        dataset,
        records: items.len(),
        sizes: vec![
            ("json", json.len()),
            ("json_gzip", gzip(&json)),
            ("msgpack", msgpack.len()),
            (
                "msgpack_lz4",
                lz4_flex::compress_prepend_size(&msgpack).len(),
            ),
            ("bincode", bincode.len()),
            ("postcard", postcard.len()),
            (
                "postcard_lz4",
                lz4_flex::compress_prepend_size(&postcard).len(),
            ),
            ("pdc_frame", pdc_frame),
        ],
    }
}

fn zstd3(bytes: &[u8]) -> usize {
    zstd::bulk::compress(bytes, 3).map_or(usize::MAX, |v| v.len())
}

/// One shape of orders in one batching: pdc's frames against JSON+gzip,
/// JSON+zstd and MessagePack+lz4 of the same batches, summed.
fn other_data_row(
    codec: &Codec,
    name: &str,
    orders: &[pdc_codec::Order],
    batch: usize,
) -> Result<String, String> {
    let (mut pdc, mut gz, mut zs, mut mp) = (0usize, 0usize, 0usize, 0usize);
    let mut dense = [0usize; 2];
    let dense_codecs = [1u8, 6].map(|level| {
        Codec::new().with_compression(pdc_codec::Compression::Dense {
            min_bytes: 64,
            level,
        })
    });
    for chunk in orders.chunks(batch) {
        pdc += codec.encode_orders(chunk).map_err(|e| e.to_string())?.len();
        for (d, c) in dense.iter_mut().zip(&dense_codecs) {
            *d += c.encode_orders(chunk).map_err(|e| e.to_string())?.len();
        }
        let json = serde_json::to_vec(chunk).map_err(|e| e.to_string())?;
        gz += gzip(&json);
        zs += zstd3(&json);
        let msgpack = rmp_serde::to_vec(chunk).map_err(|e| e.to_string())?;
        mp += lz4_flex::compress_prepend_size(&msgpack).len();
    }
    let lines: usize = orders.iter().map(|o| o.lines.len()).sum();
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    Ok(format!(
        "| {name} | {} × {batch} | {:.1} | {pdc} | {gz} | {zs} | {mp} | {:.1}% | {:.1}% | {:.1}% | {:.2} | {} ({:.1}%) | {} ({:.1}%) |",
        orders.len() / batch.max(1),
        lines as f64 / orders.len().max(1) as f64,
        pct(pdc, gz),
        pct(pdc, zs),
        pct(pdc, mp),
        pdc as f64 / lines.max(1) as f64,
        dense[0],
        pct(dense[0], gz),
        dense[1],
        pct(dense[1], gz),
    ))
}

/// `cargo xtask sizes --other`: orders of [`pdc_datasets::orders_shaped`]'s
/// dense, sparse and rich shapes and of [`pdc_datasets::orders`], as one batch
/// of 10,000 and as 100 batches of 100, on two seeds.
pub fn other_data() -> Result<(), String> {
    let codec = Codec::new();
    println!("| orders | batches | lines/order | pdc | JSON+gzip(6) | JSON+zstd(3) | MessagePack+lz4 | pdc/gzip | pdc/zstd | pdc/msgpack+lz4 | pdc B/line | pdc Dense(1) (/gzip) | pdc Dense(6) (/gzip) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for seed in [1u64, 2] {
        let shapes = [
            (
                format!("orders_shaped(sparse), seed {seed}"),
                pdc_datasets::orders_shaped(10_000, seed, &pdc_datasets::OrderShape::sparse()),
            ),
            (
                format!("orders_shaped(dense), seed {seed}"),
                pdc_datasets::orders_shaped(10_000, seed, &pdc_datasets::OrderShape::dense()),
            ),
            (
                format!("orders_shaped(rich), seed {seed}"),
                pdc_datasets::orders_shaped(10_000, seed, &pdc_datasets::OrderShape::rich()),
            ),
            (
                format!("orders, seed {seed}"),
                pdc_datasets::orders(10_000, seed),
            ),
        ];
        for (name, orders) in &shapes {
            for batch in [10_000usize, 100] {
                println!("{}", other_data_row(&codec, name, orders, batch)?);
            }
            if std::env::var_os("PDC_SIZES_COLUMNS").is_some() {
                eprintln!("{name}, columns of one batch of 10,000 (postcard bytes, lz4 bytes):");
                for (col, raw, lz) in pdc_codec::OrderColumns::from_records(orders).column_sizes() {
                    eprintln!("  {col:<18} {raw:>8} {lz:>8}");
                }
                let mut sums: Vec<(&'static str, usize, usize)> = Vec::new();
                for chunk in orders.chunks(100) {
                    let sizes = pdc_codec::OrderColumns::from_records(chunk).column_sizes();
                    for (i, (col, raw, lz)) in sizes.into_iter().enumerate() {
                        if sums.len() <= i {
                            sums.push((col, 0, 0));
                        }
                        sums[i].1 += raw;
                        sums[i].2 += lz;
                    }
                }
                eprintln!(
                    "{name}, columns summed over batches of 100 (postcard bytes, lz4 bytes):"
                );
                for (col, raw, lz) in sums {
                    eprintln!("  {col:<18} {raw:>8} {lz:>8}");
                }
            }
        }
    }
    push_sizes()?;
    Ok(())
}

pub fn run(json: bool) -> Result<(), String> {
    let codec = Codec::new();
    let err = |e: pdc_codec::CodecError| e.to_string();

    let base = Transaction::seed_baseline();
    let base_payload = postcard::to_allocvec(&base)
        .map_err(|e| e.to_string())?
        .len();
    let base_frame = codec.encode(&base).map_err(err)?.len();

    let tx100 = pdc_datasets::transactions(100, 1);
    let tx100_frame = codec.encode_transactions(&tx100).map_err(err)?.len();
    let orders = pdc_datasets::orders(10_000, 1);
    let orders_frame = codec.encode_orders(&orders).map_err(err)?.len();

    let rows = [
        row("seed_baseline", std::slice::from_ref(&base), base_frame),
        row("transactions(100, 1)", &tx100, tx100_frame),
        row("orders(10000, 1)", &orders, orders_frame),
    ];
    let get = |r: &Row, k: &str| r.sizes.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);

    if json {
        let mut obj = serde_json::Map::new();
        let mut put = |k: &str, v: usize| {
            obj.insert(k.to_owned(), serde_json::Value::from(v));
        };
        put("seed_baseline_payload_bytes", base_payload);
        put("seed_baseline_frame_bytes", base_frame);
        put(
            "seed_baseline_json_bytes",
            serde_json::to_vec(&base).map_err(|e| e.to_string())?.len(),
        );
        put("tx100_frame_bytes", tx100_frame);
        put("tx100_json_bytes", get(&rows[1], "json"));
        put("tx100_json_gzip_bytes", get(&rows[1], "json_gzip"));
        put("orders10k_frame_bytes", orders_frame);
        put("orders10k_json_bytes", get(&rows[2], "json"));
        put("orders10k_json_gzip_bytes", get(&rows[2], "json_gzip"));
        put("orders10k_msgpack_bytes", get(&rows[2], "msgpack"));
        put("orders10k_msgpack_lz4_bytes", get(&rows[2], "msgpack_lz4"));
        put(
            "orders10k_postcard_lz4_bytes",
            get(&rows[2], "postcard_lz4"),
        );
        println!("{}", serde_json::Value::Object(obj));
        return Ok(());
    }

    println!("Encoded sizes in bytes (each dataset encoded as one value; pdc_frame is the whole frame)\n");
    print!("{:<22} {:>7}", "dataset", "records");
    for (name, _) in &rows[0].sizes {
        print!(" {name:>12}");
    }
    println!();
    for r in &rows {
        print!("{:<22} {:>7}", r.dataset, r.records);
        for (_, v) in &r.sizes {
            print!(" {v:>12}");
        }
        println!();
    }
    println!();
    println!(
        "seed baseline: {base_payload} B payload + {} B frame overhead = {base_frame} B",
        base_frame - base_payload
    );
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "tx100: {tx100_frame} B frame, {:.1} B/transaction, {:.1}% of JSON+gzip",
        tx100_frame as f64 / 100.0,
        pct(tx100_frame, get(&rows[1], "json_gzip"))
    );
    println!(
        "orders10k: {orders_frame} B frame, {:.1} B/order, {:.1}% of JSON+gzip, {:.1}% of MessagePack+lz4",
        orders_frame as f64 / 10_000.0,
        pct(orders_frame, get(&rows[2], "json_gzip")),
        pct(orders_frame, get(&rows[2], "msgpack_lz4"))
    );
    if std::env::var_os("PDC_SIZES_COLUMNS").is_some() {
        println!("\norders10k columns (postcard bytes, lz4 bytes):");
        for (name, raw, lz) in pdc_codec::OrderColumns::from_records(&orders).column_sizes() {
            println!("  {name:<18} {raw:>8} {lz:>8}");
        }
    }
    Ok(())
}

/// What a till sends up: the orders as row frames (as the outbox stores
/// them) in push requests of 50 (the default batch), with the default lz4
/// and with `SyncConfig::dense_push` (deflate), beside JSON+gzip(6) of the
/// same 50 orders; 10,000 orders of each shape, seed 1.
fn push_sizes() -> Result<(), String> {
    use pdc_sync::{OutboxItem, Priority, PushRequest, StreamKey, PROTOCOL_VERSION};
    let row = Codec::new();
    let dense = Codec::new().with_compression(pdc_codec::Compression::Dense {
        min_bytes: 64,
        level: 6,
    });
    println!();
    println!("| push requests of 50 orders (row frames) | requests | pdc lz4 (default) | pdc `dense_push` | JSON+gzip(6) of the orders | lz4/gzip | dense/gzip |");
    println!("|---|---|---|---|---|---|---|");
    for (name, shape) in [
        ("orders_shaped(sparse)", pdc_datasets::OrderShape::sparse()),
        ("orders_shaped(dense)", pdc_datasets::OrderShape::dense()),
        ("orders_shaped(rich)", pdc_datasets::OrderShape::rich()),
    ] {
        let orders = pdc_datasets::orders_shaped(10_000, 1, &shape);
        let (mut lz, mut de, mut gz, mut n) = (0usize, 0usize, 0usize, 0usize);
        for (b, chunk) in orders.chunks(50).enumerate() {
            let items = chunk
                .iter()
                .enumerate()
                .map(|(k, o)| {
                    Ok(OutboxItem {
                        local_id: (b * 50 + k + 1) as u64,
                        stream: StreamKey(1),
                        priority: Priority::High,
                        kind: 2,
                        created_at_ms: o.created_at_ms,
                        payload: row.encode(o).map_err(|e| e.to_string())?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let request = PushRequest {
                schema: PROTOCOL_VERSION,
                terminal_id: "till-1".parse().map_err(|e| format!("{e}"))?,
                store_id: Default::default(),
                batch_id: b as u64 + 1,
                items,
            };
            lz += row.encode(&request).map_err(|e| e.to_string())?.len();
            de += dense.encode(&request).map_err(|e| e.to_string())?.len();
            gz += gzip(&serde_json::to_vec(chunk).map_err(|e| e.to_string())?);
            n += 1;
        }
        let pct = |a: usize| 100.0 * a as f64 / gz.max(1) as f64;
        println!(
            "| {name} | {n} | {lz} | {de} | {gz} | {:.1}% | {:.1}% |",
            pct(lz),
            pct(de)
        );
    }
    Ok(())
}
