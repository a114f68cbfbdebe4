//! The built-in synthetic HDI generator: a low-rank signal plus Gaussian noise, observed on a sparse
//! pattern whose user and item degrees follow power laws.
//!
//! r_ui = mean + scale · p_u·q_i + noise · ε, with p_u, q_i ~ N(0, I/√rank) and ε ~ N(0, 1)
//! (or Student-t with `noise_df` degrees of freedom: heavy-tailed noise).
//! Degrees: user weights (k+1)^(−user_exponent) and item weights (k+1)^(−item_exponent) over a
//! seeded random order of users and items. Each user draws its degree's worth of distinct items
//! from the item weights. Work is split per user with a per-user generator, so the output depends
//! on the seed alone, never on the thread count, and 10^8 entries take well under a minute.

use super::{Dataset, IdMap, Ratings};
use rand::distr::weighted::WeightedIndex;
use rand::prelude::*;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Parameters of the synthetic generator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    pub n_users: usize,
    pub n_items: usize,
    /// Target number of known entries (the result is within a few percent).
    pub nnz: usize,
    /// Rank of the signal.
    pub rank: usize,
    /// Standard deviation of the additive noise (its scale, with `noise_df`).
    pub noise: f64,
    /// Heavy-tailed noise: ε ~ Student-t with these degrees of freedom (> 0; absent: Gaussian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_df: Option<f64>,
    /// Offset added to every value.
    pub mean: f64,
    /// Scale of the low-rank signal.
    pub scale: f64,
    /// Power-law exponent of user degrees (0 gives uniform degrees).
    pub user_exponent: f64,
    /// Power-law exponent of item popularity.
    pub item_exponent: f64,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            n_users: 4000,
            n_items: 2000,
            nnz: 200_000,
            rank: 5,
            noise: 0.1,
            noise_df: None,
            mean: 3.0,
            scale: 1.0,
            user_exponent: 0.5,
            item_exponent: 0.5,
            seed: 1,
        }
    }
}

impl SynthConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.n_users == 0 || self.n_items == 0 {
            return Err("n_users and n_items must be positive".into());
        }
        if self.n_users > u32::MAX as usize || self.n_items > u32::MAX as usize {
            return Err("n_users and n_items must fit in u32".into());
        }
        if self.nnz == 0 {
            return Err("nnz must be positive".into());
        }
        if self.nnz as f64 > 0.5 * self.n_users as f64 * self.n_items as f64 {
            return Err(
                "nnz must be at most half of n_users × n_items (the data are sparse)".into(),
            );
        }
        if self.nnz < self.n_users {
            return Err(format!(
                "nnz ({}) must be at least n_users ({}): every user gets at least one rating",
                self.nnz, self.n_users
            ));
        }
        if self.rank == 0 {
            return Err("rank must be positive".into());
        }
        // Peak host memory while generating, preparing and uploading: per entry the generated
        // row, the COO copy, the splits and CSR + CSC (about 64 bytes); per row the signal
        // factors and weights.
        let need = self.nnz as u128 * 64
            + (self.n_users + self.n_items) as u128 * (8 * self.rank as u128 + 64);
        if let Some(avail) = crate::fs::available_memory() {
            if need > avail as u128 {
                return Err(format!(
                    "needs about {:.1} GiB of memory to generate and prepare, but {:.1} GiB is \
                     available: lower nnz, n_users or n_items",
                    need as f64 / (1u64 << 30) as f64,
                    avail as f64 / (1u64 << 30) as f64
                ));
            }
        }
        if !super::finite_nonneg(self.noise) {
            return Err("noise must be a finite number ≥ 0".into());
        }
        if self.noise_df.is_some_and(|v| !super::finite_pos(v)) {
            return Err("noise_df must be a finite number > 0".into());
        }
        if !super::finite_nonneg(self.user_exponent) || !super::finite_nonneg(self.item_exponent) {
            return Err("degree exponents must be ≥ 0".into());
        }
        Ok(())
    }
}

fn mix(seed: u64, k: u64) -> u64 {
    // SplitMix64 finaliser: decorrelates per-user streams.
    let mut z = seed
        ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn power_weights(n: usize, exponent: f64, rng: &mut StdRng) -> Vec<f64> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut w = vec![0.0; n];
    for (rank, &k) in order.iter().enumerate() {
        w[k] = (rank as f64 + 1.0).powf(-exponent);
    }
    w
}

fn gaussian_rows(n: usize, rank: usize, seed: u64) -> Vec<f32> {
    let s = 1.0 / (rank as f64).sqrt().sqrt();
    let mut out = vec![0f32; n * rank];
    out.par_chunks_mut(rank).enumerate().for_each(|(r, row)| {
        let mut rng = StdRng::seed_from_u64(mix(seed, r as u64));
        for x in row {
            *x = (rng.sample::<f64, _>(StandardNormal) * s) as f32;
        }
    });
    out
}

/// Generates a data set. Call [`SynthConfig::validate`] first; this function assumes valid input.
pub fn generate(cfg: &SynthConfig) -> Dataset {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let user_w = power_weights(cfg.n_users, cfg.user_exponent, &mut rng);
    let item_w = power_weights(cfg.n_items, cfg.item_exponent, &mut rng);
    let total_u: f64 = user_w.iter().sum();
    let max_deg = (cfg.n_items / 2).max(1);
    let degrees: Vec<usize> = user_w
        .iter()
        .map(|w| ((cfg.nnz as f64 * w / total_u).round() as usize).clamp(1, max_deg))
        .collect();
    let p = gaussian_rows(cfg.n_users, cfg.rank, mix(cfg.seed, 1 << 40));
    let q = gaussian_rows(cfg.n_items, cfg.rank, mix(cfg.seed, 2 << 40));
    let item_dist = WeightedIndex::new(&item_w).expect("weights are positive and finite");
    let rank = cfg.rank;
    let student = cfg
        .noise_df
        .map(|v| rand_distr::StudentT::new(v).expect("validated: noise_df > 0"));

    let rows: Vec<Vec<(u32, f32)>> = (0..cfg.n_users)
        .into_par_iter()
        .map(|u| {
            let mut rng = StdRng::seed_from_u64(mix(cfg.seed, u as u64 + (3 << 40)));
            let d = degrees[u];
            let mut items: Vec<u32> = if d * 8 <= cfg.n_items {
                // Rejection sampling of distinct items: few collisions at this density.
                let mut set = std::collections::HashSet::with_capacity(d * 2);
                while set.len() < d {
                    set.insert(item_dist.sample(&mut rng) as u32);
                }
                set.into_iter().collect()
            } else {
                // Weighted sampling without replacement (exponential keys), O(n_items).
                let mut keyed: Vec<(f64, u32)> = item_w
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| {
                        let e: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                        (-e.ln() / w, i as u32)
                    })
                    .collect();
                keyed.select_nth_unstable_by(d - 1, |a, b| a.0.total_cmp(&b.0));
                keyed[..d].iter().map(|&(_, i)| i).collect()
            };
            items.sort_unstable();
            let pu = &p[u * rank..(u + 1) * rank];
            items
                .into_iter()
                .map(|i| {
                    let qi = &q[i as usize * rank..(i as usize + 1) * rank];
                    let dot: f64 = pu.iter().zip(qi).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let eps: f64 = match &student {
                        Some(t) => rng.sample(t),
                        None => rng.sample(StandardNormal),
                    };
                    (i, (cfg.mean + cfg.scale * dot + cfg.noise * eps) as f32)
                })
                .collect()
        })
        .collect();

    let nnz: usize = rows.iter().map(Vec::len).sum();
    let mut r = Ratings {
        users: Vec::with_capacity(nnz),
        items: Vec::with_capacity(nnz),
        values: Vec::with_capacity(nnz),
    };
    for (u, row) in rows.into_iter().enumerate() {
        for (i, v) in row {
            r.push(u as u32, i, v);
        }
    }
    Dataset {
        ratings: r,
        users: IdMap::identity(cfg.n_users),
        items: IdMap::identity(cfg.n_items),
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_seeded_sized_and_heavy_tailed() {
        let cfg = SynthConfig {
            n_users: 2000,
            n_items: 1000,
            nnz: 40_000,
            user_exponent: 0.8,
            ..Default::default()
        };
        let a = generate(&cfg);
        let b = generate(&cfg);
        assert_eq!(a.ratings, b.ratings);
        let n = a.ratings.nnz() as f64;
        assert!((n - 40_000.0).abs() / 40_000.0 < 0.1, "nnz {n}");
        let mut deg = vec![0usize; 2000];
        for &u in &a.ratings.users {
            deg[u as usize] += 1;
        }
        let max = *deg.iter().max().unwrap() as f64;
        assert!(
            max > 10.0 * n / 2000.0,
            "max degree {max} is not heavy-tailed"
        );
        let c = generate(&SynthConfig { seed: 2, ..cfg });
        assert_ne!(a.ratings, c.ratings);
    }
}
