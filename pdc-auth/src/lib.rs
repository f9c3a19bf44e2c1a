//! pdc-auth: offline PIN login for POS terminals that resists brute force.
//!
//! **Pure logic**: no I/O, no clock (a [`pdc_clock::Clock`] is passed in),
//! randomness from a caller-supplied `CryptoRngCore`; builds for
//! `wasm32-unknown-unknown`.
//!
//! When the server is unreachable a cashier still logs in with a PIN and the
//! terminal decides alone. The design study stored one unsalted SHA-256 of
//! the PIN and allowed unlimited retries. pdc-auth:
//!
//! * stores PINs as **PHC strings** of Argon2id (default m = 19 MiB, t = 2,
//!   p = 1, OWASP's minimum) or PBKDF2-HMAC-SHA256, random salt per user,
//!   parameters in the string so they can be raised ([`PinHasher`]);
//! * keys the KDF input with a **pepper** (HMAC-SHA256 with a device or
//!   fleet secret from the platform's keystore, never stored beside the
//!   credentials). Without it a stolen credential file falls to an offline
//!   search: at about 24 ms a guess, every 4-digit PIN in about 4 minutes and
//!   every 6-digit PIN in under 7 hours on one core; with it, the file alone
//!   is useless;
//! * verifies the study's **legacy** hex SHA-256 and returns an upgraded
//!   credential to store;
//! * **locks out** per user: 4 free failures, then 1, 5, 15, 30, 90, 243
//!   minutes, ×3 after, and after 20 failures only an online login or an
//!   administrator unlocks ([`LockoutPolicy`]); per terminal (wrong PINs of
//!   any user at one till) the same schedule starts after 15 free failures
//!   and the hard limit is 100 ([`LockoutPolicy::terminal_default`]), so a
//!   few wrong PINs over several cashiers lock nobody else out. The counters
//!   are persisted ([`AuthStore`]) with the lock time still owed, which is
//!   served on the monotonic clock only while the app runs: no wall-clock
//!   change and no restart shortens a lock (time while the app is closed
//!   does not count), and none lengthens it past the policy. So an attacker at the till gets at most 20 guesses per account
//!   over more than five months: 0.20% of the 4-digit space;
//! * compares in constant time (`subtle`), zeroises PINs and tokens
//!   (`zeroize`), and verifies an unknown user against a dummy credential so
//!   both paths cost one KDF run;
//! * issues **offline sessions** (256-bit token, only its SHA-256 stored,
//!   7-day TTL), validated, refreshed and revoked; disabled users lose them.
//!
//! # Figures (measured: `cargo bench -p pdc-benches --bench auth`)
//!
//! | per guess on one core | time | guesses/s | all 4-digit PINs | all 6-digit PINs |
//! |---|---|---|---|---|
//! | study: unsalted SHA-256 | 50 ns | 20,000,000 | 0.5 ms | 50 ms |
//! | pdc default Argon2id 19 MiB, t = 2, no pepper | 14.1 ms | 71 | 2.4 min | 3.9 h |
//! | pdc default with a pepper, file stolen without the secret | — | 0 useful | never | never |
//!
//! Online at the till with the default lockout: 4 guesses free, then 1, 5,
//! 15, 30, 90, 243, 729, 2187, 6561, 19683 minutes, then 30 days each; the
//! 20th failure locks until an online login. The 20 guesses take at least
//! 245,544 minutes (about 170 days) and cover 20/10,000 = 0.20% of the
//! 4-digit space; all 10,000 are out of reach (without the hard limit they
//! would take about 820 years). Cycling users at one terminal hits the
//! terminal's counter, with its higher threshold.
//!
//! ```
//! use pdc_auth::{AuthConfig, AuthError, Authenticator, KdfParams, MemoryAuthStore, Pepper, PinHasher};
//! use pdc_clock::ManualClock;
//! use rand_core::SeedableRng;
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1); // the host passes an OS CSPRNG
//! let hasher = PinHasher::new(KdfParams::INSECURE_TEST, Some(Pepper::new(b"fleet secret 0123")?));
//! let clock = ManualClock::new(1_704_067_200_000);
//! let mut auth = Authenticator::new(MemoryAuthStore::default(), clock, hasher, AuthConfig::default(), &mut rng)?;
//! auth.enrol("alice", "cashier", "2580", &mut rng)?;
//!
//! assert_eq!(auth.login("alice", "till-1", "2581", &mut rng).unwrap_err(),
//!            AuthError::WrongPin { attempts_before_delay: 3 });
//! let login = auth.login("alice", "till-1", "2580", &mut rng)?;
//! assert_eq!(auth.validate(&login.token)?.role, "cashier");
//! # Ok::<(), AuthError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod authenticator;
mod credential;
mod error;
mod lockout;
mod pin;
mod store;

pub use authenticator::{AuthConfig, Authenticator, Login, SessionToken};
pub use credential::{Credential, KdfParams, Pepper, PinHasher, Verification};
pub use error::AuthError;
pub use lockout::{LockKey, LockoutPolicy, LockoutState};
pub use pin::{Pin, PinPolicy};
pub use store::{conformance, AuthStore, MemoryAuthStore, Session, UserRecord};
