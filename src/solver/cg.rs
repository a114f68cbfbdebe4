//! Conjugate gradients for A·x = b with A applied matrix-free. The solver holds no device code: it
//! calls the operator and the backend's BLAS-1, and reads back only the scalars it needs (r·r, p·Ap,
//! and two dots at the end for the quadratic model).

use crate::backend::Backend;
use crate::error::Result;

/// Why CG stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgStop {
    /// ‖r‖ ≤ tol.
    Converged,
    /// The iteration limit.
    MaxIters,
    /// pᵀAp ≤ 0: the operator is not positive definite along p.
    NegativeCurvature,
}

/// The outcome of one CG solve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgOutcome {
    pub iters: usize,
    pub stop: CgStop,
    pub residual_norm: f64,
    /// xᵀb.
    pub xb: f64,
    /// xᵀr with the final residual r = b − Ax, so xᵀAx = xᵀb − xᵀr.
    pub xr: f64,
}

/// A matrix-free operator: `apply(v, out)` sets out ← A·v.
pub type Operator<'a, V> = dyn FnMut(&V, &mut V) -> Result<()> + 'a;

/// Work vectors of CG, kept across solves.
pub struct ConjugateGradient<B: Backend> {
    r: B::Vector,
    p: B::Vector,
    ap: B::Vector,
}

impl<B: Backend> ConjugateGradient<B> {
    /// Work vectors laid out as `like` (the right-hand sides it will solve for).
    pub fn new(backend: &B, like: &B::Vector) -> Result<Self> {
        Ok(ConjugateGradient {
            r: backend.zeros_like(like)?,
            p: backend.zeros_like(like)?,
            ap: backend.zeros_like(like)?,
        })
    }

    /// Solves A·x = b from x₀ = 0 for at most `max_iters` iterations, stopping once ‖r‖ ≤ `tol_abs`.
    pub fn solve(
        &mut self,
        backend: &B,
        apply: &mut Operator<'_, B::Vector>,
        b: &B::Vector,
        x: &mut B::Vector,
        max_iters: usize,
        tol_abs: f64,
    ) -> Result<CgOutcome> {
        backend.fill(x, 0.0)?;
        backend.copy(b, &mut self.r)?;
        backend.copy(b, &mut self.p)?;
        let mut rr = backend.dot(&self.r, &self.r)?;
        let mut iters = 0;
        let mut stop = CgStop::MaxIters;
        while iters < max_iters {
            if rr.sqrt() <= tol_abs {
                stop = CgStop::Converged;
                break;
            }
            apply(&self.p, &mut self.ap)?;
            let pap = backend.dot(&self.p, &self.ap)?;
            if pap <= 0.0 || pap.is_nan() {
                stop = CgStop::NegativeCurvature;
                if iters == 0 && pap < 0.0 {
                    // Step along b to the magnitude of the quadratic, and let damping judge it.
                    backend.axpy((rr / -pap) as f32, &self.p, x)?;
                    backend.axpy((rr / pap) as f32, &self.ap, &mut self.r)?;
                }
                break;
            }
            let alpha = rr / pap;
            backend.axpy(alpha as f32, &self.p, x)?;
            backend.axpy(-alpha as f32, &self.ap, &mut self.r)?;
            let rr_new = backend.dot(&self.r, &self.r)?;
            let beta = rr_new / rr;
            rr = rr_new;
            backend.xpby(&self.r, beta as f32, &mut self.p)?;
            iters += 1;
        }
        if stop == CgStop::MaxIters && rr.sqrt() <= tol_abs {
            stop = CgStop::Converged;
        }
        Ok(CgOutcome {
            iters,
            stop,
            residual_norm: rr.sqrt(),
            xb: backend.dot(x, b)?,
            xr: backend.dot(x, &self.r)?,
        })
    }
}
