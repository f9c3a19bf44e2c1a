//! PIN credentials: PHC strings from a memory-hard KDF, keyed by a pepper.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{AuthError, Pin};

/// KDF and cost of new credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KdfParams {
    /// Argon2id (RFC 9106), the default.
    Argon2id {
        /// Memory in KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// PBKDF2-HMAC-SHA256, for hardware that cannot spare the memory.
    Pbkdf2Sha256 {
        /// Iterations (OWASP: 600,000).
        rounds: u32,
    },
}

impl KdfParams {
    /// OWASP's current minimum for Argon2id: m = 19 MiB, t = 2, p = 1.
    pub const DEFAULT: KdfParams = KdfParams::Argon2id {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    /// OWASP's recommendation for PBKDF2-HMAC-SHA256.
    pub const PBKDF2_DEFAULT: KdfParams = KdfParams::Pbkdf2Sha256 { rounds: 600_000 };
    /// Cheap parameters for tests only: never for real credentials.
    pub const INSECURE_TEST: KdfParams = KdfParams::Argon2id {
        m_kib: 8,
        t: 1,
        p: 1,
    };
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams::DEFAULT
    }
}

/// A secret kept apart from the credentials (OS keystore, secure element,
/// environment), mixed into every PIN with HMAC-SHA256 before the KDF.
/// Zeroised on drop.
pub struct Pepper(Zeroizing<Vec<u8>>);

impl Pepper {
    /// The fewest secret bytes a pepper takes (128 bits).
    pub const MIN_LEN: usize = 16;

    /// A pepper from secret bytes, at least [`Pepper::MIN_LEN`] of them
    /// (from the platform's keystore); shorter is [`AuthError::WeakPepper`].
    pub fn new(secret: &[u8]) -> Result<Self, AuthError> {
        if secret.len() < Self::MIN_LEN {
            return Err(AuthError::WeakPepper {
                len: secret.len(),
                min: Self::MIN_LEN,
            });
        }
        Ok(Pepper(Zeroizing::new(secret.to_vec())))
    }
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(****)")
    }
}

/// A stored PIN credential: a PHC string (`$argon2id$…`, `$pbkdf2-sha256$…`)
/// or the design study's legacy unsalted hex SHA-256.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Credential(String);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The algorithm and parameters are not secret; the hash is.
        let head: String = self.0.split('$').take(4).collect::<Vec<_>>().join("$");
        write!(f, "Credential({head}$…)")
    }
}

impl TryFrom<String> for Credential {
    type Error = AuthError;
    fn try_from(s: String) -> Result<Self, AuthError> {
        Credential::parse(&s)
    }
}

impl From<Credential> for String {
    fn from(c: Credential) -> String {
        c.0
    }
}

impl Credential {
    /// Parses a stored credential; anything but a well-formed Argon2id or
    /// PBKDF2-SHA256 PHC string or 64 hex digits is an error.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Credential(s.to_ascii_lowercase()));
        }
        let hash =
            PasswordHash::new(s).map_err(|e| AuthError::MalformedCredential(e.to_string()))?;
        match hash.algorithm.as_str() {
            "argon2id" | "pbkdf2-sha256" if hash.hash.is_some() && hash.salt.is_some() => {
                Ok(Credential(s.to_owned()))
            }
            other => Err(AuthError::MalformedCredential(format!(
                "unsupported algorithm {other}"
            ))),
        }
    }

    /// The credential as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the study's legacy unsalted SHA-256.
    pub fn is_legacy(&self) -> bool {
        !self.0.starts_with('$')
    }

    /// The study's legacy format for a PIN (for migration tests and tools).
    pub fn legacy_sha256(pin: &Pin) -> Self {
        Credential(hex(&Sha256::digest(pin.as_bytes())))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The PIN matches. `upgrade`, when present, is a fresh credential at the
    /// current parameters that the caller should store (legacy format, or
    /// weaker parameters than configured).
    Match {
        /// Replacement credential to persist.
        upgrade: Option<Credential>,
    },
    /// The PIN does not match.
    Mismatch,
}

/// Makes and checks credentials with configured parameters and pepper.
pub struct PinHasher {
    params: KdfParams,
    pepper: Option<Pepper>,
}

impl std::fmt::Debug for PinHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinHasher")
            .field("params", &self.params)
            .field("pepper", &self.pepper.is_some())
            .finish()
    }
}

impl PinHasher {
    /// A hasher. Without a pepper a stolen credential file can be attacked
    /// offline at the KDF's cost per guess (see the crate docs).
    pub fn new(params: KdfParams, pepper: Option<Pepper>) -> Self {
        PinHasher { params, pepper }
    }

    /// The parameters of new credentials.
    pub fn params(&self) -> KdfParams {
        self.params
    }

    fn kdf_input(&self, pin: &Pin) -> Zeroizing<Vec<u8>> {
        match &self.pepper {
            Some(p) => {
                // HMAC accepts keys of any length: this cannot fail.
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&p.0)
                    .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
                mac.update(pin.as_bytes());
                Zeroizing::new(mac.finalize().into_bytes().to_vec())
            }
            None => Zeroizing::new(pin.as_bytes().to_vec()),
        }
    }

    /// A new credential for `pin` with a random salt from `rng`.
    pub fn hash(&self, pin: &Pin, rng: &mut impl CryptoRngCore) -> Result<Credential, AuthError> {
        let salt = SaltString::generate(rng);
        let input = self.kdf_input(pin);
        let kdf = |e: argon2::password_hash::Error| AuthError::Kdf(e.to_string());
        let s = match self.params {
            KdfParams::Argon2id { m_kib, t, p } => {
                let params =
                    Params::new(m_kib, t, p, None).map_err(|e| AuthError::Kdf(e.to_string()))?;
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password(&input, &salt)
                    .map_err(kdf)?
                    .to_string()
            }
            KdfParams::Pbkdf2Sha256 { rounds } => pbkdf2::Pbkdf2
                .hash_password_customized(
                    &input,
                    Some(pbkdf2::Algorithm::Pbkdf2Sha256.ident()),
                    None,
                    pbkdf2::Params {
                        rounds,
                        output_length: 32,
                    },
                    &salt,
                )
                .map_err(kdf)?
                .to_string(),
        };
        Ok(Credential(s))
    }

    /// Checks `pin` against `credential`, in constant time for the
    /// comparison; on a match, offers an upgraded credential when the stored
    /// one is legacy or weaker than the configured parameters.
    pub fn verify(
        &self,
        credential: &Credential,
        pin: &Pin,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Verification, AuthError> {
        let matched = if credential.is_legacy() {
            let stored = decode_hex(credential.as_str())?;
            let ours = Sha256::digest(pin.as_bytes());
            bool::from(ours.as_slice().ct_eq(&stored))
        } else {
            let hash = PasswordHash::new(credential.as_str())
                .map_err(|e| AuthError::MalformedCredential(e.to_string()))?;
            let input = self.kdf_input(pin);
            // Both verifiers compare digests in constant time.
            let result = match hash.algorithm.as_str() {
                "argon2id" => Argon2::default().verify_password(&input, &hash),
                "pbkdf2-sha256" => pbkdf2::Pbkdf2.verify_password(&input, &hash),
                other => {
                    return Err(AuthError::MalformedCredential(format!(
                        "unsupported algorithm {other}"
                    )))
                }
            };
            match result {
                Ok(()) => true,
                Err(argon2::password_hash::Error::Password) => false,
                Err(e) => return Err(AuthError::MalformedCredential(e.to_string())),
            }
        };
        if !matched {
            return Ok(Verification::Mismatch);
        }
        let upgrade = if self.is_current(credential) {
            None
        } else {
            Some(self.hash(pin, rng)?)
        };
        Ok(Verification::Match { upgrade })
    }

    /// Whether a credential already uses the configured KDF and parameters.
    fn is_current(&self, credential: &Credential) -> bool {
        let Ok(hash) = PasswordHash::new(credential.as_str()) else {
            return false;
        };
        let param = |name: &str| hash.params.get_decimal(name);
        match self.params {
            KdfParams::Argon2id { m_kib, t, p } => {
                hash.algorithm.as_str() == "argon2id"
                    && param("m") == Some(m_kib)
                    && param("t") == Some(t)
                    && param("p") == Some(p)
            }
            KdfParams::Pbkdf2Sha256 { rounds } => {
                hash.algorithm.as_str() == "pbkdf2-sha256" && param("i") == Some(rounds)
            }
        }
    }
}

fn decode_hex(s: &str) -> Result<[u8; 32], AuthError> {
    let mut out = [0u8; 32];
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return Err(AuthError::MalformedCredential(
            "legacy hash is not 64 hex digits".into(),
        ));
    }
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hexval = |c: u8| (c as char).to_digit(16);
        match (hexval(pair[0]), hexval(pair[1])) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => {
                return Err(AuthError::MalformedCredential(
                    "legacy hash is not hex".into(),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PinPolicy;
    use proptest::prelude::*;
    use rand_core::SeedableRng;

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(9)
    }

    fn pin(s: &str) -> Pin {
        PinPolicy::default().parse(s).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn a_credential_verifies_its_pin_and_no_other(a in "[0-9]{4,8}", b in "[0-9]{4,8}", peppered in any::<bool>()) {
            let h = PinHasher::new(KdfParams::INSECURE_TEST, peppered.then(|| Pepper::new(b"fleet secret 0123").unwrap()));
            let c = h.hash(&pin(&a), &mut rng()).unwrap();
            prop_assert_eq!(h.verify(&c, &pin(&a), &mut rng()).unwrap(), Verification::Match { upgrade: None });
            if a != b {
                prop_assert_eq!(h.verify(&c, &pin(&b), &mut rng()).unwrap(), Verification::Mismatch);
            }
            let legacy = Credential::legacy_sha256(&pin(&a));
            let upgraded = matches!(h.verify(&legacy, &pin(&a), &mut rng()).unwrap(), Verification::Match { upgrade: Some(_) });
            prop_assert!(upgraded);
            if a != b {
                prop_assert_eq!(h.verify(&legacy, &pin(&b), &mut rng()).unwrap(), Verification::Mismatch);
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,120}") {
            if let Ok(c) = Credential::parse(&s) {
                let h = PinHasher::new(KdfParams::INSECURE_TEST, None);
                let _ = h.verify(&c, &pin("2580"), &mut rng());
            }
        }
    }

    #[test]
    fn legacy_hash_of_the_study_migrates_to_argon2id() {
        // sha256("1234"), as the study stores it.
        let legacy =
            Credential::parse("03ac674216f3e15c761ee1a5e255f067953623c8b388b4459e13f978d7c846f4")
                .unwrap();
        assert!(legacy.is_legacy());
        let h = PinHasher::new(
            KdfParams::INSECURE_TEST,
            Some(Pepper::new(b"another pepper 42").unwrap()),
        );
        let Verification::Match { upgrade: Some(new) } =
            h.verify(&legacy, &pin("1234"), &mut rng()).unwrap()
        else {
            panic!("legacy PIN must verify and upgrade")
        };
        assert!(new.as_str().starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
        assert_eq!(
            h.verify(&new, &pin("1234"), &mut rng()).unwrap(),
            Verification::Match { upgrade: None }
        );
        assert_eq!(
            h.verify(&legacy, &pin("1235"), &mut rng()).unwrap(),
            Verification::Mismatch
        );
    }

    #[test]
    fn pepper_is_required_to_verify() {
        let with = PinHasher::new(
            KdfParams::INSECURE_TEST,
            Some(Pepper::new(b"device secret 0123").unwrap()),
        );
        let without = PinHasher::new(KdfParams::INSECURE_TEST, None);
        let c = with.hash(&pin("2580"), &mut rng()).unwrap();
        assert_eq!(
            without.verify(&c, &pin("2580"), &mut rng()).unwrap(),
            Verification::Mismatch
        );
    }

    #[test]
    fn raised_parameters_trigger_an_upgrade_and_pbkdf2_works() {
        let old = PinHasher::new(KdfParams::Pbkdf2Sha256 { rounds: 1000 }, None);
        let c = old.hash(&pin("2580"), &mut rng()).unwrap();
        assert!(c.as_str().starts_with("$pbkdf2-sha256$i=1000"));
        assert_eq!(
            old.verify(&c, &pin("2580"), &mut rng()).unwrap(),
            Verification::Match { upgrade: None }
        );
        let new = PinHasher::new(KdfParams::INSECURE_TEST, None);
        assert!(matches!(
            new.verify(&c, &pin("2580"), &mut rng()).unwrap(),
            Verification::Match { upgrade: Some(_) }
        ));
    }

    #[test]
    fn malformed_credentials_are_errors() {
        for bad in [
            "",
            "$argon2id$",
            "$md5$abc$def",
            "zz",
            &"g".repeat(64),
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdA",
        ] {
            assert!(
                matches!(
                    Credential::parse(bad),
                    Err(AuthError::MalformedCredential(_))
                ),
                "{bad}"
            );
        }
    }
}
