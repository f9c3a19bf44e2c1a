//! pdc-auth's [`AuthStore`] in the store's file.

use pdc_auth::{AuthError, AuthStore, LockKey, LockoutState, Session, UserRecord};
use pdc_codec::RecordKind;
use redb::TableDefinition;

use crate::{Store, StoreError};

const USERS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("auth_users");
const LOCKOUTS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("auth_lockouts");
const SESSIONS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("auth_sessions");
const KIND_USER: RecordKind = RecordKind(43);
const KIND_LOCK: RecordKind = RecordKind(44);
const KIND_SESSION: RecordKind = RecordKind(45);

fn err(e: StoreError) -> AuthError {
    AuthError::Storage(e.to_string())
}

impl Store {
    fn put_raw(
        &self,
        table: TableDefinition<'_, &[u8], &[u8]>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(table)?;
            match value {
                Some(v) => {
                    t.insert(key, v)?;
                }
                None => {
                    t.remove(key)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn get_raw(
        &self,
        table: TableDefinition<'_, &[u8], &[u8]>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let rtx = self.db.begin_read()?;
        let t = match rtx.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(key)?.map(|g| g.value().to_vec()))
    }
}

impl Store {
    /// Every lockout counter (operators: `pdc inspect`).
    pub fn lockouts(&self) -> Result<Vec<(LockKey, LockoutState)>, StoreError> {
        use redb::ReadableTable;
        let rtx = self.db.begin_read()?;
        let t = match rtx.open_table(LOCKOUTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let key: LockKey = postcard::from_bytes(k.value())
                .map_err(|e| StoreError::Corrupt(format!("lockout key: {e}")))?;
            out.push((key, decode_lockout(&self.codec, v.value())?));
        }
        Ok(out)
    }

    /// Number of users enrolled or pulled into the auth state.
    pub fn user_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let rtx = self.db.begin_read()?;
        match rtx.open_table(USERS) {
            Ok(t) => Ok(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

fn lock_key(k: &LockKey) -> Result<Vec<u8>, AuthError> {
    postcard::to_allocvec(k).map_err(|e| AuthError::Storage(e.to_string()))
}

impl AuthStore for Store {
    fn user(&self, user_id: &str) -> Result<Option<UserRecord>, AuthError> {
        let raw = (|| -> Result<Option<Vec<u8>>, StoreError> {
            let rtx = self.db.begin_read()?;
            let t = match rtx.open_table(USERS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(t.get(user_id)?.map(|g| g.value().to_vec()))
        })()
        .map_err(err)?;
        raw.map(|r| {
            self.codec
                .decode_value::<UserRecord>(KIND_USER, &r)
                .map(|(_, u)| u)
        })
        .transpose()
        .map_err(|e| AuthError::MalformedCredential(e.to_string()))
    }

    fn put_user(&mut self, user: &UserRecord) -> Result<(), AuthError> {
        let frame = self
            .codec
            .encode_value(KIND_USER, 1, user)
            .map_err(|e| err(e.into()))?;
        (|| -> Result<(), StoreError> {
            let tx = self.db.begin_write()?;
            tx.open_table(USERS)?
                .insert(user.user_id.as_str(), frame.as_slice())?;
            tx.commit()?;
            Ok(())
        })()
        .map_err(err)
    }

    fn lockout(&self, key: &LockKey) -> Result<Option<LockoutState>, AuthError> {
        let raw = self.get_raw(LOCKOUTS, &lock_key(key)?).map_err(err)?;
        raw.map(|r| decode_lockout(&self.codec, &r))
            .transpose()
            .map_err(|e| AuthError::Storage(e.to_string()))
    }

    fn put_lockout(&mut self, key: &LockKey, state: &LockoutState) -> Result<(), AuthError> {
        let frame = self
            .codec
            .encode_value(KIND_LOCK, LOCK_SCHEMA, state)
            .map_err(|e| err(e.into()))?;
        self.put_raw(LOCKOUTS, &lock_key(key)?, Some(&frame))
            .map_err(err)
    }

    fn clear_lockout(&mut self, key: &LockKey) -> Result<(), AuthError> {
        self.put_raw(LOCKOUTS, &lock_key(key)?, None).map_err(err)
    }

    fn session(&self, token_hash: &[u8; 32]) -> Result<Option<Session>, AuthError> {
        let raw = self.get_raw(SESSIONS, token_hash).map_err(err)?;
        raw.map(|r| {
            self.codec
                .decode_value::<Session>(KIND_SESSION, &r)
                .map(|(_, s)| s)
        })
        .transpose()
        .map_err(|e| AuthError::Storage(e.to_string()))
    }

    fn put_session(&mut self, token_hash: &[u8; 32], session: &Session) -> Result<(), AuthError> {
        let frame = self
            .codec
            .encode_value(KIND_SESSION, 1, session)
            .map_err(|e| err(e.into()))?;
        self.put_raw(SESSIONS, token_hash, Some(&frame))
            .map_err(err)
    }

    fn remove_session(&mut self, token_hash: &[u8; 32]) -> Result<(), AuthError> {
        self.put_raw(SESSIONS, token_hash, None).map_err(err)
    }
}

/// The lockout frame's schema: 2 added `remaining_ms`.
const LOCK_SCHEMA: u8 = 2;

/// A lockout counter as schema 1 stored it.
#[derive(serde::Deserialize)]
struct LockoutV1 {
    failures: u32,
    last_failure_ms: u64,
    last_seen_ms: u64,
}

/// Decodes a lockout frame of either schema (a schema-1 counter has no
/// remaining time: the policy's full delay applies).
fn decode_lockout(codec: &pdc_codec::Codec, raw: &[u8]) -> Result<LockoutState, StoreError> {
    let frame = codec.open(raw)?;
    frame.expect(KIND_LOCK, false)?;
    let bad = |e: postcard::Error| StoreError::Corrupt(format!("lockout: {e}"));
    match frame.schema {
        1 => {
            let v1: LockoutV1 = postcard::from_bytes(&frame.payload).map_err(bad)?;
            Ok(LockoutState {
                failures: v1.failures,
                last_failure_ms: v1.last_failure_ms,
                last_seen_ms: v1.last_seen_ms,
                remaining_ms: None,
            })
        }
        LOCK_SCHEMA => postcard::from_bytes(&frame.payload).map_err(bad),
        schema => Err(StoreError::Codec(
            pdc_codec::CodecError::UnsupportedSchema {
                kind: KIND_LOCK,
                schema,
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A counter written by schema 1 (before `remaining_ms`) still reads,
    /// with no remaining time recorded (the policy's full delay applies).
    #[test]
    fn a_schema_1_lockout_counter_still_reads() {
        let store = Store::open_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let key = LockKey::User("alice".into());
        let v1 = store
            .codec
            .encode_value(KIND_LOCK, 1, &(3u32, 10u64, 12u64))
            .unwrap();
        store
            .put_raw(LOCKOUTS, &lock_key(&key).unwrap(), Some(&v1))
            .unwrap();
        assert_eq!(
            AuthStore::lockout(&store, &key).unwrap(),
            Some(LockoutState {
                failures: 3,
                last_failure_ms: 10,
                last_seen_ms: 12,
                remaining_ms: None,
            })
        );
        assert_eq!(store.lockouts().unwrap().len(), 1);
    }
}
