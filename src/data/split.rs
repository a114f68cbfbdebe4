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
    let n = r.nnz();
    let mut held = vec![false; n];
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    match mode {
        SplitMode::Random => {
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut rng);
            let n_held = (n as f64 * fraction).floor() as usize;
            for &k in &perm[..n_held] {
                held[k] = true;
            }
        }
        SplitMode::PerUser => {
            let n_users = r.users.iter().map(|&u| u as usize + 1).max().unwrap_or(0);
            let mut rows: Vec<Vec<usize>> = vec![Vec::new(); n_users];
            for k in 0..n {
                rows[r.users[k] as usize].push(k);
            }
            for row in rows.iter_mut() {
                if row.len() < 2 {
                    continue;
                }
                row.shuffle(&mut rng);
                let n_held = ((row.len() as f64 * fraction).round() as usize).min(row.len() - 1);
                for &k in &row[..n_held] {
                    held[k] = true;
                }
            }
        }
    }
    let kept: Vec<usize> = (0..n).filter(|&k| !held[k]).collect();
    let out: Vec<usize> = (0..n).filter(|&k| held[k]).collect();
    (r.select(&kept), r.select(&out))
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
    fn per_user_split_takes_from_every_user() {
        let r = sample();
        let (_, b) = split(&r, 0.2, SplitMode::PerUser, 1);
        for u in 0..20u32 {
            assert_eq!(b.users.iter().filter(|&&x| x == u).count(), 2);
        }
    }
}
