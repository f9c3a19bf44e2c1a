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

fn authenticator(
    clock: pdc_clock::ManualClock,
) -> (
    pdc_auth::Authenticator<pdc_auth::MemoryAuthStore, pdc_clock::ManualClock>,
    rand_chacha::ChaCha8Rng,
) {
    use rand_chacha::rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let hasher = pdc_auth::PinHasher::new(pdc_auth::KdfParams::INSECURE_TEST, None);
    let auth = pdc_auth::Authenticator::new(
        pdc_auth::MemoryAuthStore::default(),
        clock,
        hasher,
        pdc_auth::AuthConfig::default(),
        &mut rng,
    )
    .unwrap();
    (auth, rng)
}

/// Issue 16, defect 5: the docs promised at most 19 guesses per account
/// before the hard lock; the code allowed 20. The guesses an attacker gets
/// (waiting out every delay) are counted here and compared with the
/// crate's docs and with `LockoutPolicy::max_guesses`.
#[test]
fn the_docs_promise_19_guesses_and_the_code_allows_20() {
    let clock = pdc_clock::ManualClock::new(1_704_067_200_000);
    let (mut auth, mut rng) = authenticator(clock.clone());
    auth.enrol("alice", "cashier", "2580", &mut rng).unwrap();
    let mut guesses = 0u32;
    loop {
        match auth.login("alice", "till-1", "1111", &mut rng) {
            Err(AuthError::WrongPin { .. }) => guesses += 1,
            Err(AuthError::Locked { until_ms }) => {
                let now = pdc_clock::Clock::wall_ms(&clock);
                clock.advance(std::time::Duration::from_millis(until_ms - now + 1));
            }
            Err(AuthError::LockedUntilOnline) => break,
            other => panic!("unexpected {other:?}"),
        }
        assert!(guesses <= 1_000, "no hard lock");
    }
    let policy = pdc_auth::LockoutPolicy::default();
    assert_eq!(guesses, policy.max_guesses());
    let docs = include_str!("../src/lib.rs");
    let promised: Vec<u32> = docs
        .split("at most ")
        .skip(1)
        .filter_map(|s| s.strip_suffix_guesses())
        .collect();
    assert!(!promised.is_empty(), "the docs state a guess count");
    assert!(
        promised.iter().all(|&n| n == guesses),
        "docs say {promised:?}, the code allows {guesses}"
    );
}

trait GuessCount {
    fn strip_suffix_guesses(&self) -> Option<u32>;
}

impl GuessCount for &str {
    /// `"20 guesses per account …"` → 20.
    fn strip_suffix_guesses(&self) -> Option<u32> {
        let (n, rest) = self.split_once(' ')?;
        rest.starts_with("guesses")
            .then(|| n.parse().ok())
            .flatten()
    }
}

/// Issue 16, defect 5: five wrong PINs spread over five users locked the
/// till for every cashier (the terminal's counter used the per-user
/// schedule). The terminal's counter now has a higher threshold.
#[test]
fn wrong_pins_spread_over_users_lock_the_whole_till() {
    let clock = pdc_clock::ManualClock::new(1_704_067_200_000);
    let (mut auth, mut rng) = authenticator(clock);
    for u in 0..6 {
        auth.enrol(&format!("user{u}"), "cashier", "2580", &mut rng)
            .unwrap();
    }
    for u in 0..5 {
        assert!(matches!(
            auth.login(&format!("user{u}"), "till-1", "1111", &mut rng),
            Err(AuthError::WrongPin { .. })
        ));
    }
    auth.login("user5", "till-1", "2580", &mut rng).unwrap();
}

/// Issue 16, defect 5: the lockout could be waited out by restarting the
/// app and moving the wall clock forward — all 20 guesses ran in 2 s of
/// real time. Now a restart with the clock a year ahead still owes the
/// whole delay, served on the monotonic clock.
#[test]
fn the_lockout_can_be_waited_out_by_restarting_and_moving_the_clock() {
    use std::time::Duration;
    const T0: u64 = 1_704_067_200_000;
    let clock = pdc_clock::ManualClock::new(T0);
    let (mut auth, mut rng) = authenticator(clock);
    auth.enrol("alice", "cashier", "2580", &mut rng).unwrap();
    let mut store = Some(auth.into_store());
    let mut guesses = 0;
    let mut wall = T0;
    // Each "restart": a new process (a fresh monotonic clock) whose wall
    // clock is set a year ahead of the last one.
    for _ in 0..40 {
        wall += 365 * 86_400_000;
        let clock = pdc_clock::ManualClock::new(wall);
        use rand_chacha::rand_core::SeedableRng;
        let mut auth = pdc_auth::Authenticator::new(
            store.take().unwrap(),
            clock.clone(),
            pdc_auth::PinHasher::new(pdc_auth::KdfParams::INSECURE_TEST, None),
            pdc_auth::AuthConfig::default(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        )
        .unwrap();
        for _ in 0..3 {
            if let Err(AuthError::WrongPin { .. }) = auth.login("alice", "till-1", "1111", &mut rng)
            {
                guesses += 1;
            }
            clock.advance(Duration::from_millis(50));
        }
        store = Some(auth.into_store());
    }
    // The 4 free failures, and the fifth (which starts the first delay).
    assert_eq!(guesses, 5, "restarts and clock jumps bought guesses");
}
