//! PIN verification cost, pdc's KDF parameter sets beside the design
//! study's unsalted SHA-256: the defender's login time and, inverted, the
//! attacker's guesses per second per core against a stolen credential.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pdc_auth::{Credential, KdfParams, Pepper, PinHasher, PinPolicy};
use rand::SeedableRng;
use sha2::{Digest, Sha256};

fn verify(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let pin = PinPolicy::default().parse("2580").unwrap();
    let mut g = c.benchmark_group("auth_verify");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let sets = [
        ("argon2id_m19456_t2_p1_default", KdfParams::DEFAULT),
        (
            "argon2id_m47104_t1_p1",
            KdfParams::Argon2id {
                m_kib: 46 * 1024,
                t: 1,
                p: 1,
            },
        ),
        (
            "argon2id_m12288_t3_p1",
            KdfParams::Argon2id {
                m_kib: 12 * 1024,
                t: 3,
                p: 1,
            },
        ),
        ("pbkdf2_sha256_600k", KdfParams::PBKDF2_DEFAULT),
    ];
    for (name, params) in sets {
        let h = PinHasher::new(params, Some(Pepper::new(b"fleet secret 0123").unwrap()));
        let cred = h.hash(&pin, &mut rng).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| h.verify(black_box(&cred), &pin, &mut rng).unwrap())
        });
    }
    g.finish();

    // The study's format: what an attacker with the file computes per guess.
    let legacy = Credential::legacy_sha256(&pin);
    let mut g = c.benchmark_group("auth_verify_legacy");
    g.bench_function("sha256_unsalted_guess", |b| {
        b.iter(|| Sha256::digest(black_box(b"2580")))
    });
    let h = PinHasher::new(KdfParams::INSECURE_TEST, None);
    let wrong = PinPolicy::default().parse("2581").unwrap();
    g.bench_function("legacy_verify_via_pdc", |b| {
        b.iter(|| h.verify(black_box(&legacy), &wrong, &mut rng).unwrap())
    });
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
