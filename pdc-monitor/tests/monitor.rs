//! pdc-monitor end to end: accuracy on realistic distributions and after
//! merging, alert rules on a manual clock, Prometheus output through an
//! independent parser, reports through pdc-codec.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use pdc_clock::{Clock, ManualClock};
use pdc_codec::Codec;
use pdc_monitor::{
    prometheus, AlertEngine, AlertEvent, AlertRule, FleetReport, MetricKey, Op, Registry, Severity,
    Sketch, Stat, TerminalReport,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn lognormal(r: &mut ChaCha8Rng) -> f64 {
    // Box-Muller, median 80 ms, sigma 1.
    let (u1, u2): (f64, f64) = (r.gen_range(1e-12..1.0), r.gen());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (80f64.ln() + z).exp()
}

fn datasets() -> Vec<(&'static str, Vec<f64>)> {
    let mut r = ChaCha8Rng::seed_from_u64(7);
    let uniform = (0..100_000).map(|_| r.gen_range(1.0..1000.0)).collect();
    let logn = (0..100_000).map(|_| lognormal(&mut r)).collect();
    let bimodal = (0..100_000)
        .map(|_| {
            if r.gen_bool(0.9) {
                r.gen_range(5.0..15.0)
            } else {
                r.gen_range(2000.0..5000.0)
            }
        })
        .collect();
    vec![
        ("uniform", uniform),
        ("lognormal", logn),
        ("bimodal", bimodal),
    ]
}

fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

#[test]
fn quantiles_within_one_percent_alone_and_after_merging_100_sketches() {
    for (name, values) in datasets() {
        let mut one = Sketch::default();
        for &v in &values {
            one.record(v);
        }
        let mut merged = Sketch::default();
        for chunk in values.chunks(values.len() / 100) {
            let mut s = Sketch::default();
            for &v in chunk {
                s.record(v);
            }
            merged.merge(&s).unwrap();
        }
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let mut worst = 0f64;
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let truth = exact(&sorted, q);
            for (how, s) in [("one", &one), ("merged", &merged)] {
                let est = s.quantile(q).unwrap();
                let err = (est - truth).abs() / truth;
                assert!(
                    err <= 0.01,
                    "{name} {how} q={q}: {est} vs {truth} ({:.3}%)",
                    err * 100.0
                );
                worst = worst.max(err);
            }
        }
        eprintln!(
            "{name}: worst relative error p50..p99.9, alone and merged from 100: {:.3}%; memory {} B",
            worst * 100.0,
            one.memory_bytes()
        );
        assert_eq!(merged.count(), one.count());
    }
}

#[test]
fn alert_fires_once_after_its_duration_and_resolves_once_with_hysteresis() {
    let clock = ManualClock::new(0);
    let rule = AlertRule {
        name: "sync_slow".into(),
        metric: "sync_ms".into(),
        stat: Stat::Gauge,
        op: Op::Above,
        threshold: 5000.0,
        for_duration: Duration::from_secs(60),
        hysteresis: 0.1,
        severity: Severity::Critical,
    };
    let mut engine = AlertEngine::new(vec![rule]);
    let key = MetricKey::new("sync_ms", &[("terminal", "t1")]).unwrap();
    let mut reg = Registry::new();
    let mut events = Vec::new();
    // value per 10 s step
    let script = [
        1000.0, 6000.0, 6000.0, 1000.0, // breach interrupted before 60 s: nothing
        6000.0, 6000.0, 6000.0, 6000.0, 6000.0, 6000.0, 6000.0, 6000.0, // fires once at 60 s
        4800.0, 4600.0, // below threshold but inside hysteresis: stays firing
        4400.0, 4400.0, // resolves once
        6000.0,
    ];
    for v in script {
        reg.gauge(&key, v);
        for e in engine.evaluate(&reg, clock.now()) {
            events.push((clock.now().since_origin().as_secs(), e));
        }
        clock.advance(Duration::from_secs(10));
    }
    let kinds: Vec<(u64, &str)> = events
        .iter()
        .map(|(t, e)| {
            (
                *t,
                match e {
                    AlertEvent::Fired { .. } => "fired",
                    AlertEvent::Resolved { .. } => "resolved",
                },
            )
        })
        .collect();
    assert_eq!(kinds, vec![(100, "fired"), (140, "resolved")]);
}

#[test]
fn immediate_rule_fires_on_first_data_loss() {
    let mut engine = AlertEngine::new(AlertRule::defaults());
    let mut reg = Registry::new();
    let key = MetricKey::new("pdc_data_loss_total", &[]).unwrap();
    reg.count(&key, 0);
    assert!(engine.evaluate(&reg, pdc_clock::Instant::ZERO).is_empty());
    reg.count(&key, 1);
    let ev = engine.evaluate(&reg, pdc_clock::Instant::ZERO);
    assert!(matches!(
        &ev[..],
        [AlertEvent::Fired {
            severity: Severity::Immediate,
            ..
        }]
    ));
    assert_eq!(engine.firing(), vec!["data_loss"]);
    // Rules are serde-loadable.
    let json = serde_json::to_string(&AlertRule::defaults()).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<AlertRule>>(&json).unwrap(),
        AlertRule::defaults()
    );
}

#[test]
fn prometheus_output_parses_and_has_no_duplicate_series() {
    let mut reg = Registry::new();
    let mut r = ChaCha8Rng::seed_from_u64(1);
    for t in ["till-1", "till-\"2\"\nx", "till\\3"] {
        let lat = MetricKey::new("pdc_sync_push_ms", &[("terminal", t), ("store", "s1")]).unwrap();
        for _ in 0..100 {
            reg.observe(&lat, lognormal(&mut r));
        }
        reg.count(
            &MetricKey::new("pdc_sales_total", &[("terminal", t)]).unwrap(),
            42,
        );
        reg.gauge(
            &MetricKey::new("pdc_cache_hit_ratio", &[("terminal", t)]).unwrap(),
            0.93,
        );
    }
    let text = prometheus(&reg);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let mut seen = BTreeSet::new();
    for s in &scrape.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        assert!(
            seen.insert((s.metric.clone(), format!("{labels:?}"))),
            "duplicate series {}",
            s.metric
        );
    }
    // 3 counters + 3 gauges + 3 summaries (each one sample per name in the parser).
    assert!(scrape.samples.len() >= 9, "{}", scrape.samples.len());
    // The escaped label value survives the round trip (the parser keeps
    // escapes as written, or unescapes: either proves it was well formed).
    assert!(scrape.samples.iter().any(|s| {
        let v = s.labels.get("terminal");
        v == Some("till-\"2\"\nx") || v == Some("till-\\\"2\\\"\\nx")
    }));
    assert!(text.contains("# TYPE pdc_sync_push_ms summary"));
    assert_eq!(text.matches("# TYPE pdc_sync_push_ms").count(), 1);
    for name in ["Bad-Name", "1abc", ""] {
        assert!(MetricKey::new(name, &[]).is_err());
    }
    assert!(MetricKey::new("ok", &[("__reserved", "x")]).is_err());
}

#[test]
fn reports_travel_as_frames_and_merge_into_a_fleet() {
    let codec = Codec::new();
    let mut fleet = FleetReport::new();
    let key = MetricKey::new("pdc_offline_login_ms", &[]).unwrap();
    for t in 0..50u32 {
        let mut reg = Registry::new();
        for i in 0..100 {
            reg.observe(&key, f64::from(t * 100 + i));
        }
        reg.count(&MetricKey::new("pdc_sales_total", &[]).unwrap(), 10);
        let report = TerminalReport {
            terminal_id: format!("till-{t}").parse().unwrap(),
            store_id: "s1".into(),
            at_ms: 1000 + u64::from(t),
            registry: reg,
            connection_ms: [("online".to_string(), 900u64), ("offline".to_string(), 100)].into(),
            mode_switches: 2,
        };
        let bytes = report.encode(&codec).unwrap();
        let back = TerminalReport::decode(&codec, &bytes).unwrap();
        assert_eq!(back, report);
        fleet.merge(&back).unwrap();
    }
    assert_eq!(fleet.terminals, 50);
    assert_eq!(
        fleet
            .registry
            .counter(&MetricKey::new("pdc_sales_total", &[]).unwrap()),
        500
    );
    let h = &fleet.registry.histograms[&key];
    assert_eq!(h.count(), 5000);
    assert!((h.quantile(0.5).unwrap() - 2499.0).abs() / 2499.0 <= 0.01);
    assert_eq!(fleet.connection_ms["offline"], 5000);
    // Garbage is an error, not a panic.
    assert!(TerminalReport::decode(&codec, b"not a report").is_err());
}
