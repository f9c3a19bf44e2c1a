//! Prometheus text exposition format (version 0.0.4) and JSON.

use std::fmt::Write;

use crate::{MetricKey, Registry};

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(key: &MetricKey, extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = key
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The registry in the Prometheus text format: counters, gauges, and
/// histograms as summaries (quantiles 0.5, 0.9, 0.95, 0.99, 0.999, `_sum`,
/// `_count`). One `# TYPE` line per metric name; series sorted.
pub fn prometheus(registry: &Registry) -> String {
    let mut out = String::new();
    let mut last = String::new();
    let mut typed = |out: &mut String, name: &str, kind: &str| {
        if last != name {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            last = name.to_owned();
        }
    };
    for (k, v) in &registry.counters {
        typed(&mut out, &k.name, "counter");
        let _ = writeln!(out, "{}{} {v}", k.name, labels(k, None));
    }
    for (k, v) in &registry.gauges {
        typed(&mut out, &k.name, "gauge");
        let _ = writeln!(out, "{}{} {}", k.name, labels(k, None), num(*v));
    }
    for (k, h) in &registry.histograms {
        typed(&mut out, &k.name, "summary");
        for (q, label) in [
            (0.5, "0.5"),
            (0.9, "0.9"),
            (0.95, "0.95"),
            (0.99, "0.99"),
            (0.999, "0.999"),
        ] {
            let v = h.quantile(q).unwrap_or(f64::NAN);
            let _ = writeln!(
                out,
                "{}{} {}",
                k.name,
                labels(k, Some(("quantile", label))),
                num(v)
            );
        }
        let _ = writeln!(out, "{}_sum{} {}", k.name, labels(k, None), num(h.sum()));
        let _ = writeln!(out, "{}_count{} {}", k.name, labels(k, None), h.count());
    }
    out
}

/// The registry as JSON: counters and gauges by series, histograms as
/// summaries.
pub fn json(registry: &Registry) -> serde_json::Value {
    let series = |k: &MetricKey| {
        let mut s = k.name.clone();
        s.push_str(&labels(k, None));
        s
    };
    let mut counters = serde_json::Map::new();
    for (k, v) in &registry.counters {
        counters.insert(series(k), serde_json::Value::from(*v));
    }
    let mut gauges = serde_json::Map::new();
    for (k, v) in &registry.gauges {
        gauges.insert(series(k), serde_json::Value::from(*v));
    }
    let mut hist = serde_json::Map::new();
    for (k, h) in &registry.histograms {
        hist.insert(
            series(k),
            serde_json::to_value(h.summary()).unwrap_or(serde_json::Value::Null),
        );
    }
    serde_json::json!({ "counters": counters, "gauges": gauges, "histograms": hist })
}
