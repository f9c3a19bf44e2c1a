//! Offline login: policy, lockout, verification, sessions, in one place.

use std::collections::HashMap;
use std::time::Duration;

use pdc_clock::{Clock, Instant};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{
    AuthError, AuthStore, Credential, LockKey, LockoutPolicy, LockoutState, PinHasher, PinPolicy,
    Session, UserRecord, Verification,
};

/// Login configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthConfig {
    /// PIN shape rules.
    pub pin_policy: PinPolicy,
    /// Delay schedule after a user's failures.
    pub lockout: LockoutPolicy,
    /// Delay schedule after a terminal's failures, any user
    /// ([`LockoutPolicy::terminal_default`]).
    #[serde(default = "LockoutPolicy::terminal_default")]
    pub terminal_lockout: LockoutPolicy,
    /// Offline session lifetime (default 7 days, the study's session_data).
    pub session_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            pin_policy: PinPolicy::default(),
            lockout: LockoutPolicy::default(),
            terminal_lockout: LockoutPolicy::terminal_default(),
            session_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// A session token: 256 random bits, hex. Only its hash is stored.
/// Zeroised on drop.
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    /// The token as the caller keeps it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A token the caller kept.
    pub fn from_string(s: String) -> Self {
        SessionToken(Zeroizing::new(s))
    }

    fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(****)")
    }
}

/// A successful login.
#[derive(Debug)]
pub struct Login {
    /// The bearer token of the new session.
    pub token: SessionToken,
    /// The session.
    pub session: Session,
    /// Whether the user's credential was upgraded (legacy or old parameters)
    /// and stored.
    pub credential_upgraded: bool,
}

/// Offline PIN login over an [`AuthStore`] and a [`Clock`].
pub struct Authenticator<S: AuthStore, C: Clock> {
    store: S,
    clock: C,
    hasher: PinHasher,
    config: AuthConfig,
    /// Verified instead of a missing user's credential, so that an unknown
    /// user costs the same KDF run as a known one.
    dummy: Credential,
    /// Monotonic instant of each key's last failure in this process: a
    /// clock set forward does not shorten a lock while the process runs.
    mono: HashMap<LockKey, Instant>,
}

impl<S: AuthStore, C: Clock> std::fmt::Debug for Authenticator<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hasher", &self.hasher)
            .finish_non_exhaustive()
    }
}

impl<S: AuthStore, C: Clock> Authenticator<S, C> {
    /// An authenticator; computes one dummy credential with `rng` (one KDF
    /// run at the configured cost).
    pub fn new(
        store: S,
        clock: C,
        hasher: PinHasher,
        config: AuthConfig,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, AuthError> {
        let mut dummy_pin = [0u8; 12];
        rng.fill_bytes(&mut dummy_pin);
        let digits: String = dummy_pin
            .iter()
            .map(|b| char::from(b'0' + b % 10))
            .collect();
        let pin = PinPolicy {
            min_len: 1,
            max_len: 64,
            reject_common: false,
        }
        .parse(&digits)?;
        let dummy = hasher.hash(&pin, rng)?;
        Ok(Authenticator {
            store,
            clock,
            hasher,
            config,
            dummy,
            mono: HashMap::new(),
        })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (to load users from the users dataset).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Enrols or replaces a user's PIN (at the server or at enrolment):
    /// checks the enrolment policy and stores the new credential.
    pub fn enrol(
        &mut self,
        user_id: &str,
        role: &str,
        pin: &str,
        rng: &mut impl CryptoRngCore,
    ) -> Result<UserRecord, AuthError> {
        let pin = self.config.pin_policy.enrol(pin)?;
        let user = UserRecord {
            user_id: user_id.into(),
            role: role.into(),
            credential: self.hasher.hash(&pin, rng)?,
            disabled: false,
        };
        self.store.put_user(&user)?;
        Ok(user)
    }

    /// The lock state of `key` now: `Ok` if a login may be tried.
    fn policy(&self, key: &LockKey) -> &LockoutPolicy {
        match key {
            LockKey::User(_) => &self.config.lockout,
            LockKey::Terminal(_) => &self.config.terminal_lockout,
        }
    }

    fn check(&mut self, key: &LockKey) -> Result<(), AuthError> {
        let Some(mut st) = self.store.lockout(key)? else {
            return Ok(());
        };
        if st.failures >= self.policy(key).hard_limit {
            return Err(AuthError::LockedUntilOnline);
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let full = ms(self.policy(key).delay_after(st.failures));
        // The lock is served on the monotonic clock, only while observed:
        // from this process's last observation of the key (its failure, or
        // its first check after a start) to now. The wall clock is not read
        // for it, so neither a jump forward nor a restart shortens it, and a
        // jump back cannot lengthen it past the policy.
        let mut remaining = st.remaining_ms.unwrap_or(full).min(full);
        let now = self.clock.now();
        if let Some(&seen) = self.mono.get(key) {
            remaining = remaining.saturating_sub(ms(now.saturating_duration_since(seen)));
        }
        self.mono.insert(key.clone(), now);
        let wall = self.clock.wall_ms();
        if st.remaining_ms != Some(remaining) || wall > st.last_seen_ms {
            st.remaining_ms = Some(remaining);
            st.last_seen_ms = st.last_seen_ms.max(wall);
            self.store.put_lockout(key, &st)?;
        }
        if remaining > 0 {
            return Err(AuthError::Locked {
                until_ms: wall.saturating_add(remaining),
            });
        }
        Ok(())
    }

    fn record_failure(&mut self, key: &LockKey) -> Result<u32, AuthError> {
        let mut st = self.store.lockout(key)?.unwrap_or_default();
        let wall = self.clock.wall_ms().max(st.last_seen_ms);
        st.failures = st.failures.saturating_add(1);
        st.last_failure_ms = wall;
        st.last_seen_ms = wall;
        st.remaining_ms = Some(
            u64::try_from(self.policy(key).delay_after(st.failures).as_millis())
                .unwrap_or(u64::MAX),
        );
        self.store.put_lockout(key, &st)?;
        self.mono.insert(key.clone(), self.clock.now());
        Ok(st.failures)
    }

    fn clear(&mut self, key: &LockKey) -> Result<(), AuthError> {
        self.mono.remove(key);
        self.store.clear_lockout(key)
    }

    /// Offline login. Checks the PIN's shape, the user's and the terminal's
    /// locks, verifies (against a dummy credential for an unknown user, so
    /// both take the same path), counts failures, upgrades a legacy or weak
    /// credential on success, and opens a session.
    pub fn login(
        &mut self,
        user_id: &str,
        terminal_id: &str,
        pin: &str,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Login, AuthError> {
        let pin = self.config.pin_policy.parse(pin)?;
        let user_key = LockKey::User(user_id.into());
        let terminal_key = LockKey::Terminal(terminal_id.into());
        self.check(&user_key)?;
        self.check(&terminal_key)?;
        let user = self.store.user(user_id)?;
        let credential = user.as_ref().map_or(&self.dummy, |u| &u.credential);
        let verification = self.hasher.verify(credential, &pin, rng)?;
        let (user, upgrade) = match (user, verification) {
            (Some(user), Verification::Match { upgrade }) => (user, upgrade),
            (user, _) => {
                let failures = self.record_failure(&user_key)?;
                self.record_failure(&terminal_key)?;
                return Err(match user {
                    None => AuthError::UnknownUser,
                    Some(_) => AuthError::WrongPin {
                        attempts_before_delay: self.config.lockout.attempts_before_delay(failures),
                    },
                });
            }
        };
        if user.disabled {
            return Err(AuthError::Disabled);
        }
        self.clear(&user_key)?;
        self.clear(&terminal_key)?;
        let credential_upgraded = upgrade.is_some();
        if let Some(credential) = upgrade {
            self.store.put_user(&UserRecord {
                credential,
                ..user.clone()
            })?;
        }
        let mut raw = [0u8; 32];
        rng.fill_bytes(&mut raw);
        let token = SessionToken(Zeroizing::new(
            raw.iter().map(|b| format!("{b:02x}")).collect(),
        ));
        let now = self.clock.wall_ms();
        let session = Session {
            user_id: user.user_id.clone(),
            terminal_id: terminal_id.into(),
            role: user.role.clone(),
            issued_at_ms: now,
            expires_at_ms: now.saturating_add(ttl_ms(self.config.session_ttl)),
        };
        self.store.put_session(&token.hash(), &session)?;
        Ok(Login {
            token,
            session,
            credential_upgraded,
        })
    }

    /// The session of `token` if it is live and its user is still enabled;
    /// an expired or disabled one is removed.
    pub fn validate(&mut self, token: &SessionToken) -> Result<Session, AuthError> {
        let h = token.hash();
        let session = self.store.session(&h)?.ok_or(AuthError::UnknownSession)?;
        if self.clock.wall_ms() >= session.expires_at_ms {
            self.store.remove_session(&h)?;
            return Err(AuthError::SessionExpired {
                expired_at_ms: session.expires_at_ms,
            });
        }
        match self.store.user(&session.user_id)? {
            Some(u) if !u.disabled => Ok(session),
            _ => {
                self.store.remove_session(&h)?;
                Err(AuthError::Disabled)
            }
        }
    }

    /// Extends a live session by the configured lifetime from now.
    pub fn refresh(&mut self, token: &SessionToken) -> Result<Session, AuthError> {
        let mut session = self.validate(token)?;
        session.expires_at_ms = self
            .clock
            .wall_ms()
            .saturating_add(ttl_ms(self.config.session_ttl));
        self.store.put_session(&token.hash(), &session)?;
        Ok(session)
    }

    /// Ends a session (logout).
    pub fn revoke(&mut self, token: &SessionToken) -> Result<(), AuthError> {
        self.store.remove_session(&token.hash())
    }

    /// Clears a user's lock: after an online login or an administrator's
    /// decision.
    pub fn unlock_user(&mut self, user_id: &str) -> Result<(), AuthError> {
        self.clear(&LockKey::User(user_id.into()))
    }

    /// Clears a terminal's lock.
    pub fn unlock_terminal(&mut self, terminal_id: &str) -> Result<(), AuthError> {
        self.clear(&LockKey::Terminal(terminal_id.into()))
    }

    /// The persisted lockout state of a key (for display and tests).
    pub fn lockout_state(&self, key: &LockKey) -> Result<Option<LockoutState>, AuthError> {
        self.store.lockout(key)
    }

    /// Gives the store back (e.g. to reopen after a simulated restart).
    pub fn into_store(self) -> S {
        self.store
    }
}

fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
