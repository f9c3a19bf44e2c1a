//! pdc-monitor: recording into a histogram beside `hdrhistogram` and the
//! design study's approach (push into a Vec, sort per report), and merging
//! 1,000 terminal reports into a fleet report.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pdc_monitor::{FleetReport, MetricKey, Registry, Sketch, TerminalReport};
use rand::{Rng, SeedableRng};

fn values() -> Vec<f64> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    (0..10_000).map(|_| r.gen_range(0.05f64..5_000.0)).collect()
}

fn record(c: &mut Criterion) {
    let vals = values();
    let ints: Vec<u64> = vals.iter().map(|v| (v * 1000.0) as u64).collect();
    let mut g = c.benchmark_group("hist_record");
    g.throughput(Throughput::Elements(vals.len() as u64));
    g.bench_function("pdc", |b| {
        let mut s = Sketch::default();
        b.iter(|| {
            for &v in &vals {
                s.record(black_box(v));
            }
        })
    });
    g.bench_function("hdrhistogram", |b| {
        // 3 significant digits, 1 µs to 1 h in µs: the usual latency setup.
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
        b.iter(|| {
            for &v in &ints {
                h.saturating_record(black_box(v));
            }
        })
    });
    g.bench_function("vec_sort", |b| {
        // The study: keep the last 1,000 values, sort for a p95 at report time;
        // here per 10,000 records one report, as a RUM page would.
        let mut window: std::collections::VecDeque<f64> =
            std::collections::VecDeque::with_capacity(1000);
        b.iter(|| {
            for &v in &vals {
                if window.len() == 1000 {
                    window.pop_front();
                }
                window.push_back(black_box(v));
            }
            let mut sorted: Vec<f64> = window.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            black_box(sorted[950])
        })
    });
    g.finish();
}

fn fleet(c: &mut Criterion) {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let keys: Vec<MetricKey> = [
        "pdc_offline_login_ms",
        "pdc_sync_push_ms",
        "pdc_sync_bytes",
        "pdc_cache_get_us",
    ]
    .iter()
    .map(|n| MetricKey::new(n, &[]).unwrap())
    .collect();
    let reports: Vec<TerminalReport> = (0..1000)
        .map(|t| {
            let mut reg = Registry::new();
            for k in &keys {
                for _ in 0..500 {
                    reg.observe(k, r.gen_range(1.0..10_000.0));
                }
            }
            reg.count(&MetricKey::new("pdc_sales_total", &[]).unwrap(), 120);
            reg.gauge(&MetricKey::new("pdc_memory_bytes", &[]).unwrap(), 3e7);
            TerminalReport {
                terminal_id: format!("till-{t}").parse().unwrap(),
                store_id: format!("store-{}", t / 20),
                at_ms: 1_704_067_200_000,
                registry: reg,
                connection_ms: Default::default(),
                mode_switches: 3,
            }
        })
        .collect();
    let mut g = c.benchmark_group("fleet_merge");
    g.sample_size(20);
    g.bench_function("1000_reports", |b| {
        b.iter_batched(
            FleetReport::new,
            |mut f| {
                for rep in &reports {
                    f.merge(rep).unwrap();
                }
                f
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, record, fleet);
criterion_main!(benches);
