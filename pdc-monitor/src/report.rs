//! Terminal reports (the study's `getMetricsReport`) and their merge into a
//! fleet report. Reports travel as pdc-codec frames.

use std::collections::BTreeMap;

use pdc_codec::{Codec, Record, RecordKind};
use serde::{Deserialize, Serialize};

use crate::{MonitorError, Registry};

/// One terminal's metrics at a point in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminalReport {
    /// The terminal.
    pub terminal_id: pdc_codec::TerminalId,
    /// The store it belongs to.
    pub store_id: String,
    /// Wall time of the report.
    pub at_ms: u64,
    /// Its metrics (counters since start, gauges now, histograms since the
    /// last report).
    pub registry: Registry,
    /// Milliseconds spent in each connection state, by state name.
    pub connection_ms: BTreeMap<String, u64>,
    /// Connection mode switches.
    pub mode_switches: u64,
}

impl Record for TerminalReport {
    const KIND: RecordKind = RecordKind(32);
    const SCHEMA: u8 = 1;
}

impl TerminalReport {
    /// Encodes the report for `POST /v1/metrics`.
    pub fn encode(&self, codec: &Codec) -> Result<Vec<u8>, MonitorError> {
        Ok(codec.encode(self)?)
    }

    /// Decodes and checks a report from a terminal.
    pub fn decode(codec: &Codec, bytes: &[u8]) -> Result<Self, MonitorError> {
        let r: TerminalReport = codec.decode(bytes)?;
        for h in r.registry.histograms.values() {
            h.validate()?;
        }
        Ok(r)
    }
}

/// Many terminals' reports merged: counters summed, histograms merged
/// exactly, gauges and connection times summed per fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// Merged metrics.
    pub registry: Registry,
    /// Reports merged.
    pub terminals: u64,
    /// Total milliseconds in each connection state across terminals.
    pub connection_ms: BTreeMap<String, u64>,
    /// Total mode switches.
    pub mode_switches: u64,
    /// Latest report time seen.
    pub last_report_ms: u64,
}

impl FleetReport {
    /// An empty fleet report.
    pub fn new() -> Self {
        FleetReport::default()
    }

    /// Merges one terminal's report. Invalid histograms are refused and
    /// nothing of the report is merged.
    pub fn merge(&mut self, report: &TerminalReport) -> Result<(), MonitorError> {
        for h in report.registry.histograms.values() {
            h.validate()?;
        }
        self.registry.merge(&report.registry)?;
        for (state, ms) in &report.connection_ms {
            *self.connection_ms.entry(state.clone()).or_insert(0) += ms;
        }
        self.terminals += 1;
        self.mode_switches += report.mode_switches;
        self.last_report_ms = self.last_report_ms.max(report.at_ms);
        Ok(())
    }
}
