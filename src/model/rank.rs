//! Numerical rank of a learned factorisation X = A·diag(d)·Bᵀ.
//!
//! X restricted to its factors: QR of A·diag(d) = Q₁R₁ and of B = Q₂R₂ give X = Q₁(R₁R₂ᵀ)Q₂ᵀ, so
//! the singular values of X are those of the small f×f matrix R₁R₂ᵀ. All of it runs on the host in
//! f64 with nalgebra.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

/// The singular-value spectrum of a factorisation and the rank it implies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RankReport {
    /// Singular values, descending.
    pub singular_values: Vec<f64>,
    /// Relative tolerance used: σ counts when σ > tol·σ_max.
    pub tol: f64,
    /// Number of singular values above tol·σ_max.
    pub rank: usize,
}

/// Spectrum of A·diag(d)·Bᵀ with A (m×f) and B (n×f) stored row-major; `d = None` means d = 1.
pub fn rank_report(a: &[f32], b: &[f32], d: Option<&[f32]>, f: usize, tol: f64) -> RankReport {
    let m = a.len() / f;
    let n = b.len() / f;
    let mut am = DMatrix::<f64>::from_fn(m, f, |r, c| a[r * f + c] as f64);
    if let Some(d) = d {
        for (c, &s) in d.iter().enumerate().take(f) {
            am.column_mut(c).scale_mut(s as f64);
        }
    }
    let bm = DMatrix::<f64>::from_fn(n, f, |r, c| b[r * f + c] as f64);
    let r1 = am.qr().r();
    let r2 = bm.qr().r();
    let core = &r1 * r2.transpose();
    let mut sv: Vec<f64> = core.singular_values().iter().copied().collect();
    sv.sort_by(|x, y| y.total_cmp(x));
    let max = sv.first().copied().unwrap_or(0.0);
    let rank = sv.iter().filter(|&&s| s > tol * max).count();
    RankReport {
        singular_values: sv,
        tol,
        rank,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_rank_of_a_known_product() {
        // A = [e1 e2 0], B = [e1 2e2 0] -> singular values 2, 1, 0.
        let f = 3;
        let a = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let b = vec![1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0];
        let r = rank_report(&a, &b, None, f, 1e-6);
        assert_eq!(r.rank, 2);
        assert!((r.singular_values[0] - 2.0).abs() < 1e-12);
        assert!((r.singular_values[1] - 1.0).abs() < 1e-12);
        let r = rank_report(&a, &b, Some(&[1.0, 0.0, 5.0]), f, 1e-6);
        assert_eq!(r.rank, 1);
    }
}
