//! PINs and the PIN policy.

use zeroize::Zeroizing;

use crate::AuthError;

/// A PIN that passed the policy. Its buffer is zeroised on drop.
pub struct Pin(Zeroizing<Vec<u8>>);

impl Pin {
    /// The PIN's digits as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(****)")
    }
}

/// Rules a PIN must meet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PinPolicy {
    /// Fewest digits (default 4).
    pub min_len: usize,
    /// Most digits (default 12).
    pub max_len: usize,
    /// Refuse the most common PINs (repeated digits, runs, 1234-likes) at
    /// enrolment (default true).
    pub reject_common: bool,
}

impl Default for PinPolicy {
    fn default() -> Self {
        PinPolicy {
            min_len: 4,
            max_len: 12,
            reject_common: true,
        }
    }
}

/// PINs that top every published frequency list.
const COMMON: &[&str] = &[
    "1234", "1111", "0000", "1212", "7777", "1004", "2000", "4444", "2222", "6969", "9999", "3333",
    "5555", "6666", "1122", "1313", "8888", "4321", "2001", "1010", "123456", "654321", "111111",
    "000000", "121212", "112233", "123123", "159753", "147258",
];

impl PinPolicy {
    /// Checks the shape of a PIN typed at login (digits, length). Common
    /// PINs are accepted here: they may be legacy credentials.
    pub fn parse(&self, pin: &str) -> Result<Pin, AuthError> {
        let n = pin.len();
        if n < self.min_len {
            return Err(AuthError::PinPolicy("too short"));
        }
        if n > self.max_len {
            return Err(AuthError::PinPolicy("too long"));
        }
        if !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::PinPolicy("digits only"));
        }
        Ok(Pin(Zeroizing::new(pin.as_bytes().to_vec())))
    }

    /// Checks a PIN chosen at enrolment: shape, and not a common PIN.
    pub fn enrol(&self, pin: &str) -> Result<Pin, AuthError> {
        let p = self.parse(pin)?;
        if self.reject_common {
            let b = p.as_bytes();
            let all_same = b.iter().all(|&d| d == b[0]);
            let ascending = b.windows(2).all(|w| w[1] == w[0] + 1);
            let descending = b.windows(2).all(|w| w[0] == w[1] + 1);
            if all_same || ascending || descending || COMMON.contains(&pin) {
                return Err(AuthError::PinPolicy("too common"));
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let p = PinPolicy::default();
        assert!(p.parse("123").is_err());
        assert!(p.parse("1234567890123").is_err());
        assert!(p.parse("12a4").is_err());
        assert!(p.parse("1234").is_ok());
        for common in ["1234", "0000", "1111", "9876", "123456", "6969"] {
            assert_eq!(
                p.enrol(common).unwrap_err(),
                AuthError::PinPolicy("too common")
            );
        }
        assert!(p.enrol("2580").is_ok());
        assert_eq!(format!("{:?}", p.parse("2580").unwrap()), "Pin(****)");
    }
}
