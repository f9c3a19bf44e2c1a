//! pdc-auth's [`AuthStore`] in the store's file.

use pdc_auth::{AuthError, AuthStore, LockKey, LockoutState, Session, UserRecord};
use pdc_codec::RecordKind;
use redb::TableDefinition;

use crate::{Store, StoreError};

pub(crate) const USERS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("auth_users");
pub(crate) const LOCKOUTS: TableDefinition<'static, &'static [u8], &'static [u8]> =
    TableDefinition::new("auth_lockouts");
pub(crate) const SESSIONS: TableDefinition<'static, &'static [u8], &'static [u8]> =
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
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(table)?;
            match value {
                Some(v) => {
                    t.insert(key, &*self.seal_row(table, &key, v)?)?;
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
        table: TableDefinition<'static, &'static [u8], &'static [u8]>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let rtx = self.db.begin_read()?;
        let t = match rtx.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        t.get(key)?
            .map(|g| {
                self.open_row(table, &key, g.value())
                    .map(|v| v.into_owned())
            })
            .transpose()
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
            let value = self.open_row(LOCKOUTS, &k.value(), v.value())?;
            let (key, frame) = self.split_lockout(k.value(), &value)?;
            let key: LockKey = postcard::from_bytes(key)
                .map_err(|e| StoreError::Corrupt(format!("lockout key: {e}")))?;
            out.push((key, decode_lockout(&self.codec, frame)?));
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

impl Store {
    /// The row key of a user: the id itself, blinded in an encrypted store.
    fn user_row<'a>(&self, user_id: &'a str) -> std::borrow::Cow<'a, str> {
        self.sealer.blind("auth_users", user_id)
    }

    /// The row key of a lockout counter, blinded in an encrypted store
    /// (where the value then starts with the encoded key, for
    /// [`Store::lockouts`]).
    fn lockout_row(&self, key: &LockKey) -> Result<Vec<u8>, AuthError> {
        let encoded = lock_key(key)?;
        Ok(self
            .sealer
            .blind_bytes("auth_lockouts", &encoded)
            .map_or(encoded, |mac| mac.to_vec()))
    }

    /// A lockout row's value: the frame, prefixed by the encoded key
    /// (2 bytes LE length, then the key) in an encrypted store.
    fn lockout_value(&self, key: &LockKey, frame: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !self.sealer.encrypted() {
            return Ok(frame.to_vec());
        }
        let encoded = lock_key(key)?;
        let len = u16::try_from(encoded.len())
            .map_err(|_| AuthError::Storage("lockout key over 64 KiB".into()))?;
        let mut v = Vec::with_capacity(2 + encoded.len() + frame.len());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&encoded);
        v.extend_from_slice(frame);
        Ok(v)
    }

    /// (encoded key, frame) of a lockout row.
    fn split_lockout<'a>(
        &self,
        row_key: &'a [u8],
        value: &'a [u8],
    ) -> Result<(&'a [u8], &'a [u8]), StoreError> {
        if !self.sealer.encrypted() {
            return Ok((row_key, value));
        }
        let short = || StoreError::Corrupt("lockout row shorter than its key".into());
        let len = u16::from_le_bytes(
            value
                .get(..2)
                .ok_or_else(short)?
                .try_into()
                .map_err(|_| short())?,
        );
        let end = 2 + usize::from(len);
        Ok((value.get(2..end).ok_or_else(short)?, &value[end..]))
    }
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
            let row = self.user_row(user_id);
            let row = row.as_ref();
            t.get(row)?
                .map(|g| {
                    self.open_row(USERS, &row, g.value())
                        .map(|v| v.into_owned())
                })
                .transpose()
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
            let row = self.user_row(&user.user_id);
            let key = row.as_ref();
            tx.open_table(USERS)?
                .insert(key, &*self.seal_row(USERS, &key, &frame)?)?;
            tx.commit()?;
            Ok(())
        })()
        .map_err(err)
    }

    fn lockout(&self, key: &LockKey) -> Result<Option<LockoutState>, AuthError> {
        let row = self.lockout_row(key)?;
        let raw = self.get_raw(LOCKOUTS, &row).map_err(err)?;
        raw.map(|r| {
            let (_, frame) = self.split_lockout(&row, &r)?;
            decode_lockout(&self.codec, frame)
        })
        .transpose()
        .map_err(|e| AuthError::Storage(e.to_string()))
    }

    fn put_lockout(&mut self, key: &LockKey, state: &LockoutState) -> Result<(), AuthError> {
        let frame = self
            .codec
            .encode_value(KIND_LOCK, LOCK_SCHEMA, state)
            .map_err(|e| err(e.into()))?;
        let value = self.lockout_value(key, &frame)?;
        self.put_raw(LOCKOUTS, &self.lockout_row(key)?, Some(&value))
            .map_err(err)
    }

    fn clear_lockout(&mut self, key: &LockKey) -> Result<(), AuthError> {
        self.put_raw(LOCKOUTS, &self.lockout_row(key)?, None)
            .map_err(err)
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
