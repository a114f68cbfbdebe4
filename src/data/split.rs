//! Seeded hold-out splits: uniformly at random over entries, or per user (each user keeps the same
//! fraction of its own entries for the held-out part).

use super::Ratings;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// How held-out entries are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SplitMode {
    /// A uniform sample of all entries.
    #[default]
    Random,
    /// The same fraction of every user's entries; a user with one entry keeps it for training.
    PerUser,
}

/// Splits `r` into (kept, held out) with about `fraction` of the entries held out. The order of the
/// entries inside each part follows their order in `r`. The result depends only on `r`, `fraction`,
/// `mode` and `seed`.
pub fn split(r: &Ratings, fraction: f64, mode: SplitMode, seed: u64) -> (Ratings, Ratings) {
    let held = match mode {
        SplitMode::Random => held_random(r.nnz(), fraction, seed),
        SplitMode::PerUser => held_per_user(r, fraction, seed),
    };
    apply(r, &held)
}

/// Entries held out by a random split of `n` entries: it depends on the count alone, so a
/// caller that knows the counts can draw several before the data is there, or at once.
pub fn held_random(n: usize, fraction: f64, seed: u64) -> Vec<bool> {
    assert!(
        u32::try_from(n).is_ok(),
        "a split holds at most 2^32 - 1 entries"
    );
    let mut held = vec![false; n];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Positions are shuffled as u32: the permutation does not depend on the element type.
    let mut perm: Vec<u32> = (0..n as u32).collect();
    perm.shuffle(&mut rng);
    for &k in &perm[..random_held_count(n, fraction)] {
        held[k as usize] = true;
    }
    held
}

/// How many of `n` entries a random split holds out.
pub fn random_held_count(n: usize, fraction: f64) -> usize {
    (n as f64 * fraction).floor() as usize
}

fn held_per_user(r: &Ratings, fraction: f64, seed: u64) -> Vec<bool> {
    let n = r.nnz();
    assert!(
        u32::try_from(n).is_ok(),
        "a split holds at most 2^32 - 1 entries"
    );
    let mut held = vec![false; n];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Each user's positions in file order (a stable counting sort), then shuffled user by user
    // in user order.
    let n_users = r.users.iter().map(|&u| u as usize + 1).max().unwrap_or(0);
    let (ptr, mut rows) = super::positions_by_row(&r.users, n_users);
    for u in 0..n_users {
        let row = &mut rows[ptr[u]..ptr[u + 1]];
        if row.len() < 2 {
            continue;
        }
        row.shuffle(&mut rng);
        let n_held = ((row.len() as f64 * fraction).round() as usize).min(row.len() - 1);
        for &k in &row[..n_held] {
            held[k as usize] = true;
        }
    }
    held
}

/// Two splits in one: `test` marks the entries of `r` held out for test, `valid` the entries of
/// what is left (in order) held out for validation; returns (train, valid, test), each in `r`'s
/// order. The same as `apply` twice, without the intermediate part; the three parts are gathered
/// at once.
pub fn apply3(r: &Ratings, test: &[bool], valid: &[bool]) -> (Ratings, Ratings, Ratings) {
    assert_eq!(test.len(), r.nnz(), "one test mark per entry");
    let n_test = test.iter().filter(|&&h| h).count();
    assert_eq!(
        valid.len(),
        r.nnz() - n_test,
        "one validation mark per kept entry"
    );
    let n_valid = valid.iter().filter(|&&h| h).count();
    // 0: train, 1: valid, 2: test.
    let part = |which: u8, n: usize| {
        let mut to = Ratings::with_capacity(n);
        let mut j = 0usize;
        for (k, &t) in test.iter().enumerate() {
            let class = if t {
                2
            } else {
                j += 1;
                valid[j - 1] as u8
            };
            if class == which {
                to.push(r.users[k], r.items[k], r.values[k]);
            }
        }
        to
    };
    let (train, (valid, test)) = rayon::join(
        || part(0, r.nnz() - n_test - n_valid),
        || rayon::join(|| part(1, n_valid), || part(2, n_test)),
    );
    (train, valid, test)
}

/// Splits `r` into (kept, held out) by the mask, each in `r`'s order.
pub fn apply(r: &Ratings, held: &[bool]) -> (Ratings, Ratings) {
    assert_eq!(held.len(), r.nnz(), "one mark per entry");
    let n_held = held.iter().filter(|&&h| h).count();
    // The two parts are gathered at once, each in one pass in order.
    let part = |want: bool, n: usize| {
        let mut to = Ratings::with_capacity(n);
        for (k, &h) in held.iter().enumerate() {
            if h == want {
                to.push(r.users[k], r.items[k], r.values[k]);
            }
        }
        to
    };
    rayon::join(|| part(false, r.nnz() - n_held), || part(true, n_held))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ratings {
        let mut r = Ratings::default();
        for u in 0..20u32 {
            for i in 0..10u32 {
                r.push(u, i, (u * 10 + i) as f32);
            }
        }
        r
    }

    #[test]
    fn random_split_is_seeded_and_complete() {
        let r = sample();
        let (a, b) = split(&r, 0.25, SplitMode::Random, 7);
        assert_eq!(b.nnz(), 50);
        assert_eq!(a.nnz() + b.nnz(), r.nnz());
        assert_eq!(split(&r, 0.25, SplitMode::Random, 7).1, b);
        assert_ne!(split(&r, 0.25, SplitMode::Random, 8).1, b);
    }

    #[test]
    fn two_splits_in_one_pass_match_two_passes() {
        let r = sample();
        let t = held_random(r.nnz(), 0.2, 3);
        let (kept, test) = apply(&r, &t);
        let v = held_random(kept.nnz(), 0.1, 4);
        let (train, valid) = apply(&kept, &v);
        assert_eq!(apply3(&r, &t, &v), (train, valid, test));
        assert_eq!(split(&r, 0.2, SplitMode::Random, 3).1, apply(&r, &t).1);
    }

    #[test]
    fn per_user_split_takes_from_every_user() {
        let r = sample();
        let (_, b) = split(&r, 0.2, SplitMode::PerUser, 1);
        for u in 0..20u32 {
            assert_eq!(b.users.iter().filter(|&&x| x == u).count(), 2);
        }
    }
}
