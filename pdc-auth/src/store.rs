//! The auth state's storage seam, an in-memory implementation, and the
//! conformance suite every implementation must pass.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AuthError, Credential, LockKey, LockoutState};

/// A user as the users dataset delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// User id.
    pub user_id: String,
    /// Role (cashier, supervisor, ...).
    pub role: String,
    /// PIN credential.
    pub credential: Credential,
    /// Disabled users cannot log in or keep a session.
    pub disabled: bool,
}

/// An offline session as stored (the token itself is never stored: the
/// key is its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Who.
    pub user_id: String,
    /// Where.
    pub terminal_id: String,
    /// With which role.
    pub role: String,
    /// Wall time issued, ms since the epoch.
    pub issued_at_ms: u64,
    /// Wall time it expires.
    pub expires_at_ms: u64,
}

/// Storage of users, lockout counters and sessions. Implementations make
/// each call durable before returning (pdc-store's redb one does).
pub trait AuthStore {
    /// A user by id.
    fn user(&self, user_id: &str) -> Result<Option<UserRecord>, AuthError>;
    /// Adds or replaces a user.
    fn put_user(&mut self, user: &UserRecord) -> Result<(), AuthError>;
    /// A lockout counter.
    fn lockout(&self, key: &LockKey) -> Result<Option<LockoutState>, AuthError>;
    /// Stores a lockout counter.
    fn put_lockout(&mut self, key: &LockKey, state: &LockoutState) -> Result<(), AuthError>;
    /// Removes a lockout counter.
    fn clear_lockout(&mut self, key: &LockKey) -> Result<(), AuthError>;
    /// A session by token hash.
    fn session(&self, token_hash: &[u8; 32]) -> Result<Option<Session>, AuthError>;
    /// Stores a session.
    fn put_session(&mut self, token_hash: &[u8; 32], session: &Session) -> Result<(), AuthError>;
    /// Removes a session; removing an absent one is not an error.
    fn remove_session(&mut self, token_hash: &[u8; 32]) -> Result<(), AuthError>;
}

/// Auth state in memory (tests, and hosts that persist elsewhere).
#[derive(Debug, Clone, Default)]
pub struct MemoryAuthStore {
    users: BTreeMap<String, UserRecord>,
    lockouts: BTreeMap<LockKey, LockoutState>,
    sessions: BTreeMap<[u8; 32], Session>,
}

impl AuthStore for MemoryAuthStore {
    fn user(&self, user_id: &str) -> Result<Option<UserRecord>, AuthError> {
        Ok(self.users.get(user_id).cloned())
    }
    fn put_user(&mut self, user: &UserRecord) -> Result<(), AuthError> {
        self.users.insert(user.user_id.clone(), user.clone());
        Ok(())
    }
    fn lockout(&self, key: &LockKey) -> Result<Option<LockoutState>, AuthError> {
        Ok(self.lockouts.get(key).copied())
    }
    fn put_lockout(&mut self, key: &LockKey, state: &LockoutState) -> Result<(), AuthError> {
        self.lockouts.insert(key.clone(), *state);
        Ok(())
    }
    fn clear_lockout(&mut self, key: &LockKey) -> Result<(), AuthError> {
        self.lockouts.remove(key);
        Ok(())
    }
    fn session(&self, token_hash: &[u8; 32]) -> Result<Option<Session>, AuthError> {
        Ok(self.sessions.get(token_hash).cloned())
    }
    fn put_session(&mut self, token_hash: &[u8; 32], session: &Session) -> Result<(), AuthError> {
        self.sessions.insert(*token_hash, session.clone());
        Ok(())
    }
    fn remove_session(&mut self, token_hash: &[u8; 32]) -> Result<(), AuthError> {
        self.sessions.remove(token_hash);
        Ok(())
    }
}

/// The conformance suite for [`AuthStore`] implementations: `make` gives a
/// fresh, empty store. Panics (it is a test helper) on the first violation.
pub fn conformance<S: AuthStore>(mut make: impl FnMut() -> S) {
    let mut s = make();
    let user = UserRecord {
        user_id: "u1".into(),
        role: "cashier".into(),
        credential: Credential::parse(&"ab".repeat(32)).unwrap_or_else(|e| panic!("{e}")),
        disabled: false,
    };
    let ok = |r: Result<(), AuthError>| r.unwrap_or_else(|e| panic!("store failed: {e}"));
    assert_eq!(s.user("u1").ok(), Some(None), "empty store has no users");
    ok(s.put_user(&user));
    assert_eq!(s.user("u1").ok(), Some(Some(user.clone())));
    let disabled = UserRecord {
        disabled: true,
        ..user.clone()
    };
    ok(s.put_user(&disabled));
    assert_eq!(s.user("u1").ok(), Some(Some(disabled)), "put replaces");

    let ku = LockKey::User("u1".into());
    let kt = LockKey::Terminal("u1".into());
    let st = LockoutState {
        failures: 3,
        last_failure_ms: 10,
        last_seen_ms: 12,
        remaining_ms: Some(45_000),
    };
    assert_eq!(s.lockout(&ku).ok(), Some(None));
    ok(s.put_lockout(&ku, &st));
    assert_eq!(s.lockout(&ku).ok(), Some(Some(st)));
    assert_eq!(
        s.lockout(&kt).ok(),
        Some(None),
        "user and terminal keys are distinct"
    );
    ok(s.clear_lockout(&ku));
    assert_eq!(s.lockout(&ku).ok(), Some(None));
    ok(s.clear_lockout(&ku));

    let h = [7u8; 32];
    let session = Session {
        user_id: "u1".into(),
        terminal_id: "t1".into(),
        role: "cashier".into(),
        issued_at_ms: 1,
        expires_at_ms: 2,
    };
    assert_eq!(s.session(&h).ok(), Some(None));
    ok(s.put_session(&h, &session));
    assert_eq!(s.session(&h).ok(), Some(Some(session)));
    assert_eq!(s.session(&[8u8; 32]).ok(), Some(None));
    ok(s.remove_session(&h));
    ok(s.remove_session(&h));
    assert_eq!(s.session(&h).ok(), Some(None));

    // A second store from `make` starts empty.
    let fresh = make();
    assert_eq!(fresh.session(&h).ok(), Some(None));
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_store_conforms() {
        super::conformance(super::MemoryAuthStore::default);
    }
}
