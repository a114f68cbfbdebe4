//! Serving a trained model: every user's top-N on the CPU, and fold-in of users from their
//! ratings with the items held fixed.
//!
//! **Top-N.** Users are taken in blocks of [`USER_BLOCK`], one block per rayon task. A block's
//! scores against a tile of [`ITEM_TILE`] items are one small GEMM (P_block · Q_tileᵀ, with d
//! folded into P_block for UDV^T, by `matrixmultiply`), kept in a buffer that fits in L2; each row
//! then feeds a per-user min-heap of the N best (score, item) pairs, so a score costs one compare
//! against the heap's floor unless it enters. Items the user rated in training are skipped when
//! they would enter. The full score matrix never exists. Order: score descending, ties by item
//! index ascending; the result is the same for any thread count.
//!
//! **Fold-in.** A user's factors and bias minimise the training objective restricted to that
//! user, with every item row fixed: ½Σ_{i∈R_u}(r_ui − μ − b_u − c_i − p_u·q_i)² + ½λ_u‖p_u‖² +
//! ½λ_b,u b_u², the same λ and regularisation form as training. With x_i = (q_i, 1) this is one
//! (f+1)×(f+1) ridge system (A + D) z = Σ x_i (r_ui − μ − c_i), solved by Cholesky in f64.

use super::file::ModelFile;
use super::{ModelConfig, ModelKind};
use crate::data::{IdMap, Ratings};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// Users per GEMM block (one rayon task).
pub const USER_BLOCK: usize = 64;
/// Items per GEMM tile: 64 × 2048 f32 scores are 512 KiB.
pub const ITEM_TILE: usize = 2048;

/// A candidate in a top-N heap, ordered so the heap's top is the worst kept one.
#[derive(Clone, Copy, PartialEq)]
struct Cand {
    score: f32,
    item: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    /// "Better" is a higher score, then a lower item index; the heap keeps the worst on top.
    fn cmp(&self, o: &Self) -> Ordering {
        o.score.total_cmp(&self.score).then(self.item.cmp(&o.item))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// scores (m × t, row-major) = a (m × f, row-major) · qtᵀ, where qt holds t rows of f.
fn sgemm_tile(a: &[f32], m: usize, f: usize, qt: &[f32], t: usize, scores: &mut [f32]) {
    assert!(a.len() >= m * f && qt.len() >= t * f && scores.len() >= m * t);
    // SAFETY: the asserts above bound every element the strides reach, and `scores` is a
    // distinct &mut borrow, so it aliases neither input.
    unsafe {
        matrixmultiply::sgemm(
            m,
            f,
            t,
            1.0,
            a.as_ptr(),
            f as isize,
            1,
            qt.as_ptr(),
            1,
            f as isize,
            0.0,
            scores.as_mut_ptr(),
            t as isize,
            1,
        );
    }
}

/// What [`ModelFile::fold_in`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FoldInReport {
    /// Users added to the model.
    pub new_users: usize,
    /// Users the model knew, refit from the ratings given.
    pub refit_users: usize,
    /// Entries skipped because the model does not know their item, and how many such items.
    pub unknown_item_entries: usize,
    pub unknown_items: usize,
    /// Users whose every rating named an unknown item: they get zero factors and bias.
    pub users_without_known_items: usize,
}

impl ModelFile {
    /// The item biases c_i (zeros without biases): the per-item part of every score.
    pub fn item_biases(&self) -> Vec<f32> {
        let l = &self.layout;
        (0..l.n_items)
            .map(|i| {
                if l.has_biases() {
                    self.theta[l.c_off() + i]
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// μ + b_u (0 without biases): the per-user part of every score of dense user `u`.
    pub fn user_offset(&self, u: u32) -> f32 {
        let l = &self.layout;
        if l.has_biases() {
            l.mu + self.theta[l.b_off() + u as usize]
        } else {
            0.0
        }
    }

    /// The items dense user `u` rated in training, ascending (none when the file records none).
    pub fn seen_items(&self, u: u32) -> &[u32] {
        match &self.seen {
            Some((ptr, items)) => &items[ptr[u as usize] as usize..ptr[u as usize + 1] as usize],
            None => &[],
        }
    }

    /// The `n` best items of each user in `users` (dense ids), training items left out: (item,
    /// score) pairs best first, with score = r̂ (μ and both biases included). `emit` receives
    /// each user's list in the order of `users`, a block at a time.
    pub fn recommend_all(
        &self,
        users: &[u32],
        n: usize,
        mut emit: impl FnMut(u32, &[(u32, f32)]) -> Result<()>,
    ) -> Result<()> {
        let l = self.layout;
        if let Some(&u) = users.iter().find(|&&u| u as usize >= l.n_users) {
            return Err(Error::Unsupported(format!(
                "user index {u} is past the model's {} users",
                l.n_users
            )));
        }
        let f = l.rank;
        let q = &self.theta[l.q_off()..l.q_off() + l.n_items * f];
        let c = self.item_biases();
        // Enough blocks per round to keep every thread busy, few enough to bound memory.
        let round = USER_BLOCK * rayon::current_num_threads().max(1) * 4;
        for chunk in users.chunks(round) {
            let lists: Vec<Vec<Vec<(u32, f32)>>> = chunk
                .par_chunks(USER_BLOCK)
                .map(|block| self.top_n_block(block, n, q, &c))
                .collect();
            for (block, ls) in chunk.chunks(USER_BLOCK).zip(lists) {
                for (&u, list) in block.iter().zip(&ls) {
                    emit(u, list)?;
                }
            }
        }
        Ok(())
    }

    /// The GEMM part of [`ModelFile::recommend_all`] alone: every score of `users` against every
    /// item, in the same blocks and tiles, with no selection. Returns a checksum (the largest
    /// score). `sslf bench` times it to give top-N's share of the P·Qᵀ rate.
    pub fn score_pass(&self, users: &[u32]) -> f32 {
        let l = self.layout;
        let f = l.rank;
        let q = &self.theta[l.q_off()..l.q_off() + l.n_items * f];
        users
            .par_chunks(USER_BLOCK)
            .map(|block| {
                let a = self.block_rows(block);
                let mut scores = vec![0f32; block.len() * ITEM_TILE.min(l.n_items)];
                let mut best = f32::NEG_INFINITY;
                let mut start = 0;
                while start < l.n_items {
                    let t = ITEM_TILE.min(l.n_items - start);
                    sgemm_tile(
                        &a,
                        block.len(),
                        f,
                        &q[start * f..(start + t) * f],
                        t,
                        &mut scores,
                    );
                    best = scores[..block.len() * t]
                        .iter()
                        .fold(best, |m, &x| m.max(x));
                    start += t;
                }
                best
            })
            .reduce(|| f32::NEG_INFINITY, f32::max)
    }

    /// The rows of P (or U·diag(d)) of `block`, contiguous.
    fn block_rows(&self, block: &[u32]) -> Vec<f32> {
        let l = self.layout;
        let f = l.rank;
        let mut a = vec![0f32; block.len() * f];
        for (r, &u) in block.iter().enumerate() {
            let row = &self.theta[l.p_off() + u as usize * f..l.p_off() + (u as usize + 1) * f];
            for k in 0..f {
                a[r * f + k] = match l.kind {
                    ModelKind::Lf => row[k],
                    ModelKind::Udv => row[k] * self.theta[l.d_off() + k],
                };
            }
        }
        a
    }

    fn top_n_block(&self, block: &[u32], n: usize, q: &[f32], c: &[f32]) -> Vec<Vec<(u32, f32)>> {
        let l = self.layout;
        let (f, ni, m) = (l.rank, l.n_items, block.len());
        let a = self.block_rows(block);
        let mut heaps: Vec<BinaryHeap<Cand>> =
            (0..m).map(|_| BinaryHeap::with_capacity(n + 1)).collect();
        let mut scores = vec![0f32; m * ITEM_TILE.min(ni)];
        let mut start = 0;
        while start < ni && n > 0 {
            let t = ITEM_TILE.min(ni - start);
            let qt = &q[start * f..(start + t) * f];
            sgemm_tile(&a, m, f, qt, t, &mut scores);
            for (r, heap) in heaps.iter_mut().enumerate() {
                let u = block[r];
                for (j, &s0) in scores[r * t..(r + 1) * t].iter().enumerate() {
                    let cand = Cand {
                        score: s0 + c[start + j],
                        item: (start + j) as u32,
                    };
                    if heap.len() == n && cand.cmp(heap.peek().expect("full")) != Ordering::Less {
                        continue;
                    }
                    if self.seen_items(u).binary_search(&cand.item).is_ok() {
                        continue;
                    }
                    heap.push(cand);
                    if heap.len() > n {
                        heap.pop();
                    }
                }
            }
            start += t;
        }
        block
            .iter()
            .zip(heaps)
            .map(|(&u, heap)| {
                let base = self.user_offset(u);
                heap.into_sorted_vec()
                    .into_iter()
                    .map(|c| (c.item, c.score + base))
                    .collect()
            })
            .collect()
    }

    /// The model's hyper-parameters, from the config stored in the file.
    pub fn model_config(&self) -> Result<ModelConfig> {
        let v: serde_json::Value =
            serde_json::from_str(&self.config).map_err(|e| Error::Model {
                file: "(model file)".into(),
                message: format!("the stored config is not JSON: {e}"),
            })?;
        let mut m: ModelConfig = match v.get("model") {
            Some(m) => serde_json::from_value(m.clone()).map_err(|e| Error::Model {
                file: "(model file)".into(),
                message: format!("the stored config's `model` section: {e}"),
            })?,
            None => ModelConfig::default(),
        };
        m.kind = self.layout.kind;
        m.rank = self.layout.rank;
        Ok(m)
    }

    /// A copy of the model with the users of `ratings` (original ids in `users`/`items`) folded
    /// in: each one's factors and bias solved with the items fixed (see the module docs). Users
    /// the model knows are refit; new ones are added at the end. Entries whose item the model
    /// does not know are skipped and counted. The users' seen lists become the items given.
    pub fn fold_in(
        &self,
        ratings: &Ratings,
        users: &IdMap,
        items: &IdMap,
    ) -> Result<(ModelFile, FoldInReport)> {
        let l = self.layout;
        if l.kind != ModelKind::Lf {
            return Err(Error::Unsupported(
                "fold-in is for LF models; a UDV^T user row is coupled to the norm ball of all of U"
                    .into(),
            ));
        }
        let cfg = self.model_config()?;
        let f = l.rank;
        let w = f + l.has_biases() as usize;
        let mut report = FoldInReport::default();
        // Map every given user to a dense id of the new model, and group known-item entries.
        let mut out_users = self.users.clone();
        let mut rows: Vec<Vec<(u32, f32)>> = Vec::new();
        let mut dense: Vec<u32> = Vec::new();
        let mut row_of = vec![usize::MAX; users.len()];
        let mut unknown = vec![false; items.len()];
        for k in 0..ratings.nnz() {
            let gu = ratings.users[k] as usize;
            if row_of[gu] == usize::MAX {
                let name = users.name(ratings.users[k]);
                let known = out_users.get(name).is_some();
                let du = out_users.get_or_insert(name);
                if known {
                    report.refit_users += 1;
                } else {
                    report.new_users += 1;
                }
                row_of[gu] = rows.len();
                rows.push(Vec::new());
                dense.push(du);
            }
            match self.items.get(items.name(ratings.items[k])) {
                Some(i) => rows[row_of[gu]].push((i, ratings.values[k])),
                None => {
                    report.unknown_item_entries += 1;
                    unknown[ratings.items[k] as usize] = true;
                }
            }
        }
        report.unknown_items = unknown.iter().filter(|&&x| x).count();
        let c = self.item_biases();
        let solved: Vec<Vec<f32>> = rows
            .par_iter()
            .map(|row| {
                let nu = row.len();
                let (lf, lb) = (
                    cfg.row_weight(nu, cfg.lambda()),
                    cfg.row_weight(nu, cfg.lambda_bias),
                );
                let mut a = nalgebra::DMatrix::<f64>::zeros(w, w);
                let mut b = nalgebra::DVector::<f64>::zeros(w);
                let mut x = vec![0f64; w];
                for &(i, r) in row {
                    let qi =
                        &self.theta[l.q_off() + i as usize * f..l.q_off() + (i as usize + 1) * f];
                    for k in 0..f {
                        x[k] = qi[k] as f64;
                    }
                    if w > f {
                        x[f] = 1.0;
                    }
                    let y = r as f64 - l.mu as f64 - c[i as usize] as f64;
                    for p in 0..w {
                        b[p] += x[p] * y;
                        for s in 0..w {
                            a[(p, s)] += x[p] * x[s];
                        }
                    }
                }
                for p in 0..f {
                    a[(p, p)] += lf;
                }
                if w > f {
                    a[(f, f)] += lb;
                }
                let z = match a.clone().cholesky() {
                    Some(ch) => ch.solve(&b),
                    // λ = 0 with fewer ratings than factors: the least-norm solution.
                    None => a
                        .svd(true, true)
                        .solve(&b, 1e-10)
                        .unwrap_or_else(|_| nalgebra::DVector::zeros(w)),
                };
                z.iter().map(|&v| v as f32).collect()
            })
            .collect();
        report.users_without_known_items = rows.iter().filter(|r| r.is_empty()).count();
        // The new model: θ re-laid for the grown user count.
        let nl = super::Layout {
            n_users: out_users.len(),
            ..l
        };
        let mut theta = vec![0f32; nl.len()];
        theta[nl.p_off()..nl.p_off() + l.n_users * f]
            .copy_from_slice(&self.theta[l.p_off()..l.p_off() + l.n_users * f]);
        theta[nl.q_off()..nl.q_off() + l.n_items * f]
            .copy_from_slice(&self.theta[l.q_off()..l.q_off() + l.n_items * f]);
        if l.has_biases() {
            theta[nl.b_off()..nl.b_off() + l.n_users]
                .copy_from_slice(&self.theta[l.b_off()..l.b_off() + l.n_users]);
            theta[nl.c_off()..nl.c_off() + l.n_items]
                .copy_from_slice(&self.theta[l.c_off()..l.c_off() + l.n_items]);
        }
        for (&du, z) in dense.iter().zip(&solved) {
            let du = du as usize;
            theta[nl.p_off() + du * f..nl.p_off() + (du + 1) * f].copy_from_slice(&z[..f]);
            if l.has_biases() {
                theta[nl.b_off() + du] = z[f];
            }
        }
        // Seen lists: the model's, with the folded users' replaced by the items given.
        let mut given: Vec<Option<Vec<u32>>> = vec![None; nl.n_users];
        for (&du, row) in dense.iter().zip(&rows) {
            let mut it: Vec<u32> = row.iter().map(|&(i, _)| i).collect();
            it.sort_unstable();
            it.dedup();
            given[du as usize] = Some(it);
        }
        let mut ptr = vec![0u64];
        let mut idx = Vec::new();
        for (u, g) in given.iter().enumerate() {
            match g {
                Some(it) => idx.extend_from_slice(it),
                None if u < l.n_users => idx.extend_from_slice(self.seen_items(u as u32)),
                None => {}
            }
            ptr.push(idx.len() as u64);
        }
        let model = ModelFile {
            layout: nl,
            theta,
            users: out_users,
            items: self.items.clone(),
            clip: self.clip,
            config: self.config.clone(),
            seen: Some((ptr, idx)),
        };
        Ok((model, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Layout;

    /// A small LF model with biases and seen lists.
    fn model(n_users: usize, n_items: usize, f: usize) -> ModelFile {
        let layout = Layout {
            kind: ModelKind::Lf,
            n_users,
            n_items,
            rank: f,
            biases: true,
            mu: 3.0,
        };
        // Hashed, so no two rows repeat (exact ties would be broken by rounding).
        let theta: Vec<f32> = (0..layout.len() as u64)
            .map(|k| {
                ((k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                    * 1.6
            })
            .collect();
        let mut ptr = vec![0u64];
        let mut idx = Vec::new();
        for u in 0..n_users {
            for i in (u % 3..n_items).step_by(5) {
                idx.push(i as u32);
            }
            ptr.push(idx.len() as u64);
        }
        ModelFile {
            layout,
            theta,
            users: IdMap::identity(n_users),
            items: IdMap::identity(n_items),
            clip: (1.0, 5.0),
            config: "{}".into(),
            seen: Some((ptr, idx)),
        }
    }

    #[test]
    fn blocked_top_n_matches_the_one_user_brute_force() {
        // Items past one tile and users past one block.
        let m = model(150, ITEM_TILE + 300, 7);
        let users: Vec<u32> = (0..150).collect();
        for n in [1, 10, ITEM_TILE + 1000] {
            let mut got = Vec::new();
            m.recommend_all(&users, n, |u, l| {
                got.push((u, l.to_vec()));
                Ok(())
            })
            .unwrap();
            assert_eq!(got.len(), 150);
            for (u, list) in got {
                let want = m.recommend(u, n);
                assert_eq!(list.len(), want.len(), "user {u}");
                for (a, b) in list.iter().zip(&want) {
                    assert_eq!(a.0, b.0, "user {u} n {n}");
                    assert!((a.1 - b.1).abs() < 1e-4, "user {u}: {} vs {}", a.1, b.1);
                }
            }
        }
    }

    #[test]
    fn fold_in_of_a_known_users_ratings_solves_its_ridge_system() {
        let m = model(5, 40, 3);
        let mut r = Ratings::default();
        let mut users = IdMap::default();
        let mut items = IdMap::default();
        let u = users.get_or_insert("new");
        for i in [1u32, 4, 9, 16, 25, 36] {
            let it = items.get_or_insert(&i.to_string());
            r.push(u, it, 1.0 + (i % 5) as f32);
        }
        items.get_or_insert("unknown-item");
        r.push(u, items.get("unknown-item").unwrap(), 3.0);
        let (m2, rep) = m.fold_in(&r, &users, &items).unwrap();
        assert_eq!(rep.new_users, 1);
        assert_eq!(rep.unknown_item_entries, 1);
        assert_eq!(m2.users.len(), 6);
        // The gradient of the user's objective vanishes at the solution.
        let l = m2.layout;
        let f = l.rank;
        let du = 5usize;
        let p = &m2.theta[l.p_off() + du * f..l.p_off() + (du + 1) * f];
        let b = m2.theta[l.b_off() + du];
        let lam = m.model_config().unwrap().lambda() * 6.0;
        let lamb = m.model_config().unwrap().lambda_bias * 6.0;
        let mut g = vec![0f64; f + 1];
        for k in 0..6 {
            let i = m.items.get(items.name(r.items[k])).unwrap() as usize;
            let q = &m2.theta[l.q_off() + i * f..l.q_off() + (i + 1) * f];
            let pred =
                l.mu + b + m2.theta[l.c_off() + i] + (0..f).map(|t| p[t] * q[t]).sum::<f32>();
            let e = (r.values[k] - pred) as f64;
            for t in 0..f {
                g[t] -= e * q[t] as f64;
            }
            g[f] -= e;
        }
        for t in 0..f {
            g[t] += lam * p[t] as f64;
        }
        g[f] += lamb * b as f64;
        assert!(g.iter().all(|x| x.abs() < 1e-4), "{g:?}");
        // The old users and the items are unchanged.
        assert_eq!(
            &m2.theta[l.q_off()..l.q_off() + 40 * f],
            &m.theta[m.layout.q_off()..m.layout.q_off() + 40 * f]
        );
        assert_eq!(&m2.theta[..5 * f], &m.theta[..5 * f]);
    }
}
