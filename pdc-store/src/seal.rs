//! Encryption at rest: what a copied store file must not show.
//!
//! When a store is opened with a key ([`StoreOptions::keys`]), every value
//! of the tables that hold sales, dead letters, credentials, reference
//! records and cache entries is sealed with XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`): a 24-byte random nonce per value, so nonces never
//! need a counter, and as associated data the store's id, the table's name
//! and the row's key, so a value copied to another row, table or store
//! fails to open instead of being read there. A sealed value is
//! `generation (4 bytes LE) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`: 44 bytes
//! more than the plain frame.
//!
//! Each key has a **generation**. The meta table holds, per generation, a
//! key-check record (a known text sealed with that key) and the generation
//! new values are sealed with. Opening checks every generation the file
//! holds against the keys given: a store that has encryption and no key, or
//! only wrong ones, is refused before anything is read. [`crate::Store::rekey`]
//! adds a generation and re-seals the rows in bounded batches (one write
//! transaction each, so sales go on between them); a crash in the middle
//! leaves both generations in the file, and it opens with both keys.
//!
//! What stays plain: the meta table (magic, schema version, counters, store
//! id), the outbox index (stream, priority and size of each pending item),
//! the held reasons, send attempts, offline card amounts with their times,
//! dataset versions, cache expiry times and quarantined records' reasons.
//! Record sizes and counts are visible to whoever copies the file.

use std::borrow::Cow;
use std::sync::{PoisonError, RwLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroize;

use crate::StoreError;

/// Bytes a sealed value adds to its plain frame.
pub const SEAL_OVERHEAD: usize = 4 + 24 + 16;

/// The text the key-check records seal.
const CHECK_TEXT: &[u8] = b"pdc-store key check";
/// Meta key of a generation's check record: this prefix and the generation.
pub(crate) const CHECK_PREFIX: &str = "key_check/";
/// Meta key of the generation new values are sealed with (4 bytes LE).
pub(crate) const GEN_KEY: &str = "key_generation";
/// Meta key of the blinding key (sealed): a random 256-bit HMAC key that
/// turns the row keys naming people (user ids, lockout keys) into opaque
/// ones. It is made with the store and re-sealed, not changed, by a
/// rotation, so row keys stay put.
pub(crate) const BLIND_KEY: &str = "blind_key";

/// A 256-bit store key. The host keeps it (a platform keystore on a till,
/// whatever the host chooses in a browser); the store never writes it. It
/// is wiped from memory when dropped and never printed.
#[derive(Clone)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> StoreKey {
        StoreKey(bytes)
    }

    /// A key from a slice, which must be 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<StoreKey, StoreError> {
        <[u8; 32]>::try_from(bytes)
            .map(StoreKey)
            .map_err(|_| StoreError::BadKey(format!("{} bytes, not 32", bytes.len())))
    }

    /// A key from 64 hex digits (either case), as hosts keep it in text.
    pub fn from_hex(hex: &str) -> Result<StoreKey, StoreError> {
        let digits = hex.trim().as_bytes();
        if digits.len() != 64 {
            return Err(StoreError::BadKey(format!(
                "{} hex digits, not 64",
                digits.len()
            )));
        }
        let mut key = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let text =
                std::str::from_utf8(pair).map_err(|_| StoreError::BadKey("not hex".into()))?;
            key[i] =
                u8::from_str_radix(text, 16).map_err(|_| StoreError::BadKey("not hex".into()))?;
        }
        Ok(StoreKey(key))
    }

    /// A new random key from the OS (the browser's crypto on wasm32).
    pub fn generate() -> Result<StoreKey, StoreError> {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b)
            .map_err(|e| StoreError::Storage(format!("no randomness for a key: {e}")))?;
        Ok(StoreKey(b))
    }

    /// The key's bytes, for the host to put in its keystore.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }
}

impl Drop for StoreKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// How to open a store ([`crate::Store::open_with_options`],
/// [`crate::Store::open_backend`]).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// redb's page cache bound in bytes (`None`: redb's default, 1 GiB).
    /// In a browser, wasm memory never shrinks: bound it.
    pub cache_bytes: Option<usize>,
    /// Every key the host holds for this store: empty for a plain store;
    /// one for an encrypted one; during a key rotation that a crash
    /// interrupted, the new and the previous one (order does not matter:
    /// each generation in the file is matched to the key that opens its
    /// check record). A new store is created encrypted with the first key.
    pub keys: Vec<StoreKey>,
}

impl StoreOptions {
    /// Options for an encrypted store under `key`.
    pub fn encrypted(key: StoreKey) -> StoreOptions {
        StoreOptions {
            cache_bytes: None,
            keys: vec![key],
        }
    }
}

/// The keys of an open store, by generation.
struct Keys {
    current: u32,
    ciphers: Vec<(u32, XChaCha20Poly1305)>,
}

/// Seals and opens values for one store; a no-op for a plain store.
pub(crate) struct Sealer {
    store_id: [u8; 16],
    keys: Option<RwLock<Keys>>,
    blind: Option<zeroize::Zeroizing<[u8; 32]>>,
}

/// Associated data: store id, table name, a zero byte, the row's key bytes.
fn aad(store_id: &[u8; 16], table: &str, key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(16 + table.len() + 1 + key.len());
    a.extend_from_slice(store_id);
    a.extend_from_slice(table.as_bytes());
    a.push(0);
    a.extend_from_slice(key);
    a
}

fn seal_with(
    cipher: &XChaCha20Poly1305,
    generation: u32,
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let mut nonce = [0u8; 24];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| StoreError::Storage(format!("no randomness for a nonce: {e}")))?;
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| StoreError::Storage("encryption failed".into()))?;
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plain.len());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The generation a sealed value was sealed with.
pub(crate) fn generation_of(sealed: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(sealed.get(..4)?.try_into().ok()?))
}

fn open_with(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(StoreError::Unsealed(format!(
            "{} bytes, shorter than a sealed value",
            sealed.len()
        )));
    }
    cipher
        .decrypt(
            XNonce::from_slice(&sealed[4..28]),
            Payload {
                msg: &sealed[28..],
                aad,
            },
        )
        .map_err(|_| {
            StoreError::Unsealed(
                "it fails authentication (damaged, or moved from another row)".into(),
            )
        })
}

impl Sealer {
    /// A sealer for a plain store.
    pub(crate) fn plain(store_id: [u8; 16]) -> Sealer {
        Sealer {
            store_id,
            keys: None,
            blind: None,
        }
    }

    /// Whether values are sealed.
    pub(crate) fn encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// A key-check record for `key` at `generation`.
    pub(crate) fn check_record(
        store_id: &[u8; 16],
        key: &StoreKey,
        generation: u32,
    ) -> Result<Vec<u8>, StoreError> {
        seal_with(
            &key.cipher(),
            generation,
            &aad(store_id, "pdc_meta", &generation.to_le_bytes()),
            CHECK_TEXT,
        )
    }

    /// A sealer for an encrypted store: `checks` are the (generation,
    /// check record) pairs the file holds, `current` the generation new
    /// values use. Every generation must be opened by one of `keys`.
    pub(crate) fn with_keys(
        store_id: [u8; 16],
        current: u32,
        checks: &[(u32, Vec<u8>)],
        keys: &[StoreKey],
    ) -> Result<Sealer, StoreError> {
        let mut ciphers = Vec::with_capacity(checks.len());
        for (generation, record) in checks {
            let a = aad(&store_id, "pdc_meta", &generation.to_le_bytes());
            let found = keys
                .iter()
                .map(StoreKey::cipher)
                .find(|c| open_with(c, &a, record).is_ok_and(|text| text == CHECK_TEXT));
            match found {
                Some(c) => ciphers.push((*generation, c)),
                None if *generation == current => return Err(StoreError::WrongKey),
                None => return Err(StoreError::KeyRotationUnfinished(*generation)),
            }
        }
        if !ciphers.iter().any(|(g, _)| *g == current) {
            return Err(StoreError::Corrupt(format!(
                "key generation {current} has no check record"
            )));
        }
        Ok(Sealer {
            store_id,
            keys: Some(RwLock::new(Keys { current, ciphers })),
            blind: None,
        })
    }

    /// A new random blinding key, sealed for the meta table under `key`
    /// at `generation`; the sealer keeps it.
    pub(crate) fn new_blind_key(
        &mut self,
        key: &StoreKey,
        generation: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut *b)
            .map_err(|e| StoreError::Storage(format!("no randomness for a key: {e}")))?;
        self.blind = Some(b);
        self.sealed_blind_key(key, generation)
    }

    /// The blinding key sealed for the meta table under `key` at
    /// `generation` (a rotation re-seals it).
    pub(crate) fn sealed_blind_key(
        &self,
        key: &StoreKey,
        generation: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let blind = self
            .blind
            .as_ref()
            .ok_or_else(|| StoreError::Corrupt("no blinding key".into()))?;
        seal_with(
            &key.cipher(),
            generation,
            &aad(&self.store_id, "pdc_meta", BLIND_KEY.as_bytes()),
            &blind[..],
        )
    }

    /// Reads the blinding key from its sealed meta row.
    pub(crate) fn load_blind_key(&mut self, sealed: &[u8]) -> Result<(), StoreError> {
        let plain = self.open("pdc_meta", BLIND_KEY.as_bytes(), sealed)?;
        let b = <[u8; 32]>::try_from(&*plain)
            .map_err(|_| StoreError::Corrupt("blinding key is not 32 bytes".into()))?;
        self.blind = Some(zeroize::Zeroizing::new(b));
        Ok(())
    }

    /// The row key under which `key` is stored in `table`: itself in a
    /// plain store; in an encrypted one an HMAC-SHA256 of it (hex), so
    /// that the file does not show who the rows are about.
    pub(crate) fn blind<'a>(&self, table: &str, key: &'a str) -> Cow<'a, str> {
        self.blind_bytes(table, key.as_bytes())
            .map_or(Cow::Borrowed(key), |mac| {
                Cow::Owned(mac.iter().map(|b| format!("{b:02x}")).collect())
            })
    }

    /// [`Sealer::blind`] for a byte key (the MAC itself); `None` in a
    /// plain store.
    pub(crate) fn blind_bytes(&self, table: &str, key: &[u8]) -> Option<[u8; 32]> {
        use hmac::Mac;
        let blind = self.blind.as_ref()?;
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&blind[..])
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(table.as_bytes());
        mac.update(&[0]);
        mac.update(key);
        Some(mac.finalize().into_bytes().into())
    }

    /// `plain` as stored in `table` under the row key `key` (its redb
    /// bytes).
    pub(crate) fn seal<'a>(
        &self,
        table: &str,
        key: &[u8],
        plain: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, StoreError> {
        let Some(keys) = &self.keys else {
            return Ok(Cow::Borrowed(plain));
        };
        let keys = keys.read().unwrap_or_else(PoisonError::into_inner);
        let (generation, cipher) = keys
            .ciphers
            .iter()
            .find(|(g, _)| *g == keys.current)
            .ok_or_else(|| StoreError::Corrupt("no key for the current generation".into()))?;
        seal_with(cipher, *generation, &aad(&self.store_id, table, key), plain).map(Cow::Owned)
    }

    /// The plain frame of a value stored in `table` under `key`.
    pub(crate) fn open<'a>(
        &self,
        table: &str,
        key: &[u8],
        stored: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, StoreError> {
        let Some(keys) = &self.keys else {
            return Ok(Cow::Borrowed(stored));
        };
        let generation = generation_of(stored).ok_or_else(|| {
            StoreError::Unsealed(format!("{table}: a value of {} bytes", stored.len()))
        })?;
        let keys = keys.read().unwrap_or_else(PoisonError::into_inner);
        let cipher = keys
            .ciphers
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, c)| c)
            .ok_or_else(|| {
                StoreError::Unsealed(format!(
                    "{table}: sealed by unknown key generation {generation}"
                ))
            })?;
        open_with(cipher, &aad(&self.store_id, table, key), stored)
            .map(Cow::Owned)
            .map_err(|e| match e {
                StoreError::Unsealed(m) => StoreError::Unsealed(format!("{table}: {m}")),
                other => other,
            })
    }

    /// The generations this sealer can open.
    pub(crate) fn generations(&self) -> Vec<u32> {
        self.keys.as_ref().map_or_else(Vec::new, |k| {
            k.read()
                .unwrap_or_else(PoisonError::into_inner)
                .ciphers
                .iter()
                .map(|(g, _)| *g)
                .collect()
        })
    }

    /// Adds `key` as `generation` and makes it the one new values use.
    pub(crate) fn add_current(&self, generation: u32, key: &StoreKey) {
        if let Some(keys) = &self.keys {
            let mut keys = keys.write().unwrap_or_else(PoisonError::into_inner);
            keys.ciphers.push((generation, key.cipher()));
            keys.current = generation;
        }
    }

    /// Forgets every generation but the current one.
    pub(crate) fn retire_old(&self) {
        if let Some(keys) = &self.keys {
            let mut keys = keys.write().unwrap_or_else(PoisonError::into_inner);
            let current = keys.current;
            keys.ciphers.retain(|(g, _)| *g == current);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sealer(key: &StoreKey) -> Sealer {
        let id = [7u8; 16];
        let check = Sealer::check_record(&id, key, 1).unwrap();
        Sealer::with_keys(id, 1, &[(1, check)], std::slice::from_ref(key)).unwrap()
    }

    #[test]
    fn a_value_opens_only_where_it_was_sealed() {
        let key = StoreKey::from_bytes([1; 32]);
        let s = sealer(&key);
        let sealed = s.seal("outbox", b"k1", b"a sale").unwrap().into_owned();
        assert_eq!(sealed.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(&*s.open("outbox", b"k1", &sealed).unwrap(), b"a sale");
        assert!(matches!(
            s.open("outbox", b"k2", &sealed),
            Err(StoreError::Unsealed(_))
        ));
        assert!(matches!(
            s.open("dead_letters", b"k1", &sealed),
            Err(StoreError::Unsealed(_))
        ));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            s.open("outbox", b"k1", &flipped),
            Err(StoreError::Unsealed(_))
        ));
        assert!(matches!(
            s.open("outbox", b"k1", &sealed[..10]),
            Err(StoreError::Unsealed(_))
        ));
        // Another store (id) does not open it either.
        let other = {
            let id = [8u8; 16];
            let check = Sealer::check_record(&id, &key, 1).unwrap();
            Sealer::with_keys(id, 1, &[(1, check)], std::slice::from_ref(&key)).unwrap()
        };
        assert!(other.open("outbox", b"k1", &sealed).is_err());
    }

    #[test]
    fn a_wrong_key_is_refused_and_a_missing_previous_one_named() {
        let id = [7u8; 16];
        let (a, b) = (StoreKey::from_bytes([1; 32]), StoreKey::from_bytes([2; 32]));
        let checks = vec![
            (1, Sealer::check_record(&id, &a, 1).unwrap()),
            (2, Sealer::check_record(&id, &b, 2).unwrap()),
        ];
        assert!(matches!(
            Sealer::with_keys(id, 2, &checks, std::slice::from_ref(&a)),
            Err(StoreError::WrongKey)
        ));
        assert!(matches!(
            Sealer::with_keys(id, 2, &checks, std::slice::from_ref(&b)),
            Err(StoreError::KeyRotationUnfinished(1))
        ));
        let s = Sealer::with_keys(id, 2, &checks, &[b.clone(), a.clone()]).unwrap();
        assert_eq!(s.generations(), vec![1, 2]);
    }

    #[test]
    fn a_plain_sealer_changes_nothing() {
        let s = Sealer::plain([0; 16]);
        assert!(matches!(
            s.seal("t", b"k", b"v").unwrap(),
            Cow::Borrowed(b"v")
        ));
        assert_eq!(
            format!("{:?}", StoreKey::from_bytes([9; 32])),
            "StoreKey(..)"
        );
        assert!(StoreKey::from_slice(&[0; 31]).is_err());
        let hex = "00ff".repeat(16);
        assert_eq!(
            StoreKey::from_hex(&hex).unwrap().expose_bytes()[..2],
            [0, 255]
        );
        assert!(StoreKey::from_hex("00ff").is_err());
        assert!(StoreKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
