//! pdc's criterion benches live in `benches/`; this library is empty on
//! purpose (the package exists to hold them and their peer dependencies).
//!
//! ```text
//! cargo bench -p pdc-benches            # all groups
//! cargo bench -p pdc-benches -- codec_  # the codec groups
//! ```
//!
//! ```
//! // Nothing to call: see benches/*.rs.
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
