/// Why a login, a credential or a session was refused.
///
/// Each variant carries what a UI needs to tell the cashier; none reveals
/// anything a stolen device file would not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The PIN does not match. `attempts_before_delay` more failures are
    /// allowed before a lockout delay starts (0: the next failure locks).
    #[error("wrong PIN ({attempts_before_delay} attempts before a lockout delay)")]
    WrongPin {
        /// Failures left before the first delay.
        attempts_before_delay: u32,
    },
    /// Too many failures: try again at this wall time (ms since the epoch).
    #[error("locked after repeated failures until {until_ms} ms since the epoch")]
    Locked {
        /// When the lock ends.
        until_ms: u64,
    },
    /// The hard failure limit was reached: only an online login or an
    /// administrator can unlock.
    #[error("locked until an online login or an administrator unlocks")]
    LockedUntilOnline,
    /// No such user in the users dataset.
    #[error("unknown user")]
    UnknownUser,
    /// The user is disabled.
    #[error("user is disabled")]
    Disabled,
    /// The PIN does not meet the policy (length, digits, too common).
    #[error("PIN refused by policy: {0}")]
    PinPolicy(&'static str),
    /// A pepper shorter than [`crate::Pepper::MIN_LEN`] bytes: it would add
    /// nothing an attacker with the credential file could not guess.
    #[error("a pepper needs at least {min} secret bytes, got {len}")]
    WeakPepper {
        /// Bytes given.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// A stored credential is not a valid PHC string or legacy hash.
    #[error("malformed credential: {0}")]
    MalformedCredential(String),
    /// The KDF could not run with these parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// No session with this token.
    #[error("unknown or revoked session")]
    UnknownSession,
    /// The session's offline lifetime is over.
    #[error("session expired at {expired_at_ms} ms since the epoch")]
    SessionExpired {
        /// When it expired.
        expired_at_ms: u64,
    },
    /// The auth store failed; nothing was decided.
    #[error("auth store: {0}")]
    Storage(String),
}
