//! One test per fixed bug of pdc-auth, named after the bug.
#![allow(clippy::unwrap_used)]

use pdc_auth::{AuthError, Pepper};

/// Issue 16, defect 5 (pepper): `Pepper::new` took an empty or one-byte
/// secret, a pepper that protects nothing. Fewer than 16 bytes are refused.
#[test]
fn pepper_new_accepts_an_empty_or_1_byte_pepper() {
    for short in [&b""[..], b"k", b"fifteen bytes!!"] {
        assert_eq!(
            Pepper::new(short).unwrap_err(),
            AuthError::WeakPepper {
                len: short.len(),
                min: 16
            }
        );
    }
    assert!(Pepper::new(b"sixteen bytes!!!").is_ok());
}
