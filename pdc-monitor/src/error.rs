/// Why a monitor operation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// Sketches with different accuracies cannot be merged exactly.
    #[error("cannot merge a sketch with {theirs} buckets per octave into one with {ours}")]
    IncompatibleSketch {
        /// Ours.
        ours: u16,
        /// Theirs.
        theirs: u16,
    },
    /// A sketch from elsewhere is inconsistent or out of range.
    #[error("invalid sketch: {0}")]
    InvalidSketch(String),
    /// A metric or label name is not valid in the Prometheus format.
    #[error("invalid metric or label name {0:?}")]
    InvalidName(String),
    /// A report could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] pdc_codec::CodecError),
}
