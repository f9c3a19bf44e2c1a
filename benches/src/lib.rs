//! pdc's criterion benches live in `benches/`; this library is empty on
//! purpose (the package exists to hold them and their peer dependencies).
//!
//! ```text
//! cargo bench -p pdc-benches            # all groups
//! cargo bench -p pdc-benches -- codec_  # the codec groups
//! ```
//!
//! ```
//! // Nothing to call here: the benches are in benches/*.rs.
//! let _ = 0;
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
