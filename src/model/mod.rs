//! Models and their parameter layout. All trainable parameters live in one flat vector θ; a
//! [`Layout`] says where each block starts. Backends read the layout, solvers never do.
//!
//! - LF: θ = [P (m×f) | Q (n×f) | b (m) | c (n)], the bias blocks present only with biases on;
//!   r̂_ui = μ + b_u + c_i + p_u·q_i (μ and the biases only with biases on).
//! - UDV^T: θ = [U (m×f) | V (n×f) | d (f)]; r̂_ui = Σ_k U_uk d_k V_ik.

pub mod file;
pub mod rank;
pub mod serve;

use rand::prelude::*;

pub use crate::data::{finite_nonneg, finite_pos};

use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// Which prediction rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    #[default]
    Lf,
    Udv,
}

/// How the ridge penalty is weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Regularization {
    /// λ‖p_u‖² once per known entry of u (the SLF family's form): weight λ·|K_u|^a, with a =
    /// `degree_exponent` (1 by default).
    #[default]
    PerEntry,
    /// ½λ(‖P‖²_F + ‖Q‖²_F): weight λ for every row.
    Frobenius,
}

/// Shape of a model: what the backends need to evaluate r̂ and its derivatives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    pub kind: ModelKind,
    pub n_users: usize,
    pub n_items: usize,
    /// f, the number of latent factors.
    pub rank: usize,
    /// LF only: bias blocks b and c present, and μ added.
    pub biases: bool,
    /// LF only: the fixed global mean μ (0 without biases).
    pub mu: f32,
}

impl Layout {
    /// Start of the user-factor block (P or U).
    pub fn p_off(&self) -> usize {
        0
    }
    /// Start of the item-factor block (Q or V).
    pub fn q_off(&self) -> usize {
        self.n_users * self.rank
    }
    /// Start of the user-bias block b (LF with biases).
    pub fn b_off(&self) -> usize {
        (self.n_users + self.n_items) * self.rank
    }
    /// Start of the item-bias block c (LF with biases).
    pub fn c_off(&self) -> usize {
        self.b_off() + self.n_users
    }
    /// Start of the diagonal d (UDV).
    pub fn d_off(&self) -> usize {
        (self.n_users + self.n_items) * self.rank
    }
    /// True when the LF model has bias blocks.
    pub fn has_biases(&self) -> bool {
        self.kind == ModelKind::Lf && self.biases
    }
    /// Length of θ.
    pub fn len(&self) -> usize {
        let f = (self.n_users + self.n_items) * self.rank;
        match self.kind {
            ModelKind::Lf if self.biases => f + self.n_users + self.n_items,
            ModelKind::Lf => f,
            ModelKind::Udv => f + self.rank,
        }
    }
    /// The coordinates that belong to no user row (item rows, item biases, UDV's d): the parts
    /// every process holds whole when the users are sharded across processes.
    pub fn shared_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let q = self.q_off()..self.q_off() + self.n_items * self.rank;
        match self.kind {
            ModelKind::Lf if self.biases => {
                vec![q, self.c_off()..self.c_off() + self.n_items]
            }
            ModelKind::Lf => vec![q],
            ModelKind::Udv => std::iter::once(self.q_off()..self.len()).collect(),
        }
    }
    /// The coordinates of user rows (factors, then biases): the parts a process holds only for
    /// its own users.
    pub fn user_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let p = self.p_off()..self.q_off();
        if self.has_biases() {
            vec![p, self.b_off()..self.c_off()]
        } else {
            vec![p]
        }
    }
    /// True for an empty model.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Model hyper-parameters, as in the `model` section of a config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// f, the number of latent factors.
    pub rank: usize,
    /// LF: learn user and item biases around the training mean.
    pub biases: bool,
    /// λ on the factor blocks. `null` picks the model's default (LF 0.05, UDV 0).
    pub lambda: Option<f64>,
    /// λ_b on the bias blocks.
    pub lambda_bias: f64,
    pub regularization: Regularization,
    /// a in the per-entry weight λ·|K|^a: 1 is the SLF form, 0 a plain ridge on rows with data,
    /// values between shrink the rows with many ratings less than in proportion.
    pub degree_exponent: f64,
    /// Standard deviation of the LF factor initialisation; UDV uses `xi`.
    pub init_scale: f64,
    /// UDV: radius α_U of the Frobenius ball for U.
    pub alpha_u: f64,
    /// UDV: radius α_V of the Frobenius ball for V.
    pub alpha_v: f64,
    /// UDV: Frobenius norm ξ of the initial U and V.
    pub xi: f64,
    /// UDV: let d take either sign (no clipping at 0).
    pub signed_d: bool,
    /// UDV: relative tolerance for the numerical rank.
    pub rank_tol: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            kind: ModelKind::Lf,
            rank: 20,
            biases: true,
            lambda: None,
            lambda_bias: 0.01,
            regularization: Regularization::PerEntry,
            degree_exponent: 1.0,
            init_scale: 0.1,
            alpha_u: 1.0,
            alpha_v: 1.0,
            xi: 1e-2,
            signed_d: false,
            rank_tol: 1e-6,
        }
    }
}

impl ModelConfig {
    /// λ in force: the configured value, or the model's default.
    pub fn lambda(&self) -> f64 {
        self.lambda.unwrap_or(match self.kind {
            ModelKind::Lf => 0.05,
            ModelKind::Udv => 0.0,
        })
    }

    /// Checks ranges; `Err` holds (field, message).
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.rank == 0 || self.rank > 1024 {
            return Err(("rank", "must be in 1..=1024".into()));
        }
        let l = self.lambda();
        if !finite_nonneg(l) {
            return Err(("lambda", "must be a finite number ≥ 0".into()));
        }
        if !finite_nonneg(self.lambda_bias) {
            return Err(("lambda_bias", "must be a finite number ≥ 0".into()));
        }
        if !finite_nonneg(self.degree_exponent) || self.degree_exponent > 4.0 {
            return Err(("degree_exponent", "must be in [0, 4]".into()));
        }
        if self.regularization == Regularization::Frobenius && self.degree_exponent != 1.0 {
            return Err((
                "degree_exponent",
                "applies to the per_entry regularization only; leave it at 1 with frobenius".into(),
            ));
        }
        if !finite_pos(self.init_scale) {
            return Err(("init_scale", "must be > 0".into()));
        }
        if !finite_pos(self.alpha_u) || !finite_pos(self.alpha_v) {
            return Err(("alpha_u", "the ball radii must be > 0".into()));
        }
        if !finite_pos(self.xi) || self.xi > self.alpha_u.min(self.alpha_v) {
            return Err(("xi", "must be > 0 and inside both balls".into()));
        }
        if !(self.rank_tol > 0.0 && self.rank_tol < 1.0) {
            return Err(("rank_tol", "must be in (0, 1)".into()));
        }
        Ok(())
    }

    /// The layout for a data set of this shape; `mu` is the training mean.
    pub fn layout(&self, n_users: usize, n_items: usize, mu: f32) -> Layout {
        let biases = self.kind == ModelKind::Lf && self.biases;
        Layout {
            kind: self.kind,
            n_users,
            n_items,
            rank: self.rank,
            biases,
            mu: if biases { mu } else { 0.0 },
        }
    }

    /// The initial θ: LF factors N(0, init_scale²) and zero biases; UDV U and V Gaussian scaled to
    /// ‖·‖_F = ξ, and d = 1. Rows with no training entry (`user_counts`/`item_counts` 0) get zero
    /// factors: no gradient ever reaches them, so their entries fall back to the mean and the
    /// known bias instead of to initialisation noise.
    pub fn init(
        &self,
        layout: &Layout,
        seed: u64,
        user_counts: &[u32],
        item_counts: &[u32],
    ) -> Vec<f32> {
        let mut theta = self.init_dense(layout, seed);
        let f = layout.rank;
        for (u, _) in user_counts.iter().enumerate().filter(|(_, &c)| c == 0) {
            theta[layout.p_off() + u * f..layout.p_off() + (u + 1) * f].fill(0.0);
        }
        for (i, _) in item_counts.iter().enumerate().filter(|(_, &c)| c == 0) {
            theta[layout.q_off() + i * f..layout.q_off() + (i + 1) * f].fill(0.0);
        }
        theta
    }

    /// The rows of [`ModelConfig::init`]'s θ for the model `whole` that a process training the
    /// users `users` holds (its users' rows, every item row, d), with the same bits, without
    /// holding the whole θ: the draws are streamed and the rows of other users skipped.
    /// `user_counts` are this process's users' entry counts.
    pub fn init_part(
        &self,
        whole: &Layout,
        seed: u64,
        users: std::ops::Range<usize>,
        user_counts: &[u32],
        item_counts: &[u32],
    ) -> Vec<f32> {
        let local = Layout {
            n_users: users.len(),
            ..*whole
        };
        let f = whole.rank;
        let mut rng = StdRng::seed_from_u64(seed ^ 0x005E_ED0F_1A7E);
        let mut theta = vec![0f32; local.len()];
        let (q, nf) = (whole.q_off(), (whole.n_users + whole.n_items) * f);
        let mine = users.start * f..users.end * f;
        let mut norms = [0f64; 2];
        for k in 0..nf {
            let x = rng.sample::<f64, _>(StandardNormal) as f32;
            norms[(k >= q) as usize] += (x as f64).powi(2);
            if k >= q {
                theta[local.q_off() + k - q] = x;
            } else if mine.contains(&k) {
                theta[k - mine.start] = x;
            }
        }
        let lnf = (local.n_users + local.n_items) * f;
        match whole.kind {
            ModelKind::Lf => {
                for x in theta[..lnf].iter_mut() {
                    *x *= self.init_scale as f32;
                }
            }
            ModelKind::Udv => {
                for (side, range) in [(0, 0..local.q_off()), (1, local.q_off()..lnf)] {
                    let s = (self.xi / norms[side].sqrt().max(1e-30)) as f32;
                    for x in theta[range].iter_mut() {
                        *x *= s;
                    }
                }
                for x in theta[lnf..].iter_mut() {
                    *x = 1.0;
                }
            }
        }
        for (u, _) in user_counts.iter().enumerate().filter(|(_, &c)| c == 0) {
            theta[u * f..(u + 1) * f].fill(0.0);
        }
        for (i, _) in item_counts.iter().enumerate().filter(|(_, &c)| c == 0) {
            theta[local.q_off() + i * f..local.q_off() + (i + 1) * f].fill(0.0);
        }
        theta
    }

    fn init_dense(&self, layout: &Layout, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x005E_ED0F_1A7E);
        let mut theta = vec![0f32; layout.len()];
        let nf = (layout.n_users + layout.n_items) * layout.rank;
        for x in theta[..nf].iter_mut() {
            *x = rng.sample::<f64, _>(StandardNormal) as f32;
        }
        match layout.kind {
            ModelKind::Lf => {
                for x in theta[..nf].iter_mut() {
                    *x *= self.init_scale as f32;
                }
            }
            ModelKind::Udv => {
                for (lo, hi) in [(0, layout.q_off()), (layout.q_off(), nf)] {
                    let n: f64 = theta[lo..hi].iter().map(|&x| (x as f64).powi(2)).sum();
                    let s = (self.xi / n.sqrt().max(1e-30)) as f32;
                    for x in theta[lo..hi].iter_mut() {
                        *x *= s;
                    }
                }
                for x in theta[nf..].iter_mut() {
                    *x = 1.0;
                }
            }
        }
        theta
    }

    /// The ridge weight of a row with `count` training entries under the penalty `l` (λ or λ_b):
    /// λ·count^a per entry (a row without entries weighs 0), or λ for the Frobenius form.
    pub fn row_weight(&self, count: usize, l: f64) -> f64 {
        match self.regularization {
            Regularization::PerEntry if count == 0 => 0.0,
            Regularization::PerEntry if self.degree_exponent == 1.0 => l * count as f64,
            Regularization::PerEntry => l * (count as f64).powf(self.degree_exponent),
            Regularization::Frobenius => l,
        }
    }

    /// The diagonal D of the ridge term ½θᵀDθ, given the per-row entry counts.
    pub fn reg_diag(&self, layout: &Layout, user_counts: &[u32], item_counts: &[u32]) -> Vec<f32> {
        let lambda = self.lambda();
        let w = |count: u32, l: f64| -> f32 { self.row_weight(count as usize, l) as f32 };
        let f = layout.rank;
        let mut d = vec![0f32; layout.len()];
        for (u, &c) in user_counts.iter().enumerate() {
            d[layout.p_off() + u * f..layout.p_off() + (u + 1) * f].fill(w(c, lambda));
        }
        for (i, &c) in item_counts.iter().enumerate() {
            d[layout.q_off() + i * f..layout.q_off() + (i + 1) * f].fill(w(c, lambda));
        }
        if layout.has_biases() {
            for (u, &c) in user_counts.iter().enumerate() {
                d[layout.b_off() + u] = w(c, self.lambda_bias);
            }
            for (i, &c) in item_counts.iter().enumerate() {
                d[layout.c_off() + i] = w(c, self.lambda_bias);
            }
        }
        d
    }
}

/// Sums over a set of entries, from which RMSE and MAE follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct EvalSums {
    pub count: u64,
    pub sse: f64,
    pub sae: f64,
    /// Same, with predictions clipped to the rating range.
    pub sse_clipped: f64,
    pub sae_clipped: f64,
}

impl EvalSums {
    pub fn rmse(&self) -> f64 {
        (self.sse / self.count.max(1) as f64).sqrt()
    }
    pub fn mae(&self) -> f64 {
        self.sae / self.count.max(1) as f64
    }
    pub fn rmse_clipped(&self) -> f64 {
        (self.sse_clipped / self.count.max(1) as f64).sqrt()
    }
    pub fn mae_clipped(&self) -> f64 {
        self.sae_clipped / self.count.max(1) as f64
    }
}

impl EvalSums {
    /// Adds one entry: rating `r`, prediction `pred`, and its clipped form `pred_clipped`.
    pub fn add(&mut self, r: f32, pred: f32, pred_clipped: f32) {
        let e = (r - pred) as f64;
        let ec = (r - pred_clipped) as f64;
        self.count += 1;
        self.sse += e * e;
        self.sae += e.abs();
        self.sse_clipped += ec * ec;
        self.sae_clipped += ec.abs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lf(exponent: f64, regularization: Regularization) -> ModelConfig {
        ModelConfig {
            rank: 2,
            lambda: Some(0.5),
            lambda_bias: 0.1,
            degree_exponent: exponent,
            regularization,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn ridge_weights_follow_the_degree_exponent() {
        let layout = lf(1.0, Regularization::PerEntry).layout(3, 1, 3.0);
        let (users, items) = ([0u32, 1, 16], [9u32]);
        let one = lf(1.0, Regularization::PerEntry).reg_diag(&layout, &users, &items);
        let half = lf(0.5, Regularization::PerEntry).reg_diag(&layout, &users, &items);
        let zero = lf(0.0, Regularization::PerEntry).reg_diag(&layout, &users, &items);
        let fro = lf(1.0, Regularization::Frobenius).reg_diag(&layout, &users, &items);
        let p = |d: &[f32], u: usize| d[layout.p_off() + u * 2];
        let q = |d: &[f32], i: usize| d[layout.q_off() + i * 2 + 1];
        // a = 1: λ·count; a = ½: λ·√count; a = 0: λ on rows with data; rows without data weigh 0.
        assert_eq!(
            [p(&one, 0), p(&one, 1), p(&one, 2), q(&one, 0)],
            [0.0, 0.5, 8.0, 4.5]
        );
        assert_eq!(
            [p(&half, 0), p(&half, 1), p(&half, 2), q(&half, 0)],
            [0.0, 0.5, 2.0, 1.5]
        );
        assert_eq!([p(&zero, 0), p(&zero, 2), q(&zero, 0)], [0.0, 0.5, 0.5]);
        assert_eq!([p(&fro, 0), p(&fro, 2)], [0.5, 0.5]);
        // The biases take the same exponent with λ_b.
        let b = |d: &[f32], u: usize| d[layout.b_off() + u];
        assert!((b(&half, 2) - 0.4).abs() < 1e-7 && (b(&one, 2) - 1.6).abs() < 1e-6);
    }

    #[test]
    fn degree_exponent_is_checked() {
        assert!(lf(0.5, Regularization::PerEntry).validate().is_ok());
        for bad in [-0.1, f64::NAN, 5.0] {
            let e = lf(bad, Regularization::PerEntry).validate().unwrap_err();
            assert_eq!(e.0, "degree_exponent");
        }
        let e = lf(0.5, Regularization::Frobenius).validate().unwrap_err();
        assert!(e.1.contains("per_entry"), "{}", e.1);
    }
}
