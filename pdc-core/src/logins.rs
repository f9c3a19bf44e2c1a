//! Logins: offline PIN login over the store's auth state, following the
//! server's users dataset.
//!
//! A host calls, in this order:
//!
//! 1. [`Logins::new`] once (one KDF run for the dummy credential, so that
//!    an unknown user costs as much as a known one);
//! 2. after every pull that changed the `users` dataset,
//!    [`Logins::follow_users`]: users the server sent are installed, users
//!    it removed (deleted, or absent from a snapshot) are disabled, so a
//!    removed cashier's PIN stops working offline at once;
//! 3. [`Logins::login`] / [`Logins::enrol`] from the UI.
//!
//! Its lock is held for one login (one KDF run), never across an `.await`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use pdc_auth::{AuthConfig, AuthStore as _, Authenticator, KdfParams, Login, Pepper, PinHasher};
use pdc_clock::Clock;
use pdc_store::Store;
use pdc_sync::{DatasetChange, DatasetDelta};
use rand::rngs::StdRng;

use crate::telemetry::lock;
use crate::EngineError;

/// The till's logins.
pub struct Logins<C: Clock + Clone + 'static> {
    store: Store,
    auth: Mutex<Authenticator<Store, C>>,
    rng: Mutex<StdRng>,
}

impl<C: Clock + Clone + 'static> std::fmt::Debug for Logins<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logins").finish_non_exhaustive()
    }
}

impl<C: Clock + Clone + 'static> Logins<C> {
    /// Logins over `store` with this policy, KDF and pepper; `rng` salts
    /// new credentials.
    pub fn new(
        store: Store,
        clock: C,
        kdf: KdfParams,
        pepper: Option<Pepper>,
        policy: AuthConfig,
        mut rng: StdRng,
    ) -> Result<Self, EngineError> {
        let hasher = PinHasher::new(kdf, pepper);
        let auth = Authenticator::new(store.clone(), clock, hasher, policy, &mut rng)?;
        Ok(Logins {
            store,
            auth: Mutex::new(auth),
            rng: Mutex::new(rng),
        })
    }

    /// Offline PIN login of `user_id` at `terminal_id`.
    pub fn login(&self, user_id: &str, terminal_id: &str, pin: &str) -> Result<Login, EngineError> {
        let mut rng = lock(&self.rng);
        Ok(lock(&self.auth).login(user_id, terminal_id, pin, &mut *rng)?)
    }

    /// Enrols a user's PIN locally (at an enrolment screen).
    pub fn enrol(&self, user_id: &str, role: &str, pin: &str) -> Result<(), EngineError> {
        let mut rng = lock(&self.rng);
        lock(&self.auth).enrol(user_id, role, pin, &mut *rng)?;
        Ok(())
    }

    /// The user ids of the stored users dataset (records that do not
    /// decode are skipped, as in [`Logins::follow_users`]).
    pub fn dataset_users(&self) -> Result<BTreeSet<String>, EngineError> {
        Ok(self
            .store
            .dataset("users")?
            .records
            .values()
            .filter_map(|b| postcard::from_bytes::<pdc_auth::UserRecord>(b).ok())
            .map(|u| u.user_id)
            .collect())
    }

    /// The users dataset's record id of `user_id` (the numeric id the
    /// server's user import gave it), if the pulled users have it.
    pub fn user_number(&self, user_id: &str) -> Result<Option<u64>, EngineError> {
        Ok(self
            .store
            .dataset("users")?
            .records
            .iter()
            .find(|(_, b)| {
                postcard::from_bytes::<pdc_auth::UserRecord>(b).is_ok_and(|u| u.user_id == user_id)
            })
            .map(|(id, _)| *id))
    }

    /// Follows a pulled change of the users dataset (postcard
    /// [`pdc_auth::UserRecord`]s with PIN credentials hashed by the
    /// server): its users are installed, and the users of `before` (the
    /// dataset's users before the change) no longer in it are disabled.
    /// A record that does not decode is skipped, not fatal: the rest of
    /// the users still log in. Users enrolled on the till itself are never
    /// in the dataset, so never touched here.
    pub fn follow_users(
        &self,
        applied: &DatasetDelta,
        before: &BTreeSet<String>,
    ) -> Result<(), EngineError> {
        let records = match &applied.change {
            DatasetChange::Delta { upserts, .. } => upserts,
            DatasetChange::Buckets { records, .. } | DatasetChange::Snapshot { records } => records,
        };
        {
            let mut auth = lock(&self.auth);
            for r in records {
                if let Ok(user) = postcard::from_bytes::<pdc_auth::UserRecord>(&r.body) {
                    auth.store_mut().put_user(&user)?;
                }
            }
        }
        let after = self.dataset_users()?;
        let mut auth = lock(&self.auth);
        for id in before.difference(&after) {
            if let Some(mut user) = auth.store_mut().user(id)? {
                if !user.disabled {
                    user.disabled = true;
                    auth.store_mut().put_user(&user)?;
                }
            }
        }
        Ok(())
    }
}
