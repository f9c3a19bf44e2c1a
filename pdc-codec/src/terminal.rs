//! The one identity of a terminal: [`TerminalId`].

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::CodecError;

/// A terminal's identity, as the server registers it (`pdc terminal add
/// till-7`), the till is configured with, the protocol carries and the
/// ledger keys sales by: 1 to [`TerminalId::MAX_LEN`] characters of
/// `A-Z a-z 0-9 . _ -`.
///
/// It is the only terminal identity in pdc: records (orders, refunds,
/// analytics events) do not carry one of their own, because the server
/// takes it from the authenticated request, so a record can never name a
/// terminal other than the one that sent it.
///
/// Deserialising checks the rules too (it is a plain string on the wire
/// and in JSON), so a value of this type is always valid.
///
/// ```
/// use pdc_codec::TerminalId;
///
/// let id: TerminalId = "till-7".parse()?;
/// assert_eq!(id.as_str(), "till-7");
/// assert_eq!(id, "till-7");
/// assert!(TerminalId::new("till 7").is_err());
/// assert!(TerminalId::new("").is_err());
/// # Ok::<(), pdc_codec::CodecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TerminalId(String);

impl TerminalId {
    /// The longest terminal id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Checks `id` against the rules and wraps it.
    pub fn new(id: impl Into<String>) -> Result<Self, CodecError> {
        let id = id.into();
        if Self::is_valid(&id) {
            Ok(TerminalId(id))
        } else {
            Err(CodecError::InvalidTerminalId(id))
        }
    }

    /// Whether `id` keeps the rules: 1 to [`TerminalId::MAX_LEN`] bytes of
    /// `A-Z a-z 0-9 . _ -`.
    pub fn is_valid(id: &str) -> bool {
        (1..=Self::MAX_LEN).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for TerminalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TerminalId {
    type Err = CodecError;
    fn from_str(s: &str) -> Result<Self, CodecError> {
        TerminalId::new(s)
    }
}

impl TryFrom<&str> for TerminalId {
    type Error = CodecError;
    fn try_from(s: &str) -> Result<Self, CodecError> {
        TerminalId::new(s)
    }
}

impl TryFrom<String> for TerminalId {
    type Error = CodecError;
    fn try_from(s: String) -> Result<Self, CodecError> {
        TerminalId::new(s)
    }
}

impl From<TerminalId> for String {
    fn from(id: TerminalId) -> String {
        id.0
    }
}

impl AsRef<str> for TerminalId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TerminalId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for TerminalId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<String> for TerminalId {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

impl PartialEq<&str> for TerminalId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<'de> Deserialize<'de> for TerminalId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TerminalId::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rules_hold_at_their_edges() {
        assert!(TerminalId::new("a").is_ok());
        assert!(TerminalId::new("S014-T07.front_1").is_ok());
        assert!(TerminalId::new("x".repeat(64)).is_ok());
        assert!(TerminalId::new("x".repeat(65)).is_err());
        for bad in ["", "till 7", "till/7", "tïll", "till\n"] {
            assert_eq!(
                TerminalId::new(bad),
                Err(CodecError::InvalidTerminalId(bad.into()))
            );
        }
    }

    #[test]
    fn json_and_postcard_see_a_plain_string_and_refuse_a_bad_one() {
        let id = TerminalId::new("till-7").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"till-7\"");
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bytes, postcard::to_allocvec("till-7").unwrap());
        assert_eq!(postcard::from_bytes::<TerminalId>(&bytes).unwrap(), id);
        assert!(serde_json::from_str::<TerminalId>("\"till 7\"").is_err());
        let bad = postcard::to_allocvec("").unwrap();
        assert!(postcard::from_bytes::<TerminalId>(&bad).is_err());
    }

    proptest! {
        /// Model: the rules spelled out on characters.
        #[test]
        fn new_accepts_exactly_what_the_model_accepts(s in "[ -~]{0,70}|[a-z0-9._-]{1,64}") {
            let model = !s.is_empty()
                && s.chars().count() <= 64
                && s.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
            prop_assert_eq!(TerminalId::new(s.clone()).is_ok(), model);
            if model {
                let id = TerminalId::new(s.clone()).unwrap();
                prop_assert_eq!(id.as_str(), s.as_str());
                let json = serde_json::to_string(&id).unwrap();
                prop_assert_eq!(serde_json::from_str::<TerminalId>(&json).unwrap(), id);
            }
        }
    }
}
