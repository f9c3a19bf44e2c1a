//! `cargo xtask fleet`: 100 terminals reconnect at once after an outage to
//! a server that takes 10 pushes per 100 ms window and answers the rest
//! "busy". Compares pdc's backoff (decorrelated jitter, reconnect jitter)
//! with the study's fixed schedule 100/200/500/1000/2000 ms without jitter:
//! server calls and time until every terminal drained its 4 batches.

use std::time::Duration;

use pdc_sync::{Backoff, BackoffConfig, Quality};
use rand::{Rng, SeedableRng};

const TERMINALS: usize = 100;
const BATCHES: u32 = 4;
const WINDOW_MS: u64 = 100;
const CAPACITY: u32 = 10;

#[derive(Clone, Copy)]
enum Policy {
    Pdc,
    Fixed,
}

fn run(policy: Policy, seed: u64) -> (u64, u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let fixed = [100u64, 200, 500, 1000, 2000];
    let mut next_at: Vec<u64> = (0..TERMINALS)
        .map(|_| match policy {
            Policy::Pdc => rng.gen_range(0..500), // reconnect jitter
            Policy::Fixed => 0,
        })
        .collect();
    let mut left = vec![BATCHES; TERMINALS];
    let mut failures = vec![0usize; TERMINALS];
    let mut backoffs: Vec<Backoff> = (0..TERMINALS)
        .map(|_| Backoff::new(BackoffConfig::default()))
        .collect();
    let (mut calls, mut t) = (0u64, 0u64);
    let mut window_start = 0u64;
    let mut in_window = 0u32;
    while left.iter().any(|&l| l > 0) && t < 600_000 {
        if t >= window_start + WINDOW_MS {
            window_start = t - t % WINDOW_MS;
            in_window = 0;
        }
        for i in 0..TERMINALS {
            if left[i] == 0 || next_at[i] != t {
                continue;
            }
            calls += 1;
            if in_window < CAPACITY {
                in_window += 1;
                left[i] -= 1;
                failures[i] = 0;
                backoffs[i].reset();
                next_at[i] = t + 20; // round trip, then the next batch
            } else {
                let delay = match policy {
                    Policy::Pdc => backoffs[i].next_delay(&mut rng, Quality::Fair, None),
                    Policy::Fixed => Duration::from_millis(fixed[failures[i].min(fixed.len() - 1)]),
                };
                failures[i] += 1;
                next_at[i] = t + (delay.as_millis() as u64).max(1);
            }
        }
        t += 1;
    }
    (calls, t)
}

pub fn run_report() -> Result<(), String> {
    let seeds = 20u64;
    let (mut pc, mut pt, mut fc, mut ft) = (0, 0, 0, 0);
    for s in 0..seeds {
        let (c, t) = run(Policy::Pdc, s);
        pc += c;
        pt += t;
        let (c, t) = run(Policy::Fixed, s);
        fc += c;
        ft += t;
    }
    let ideal = (TERMINALS as u64 * BATCHES as u64) * WINDOW_MS / CAPACITY as u64;
    println!("{TERMINALS} terminals x {BATCHES} batches, server {CAPACITY} pushes / {WINDOW_MS} ms (ideal drain {ideal} ms), mean of {seeds} seeds");
    println!(
        "{:<34} {:>12} {:>14}",
        "policy", "server calls", "drain time ms"
    );
    println!(
        "{:<34} {:>12} {:>14}",
        "pdc (decorrelated jitter)",
        pc / seeds,
        pt / seeds
    );
    println!(
        "{:<34} {:>12} {:>14}",
        "fixed 100/200/500/1000/2000 ms",
        fc / seeds,
        ft / seeds
    );
    println!(
        "ratio pdc/fixed: calls {:.2}, drain time {:.2}",
        pc as f64 / fc as f64,
        pt as f64 / ft as f64
    );
    Ok(())
}
