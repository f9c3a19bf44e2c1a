//! Per-dataset cache policies: the design study's CACHE_POLICIES, typed and
//! serde-loadable.

use serde::{Deserialize, Serialize};

/// How a dataset's entries are refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refresh {
    /// An expired entry is a miss: load before answering.
    OnExpiry,
    /// A stale entry within `grace_ms` is answered at once and one refresh
    /// is started (single-flight).
    StaleWhileRevalidate {
        /// How long past its TTL a stale entry is served while refreshing.
        grace_ms: u64,
    },
}

/// The policy of one dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetPolicy {
    /// Dataset name (`user_data`, `product_data`, ...).
    pub dataset: String,
    /// Time to live, ms.
    pub ttl_ms: u64,
    /// Tiers the dataset lives in, by name, top first (`memory`, `l2`, `l3`).
    pub tiers: Vec<String>,
    /// Events that invalidate the whole dataset (`user_logout`, `price_update`).
    pub invalidate_on: Vec<String>,
    /// Refresh strategy.
    pub refresh: Refresh,
    /// How long past its TTL a stale entry may still be served, flagged
    /// stale, when the loader fails (offline), ms.
    pub offline_ttl_ms: u64,
}

const HOUR: u64 = 3_600_000;
const DAY: u64 = 24 * HOUR;

impl DatasetPolicy {
    /// The study's four datasets.
    pub fn defaults() -> Vec<DatasetPolicy> {
        let tiers = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect();
        let events = |e: &[&str]| e.iter().map(|s| (*s).to_owned()).collect();
        vec![
            DatasetPolicy {
                dataset: "user_data".into(),
                ttl_ms: DAY,
                tiers: tiers(&["memory", "l2", "l3"]),
                invalidate_on: events(&["user_logout", "user_update"]),
                refresh: Refresh::OnExpiry,
                offline_ttl_ms: 7 * DAY,
            },
            DatasetPolicy {
                dataset: "session_data".into(),
                ttl_ms: 7 * DAY,
                tiers: tiers(&["memory", "l3"]),
                invalidate_on: events(&["session_end"]),
                refresh: Refresh::OnExpiry,
                offline_ttl_ms: 0,
            },
            DatasetPolicy {
                dataset: "product_data".into(),
                ttl_ms: 2 * DAY,
                tiers: tiers(&["l3"]),
                invalidate_on: events(&["product_update", "price_update"]),
                refresh: Refresh::StaleWhileRevalidate { grace_ms: DAY },
                offline_ttl_ms: 14 * DAY,
            },
            DatasetPolicy {
                dataset: "transaction_data".into(),
                ttl_ms: 30 * DAY,
                tiers: tiers(&["l3"]),
                invalidate_on: events(&["transaction_sync"]),
                refresh: Refresh::OnExpiry,
                offline_ttl_ms: 0,
            },
        ]
    }

    /// How long past its TTL an entry is kept at all.
    pub fn keep_past_ttl_ms(&self) -> u64 {
        let grace = match self.refresh {
            Refresh::StaleWhileRevalidate { grace_ms } => grace_ms,
            Refresh::OnExpiry => 0,
        };
        grace.max(self.offline_ttl_ms)
    }
}
