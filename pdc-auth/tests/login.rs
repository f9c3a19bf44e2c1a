//! Offline login end to end: lockout schedule on a manual clock, clock set
//! back and forward, restart with persisted state, legacy migration,
//! unknown users, sessions.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pdc_auth::{
    AuthConfig, AuthError, AuthStore, Authenticator, Credential, KdfParams, LockKey,
    MemoryAuthStore, Pepper, PinHasher, PinPolicy, UserRecord,
};
use pdc_clock::{Clock, ManualClock};
use rand_core::SeedableRng;

const T0: u64 = 1_704_067_200_000;

fn rng() -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(42)
}

fn hasher() -> PinHasher {
    PinHasher::new(
        KdfParams::INSECURE_TEST,
        Some(Pepper::new(b"fleet pepper 0123").unwrap()),
    )
}

fn setup(
    store: MemoryAuthStore,
    clock: &ManualClock,
) -> Authenticator<MemoryAuthStore, ManualClock> {
    Authenticator::new(
        store,
        clock.clone(),
        hasher(),
        AuthConfig::default(),
        &mut rng(),
    )
    .unwrap()
}

fn enrolled(clock: &ManualClock) -> Authenticator<MemoryAuthStore, ManualClock> {
    let mut a = setup(MemoryAuthStore::default(), clock);
    a.enrol("alice", "cashier", "2580", &mut rng()).unwrap();
    a.enrol("bob", "supervisor", "3691", &mut rng()).unwrap();
    a
}

fn min(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

#[test]
fn lockout_schedule_is_exact() {
    let clock = ManualClock::new(T0);
    let mut a = enrolled(&clock);
    let mut r = rng();
    for left in [3, 2, 1, 0] {
        assert_eq!(
            a.login("alice", "t1", "0001", &mut r).unwrap_err(),
            AuthError::WrongPin {
                attempts_before_delay: left
            }
        );
    }
    // Fifth failure: 1 minute.
    assert!(matches!(
        a.login("alice", "t1", "0001", &mut r),
        Err(AuthError::WrongPin { .. })
    ));
    for (delay, next) in [(1, 5), (5, 15), (15, 30)] {
        let err = a.login("alice", "t1", "2580", &mut r).unwrap_err();
        assert_eq!(
            err,
            AuthError::Locked {
                until_ms: clock.wall_ms() + min(delay).as_millis() as u64
            },
            "even the right PIN waits"
        );
        clock.advance(min(delay) - Duration::from_secs(1));
        assert!(matches!(
            a.login("alice", "t1", "0001", &mut r),
            Err(AuthError::Locked { .. })
        ));
        clock.advance(Duration::from_secs(1));
        assert!(matches!(
            a.login("alice", "t1", "0001", &mut r),
            Err(AuthError::WrongPin { .. })
        ));
        let _ = next;
    }
    // The right PIN after the wait succeeds and resets the counter.
    clock.advance(min(30));
    a.login("alice", "t1", "2580", &mut r).unwrap();
    assert_eq!(
        a.lockout_state(&LockKey::User("alice".into())).unwrap(),
        None
    );
}

#[test]
fn setting_the_clock_back_or_forward_does_not_shorten_a_lock() {
    let clock = ManualClock::new(T0);
    let mut a = enrolled(&clock);
    let mut r = rng();
    for _ in 0..5 {
        let _ = a.login("alice", "t1", "0001", &mut r);
    }
    // 5 failures: locked for 1 minute. Setting the wall clock back an hour;
    // 30 s pass: 30 s are left, shown on the (wrong) clock.
    clock.set_wall_ms(T0 - 3_600_000);
    clock.advance(Duration::from_secs(30));
    let res = a.login("alice", "t1", "2580", &mut r).map(|l| l.session);
    assert_eq!(
        res.unwrap_err(),
        AuthError::Locked {
            until_ms: T0 - 3_600_000 + 30_000 + 30_000
        }
    );
    // Forward a day: 30 s of monotonic time are still owed in this process.
    clock.set_wall_ms(T0 + 86_400_000);
    assert!(matches!(
        a.login("alice", "t1", "2580", &mut r),
        Err(AuthError::Locked { .. })
    ));
    clock.advance(Duration::from_secs(30));
    a.login("alice", "t1", "2580", &mut r).unwrap();
}

#[test]
fn a_restart_keeps_the_lock_and_the_clock_back_still_does_not_help() {
    let clock = ManualClock::new(T0);
    let mut a = enrolled(&clock);
    let mut r = rng();
    for _ in 0..5 {
        let _ = a.login("alice", "t1", "0001", &mut r);
    }
    // Locked for 1 minute. Restart: a new authenticator over the same store;
    // the minute is served from the restart on (time while the app was
    // closed is not observed), whatever the wall clock says.
    let store = a.into_store();
    let restarted_clock = ManualClock::new(T0 + 30_000);
    let mut b = setup(store, &restarted_clock);
    assert_eq!(
        b.login("alice", "t1", "2580", &mut r)
            .map(|l| l.session)
            .unwrap_err(),
        AuthError::Locked {
            until_ms: T0 + 30_000 + 60_000
        }
    );
    restarted_clock.set_wall_ms(T0 - 86_400_000);
    assert!(matches!(
        b.login("alice", "t1", "2580", &mut r),
        Err(AuthError::Locked { .. })
    ));
    restarted_clock.set_wall_ms(T0 + 86_400_000);
    assert!(matches!(
        b.login("alice", "t1", "2580", &mut r),
        Err(AuthError::Locked { .. })
    ));
    restarted_clock.advance(Duration::from_secs(60));
    b.login("alice", "t1", "2580", &mut r).unwrap();
}

#[test]
fn the_hard_limit_needs_an_online_unlock() {
    let clock = ManualClock::new(T0);
    let mut config = AuthConfig::default();
    config.lockout.hard_limit = 6;
    let mut a = Authenticator::new(
        MemoryAuthStore::default(),
        clock.clone(),
        hasher(),
        config,
        &mut rng(),
    )
    .unwrap();
    a.enrol("alice", "cashier", "2580", &mut rng()).unwrap();
    let mut r = rng();
    for _ in 0..6 {
        let _ = a.login("alice", "t1", "0001", &mut r);
        clock.advance(Duration::from_secs(3600));
    }
    clock.advance(Duration::from_secs(30 * 86_400));
    assert_eq!(
        a.login("alice", "t2", "2580", &mut r).unwrap_err(),
        AuthError::LockedUntilOnline
    );
    a.unlock_user("alice").unwrap();
    a.unlock_terminal("t1").unwrap();
    a.login("alice", "t2", "2580", &mut r).unwrap();
}

#[test]
fn a_terminal_cycling_users_is_locked_too() {
    let clock = ManualClock::new(T0);
    let mut a = enrolled(&clock);
    let mut r = rng();
    // The terminal's counter starts delays after 15 failures (each user's
    // after 4): 16 wrong PINs cycling five users (3 or 4 each) lock the
    // terminal while no single account is locked yet.
    let free = pdc_auth::LockoutPolicy::terminal_default().free_failures as usize;
    for i in 0..=free {
        let user = ["alice", "bob", "carol", "dave", "eve"][i % 5];
        let _ = a.login(user, "t1", "0001", &mut r);
    }
    assert!(matches!(
        a.login("bob", "t1", "3691", &mut r),
        Err(AuthError::Locked { .. })
    ));
    // Another terminal is not affected for bob (3 failures on his account).
    a.login("bob", "t2", "3691", &mut r).unwrap();
}

#[test]
fn unknown_users_take_the_same_path_and_count_as_failures() {
    let clock = ManualClock::new(T0);
    let mut a = enrolled(&clock);
    let mut r = rng();
    assert_eq!(
        a.login("mallory", "t9", "2580", &mut r).unwrap_err(),
        AuthError::UnknownUser
    );
    assert_eq!(
        a.login("alice", "t8", "0001", &mut r).unwrap_err(),
        AuthError::WrongPin {
            attempts_before_delay: 3
        }
    );
    // Both recorded a failure on their user key and their terminal key.
    for key in [
        LockKey::User("mallory".into()),
        LockKey::Terminal("t9".into()),
        LockKey::User("alice".into()),
        LockKey::Terminal("t8".into()),
    ] {
        assert_eq!(
            a.lockout_state(&key).unwrap().map(|s| s.failures),
            Some(1),
            "{key:?}"
        );
    }
}

#[test]
fn legacy_credentials_log_in_once_and_are_upgraded() {
    let clock = ManualClock::new(T0);
    let mut a = setup(MemoryAuthStore::default(), &clock);
    let pin = PinPolicy::default().parse("1234").unwrap();
    a.store_mut()
        .put_user(&UserRecord {
            user_id: "old".into(),
            role: "cashier".into(),
            credential: Credential::legacy_sha256(&pin),
            disabled: false,
        })
        .unwrap();
    let mut r = rng();
    assert!(matches!(
        a.login("old", "t1", "1235", &mut r),
        Err(AuthError::WrongPin { .. })
    ));
    let login = a.login("old", "t1", "1234", &mut r).unwrap();
    assert!(login.credential_upgraded);
    let stored = a.store().user("old").unwrap().unwrap().credential;
    assert!(!stored.is_legacy());
    assert!(
        !a.login("old", "t1", "1234", &mut r)
            .unwrap()
            .credential_upgraded
    );
}

#[test]
fn sessions_expire_refresh_revoke_and_die_with_the_user() {
    let clock = ManualClock::new(T0);
    let mut a = enrolled(&clock);
    let mut r = rng();
    let login = a.login("alice", "t1", "2580", &mut r).unwrap();
    assert_eq!(login.token.as_str().len(), 64);
    assert_eq!(
        login.session.expires_at_ms - login.session.issued_at_ms,
        7 * 86_400_000
    );
    clock.advance(Duration::from_secs(6 * 86_400));
    let refreshed = a.refresh(&login.token).unwrap();
    assert_eq!(refreshed.expires_at_ms, clock.wall_ms() + 7 * 86_400_000);
    clock.advance(Duration::from_secs(7 * 86_400));
    assert!(matches!(
        a.validate(&login.token),
        Err(AuthError::SessionExpired { .. })
    ));
    assert_eq!(
        a.validate(&login.token).unwrap_err(),
        AuthError::UnknownSession
    );

    let login = a.login("alice", "t1", "2580", &mut r).unwrap();
    a.revoke(&login.token).unwrap();
    assert_eq!(
        a.validate(&login.token).unwrap_err(),
        AuthError::UnknownSession
    );

    let login = a.login("bob", "t1", "3691", &mut r).unwrap();
    let mut bob = a.store().user("bob").unwrap().unwrap();
    bob.disabled = true;
    a.store_mut().put_user(&bob).unwrap();
    assert_eq!(a.validate(&login.token).unwrap_err(), AuthError::Disabled);
    assert_eq!(
        a.login("bob", "t1", "3691", &mut r).unwrap_err(),
        AuthError::Disabled
    );
}
