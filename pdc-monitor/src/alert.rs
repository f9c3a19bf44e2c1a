//! Alert rules over metric statistics: threshold, a duration it must hold,
//! severity, hysteresis; evaluation gives one event per crossing.

use std::collections::BTreeMap;
use std::time::Duration;

use pdc_clock::Instant;
use serde::{Deserialize, Serialize};

use crate::{MetricKey, Registry};

/// Which number of a metric a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stat {
    /// A counter's value.
    Counter,
    /// A gauge's value.
    Gauge,
    /// A histogram's median.
    P50,
    /// A histogram's 95th percentile.
    P95,
    /// A histogram's 99th percentile.
    P99,
    /// A histogram's maximum.
    Max,
    /// A histogram's mean.
    Mean,
}

/// Comparison with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Fires when the value is above.
    Above,
    /// Fires when the value is below.
    Below,
}

/// How urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Look into it.
    Investigate,
    /// Something degrades.
    Warning,
    /// Act now.
    Critical,
    /// Data at risk: page someone.
    Immediate,
    /// Housekeeping due (e.g. clean caches).
    Cleanup,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Rule name (unique).
    pub name: String,
    /// Metric name (all label sets of the metric are checked; the worst
    /// one counts).
    pub metric: String,
    /// Which statistic.
    pub stat: Stat,
    /// Comparison.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
    /// How long the condition must hold before firing.
    #[serde(with = "millis")]
    pub for_duration: Duration,
    /// Fraction of the threshold the value must come back past before the
    /// alert resolves (e.g. 0.1: a p95 > 500 ms alert resolves below 450).
    pub hysteresis: f64,
    /// Severity.
    pub severity: Severity,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl AlertRule {
    /// The design study's defaults.
    pub fn defaults() -> Vec<AlertRule> {
        let rule = |name: &str, metric: &str, stat, op, threshold, secs, severity| AlertRule {
            name: name.into(),
            metric: metric.into(),
            stat,
            op,
            threshold,
            for_duration: Duration::from_secs(secs),
            hysteresis: 0.1,
            severity,
        };
        vec![
            rule(
                "offline_login_slow",
                "pdc_offline_login_ms",
                Stat::P95,
                Op::Above,
                500.0,
                300,
                Severity::Warning,
            ),
            rule(
                "sync_latency_high",
                "pdc_sync_push_ms",
                Stat::P95,
                Op::Above,
                5000.0,
                60,
                Severity::Critical,
            ),
            rule(
                "cache_hit_rate_low",
                "pdc_cache_hit_ratio",
                Stat::Gauge,
                Op::Below,
                0.6,
                600,
                Severity::Investigate,
            ),
            rule(
                "data_loss",
                "pdc_data_loss_total",
                Stat::Counter,
                Op::Above,
                0.0,
                0,
                Severity::Immediate,
            ),
            rule(
                "memory_high",
                "pdc_memory_bytes",
                Stat::Gauge,
                Op::Above,
                80.0 * 1024.0 * 1024.0,
                60,
                Severity::Cleanup,
            ),
        ]
    }

    fn breached(&self, v: f64) -> bool {
        match self.op {
            Op::Above => v > self.threshold,
            Op::Below => v < self.threshold,
        }
    }

    fn recovered(&self, v: f64) -> bool {
        let margin = self.threshold.abs() * self.hysteresis;
        match self.op {
            Op::Above => v <= self.threshold - margin,
            Op::Below => v >= self.threshold + margin,
        }
    }

    /// The rule's statistic in `registry`: the worst over label sets.
    pub fn value(&self, registry: &Registry) -> Option<f64> {
        let matching = |k: &MetricKey| k.name == self.metric;
        let values: Vec<f64> = match self.stat {
            Stat::Counter => registry
                .counters
                .iter()
                .filter(|(k, _)| matching(k))
                .map(|(_, v)| *v as f64)
                .collect(),
            Stat::Gauge => registry
                .gauges
                .iter()
                .filter(|(k, _)| matching(k))
                .map(|(_, v)| *v)
                .collect(),
            stat => registry
                .histograms
                .iter()
                .filter(|(k, h)| matching(k) && h.count() > 0)
                .map(|(_, h)| {
                    let s = h.summary();
                    match stat {
                        Stat::P50 => s.p50,
                        Stat::P95 => s.p95,
                        Stat::P99 => s.p99,
                        Stat::Max => s.max,
                        _ => s.mean,
                    }
                })
                .collect(),
        };
        match self.op {
            Op::Above => values.into_iter().reduce(f64::max),
            Op::Below => values.into_iter().reduce(f64::min),
        }
    }
}

/// An alert changing state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AlertEvent {
    /// The condition held for the rule's duration.
    Fired {
        /// Rule name.
        rule: String,
        /// Severity.
        severity: Severity,
        /// Value that fired it.
        value: f64,
    },
    /// The value came back past the hysteresis margin.
    Resolved {
        /// Rule name.
        rule: String,
        /// Value that resolved it.
        value: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RuleState {
    Ok,
    Pending(Instant),
    Firing,
}

/// Evaluates rules over time; each crossing gives exactly one event.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    rules: Vec<AlertRule>,
    state: BTreeMap<String, RuleState>,
}

impl AlertEngine {
    /// An engine with these rules.
    pub fn new(rules: Vec<AlertRule>) -> Self {
        AlertEngine {
            rules,
            state: BTreeMap::new(),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Names of the rules firing now.
    pub fn firing(&self) -> Vec<&str> {
        self.state
            .iter()
            .filter(|(_, s)| **s == RuleState::Firing)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Evaluates every rule against `registry` at `now`.
    pub fn evaluate(&mut self, registry: &Registry, now: Instant) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for rule in &self.rules {
            let value = rule.value(registry);
            let state = self.state.entry(rule.name.clone()).or_insert(RuleState::Ok);
            let Some(v) = value else {
                // No data: a pending alert does not fire; a firing one stays.
                if let RuleState::Pending(_) = state {
                    *state = RuleState::Ok;
                }
                continue;
            };
            *state = match *state {
                RuleState::Ok | RuleState::Pending(_) if !rule.breached(v) => RuleState::Ok,
                RuleState::Ok | RuleState::Pending(_) => {
                    // Breached: pending since the first breach, firing once
                    // it has held for the rule's duration (at once for zero).
                    let since = match *state {
                        RuleState::Pending(since) => since,
                        _ => now,
                    };
                    if now - since >= rule.for_duration {
                        events.push(AlertEvent::Fired {
                            rule: rule.name.clone(),
                            severity: rule.severity,
                            value: v,
                        });
                        RuleState::Firing
                    } else {
                        RuleState::Pending(since)
                    }
                }
                RuleState::Firing => {
                    if rule.recovered(v) {
                        events.push(AlertEvent::Resolved {
                            rule: rule.name.clone(),
                            value: v,
                        });
                        RuleState::Ok
                    } else {
                        RuleState::Firing
                    }
                }
            };
        }
        events
    }
}
