//! Named metrics with a small label set, recorded by the other crates
//! without knowing the exporter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{MonitorError, Sketch};

/// A metric's identity: a name and sorted labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MetricKey {
    /// Metric name, valid in the Prometheus format (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    pub name: String,
    /// Label pairs, sorted by name.
    pub labels: Vec<(String, String)>,
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    matches!(chars.next(), Some(c) if ok_first(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

impl MetricKey {
    /// A key; names are checked against the Prometheus grammar and labels
    /// sorted, so that the same series always has the same key.
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Result<Self, MonitorError> {
        if !valid_name(name, true) {
            return Err(MonitorError::InvalidName(name.to_owned()));
        }
        let mut l: Vec<(String, String)> = Vec::with_capacity(labels.len());
        for (k, v) in labels {
            if !valid_name(k, false) || k.starts_with("__") {
                return Err(MonitorError::InvalidName((*k).to_owned()));
            }
            l.push(((*k).to_owned(), (*v).to_owned()));
        }
        l.sort();
        l.dedup_by(|a, b| a.0 == b.0);
        Ok(MetricKey {
            name: name.to_owned(),
            labels: l,
        })
    }
}

/// All metrics of one process or terminal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Monotonic counters.
    pub counters: BTreeMap<MetricKey, u64>,
    /// Last-value gauges.
    pub gauges: BTreeMap<MetricKey, f64>,
    /// Distributions.
    pub histograms: BTreeMap<MetricKey, Sketch>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds `n` to a counter.
    pub fn count(&mut self, key: &MetricKey, n: u64) {
        match self.counters.get_mut(key) {
            Some(c) => *c = c.saturating_add(n),
            None => {
                self.counters.insert(key.clone(), n);
            }
        }
    }

    /// Sets a gauge.
    pub fn gauge(&mut self, key: &MetricKey, v: f64) {
        match self.gauges.get_mut(key) {
            Some(g) => *g = v,
            None => {
                self.gauges.insert(key.clone(), v);
            }
        }
    }

    /// Records a value into a histogram.
    pub fn observe(&mut self, key: &MetricKey, v: f64) {
        match self.histograms.get_mut(key) {
            Some(h) => h.record(v),
            None => {
                let mut h = Sketch::default();
                h.record(v);
                self.histograms.insert(key.clone(), h);
            }
        }
    }

    /// A counter's value (0 if never counted).
    pub fn counter(&self, key: &MetricKey) -> u64 {
        self.counters.get(key).copied().unwrap_or(0)
    }

    /// Merges another registry: counters add, histograms merge exactly,
    /// gauges take the other's value (the newer report wins).
    pub fn merge(&mut self, other: &Registry) -> Result<(), MonitorError> {
        for (k, v) in &other.counters {
            self.count(k, *v);
        }
        for (k, v) in &other.gauges {
            self.gauge(k, *v);
        }
        for (k, h) in &other.histograms {
            h.validate()?;
            match self.histograms.get_mut(k) {
                Some(mine) => mine.merge(h)?,
                None => {
                    self.histograms.insert(k.clone(), h.clone());
                }
            }
        }
        Ok(())
    }
}
